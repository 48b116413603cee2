//! `Batches`: the batches that must be found again, by async job id (kept until
//! `jobs.result_ttl_secs` after they settle) and by idempotency key (kept for
//! `jobs.idempotency_ttl_secs` from the first request). Both are bounded by `jobs.max_records`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Batch, IdempotencyKey, Phase};
use crate::clients::Caller;
use crate::error::ApiError;
use crate::records::{JobFailure, JobId};

#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// An async job is kept this long after it settles.
    pub result_ttl: Duration,
    /// An idempotency key is remembered this long after its first request.
    pub idempotency_ttl: Duration,
    /// Most async jobs, and most idempotency keys, remembered at once.
    pub max_entries: usize,
}

/// How a request with an idempotency key is served.
pub enum Claim {
    /// The first request with this key: a new batch was started.
    Started(Arc<Batch>),
    /// A retry: the batch of the first request, running or done.
    Joined(Arc<Batch>),
}

impl Claim {
    pub fn batch(&self) -> &Arc<Batch> {
        match self {
            Claim::Started(batch) | Claim::Joined(batch) => batch,
        }
    }
}

struct Remembered {
    fingerprint: [u8; 32],
    batch: Arc<Batch>,
    /// When the key was first used (its entry in `key_order`).
    since: Instant,
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobId, Arc<Batch>>,
    /// Async jobs in the order they settled, with when.
    settled: VecDeque<(Instant, JobId)>,
    keys: HashMap<(Caller, IdempotencyKey), Remembered>,
    /// Keys in the order they were first used, with when.
    key_order: VecDeque<(Instant, (Caller, IdempotencyKey))>,
}

pub struct Batches {
    settings: BatchSettings,
    state: Mutex<State>,
}

impl Batches {
    pub fn new(settings: BatchSettings) -> Batches {
        Batches { settings, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each change leaves the maps consistent step by step; a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves a request with an idempotency key: the first starts its batch (`start`, called
    /// under the lock, so two at once cannot both start one); a retry with the same request joins
    /// it, unless nothing of it ever reached BFL and it is over (refused for capacity, say), in
    /// which case it starts afresh. The same key with another request is a 422.
    pub fn claim(
        &self,
        owner: &Caller,
        key: &IdempotencyKey,
        fingerprint: [u8; 32],
        start: impl FnOnce() -> Result<Batch, ApiError>,
    ) -> Result<Claim, ApiError> {
        let mut state = self.lock();
        state.evict_keys(self.settings.idempotency_ttl);
        let scoped = (owner.clone(), key.clone());
        if let Some(seen) = state.keys.get(&scoped) {
            if seen.fingerprint != fingerprint {
                return Err(ApiError::IdempotencyKeyReused);
            }
            if seen.batch.reached_upstream() || seen.batch.phase() != Phase::Settled {
                return Ok(Claim::Joined(seen.batch.clone()));
            }
            // Refused before BFL saw it: a retry may try again.
            state.keys.remove(&scoped);
        }
        if state.keys.len() >= self.settings.max_entries && !state.forget_oldest_settled_key() {
            return Err(JobFailure::StoreFull.into());
        }
        let batch = Arc::new(start()?);
        let since = Instant::now();
        state.keys.insert(scoped.clone(), Remembered { fingerprint, batch: batch.clone(), since });
        state.key_order.push_back((since, scoped));
        Ok(Claim::Started(batch))
    }

    /// The batch a retry with this key joins, if this replica remembers one it may join (see
    /// `claim`); the same key with another request is a 422.
    pub fn joined(
        &self,
        owner: &Caller,
        key: &IdempotencyKey,
        fingerprint: [u8; 32],
    ) -> Result<Option<Arc<Batch>>, ApiError> {
        let mut state = self.lock();
        state.evict_keys(self.settings.idempotency_ttl);
        let Some(seen) = state.keys.get(&(owner.clone(), key.clone())) else { return Ok(None) };
        if seen.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let joinable = seen.batch.reached_upstream() || seen.batch.phase() != Phase::Settled;
        Ok(joinable.then(|| seen.batch.clone()))
    }

    /// Room for one more async job (the oldest settled one goes if need be), or 429: checked
    /// before a job starts, so a job that starts is always remembered.
    pub fn check_room(&self) -> Result<(), ApiError> {
        let mut state = self.lock();
        state.evict_jobs(self.settings.result_ttl, 0);
        if state.jobs.len() >= self.settings.max_entries {
            state.evict_jobs(self.settings.result_ttl, 1);
        }
        if state.jobs.len() >= self.settings.max_entries {
            return Err(JobFailure::StoreFull.into());
        }
        Ok(())
    }

    /// Remembers an async job until `result_ttl` after it settles (`settle`). Requests that
    /// passed `check_room` together may take the count a few past `max_entries`, never further.
    pub fn insert_job(&self, batch: Arc<Batch>) {
        self.lock().jobs.insert(batch.id.clone(), batch);
    }

    /// A retry with the key of an async job: the job is found again even if it was forgotten
    /// (its result TTL is shorter than its key's), for another `result_ttl` if it is over.
    pub fn recall_job(&self, batch: &Arc<Batch>) {
        let mut state = self.lock();
        if state.jobs.contains_key(&batch.id) {
            return;
        }
        state.jobs.insert(batch.id.clone(), batch.clone());
        if batch.phase() == Phase::Settled {
            state.settled.push_back((Instant::now(), batch.id.clone()));
        }
    }

    /// The async job's TTL starts now.
    pub fn settle(&self, id: &JobId) {
        let mut state = self.lock();
        if state.jobs.contains_key(id) {
            state.settled.push_back((Instant::now(), id.clone()));
        }
    }

    /// `owner`'s async job `id`; another client's is as unknown as a missing one.
    pub fn job(&self, owner: &Caller, id: &str) -> Option<Arc<Batch>> {
        let mut state = self.lock();
        state.evict_jobs(self.settings.result_ttl, 0);
        state.jobs.get(id).filter(|b| &b.owner == owner).cloned()
    }
}

impl State {
    /// Drops async jobs settled more than `ttl` ago, and `extra` more of the oldest settled.
    fn evict_jobs(&mut self, ttl: Duration, mut extra: usize) {
        let now = Instant::now();
        while let Some((at, id)) = self.settled.front() {
            if now.duration_since(*at) < ttl && extra == 0 {
                break;
            }
            extra = extra.saturating_sub(1);
            self.jobs.remove(id);
            self.settled.pop_front();
        }
    }

    fn evict_keys(&mut self, ttl: Duration) {
        let now = Instant::now();
        while let Some((at, scoped)) = self.key_order.front() {
            if now.duration_since(*at) < ttl {
                break;
            }
            // A key used afresh after its batch was refused has a newer entry; only this one goes.
            if self.keys.get(scoped).is_some_and(|seen| seen.since == *at) {
                self.keys.remove(scoped);
            }
            self.key_order.pop_front();
        }
    }

    /// Room for one more key: the oldest key whose batch is over goes before its TTL. False when
    /// every remembered key still has a batch running (forgetting one could pay twice).
    fn forget_oldest_settled_key(&mut self) -> bool {
        // Entries whose key was used afresh since are dropped on the way: they name nothing.
        self.key_order.retain(|(at, scoped)| self.keys.get(scoped).is_some_and(|seen| seen.since == *at));
        let position = self.key_order.iter().position(|(_, scoped)| {
            self.keys.get(scoped).is_some_and(|seen| seen.batch.phase() == Phase::Settled)
        });
        let Some((_, scoped)) = position.and_then(|p| self.key_order.remove(p)) else { return false };
        self.keys.remove(&scoped).is_some()
    }
}
