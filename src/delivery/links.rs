//! Signed links to re-hosted images: `/v1/images/files/{name}?expires=<unix s>&sig=<hex>`, where
//! `sig` is HMAC-SHA256 over `"{name}\n{expires}"` with `delivery.signing_key`. The signature is
//! the link's only credential (the route needs no bearer token), so it is checked in constant
//! time, before the expiry, and a link cannot be stretched or pointed at another image.

use axum::http::{HeaderMap, Uri, header};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::error::ApiError;
use crate::records::ImageName;

type HmacSha256 = Hmac<Sha256>;

/// The path under which the gateway serves re-hosted images.
pub const FILES_PATH: &str = "/v1/images/files";

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Missing, malformed, or not the gateway's signature for this name and expiry.
    #[error("the link's signature is missing or does not match")]
    BadSignature,
    /// A genuine link whose time is up.
    #[error("the link has expired")]
    Expired,
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        let code = match e {
            LinkError::BadSignature => "invalid_signature",
            LinkError::Expired => "link_expired",
        };
        ApiError::LinkRefused { message: e.to_string(), code }
    }
}

/// Signs and checks links with the configured key.
#[derive(Clone)]
pub struct LinkSigner {
    /// HMAC already keyed (at start-up): each link clones it, so no request can meet a key error.
    keyed: HmacSha256,
    ttl_secs: u64,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// A signer for `key` (HMAC takes keys of any length, so this fails only in theory).
    pub fn new(key: &SecretString, ttl_secs: u64) -> Result<LinkSigner, hmac::digest::InvalidLength> {
        Ok(LinkSigner { keyed: HmacSha256::new_from_slice(key.expose_secret().as_bytes())?, ttl_secs })
    }

    fn mac(&self, name: &ImageName, expires: u64) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(name.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// `?expires=…&sig=…` for `name`, valid for the link TTL from `now` (unix seconds).
    pub fn query(&self, name: &ImageName, now: u64) -> String {
        let expires = now.saturating_add(self.ttl_secs);
        let sig = hex::encode(self.mac(name, expires).finalize().into_bytes());
        format!("expires={expires}&sig={sig}")
    }

    /// Checks a link's query string at `now` (unix seconds); the seconds it has left when good.
    pub fn verify(&self, name: &ImageName, query: Option<&str>, now: u64) -> Result<u64, LinkError> {
        let (mut expires, mut sig) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) if expires.is_none() => expires = Some(v),
                Some(("sig", v)) if sig.is_none() => sig = Some(v),
                // A repeated field is not ours: refuse rather than pick one.
                Some(("expires" | "sig", _)) => return Err(LinkError::BadSignature),
                Some(_) | None => {}
            }
        }
        let expires_text = expires.ok_or(LinkError::BadSignature)?;
        // Only the canonical decimal form was signed (no sign, no leading zeros).
        let expires: u64 = expires_text.parse().map_err(|_| LinkError::BadSignature)?;
        if expires.to_string() != expires_text {
            return Err(LinkError::BadSignature);
        }
        let sig = hex::decode(sig.ok_or(LinkError::BadSignature)?).map_err(|_| LinkError::BadSignature)?;
        // Constant time: `verify_slice` compares the whole tag whatever the first difference.
        self.mac(name, expires).verify_slice(&sig).map_err(|_| LinkError::BadSignature)?;
        if expires <= now {
            return Err(LinkError::Expired);
        }
        Ok(expires - now)
    }
}

/// The absolute origin (`scheme://host[:port]`) links are built on: `delivery.link_base_url`
/// when set, else the request's own `Host` (or HTTP/2 `:authority`) with the scheme from
/// `x-forwarded-proto` (`http` or `https`, else `http`). `None` when the request names no usable host.
pub fn request_origin(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))?;
    // Exactly a host and optional port: no user info, path or stray characters in the reply.
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "https" || v == "http")
        .unwrap_or_else(|| "http".to_owned());
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(&SecretString::from("test-signing-key".to_owned()), 100).expect("a key")
    }

    fn name() -> ImageName {
        ImageName::parse(&format!("{}.png", "ab".repeat(32))).expect("valid name")
    }

    #[test]
    fn a_fresh_link_verifies_with_its_remaining_seconds() {
        let query = signer().query(&name(), 1_000);
        assert!(query.starts_with("expires=1100&sig="), "{query}");
        assert_eq!(signer().verify(&name(), Some(&query), 1_000), Ok(100));
        assert_eq!(signer().verify(&name(), Some(&query), 1_099), Ok(1));
    }

    #[test]
    fn an_expired_link_is_refused_as_expired() {
        let query = signer().query(&name(), 1_000);
        assert_eq!(signer().verify(&name(), Some(&query), 1_100), Err(LinkError::Expired));
        assert_eq!(signer().verify(&name(), Some(&query), 5_000), Err(LinkError::Expired));
    }

    #[test]
    fn a_tampered_link_is_refused_as_a_bad_signature() {
        let s = signer();
        let query = s.query(&name(), 1_000);
        let sig = query.split("sig=").nth(1).expect("sig");
        let other = ImageName::parse(&format!("{}.png", "cd".repeat(32))).expect("valid name");
        let mut flipped = sig.to_owned();
        flipped.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        for (name, query) in [
            (name(), format!("expires=2000&sig={sig}")),
            (name(), format!("expires=01100&sig={sig}")),
            (name(), format!("expires=1100&sig={flipped}")),
            (name(), format!("expires=1100&sig={}", &sig[..62])),
            (name(), "expires=1100&sig=zz".to_owned()),
            (name(), "expires=1100".to_owned()),
            (name(), format!("sig={sig}")),
            (name(), format!("{query}&sig={sig}")),
            (name(), String::new()),
            (other, query.clone()),
        ] {
            assert_eq!(s.verify(&name, Some(&query), 1_000), Err(LinkError::BadSignature), "{query}");
        }
        let other_key = LinkSigner::new(&SecretString::from("another-key".to_owned()), 100).expect("a key");
        assert_eq!(other_key.verify(&name(), Some(&query), 1_000), Err(LinkError::BadSignature));
        assert_eq!(s.verify(&name(), None, 1_000), Err(LinkError::BadSignature));
    }

    #[test]
    fn the_origin_comes_from_the_host_and_the_forwarded_scheme() {
        let uri: Uri = "/v1/images/generations".parse().expect("uri");
        let mut headers = HeaderMap::new();
        assert_eq!(request_origin(&headers, &uri), None);
        headers.insert(header::HOST, "img.example.com:8443".parse().expect("value"));
        assert_eq!(request_origin(&headers, &uri).as_deref(), Some("http://img.example.com:8443"));
        headers.insert("x-forwarded-proto", "HTTPS, http".parse().expect("value"));
        assert_eq!(request_origin(&headers, &uri).as_deref(), Some("https://img.example.com:8443"));
        headers.insert("x-forwarded-proto", "gopher".parse().expect("value"));
        assert_eq!(request_origin(&headers, &uri).as_deref(), Some("http://img.example.com:8443"));
        for bad in ["evil.com/path", "user@evil.com", "a b"] {
            headers.insert(header::HOST, bad.parse().expect("value"));
            assert_eq!(request_origin(&headers, &uri), None, "{bad}");
        }
        let h2: Uri = "https://h2.example.com/v1/x".parse().expect("uri");
        assert_eq!(request_origin(&HeaderMap::new(), &h2).as_deref(), Some("http://h2.example.com"));
    }
}
