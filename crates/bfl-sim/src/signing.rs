//! Signed, expiring result URLs like BFL's delivery CDN hands out: HMAC-SHA256 over the file
//! name and expiry, keyed by a secret that lives only as long as the simulator.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub(super) struct Signer {
    secret: [u8; 32],
}

/// Why a result URL was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum UrlError {
    #[error("signature did not match")]
    BadSignature,
    #[error("signature expired")]
    Expired,
}

impl Signer {
    /// A fresh random secret, so URLs from one simulator never validate on another.
    pub(super) fn new() -> Signer {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Signer { secret }
    }

    fn mac(&self, file: &str, exp: u64) -> HmacSha256 {
        // new_from_slice accepts keys of any length for HMAC; the fallback is unreachable.
        let mut mac = HmacSha256::new_from_slice(&self.secret)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        mac.update(file.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// Hex signature for `file` (`{id}.{ext}`) valid until `exp` (unix milliseconds).
    pub(super) fn sign(&self, file: &str, exp: u64) -> String {
        hex::encode(self.mac(file, exp).finalize().into_bytes())
    }

    /// Checks the signature first (so a forged expiry is "bad signature"), then the expiry.
    pub(super) fn verify(&self, file: &str, exp: u64, sig: &str, now: u64) -> Result<(), UrlError> {
        let sig = hex::decode(sig).map_err(|_| UrlError::BadSignature)?;
        self.mac(file, exp).verify_slice(&sig).map_err(|_| UrlError::BadSignature)?;
        if now > exp {
            return Err(UrlError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_url_is_valid_until_it_expires() {
        let s = Signer::new();
        let sig = s.sign("abc.png", 1_000);
        assert_eq!(s.verify("abc.png", 1_000, &sig, 999), Ok(()));
        assert_eq!(s.verify("abc.png", 1_000, &sig, 1_000), Ok(()));
        assert_eq!(s.verify("abc.png", 1_000, &sig, 1_001), Err(UrlError::Expired));
    }

    #[test]
    fn tampering_is_a_bad_signature() {
        let s = Signer::new();
        let sig = s.sign("abc.png", 1_000);
        assert_eq!(s.verify("abc.png", 9_000, &sig, 0), Err(UrlError::BadSignature));
        assert_eq!(s.verify("abd.png", 1_000, &sig, 0), Err(UrlError::BadSignature));
        assert_eq!(s.verify("abc.png", 1_000, "zz", 0), Err(UrlError::BadSignature));
        assert_eq!(Signer::new().verify("abc.png", 1_000, &sig, 0), Err(UrlError::BadSignature));
    }
}
