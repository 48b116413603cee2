//! A BFL key, its stable id and its slot budget.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A key's stable name: from configuration, or `key-` and a short hash of the key. Never the key
/// itself and never its position in a list, so it can name the key in logs, metrics and a shared
/// ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    pub fn named(name: &str) -> KeyId {
        KeyId(Arc::from(name))
    }

    /// `key-` and the first 8 hex digits of the key's SHA-256: stable, and useless for guessing.
    pub fn of(key: &SecretString) -> KeyId {
        let digest = Sha256::digest(key.expose_secret().as_bytes());
        KeyId(Arc::from(format!("key-{}", hex::encode(&digest[..4]))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key and its budget.
#[derive(Debug, Clone)]
pub struct KeyBudget {
    pub id: KeyId,
    pub key: SecretString,
    /// Active tasks allowed across all models.
    pub tasks: usize,
    /// Active flux-kontext-max tasks allowed (within `tasks`).
    pub kontext_max: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_is_stable_and_does_not_contain_the_key() {
        let key = SecretString::from("bfl-secret-123");
        let id = KeyId::of(&key);
        assert_eq!(id, KeyId::of(&SecretString::from("bfl-secret-123")));
        assert_ne!(id, KeyId::of(&SecretString::from("bfl-secret-124")));
        assert!(id.as_str().starts_with("key-") && id.as_str().len() == 12);
        assert!(!id.as_str().contains("secret"));
    }
}
