//! The pool of BFL keys a job can be submitted with.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::SecretString;

use crate::catalog::Model;
use crate::error::ApiError;

#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<SecretString>,
    next: AtomicUsize,
}

/// The right to run one upstream task on one key; held until the task is terminal.
#[derive(Debug)]
pub struct Lease {
    pub key: SecretString,
}

impl KeyPool {
    pub fn new(keys: Vec<SecretString>) -> Arc<KeyPool> {
        Arc::new(KeyPool { keys, next: AtomicUsize::new(0) })
    }

    pub async fn acquire(&self, _model: &Model) -> Result<Lease, ApiError> {
        if self.keys.is_empty() {
            return Err(ApiError::Upstream("no BFL key is configured".into()));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.keys.len();
        Ok(Lease { key: self.keys[i].clone() })
    }
}
