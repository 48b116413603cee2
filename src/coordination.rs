//! What replicas share through Redis (`[coordination] backend = "redis"`): the one connection to
//! it (made on first use, re-made by the connection manager after a failure) and its settings.
//! The slot ledger (`capacity::RedisLedger`) and the client limits (`clients`) use it; with the
//! default `memory` backend nothing here runs.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::timeout;

/// Longest wait for one Redis exchange before a replica falls back to counting on its own.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct CoordinationSettings {
    pub redis_url: String,
    /// A slot lease not renewed for this long expires (a dead replica's slots come back).
    pub lease: Duration,
    /// The fraction of each key's budget used while Redis is unreachable.
    pub degraded_share: f64,
}

/// Redis, as the replicas' shared store.
pub struct Redis {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
}

/// Redis could not be reached or could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Redis: {0}")]
pub struct RedisError(pub String);

impl Redis {
    /// Not connected yet: the first use connects (a replica whose Redis is down at start-up
    /// starts degraded).
    pub fn open(url: &str) -> Result<Arc<Redis>, RedisError> {
        let client =
            redis::Client::open(url).map_err(|e| RedisError(format!("coordination.redis_url: {e}")))?;
        Ok(Arc::new(Redis { client, connection: tokio::sync::Mutex::new(None) }))
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The shared connection, made on first use.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let made = timeout(REDIS_TIMEOUT * 4, ConnectionManager::new(self.client.clone()))
            .await
            .map_err(|_| RedisError("connecting timed out".into()))?
            .map_err(|e| RedisError(format!("connecting: {e}")))?;
        *slot = Some(made.clone());
        Ok(made)
    }

    /// Runs `script` with `call`'s keys and arguments, within `REDIS_TIMEOUT`.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        timeout(REDIS_TIMEOUT, call.invoke_async(&mut connection))
            .await
            .map_err(|_| RedisError("timed out".into()))?
            .map_err(|e| RedisError(e.to_string()))
    }
}
