//! `SharedHolds`: amounts held against a limit by every replica together, for a client's
//! concurrent jobs and its budget. A hold is a lease in a Redis sorted set (member
//! `<uuid>|<amount>`, scored by when it expires, in Redis's time), taken by a Lua script that
//! first drops expired leases and then checks `base + held + amount <= limit` (`base`: a counter
//! such as what the client has spent in the period). This replica renews its holds every third
//! of `coordination.lease_secs` and removes each when it is dropped; a replica that dies stops
//! renewing and its holds expire by themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Script;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Redis, RedisError};

const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  held = held + (tonumber(string.match(member, '|(.*)$')) or 0)
end
local base = 0
if #KEYS > 1 then base = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 end
if base + held + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-9 then
  return tostring(base + held)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 'ok'
";

/// Sets each member's expiry a lease from now. Only members still there (`XX`): a hold released
/// (or refused) while the renewal was on its way is not brought back; one Redis lost stays lost
/// (the limit undercounts until its request ends).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
";

/// A limit held across replicas: the sorted set of holds, the limit, and the counter it adds to
/// the holds (if any). Both keys should share a hash tag (`{client}`).
pub struct Limit {
    pub key: String,
    pub limit: f64,
    pub base: Option<String>,
}

/// Refused: what was in use (counter and holds) when `amount` did not fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InUse(pub f64);

pub struct SharedHolds {
    redis: Arc<Redis>,
    lease: Duration,
    take: Script,
    renew: Script,
    /// This replica's holds: member → sorted set.
    live: Mutex<HashMap<String, String>>,
    /// Removals of dropped holds run here.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl SharedHolds {
    /// Starts renewing this replica's holds (until `stop`).
    pub fn start(redis: Arc<Redis>, lease: Duration) -> Arc<SharedHolds> {
        let holds = Arc::new(SharedHolds {
            redis,
            lease,
            take: Script::new(TAKE),
            renew: Script::new(RENEW),
            live: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        holds.tasks.spawn(holds.clone().maintain());
        holds
    }

    pub fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `amount` against `limit`, or says how much was in use.
    pub async fn take(
        self: &Arc<Self>,
        limit: Limit,
        amount: f64,
    ) -> Result<Result<Hold, InUse>, RedisError> {
        let member = format!("{}|{amount}", uuid::Uuid::new_v4().simple());
        let mut call = self.take.prepare_invoke();
        call.key(&limit.key);
        if let Some(base) = &limit.base {
            call.key(base);
        }
        call.arg(amount).arg(limit.limit).arg(self.lease.as_millis() as u64).arg(&member);
        // Registered first: a hold taken just as the answer is lost is still renewed (then
        // released when this guard goes), never left unrenewed until it expires.
        self.live().insert(member.clone(), limit.key.clone());
        let hold = Hold { holds: self.clone(), key: limit.key, member };
        let answer: String = self.redis.invoke(&call).await?;
        if answer == "ok" {
            return Ok(Ok(hold));
        }
        Ok(Err(InUse(answer.parse().unwrap_or(limit.limit))))
    }

    async fn maintain(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = sleep(self.lease / 3) => {}
            }
            let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
            for (member, key) in self.live().iter() {
                by_key.entry(key.clone()).or_default().push(member.clone());
            }
            for (key, members) in by_key {
                let mut call = self.renew.prepare_invoke();
                call.key(&key).arg(self.lease.as_millis() as u64);
                for member in &members {
                    call.arg(member);
                }
                if let Err(e) = self.redis.invoke::<i64>(&call).await {
                    tracing::debug!(error = %e, "client holds not renewed this round");
                }
            }
        }
    }
}

/// An amount held in Redis until dropped.
pub struct Hold {
    holds: Arc<SharedHolds>,
    key: String,
    member: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Not renewed from now on; removed at once when Redis answers, else it expires.
        if self.holds.live().remove(&self.member).is_none() {
            return;
        }
        let (holds, key, member) =
            (self.holds.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.member));
        self.holds.tasks.spawn(async move {
            let mut remove = redis::cmd("ZREM");
            remove.arg(key).arg(member);
            let _ = holds.redis.query::<i64>(&remove).await;
        });
    }
}
