//! Standard Webhooks signing: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, with the
//! key given as `whsec_<base64>` (the key is the decoded part).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signing key of outgoing webhooks (`jobs.webhook_secret`), held as an HMAC already keyed
/// with it; its Debug output is redacted.
#[derive(Clone)]
pub struct WebhookSecret(Hmac<Sha256>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// The prefix Standard Webhooks puts before the base64 key.
const PREFIX: &str = "whsec_";

impl WebhookSecret {
    /// Parses `whsec_<base64>`: the specification asks for a key of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, String> {
        let Some(encoded) = text.trim().strip_prefix(PREFIX) else {
            return Err("must be a Standard Webhooks secret: `whsec_` followed by base64".to_owned());
        };
        let key = STANDARD.decode(encoded).map_err(|_| "the part after `whsec_` is not base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("the key is {} bytes; Standard Webhooks asks for 24 to 64", key.len()));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| "unusable key".to_owned())?;
        Ok(WebhookSecret(mac))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_is_reproduced() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let signature =
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_without_the_prefix_or_of_the_wrong_size_is_refused() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err(), "5 bytes is too short");
        assert!(
            format!("{:?}", WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
                .contains("REDACTED")
        );
    }
}
