//! The key pool: which BFL key runs a job, exact slot accounting per key (24 general, a sub-cap
//! for flux-kontext-max), key health, and the fair FIFO queue of jobs waiting for a slot.
//!
//! A `Lease` is one upstream task slot; it is given back when dropped, and the dispatcher drops it
//! only once BFL's task is terminal. Freed slots go to the longest-waiting job that can use them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::catalog::SlotClass;
use crate::error::ApiError;

use super::ledger::SlotLedger;

/// One key and its budget.
#[derive(Debug, Clone)]
pub struct KeyBudget {
    pub key: SecretString,
    pub tasks: usize,
    pub kontext_max: usize,
}

/// Queue bounds and health back-offs.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    pub queue_max: usize,
    pub queue_wait: Duration,
    /// How long a key answered with 402 (out of credits) is left alone.
    pub credit_cooldown: Duration,
}

/// Longest rest a BFL 429 gives a key.
const MAX_BUSY_REST: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    Usable,
    /// 401/403: gone for good.
    Revoked,
    /// 402 or 429: not used before this instant.
    Resting(Instant),
}

/// Why a key is being set aside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyTrouble {
    Revoked,
    OutOfCredits,
    Busy(Duration),
}

struct Waiter {
    id: u64,
    class: SlotClass,
    tx: oneshot::Sender<Lease>,
}

struct State {
    health: Vec<Health>,
    /// Why each resting key rests, so an all-out-of-credits pool answers accordingly.
    out_of_credits: Vec<bool>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

pub struct KeyPool {
    budgets: Vec<KeyBudget>,
    limits: PoolLimits,
    ledger: Arc<dyn SlotLedger>,
    /// Health and the queue; the ledger is only changed while this is held.
    state: Mutex<State>,
}

/// The right to one upstream task on one key, returned to the pool on drop.
pub struct Lease {
    pool: Arc<KeyPool>,
    index: usize,
    class: SlotClass,
}

impl Lease {
    pub fn key(&self) -> &SecretString {
        &self.pool.budgets[self.index].key
    }

    /// Sets this lease's key aside for new jobs; the slot stays held until the lease is dropped.
    pub fn report(&self, trouble: KeyTrouble) {
        self.pool.report(self.index, trouble);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        KeyPool::release(&self.pool, self.index, self.class);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease(key #{}, {:?})", self.index + 1, self.class)
    }
}

/// Removes a waiter from the queue if its job stops waiting (timeout, client gone).
struct QueueSpot<'a> {
    pool: &'a KeyPool,
    id: u64,
}

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        self.pool.lock().waiters.retain(|w| w.id != self.id);
    }
}

impl KeyPool {
    pub fn new(budgets: Vec<KeyBudget>, limits: PoolLimits, ledger: Arc<dyn SlotLedger>) -> Arc<KeyPool> {
        let n = budgets.len();
        Arc::new(KeyPool {
            budgets,
            limits,
            ledger,
            state: Mutex::new(State {
                health: vec![Health::Usable; n],
                out_of_credits: vec![false; n],
                waiters: VecDeque::new(),
                next_waiter: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across every mutation, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slots in use across all keys.
    pub fn in_use(&self) -> usize {
        self.ledger.in_use()
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Takes a slot on the key with the most free capacity for `class`, waiting in the FIFO queue
    /// when none is free. Fails at once when no key could ever take the job, or when the queue is
    /// full; fails after `queue_wait` in the queue.
    pub async fn acquire(self: &Arc<Self>, class: SlotClass) -> Result<Lease, ApiError> {
        let (id, mut rx, handoffs) = {
            let mut state = self.lock();
            if state.waiters.is_empty()
                && let Some(lease) = self.grant(&mut state, class, Instant::now())
            {
                return Ok(lease);
            }
            self.unavailable(&state)?;
            if state.waiters.len() >= self.limits.queue_max {
                return Err(ApiError::Capacity {
                    message: "every upstream slot is busy and the queue is full; retry shortly".into(),
                    retry_after: Duration::from_secs(2),
                    retry_useful: true,
                });
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.waiters.push_back(Waiter { id, class, tx });
            // Older waiters may be stuck on a sub-cap that does not bind this job.
            (id, rx, self.assign(&mut state))
        };
        deliver(handoffs);
        let _spot = QueueSpot { pool: self, id };
        let give_up = Instant::now() + self.limits.queue_wait;
        loop {
            // Slots freed by other jobs arrive through the channel; a key coming back from a
            // back-off frees nothing, so the queue head also looks again now and then.
            let recheck = (Instant::now() + Duration::from_millis(250)).min(give_up);
            match tokio::time::timeout_at(recheck, &mut rx).await {
                Ok(Ok(lease)) => return Ok(lease),
                Ok(Err(_)) => return Err(ApiError::Internal),
                Err(_) => {}
            }
            if Instant::now() >= give_up {
                // A slot handed over at the last moment is still ours.
                if let Ok(lease) = rx.try_recv() {
                    return Ok(lease);
                }
                return Err(ApiError::Capacity {
                    message: format!(
                        "no upstream slot became free within {} s; retry shortly",
                        self.limits.queue_wait.as_secs()
                    ),
                    retry_after: Duration::from_secs(5),
                    retry_useful: true,
                });
            }
            let handoffs = {
                let mut state = self.lock();
                self.unavailable(&state)?;
                // Only a key ending its rest can free capacity without a release.
                if state.health.iter().any(|h| matches!(h, Health::Resting(_))) {
                    self.assign(&mut state)
                } else {
                    Vec::new()
                }
            };
            deliver(handoffs);
        }
    }

    /// An error when no key can take any job now or later without an operator: all revoked, or
    /// all revoked or out of credits.
    fn unavailable(&self, state: &State) -> Result<(), ApiError> {
        let now = Instant::now();
        let revoked = state.health.iter().filter(|h| **h == Health::Revoked).count();
        if self.budgets.is_empty() || revoked == self.budgets.len() {
            return Err(ApiError::Upstream("no usable BFL key: every key was refused".into()));
        }
        let broke = state
            .health
            .iter()
            .zip(&state.out_of_credits)
            .filter(|(h, oc)| matches!(h, Health::Resting(until) if **oc && *until > now));
        if revoked + broke.count() == self.budgets.len() {
            return Err(ApiError::Capacity {
                message: "the gateway's BFL accounts are out of credits".into(),
                retry_after: self.limits.credit_cooldown,
                retry_useful: false,
            });
        }
        Ok(())
    }

    /// A slot on the usable key with the most free capacity for `class`, if any is free.
    fn grant(self: &Arc<Self>, state: &mut State, class: SlotClass, now: Instant) -> Option<Lease> {
        let mut best: Option<(usize, usize)> = None;
        for (i, budget) in self.budgets.iter().enumerate() {
            match state.health[i] {
                Health::Revoked => continue,
                Health::Resting(until) if until > now => continue,
                Health::Resting(_) => {
                    state.health[i] = Health::Usable;
                    state.out_of_credits[i] = false;
                }
                Health::Usable => {}
            }
            let free = self.ledger.free(i, class, budget);
            if free > 0 && best.is_none_or(|(_, f)| free > f) {
                best = Some((i, free));
            }
        }
        let (index, _) = best?;
        self.ledger.take(index, class, &self.budgets[index]).then(|| Lease {
            pool: self.clone(),
            index,
            class,
        })
    }

    /// Hands free slots to waiters, oldest first, skipping those no free slot suits.
    fn assign(self: &Arc<Self>, state: &mut State) -> Vec<(oneshot::Sender<Lease>, Lease)> {
        let now = Instant::now();
        let mut handoffs = Vec::new();
        let mut i = 0;
        while i < state.waiters.len() {
            let class = state.waiters[i].class;
            match self.grant(state, class, now) {
                Some(lease) => {
                    if let Some(waiter) = state.waiters.remove(i) {
                        handoffs.push((waiter.tx, lease));
                    }
                }
                None => i += 1,
            }
        }
        handoffs
    }

    fn release(self: &Arc<Self>, index: usize, class: SlotClass) {
        let handoffs = {
            let mut state = self.lock();
            self.ledger.give_back(index, class);
            self.assign(&mut state)
        };
        deliver(handoffs);
    }

    fn report(&self, index: usize, trouble: KeyTrouble) {
        let mut state = self.lock();
        let now = Instant::now();
        match trouble {
            KeyTrouble::Revoked => {
                if state.health[index] != Health::Revoked {
                    tracing::error!(key = index + 1, "BFL refused key #{}; it is out of the pool", index + 1);
                }
                state.health[index] = Health::Revoked;
            }
            KeyTrouble::OutOfCredits => {
                tracing::warn!(key = index + 1, "BFL key #{} is out of credits; resting it", index + 1);
                state.health[index] = Health::Resting(now + self.limits.credit_cooldown);
                state.out_of_credits[index] = true;
            }
            KeyTrouble::Busy(backoff) => {
                tracing::warn!(key = index + 1, "BFL said key #{} is at capacity; backing off", index + 1);
                // However long BFL asks for, one answer cannot bench a key for long.
                state.health[index] = Health::Resting(now + backoff.min(MAX_BUSY_REST));
            }
        }
    }
}

/// Sends granted leases to their waiters, outside the lock. A waiter that has just gone drops its
/// lease, which returns the slot to the pool (and so to the next waiter).
fn deliver(handoffs: Vec<(oneshot::Sender<Lease>, Lease)>) {
    for (tx, lease) in handoffs {
        drop(tx.send(lease));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::dispatch::LocalLedger;

    fn pool(tasks: usize, kontext_max: usize, keys: usize) -> Arc<KeyPool> {
        let budgets = (0..keys)
            .map(|i| KeyBudget { key: SecretString::from(format!("k{i}")), tasks, kontext_max })
            .collect();
        let limits = PoolLimits {
            queue_max: 10,
            queue_wait: Duration::from_secs(5),
            credit_cooldown: Duration::from_secs(60),
        };
        KeyPool::new(budgets, limits, Arc::new(LocalLedger::new(keys)))
    }

    #[tokio::test]
    async fn a_job_waiting_on_the_kontext_sub_cap_does_not_block_general_jobs() {
        let pool = pool(3, 1, 1);
        let first = pool.acquire(SlotClass::KontextMax).await.expect("free slot");
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(SlotClass::KontextMax).await.map(|l| l.index) }
        });
        while pool.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let general = pool.acquire(SlotClass::General).await.expect("general slot is free");
        assert_eq!(pool.in_use(), 2);
        drop(first);
        assert_eq!(waiting.await.expect("task").expect("handed the freed slot"), 0);
        drop(general);
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn jobs_spread_to_the_key_with_most_free_capacity_and_avoid_revoked_keys() {
        let pool = pool(2, 1, 2);
        let a = pool.acquire(SlotClass::General).await.expect("slot");
        let b = pool.acquire(SlotClass::General).await.expect("slot");
        assert_ne!(a.index, b.index, "the second job goes to the idle key");
        b.report(KeyTrouble::Revoked);
        drop(b);
        let c = pool.acquire(SlotClass::General).await.expect("slot");
        assert_eq!(c.index, a.index);
        drop((a, c));
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn all_keys_revoked_or_out_of_credits_fail_at_once() {
        let pool = pool(2, 1, 2);
        let a = pool.acquire(SlotClass::General).await.expect("slot");
        let b = pool.acquire(SlotClass::General).await.expect("slot");
        a.report(KeyTrouble::Revoked);
        b.report(KeyTrouble::OutOfCredits);
        drop((a, b));
        let err = pool.acquire(SlotClass::General).await.expect_err("no key can take it");
        assert_eq!(err.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
    }
}
