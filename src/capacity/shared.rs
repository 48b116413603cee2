//! `RedisLedger`: the slot ledger replicas share through Redis (`[coordination] backend =
//! "redis"`). Each key's slots are a sorted set of leases (member: this replica's id and the slot
//! number; score: when the lease ends, in Redis's own clock), taken and given back atomically by
//! Lua scripts that first drop expired leases: a replica that dies stops renewing, and its slots
//! come back within `coordination.lease_secs`. A background task renews this replica's leases
//! every third of the lease time. A release is published, and every replica's waiters wake on it.
//!
//! Degraded mode: when Redis does not answer (within `REDIS_TIMEOUT`), slots are counted in this
//! process against a conservative share of each key's budget (`coordination.degraded_share`),
//! and `/readyz` and `fluxgate_coordination_degraded` say so. A probe every second notices Redis
//! is back; the slots taken meanwhile are then written to Redis as leases (so none is counted
//! twice or lost) and shared accounting resumes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use redis::{AsyncCommands, Script};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ledger::{LedgerError, LocalLedger, SlotId, SlotLedger};
use super::{KeyBudget, KeyId};
use crate::catalog::SlotClass;
use crate::coordination::{CoordinationSettings, REDIS_TIMEOUT, Redis};

/// How often a degraded ledger checks whether Redis is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The channel releases are published on.
const RELEASED: &str = "fluxgate:released";

const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
if ARGV[3] == '1' then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[4])
return 1
";

/// Writes (renews, or re-creates) the leases of every slot this replica holds: a lease that
/// Redis lost (a restart, an expiry while it did not answer) is put back, since its task runs.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
  if ARGV[i + 1] == '1' then redis.call('ZADD', KEYS[2], expires, ARGV[i]) end
end
return 1
";

/// A slot this replica holds.
#[derive(Debug, Clone)]
struct Held {
    key: KeyId,
    class: SlotClass,
    /// Taken while degraded: counted in `local`, not yet in Redis.
    local: Option<KeyBudget>,
}

pub struct RedisLedger {
    settings: CoordinationSettings,
    redis: Arc<Redis>,
    replica: String,
    next: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
    local: LocalLedger,
    degraded: AtomicBool,
    reserve: Script,
    renew: Script,
    /// Called when a slot may have freed (another replica released one).
    wake: OnceLock<Box<dyn Fn() + Send + Sync>>,
    stop: CancellationToken,
}

fn general_set(key: &KeyId) -> String {
    format!("fluxgate:slots:{{{}}}", key.as_str())
}

fn kontext_set(key: &KeyId) -> String {
    format!("fluxgate:slots:{{{}}}:kontext-max", key.as_str())
}

fn lease_ms(lease: Duration) -> u64 {
    lease.as_millis().try_into().unwrap_or(u64::MAX)
}

impl RedisLedger {
    /// A ledger on `settings.redis_url` (not yet connected: the first use connects, and a
    /// gateway whose Redis is down at start-up starts degraded).
    pub fn new(settings: CoordinationSettings, redis: Arc<Redis>) -> Arc<RedisLedger> {
        Arc::new(RedisLedger {
            settings,
            redis,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            next: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            local: LocalLedger::new(),
            degraded: AtomicBool::new(false),
            reserve: Script::new(RESERVE),
            renew: Script::new(RENEW),
            wake: OnceLock::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Starts renewing leases and listening for other replicas' releases; `wake` is called when
    /// a slot may have freed. The tasks run on a tracker of their own (they end with `stop`).
    pub fn start(self: &Arc<Self>, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.wake.set(Box::new(wake));
        let tasks = TaskTracker::new();
        let ledger = self.clone();
        tasks.spawn(async move { ledger.maintain().await });
        let ledger = self.clone();
        tasks.spawn(async move { ledger.listen().await });
        tasks.close();
    }

    /// Stops the background tasks (at the very end of shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// True while slots are counted locally because Redis does not answer.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn member(&self, slot: u64) -> String {
        format!("{}:{slot}", self.replica)
    }

    fn degrade(&self, error: &str) {
        if !self.degraded.swap(true, Ordering::SeqCst) {
            tracing::warn!(%error, share = self.settings.degraded_share, "Redis does not answer: counting slots locally on a share of each key's budget");
        }
    }

    async fn shared_reserve(
        &self,
        budget: &KeyBudget,
        class: SlotClass,
        member: &str,
    ) -> Result<bool, LedgerError> {
        let mut call = self.reserve.prepare_invoke();
        call.key(general_set(&budget.id))
            .key(kontext_set(&budget.id))
            .arg(budget.tasks)
            .arg(budget.kontext_max)
            .arg(if class == SlotClass::KontextMax { "1" } else { "0" })
            .arg(member)
            .arg(lease_ms(self.settings.lease));
        let taken: i64 = self.redis.invoke(&call).await.map_err(|e| LedgerError(e.0))?;
        Ok(taken == 1)
    }

    /// What is left of this process's share of `budget` while degraded: the share, less the
    /// slots it still holds in Redis on that key (they run, and count against its share).
    fn share_of(&self, budget: &KeyBudget) -> KeyBudget {
        let share = |n: usize| ((n as f64) * self.settings.degraded_share).floor() as usize;
        let (mut tasks, mut kontext) = (0, 0);
        for held in self.held().values().filter(|h| h.local.is_none() && h.key == budget.id) {
            tasks += 1;
            kontext += usize::from(held.class == SlotClass::KontextMax);
        }
        KeyBudget {
            tasks: share(budget.tasks).saturating_sub(tasks),
            kontext_max: share(budget.kontext_max).saturating_sub(kontext),
            ..budget.clone()
        }
    }

    /// Writes the lease of every slot this replica holds into Redis: renewing those it has,
    /// putting back those Redis lost, and adopting those counted locally while it did not
    /// answer (their local counts go). True when no local slot is left.
    async fn write_leases(&self) -> Result<bool, LedgerError> {
        let mut by_key: HashMap<KeyId, Vec<(u64, bool)>> = HashMap::new();
        for (slot, held) in self.held().iter() {
            by_key.entry(held.key.clone()).or_default().push((*slot, held.class == SlotClass::KontextMax));
        }
        if by_key.is_empty() {
            // Nothing to write: a probe says whether Redis answers at all.
            let _: String = self.redis.query(&redis::cmd("PING")).await.map_err(|e| LedgerError(e.0))?;
        }
        for (key, slots) in &by_key {
            let mut call = self.renew.prepare_invoke();
            call.key(general_set(key)).key(kontext_set(key)).arg(lease_ms(self.settings.lease));
            for (slot, kontext) in slots {
                call.arg(self.member(*slot)).arg(if *kontext { "1" } else { "0" });
            }
            let _: i64 = self.redis.invoke(&call).await.map_err(|e| LedgerError(e.0))?;
        }
        // Those written are Redis's now: their local counts go.
        let (adopted, left): (Vec<(KeyBudget, SlotClass)>, bool) = {
            let mut held = self.held();
            let mut moved = Vec::new();
            for slots in by_key.values() {
                for (slot, _) in slots {
                    if let Some(h) = held.get_mut(slot)
                        && let Some(budget) = h.local.take()
                    {
                        moved.push((budget, h.class));
                    }
                }
            }
            // Taken locally while this ran: the next pass writes them.
            let left = held.values().any(|h| h.local.is_some());
            (moved, left)
        };
        for (budget, class) in adopted {
            let _ = self.local.release(&budget.id, class, &SlotId(0)).await;
        }
        Ok(!left)
    }

    /// Renews leases; while degraded, probes Redis and adopts the local slots once it answers.
    async fn maintain(self: Arc<Self>) {
        let renew_every = (self.settings.lease / 3).max(Duration::from_millis(100));
        loop {
            let pause = if self.is_degraded() { PROBE_EVERY } else { renew_every };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = sleep(pause) => {}
            }
            match self.write_leases().await {
                Ok(true) if self.is_degraded() => {
                    self.degraded.store(false, Ordering::SeqCst);
                    tracing::info!("Redis answers again: slots are counted in Redis");
                }
                Ok(_) => {}
                Err(e) if self.is_degraded() => tracing::debug!(error = %e, "Redis still does not answer"),
                Err(e) => self.degrade(&e.0),
            }
            // A release whose message was missed still wakes the waiters, a little late.
            if let Some(wake) = self.wake.get() {
                wake();
            }
        }
    }

    /// Wakes this replica's waiters whenever any replica releases a slot.
    async fn listen(self: Arc<Self>) {
        loop {
            let subscribed = async {
                let mut pubsub = self.redis.client().get_async_pubsub().await?;
                pubsub.subscribe(RELEASED).await?;
                let mut messages = pubsub.on_message();
                while messages.next().await.is_some() {
                    if let Some(wake) = self.wake.get() {
                        wake();
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                ended = subscribed => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "the release channel dropped; subscribing again");
                    }
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = sleep(PROBE_EVERY) => {}
            }
        }
    }
}

impl SlotLedger for RedisLedger {
    fn reserve<'a>(
        &'a self,
        budget: &'a KeyBudget,
        class: SlotClass,
    ) -> BoxFuture<'a, Result<Option<SlotId>, LedgerError>> {
        async move {
            let slot = self.next.fetch_add(1, Ordering::Relaxed);
            if !self.is_degraded() {
                match self.shared_reserve(budget, class, &self.member(slot)).await {
                    Ok(true) => {
                        self.held().insert(slot, Held { key: budget.id.clone(), class, local: None });
                        return Ok(Some(SlotId(slot)));
                    }
                    Ok(false) => return Ok(None),
                    Err(e) => self.degrade(&e.0),
                }
            }
            let share = self.share_of(budget);
            Ok(match self.local.reserve(&share, class).await? {
                Some(_) => {
                    self.held().insert(slot, Held { key: budget.id.clone(), class, local: Some(share) });
                    Some(SlotId(slot))
                }
                None => None,
            })
        }
        .boxed()
    }

    fn release<'a>(
        &'a self,
        key: &'a KeyId,
        class: SlotClass,
        slot: &'a SlotId,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        async move {
            let held = self.held().remove(&slot.0);
            if let Some(Held { local: Some(budget), .. }) = held {
                return self.local.release(&budget.id, class, slot).await;
            }
            let mut connection = self.redis.connection().await.map_err(|e| LedgerError(e.0))?;
            let member = self.member(slot.0);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .zrem(general_set(key), &member)
                .zrem(kontext_set(key), &member)
                .publish(RELEASED, key.as_str());
            let done: Result<(), redis::RedisError> =
                timeout(REDIS_TIMEOUT, pipe.query_async(&mut connection)).await.unwrap_or_else(|_| {
                    Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis timed out")))
                });
            // Not given back: the lease expires by itself within lease_secs.
            done.map_err(|e| LedgerError(e.to_string()))
        }
        .boxed()
    }

    /// Leases are renewed in the background for every slot this replica holds.
    fn renew<'a>(&'a self, _key: &'a KeyId, _slot: &'a SlotId) -> BoxFuture<'a, Result<(), LedgerError>> {
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// How many slots Redis counts on `key` right now (tests and diagnostics).
/// Leases still running (by this machine's clock, close enough for a look).
pub async fn shared_count(redis_url: &str, key: &KeyId) -> Result<usize, LedgerError> {
    let client = redis::Client::open(redis_url).map_err(|e| LedgerError(e.to_string()))?;
    let mut connection =
        client.get_multiplexed_async_connection().await.map_err(|e| LedgerError(e.to_string()))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    connection
        .zcount(general_set(key), now.to_string(), "+inf")
        .await
        .map_err(|e: redis::RedisError| LedgerError(e.to_string()))
}
