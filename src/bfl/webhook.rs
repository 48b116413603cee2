//! What makes a BFL webhook authentic: the secret sent with the job, back verbatim in
//! `X-Webhook-Secret` (what BFL's SDK documents), and/or `X-BFL-Signature: sha256=<hex HMAC-SHA256
//! of the raw body>` (other BFL material). Either is accepted; each one present must be right.
//! Comparisons are constant-time.

use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::PollReply;

pub const SECRET_HEADER: &str = "x-webhook-secret";
pub const SIGNATURE_HEADER: &str = "x-bfl-signature";

/// Largest webhook body read (a `ResultResponse` is a few hundred bytes).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// True when the headers prove the sender knew `secret`: at least one of the two headers is
/// present, and every one present matches.
pub fn authentic(secret: &SecretString, headers: &HeaderMap, body: &[u8]) -> bool {
    let presented = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    let signature = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    if presented.is_none() && signature.is_none() {
        return false;
    }
    let secret = secret.expose_secret().as_bytes();
    // Hashing first keeps the comparison constant-time whatever the lengths.
    let secret_ok = presented.is_none_or(|p| bool::from(Sha256::digest(p).ct_eq(&Sha256::digest(secret))));
    let signature_ok = signature.is_none_or(|s| signed(secret, s, body));
    secret_ok && signature_ok
}

/// `sha256=<hex>` (the prefix optional, hex in either case) is the HMAC-SHA256 of `body`.
fn signed(secret: &[u8], header: &[u8], body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(header);
    let text = text.trim();
    let hex_part = text.strip_prefix("sha256=").unwrap_or(text);
    let Ok(expected) = hex::decode(hex_part.to_ascii_lowercase()) else { return false };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The webhook's document, read as leniently as a poll's (the same classification follows).
pub fn parse(body: &[u8]) -> Option<PollReply> {
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).expect("ascii"));
        }
        h
    }

    fn hmac_hex(key: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn the_secret_or_a_signature_of_the_body_is_accepted_and_anything_wrong_refused() {
        let secret = SecretString::from("s3cret");
        let body = br#"{"id":"t","status":"Ready"}"#;
        let sig = hmac_hex(b"s3cret", body);
        assert!(authentic(&secret, &headers(&[(SECRET_HEADER, "s3cret")]), body));
        assert!(authentic(&secret, &headers(&[(SIGNATURE_HEADER, &format!("sha256={sig}"))]), body));
        assert!(authentic(&secret, &headers(&[(SIGNATURE_HEADER, &sig.to_uppercase())]), body));
        let both = headers(&[(SECRET_HEADER, "s3cret"), (SIGNATURE_HEADER, &format!("sha256={sig}"))]);
        assert!(authentic(&secret, &both, body));
        assert!(!authentic(&secret, &headers(&[]), body), "neither header");
        assert!(!authentic(&secret, &headers(&[(SECRET_HEADER, "s3cre")]), body));
        assert!(!authentic(&secret, &headers(&[(SIGNATURE_HEADER, &format!("sha256={sig}"))]), b"{}"));
        let one_wrong = headers(&[(SECRET_HEADER, "s3cret"), (SIGNATURE_HEADER, "sha256=00")]);
        assert!(!authentic(&secret, &one_wrong, body), "every header present must match");
        assert!(!authentic(&secret, &headers(&[(SIGNATURE_HEADER, "sha256=zz")]), body));
    }
}
