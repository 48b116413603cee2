//! What replicas share through Redis (`[coordination] backend = "redis"`): the one connection to
//! it (made on first use, re-made by the connection manager after a failure) and its settings.
//! The slot ledger (`capacity::RedisLedger`) and the client limits (`clients`) use it; with the
//! default `memory` backend nothing here runs.

mod holds;

pub use holds::{Hold, InUse, Limit, SharedHolds};

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::{Instant, timeout};

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
    /// When connecting last failed: for a moment after, callers fail at once instead of each
    /// waiting for a connection that will not come.
    failed_at: std::sync::Mutex<Option<Instant>>,
}

/// How long after a failed connect callers fail at once.
const RETRY_CONNECT_AFTER: Duration = Duration::from_secs(1);

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
        Ok(Arc::new(Redis {
            client,
            connection: tokio::sync::Mutex::new(None),
            failed_at: std::sync::Mutex::new(None),
        }))
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The shared connection, made on first use.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let recently_failed = || {
            let failed_at = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
            failed_at.is_some_and(|at| at.elapsed() < RETRY_CONNECT_AFTER)
        };
        if recently_failed() {
            return Err(RedisError("not connected (the last attempt failed a moment ago)".into()));
        }
        // Waiting for the lock is bounded too: a hung connect holds it.
        let mut slot = timeout(REDIS_TIMEOUT, self.connection.lock())
            .await
            .map_err(|_| RedisError("connecting is taking long".into()))?;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        if recently_failed() {
            return Err(RedisError("not connected (the last attempt failed a moment ago)".into()));
        }
        let made = timeout(REDIS_TIMEOUT * 4, ConnectionManager::new(self.client.clone())).await;
        let made = match made {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => return Err(self.failed(format!("connecting: {e}"))),
            Err(_) => return Err(self.failed("connecting timed out".into())),
        };
        *slot = Some(made.clone());
        Ok(made)
    }

    fn failed(&self, why: String) -> RedisError {
        *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        RedisError(why)
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

    /// Runs one command within `REDIS_TIMEOUT`.
    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        timeout(REDIS_TIMEOUT, command.query_async(&mut connection))
            .await
            .map_err(|_| RedisError("timed out".into()))?
            .map_err(|e| RedisError(e.to_string()))
    }
}
