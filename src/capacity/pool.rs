//! The key pool: hands out leases on the key with the most free capacity, keeps key health, and
//! puts jobs in the fair queue when no slot is free.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::{Instant, sleep_until};
use tokio_util::task::TaskTracker;

use crate::catalog::SlotClass;

use super::queue::Queue;
use super::{CapacityError, CapacitySettings, KeyBudget, KeyId, SlotId, SlotLedger};

/// Longest rest a BFL 429 gives a key.
const MAX_BUSY_REST: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    Usable,
    /// 401/403: gone for good.
    Revoked,
    /// 402 (`out_of_credits`) or 429: not used before this instant.
    Resting {
        until: Instant,
        out_of_credits: bool,
    },
}

/// Why a key is being set aside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyTrouble {
    Revoked,
    OutOfCredits,
    Busy(Duration),
}

pub struct KeyPool {
    budgets: Vec<KeyBudget>,
    settings: CapacitySettings,
    ledger: Arc<dyn SlotLedger>,
    health: Mutex<Vec<Health>>,
    /// Leases this process holds, per key (a shared ledger also counts other replicas').
    held: Vec<AtomicUsize>,
    queue: Queue,
    /// Where a lease dropped without `release` is given back (the drop itself does no I/O).
    tracker: TaskTracker,
    /// Set on shutdown: waiting jobs and new ones are refused.
    closed: AtomicBool,
}

/// The right to one upstream task on one key. Give it back with `release` once BFL's task is
/// terminal; one dropped without that is released in the background.
pub struct Lease {
    pool: Arc<KeyPool>,
    index: usize,
    class: SlotClass,
    slot: SlotId,
    released: bool,
}

impl Lease {
    pub fn key(&self) -> &SecretString {
        &self.pool.budgets[self.index].key
    }

    pub fn key_id(&self) -> &KeyId {
        &self.pool.budgets[self.index].id
    }

    /// Sets this lease's key aside for new jobs; the slot stays held until the lease is released.
    pub fn report(&self, trouble: KeyTrouble) {
        self.pool.report(self.index, trouble);
    }

    /// Keeps the slot's lease alive in a shared ledger.
    pub async fn renew(&self) {
        if let Err(e) = self.pool.ledger.renew(self.key_id(), &self.slot).await {
            tracing::warn!(key = %self.key_id(), error = %e, "could not renew a slot lease");
        }
    }

    /// Gives the slot back and wakes the queue.
    pub async fn release(mut self) {
        self.released = true;
        let pool = self.pool.clone();
        pool.give_back(self.index, self.class, &self.slot).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (pool, index, class, slot) = (self.pool.clone(), self.index, self.class, self.slot.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.pool.tracker.spawn_on(async move { pool.give_back(index, class, &slot).await }, &handle);
            }
            // No runtime: the process is ending and its counts with it.
            Err(_) => tracing::debug!("a lease was dropped outside the runtime"),
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({}, {:?})", self.key_id(), self.class)
    }
}

impl KeyPool {
    pub fn new(
        settings: CapacitySettings,
        ledger: Arc<dyn SlotLedger>,
        tracker: TaskTracker,
    ) -> Arc<KeyPool> {
        let n = settings.keys.len();
        Arc::new(KeyPool {
            budgets: settings.keys.clone(),
            settings,
            ledger,
            health: Mutex::new(vec![Health::Usable; n]),
            held: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            queue: Queue::default(),
            tracker,
            closed: AtomicBool::new(false),
        })
    }

    fn health(&self) -> MutexGuard<'_, Vec<Health>> {
        // Each entry is replaced whole, so a poisoned lock is still consistent.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slots this process holds across all keys.
    /// Slots this process holds per key, by stable key id.
    pub fn in_use_by_key(&self) -> Vec<(String, usize)> {
        self.budgets
            .iter()
            .zip(&self.held)
            .map(|(budget, held)| (budget.id.as_str().to_owned(), held.load(Ordering::SeqCst)))
            .collect()
    }

    pub fn in_use(&self) -> usize {
        self.held.iter().map(|h| h.load(Ordering::SeqCst)).sum()
    }

    /// Keys in the pool, usable or not.
    pub fn key_count(&self) -> usize {
        self.budgets.len()
    }

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Refuses new and waiting jobs from now on (shutdown); leases already held are unaffected.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.queue.wake_all();
    }

    /// Wakes the head of the queue: a slot may have freed elsewhere (another replica).
    pub fn wake(&self) {
        self.queue.wake_turns();
    }

    /// Takes a slot on the key with the most free capacity for `class`, waiting in the FIFO queue
    /// when none is free. Fails at once when no key could ever take the job, or when the queue is
    /// full; fails after `queue_wait` in the queue.
    pub async fn acquire(self: &Arc<Self>, class: SlotClass) -> Result<Lease, CapacityError> {
        self.check_usable()?;
        // Nobody of this class waits: take a free slot straight away. Joining the queue only to
        // leave it would make a burst pass through one at a time, and count against `queue_max`.
        if !self.queue.has_waiter(class)
            && let Some(lease) = self.try_reserve(class).await
        {
            return Ok(lease);
        }
        let ticket = self.queue.join(class, self.settings.queue_max).ok_or(CapacityError::QueueFull)?;
        let give_up = Instant::now() + self.settings.queue_wait;
        loop {
            if ticket.is_turn()
                && let Some(lease) = self.try_reserve(class).await
            {
                return Ok(lease);
            }
            if Instant::now() >= give_up {
                return Err(CapacityError::QueueTimeout(self.settings.queue_wait));
            }
            // A key coming back from its rest frees capacity without any release.
            let wake_at = self.next_rest_end().map_or(give_up, |t| t.min(give_up));
            tokio::select! {
                () = ticket.woken() => {}
                () = sleep_until(wake_at) => {}
            }
            self.check_usable()?;
        }
    }

    /// One pass over the usable keys, most free capacity first.
    async fn try_reserve(self: &Arc<Self>, class: SlotClass) -> Option<Lease> {
        let mut candidates: Vec<(usize, usize)> = {
            let now = Instant::now();
            let mut health = self.health();
            (0..self.budgets.len())
                .filter(|&i| match health[i] {
                    Health::Usable => true,
                    Health::Revoked => false,
                    Health::Resting { until, .. } if until > now => false,
                    Health::Resting { .. } => {
                        health[i] = Health::Usable;
                        true
                    }
                })
                .map(|i| (i, self.budgets[i].tasks.saturating_sub(self.held[i].load(Ordering::SeqCst))))
                .collect()
        };
        candidates.sort_by_key(|c| std::cmp::Reverse(c.1));
        for (index, _) in candidates {
            match self.ledger.reserve(&self.budgets[index], class).await {
                Ok(Some(slot)) => {
                    self.held[index].fetch_add(1, Ordering::SeqCst);
                    return Some(Lease { pool: self.clone(), index, class, slot, released: false });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(key = %self.budgets[index].id, error = %e, "slot ledger failed"),
            }
        }
        None
    }

    async fn give_back(&self, index: usize, class: SlotClass, slot: &SlotId) {
        if let Err(e) = self.ledger.release(&self.budgets[index].id, class, slot).await {
            tracing::warn!(key = %self.budgets[index].id, error = %e, "could not release a slot");
        }
        self.held[index].fetch_sub(1, Ordering::SeqCst);
        self.queue.wake_turns();
    }

    /// The earliest instant a resting key becomes usable again.
    fn next_rest_end(&self) -> Option<Instant> {
        let now = Instant::now();
        self.health()
            .iter()
            .filter_map(|h| match h {
                Health::Resting { until, .. } if *until > now => Some(*until),
                Health::Resting { .. } | Health::Usable | Health::Revoked => None,
            })
            .min()
    }

    /// An error when no key can take any job now or later without an operator: all revoked, or
    /// all revoked or out of credits.
    fn check_usable(&self) -> Result<(), CapacityError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CapacityError::ShuttingDown);
        }
        let now = Instant::now();
        let health = self.health();
        let revoked = health.iter().filter(|h| **h == Health::Revoked).count();
        if self.budgets.is_empty() || revoked == self.budgets.len() {
            return Err(CapacityError::NoUsableKey);
        }
        let broke = health
            .iter()
            .filter(|h| matches!(h, Health::Resting { until, out_of_credits: true } if *until > now))
            .count();
        if revoked + broke == self.budgets.len() {
            return Err(CapacityError::OutOfCredits { retry_after: self.settings.credit_cooldown });
        }
        Ok(())
    }

    fn report(&self, index: usize, trouble: KeyTrouble) {
        let id = &self.budgets[index].id;
        let now = Instant::now();
        let mut health = self.health();
        match trouble {
            KeyTrouble::Revoked => {
                if health[index] != Health::Revoked {
                    tracing::error!(key = %id, "BFL refused key {id}; it is out of the pool");
                }
                health[index] = Health::Revoked;
            }
            KeyTrouble::OutOfCredits => {
                tracing::warn!(key = %id, "BFL key {id} is out of credits; resting it");
                let until = now + self.settings.credit_cooldown;
                health[index] = Health::Resting { until, out_of_credits: true };
            }
            KeyTrouble::Busy(backoff) => {
                tracing::warn!(key = %id, "BFL said key {id} is at capacity; backing off");
                // However long BFL asks for, one answer cannot bench a key for long.
                let until = now + backoff.min(MAX_BUSY_REST);
                health[index] = Health::Resting { until, out_of_credits: false };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::capacity::LocalLedger;

    fn pool(tasks: usize, kontext_max: usize, keys: usize) -> Arc<KeyPool> {
        let keys = (0..keys)
            .map(|i| KeyBudget {
                id: KeyId::named(&format!("k{i}")),
                key: SecretString::from(format!("k{i}")),
                tasks,
                kontext_max,
            })
            .collect();
        let settings = CapacitySettings {
            keys,
            queue_max: 10,
            queue_wait: Duration::from_secs(5),
            credit_cooldown: Duration::from_secs(60),
        };
        KeyPool::new(settings, Arc::new(LocalLedger::new()), TaskTracker::new())
    }

    async fn until_queued(pool: &KeyPool, n: usize) {
        while pool.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_job_waiting_on_the_kontext_sub_cap_does_not_block_general_jobs() {
        let pool = pool(3, 1, 1);
        let first = pool.acquire(SlotClass::KontextMax).await.expect("free slot");
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(SlotClass::KontextMax).await.map(|l| l.key_id().clone()) }
        });
        until_queued(&pool, 1).await;
        let general = pool.acquire(SlotClass::General).await.expect("general slot is free");
        assert_eq!(pool.in_use(), 2);
        first.release().await;
        assert_eq!(waiting.await.expect("task").expect("handed the freed slot"), KeyId::named("k0"));
        general.release().await;
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn jobs_spread_to_the_key_with_most_free_capacity_and_avoid_revoked_keys() {
        let pool = pool(2, 1, 2);
        let a = pool.acquire(SlotClass::General).await.expect("slot");
        let b = pool.acquire(SlotClass::General).await.expect("slot");
        assert_ne!(a.key_id(), b.key_id(), "the second job goes to the idle key");
        b.report(KeyTrouble::Revoked);
        b.release().await;
        let c = pool.acquire(SlotClass::General).await.expect("slot");
        assert_eq!(c.key_id(), a.key_id());
        a.release().await;
        c.release().await;
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn all_keys_revoked_or_out_of_credits_fail_at_once() {
        let pool = pool(2, 1, 2);
        let a = pool.acquire(SlotClass::General).await.expect("slot");
        let b = pool.acquire(SlotClass::General).await.expect("slot");
        a.report(KeyTrouble::Revoked);
        b.report(KeyTrouble::OutOfCredits);
        a.release().await;
        b.release().await;
        let err = pool.acquire(SlotClass::General).await.expect_err("no key can take it");
        assert!(matches!(err, CapacityError::OutOfCredits { .. }));
    }

    /// With time paused, a wake-up that needed a timer would move the clock: it stays put.
    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_wakes_the_oldest_waiter_at_once_and_only_it() {
        let pool = pool(1, 1, 1);
        let held = pool.acquire(SlotClass::General).await.expect("slot");
        let mut waiters = Vec::new();
        for n in 0..3 {
            let waiting = pool.clone();
            waiters.push(tokio::spawn(async move {
                let lease = waiting.acquire(SlotClass::General).await.expect("a slot in time");
                (n, lease)
            }));
            until_queued(&pool, n + 1).await;
        }
        let before = Instant::now();
        held.release().await;
        let (n, lease) = waiters.remove(0).await.expect("task");
        assert_eq!(n, 0, "the oldest waiter is served first");
        assert_eq!(Instant::now(), before, "woken by the release, not by a timer");
        assert_eq!(pool.queued(), 2, "the others still wait");
        assert_eq!(pool.in_use(), 1);
        lease.release().await;
        let (n, lease) = waiters.remove(0).await.expect("task");
        assert_eq!((n, Instant::now()), (1, before));
        lease.release().await;
        let (_, lease) = waiters.remove(0).await.expect("task");
        lease.release().await;
        assert_eq!((pool.in_use(), pool.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_free_slot_is_taken_without_queueing_even_when_the_queue_is_full() {
        let keys =
            vec![KeyBudget { id: KeyId::named("k"), key: SecretString::from("k"), tasks: 3, kontext_max: 1 }];
        let settings = CapacitySettings {
            keys,
            queue_max: 1,
            queue_wait: Duration::from_secs(5),
            credit_cooldown: Duration::from_secs(60),
        };
        let pool = KeyPool::new(settings, Arc::new(LocalLedger::new()), TaskTracker::new());
        let kontext = pool.acquire(SlotClass::KontextMax).await.expect("slot");
        let stuck = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(SlotClass::KontextMax).await.map(|l| l.key_id().clone()) }
        });
        until_queued(&pool, 1).await;
        // The queue is full (one kontext-max job waits on its sub-cap), yet a general slot is free.
        let general = pool.acquire(SlotClass::General).await.expect("a free general slot, not a full queue");
        kontext.release().await;
        assert!(stuck.await.expect("task").is_ok());
        general.release().await;
    }

    #[tokio::test]
    async fn closing_the_pool_refuses_waiting_and_new_jobs_but_keeps_held_leases() {
        let pool = pool(1, 1, 1);
        let held = pool.acquire(SlotClass::General).await.expect("slot");
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(SlotClass::General).await.map(|_| ()) }
        });
        until_queued(&pool, 1).await;
        pool.close();
        assert_eq!(waiting.await.expect("task"), Err(CapacityError::ShuttingDown));
        assert_eq!(pool.acquire(SlotClass::General).await.map(|_| ()), Err(CapacityError::ShuttingDown));
        assert_eq!(pool.in_use(), 1);
        held.release().await;
        assert_eq!((pool.in_use(), pool.queued()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_a_busy_key_ends_its_rest() {
        let pool = pool(1, 1, 1);
        let lease = pool.acquire(SlotClass::General).await.expect("slot");
        lease.report(KeyTrouble::Busy(Duration::from_secs(2)));
        lease.release().await;
        let before = Instant::now();
        let again = pool.acquire(SlotClass::General).await.expect("the key is back after its rest");
        assert_eq!(Instant::now() - before, Duration::from_secs(2));
        again.release().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_a_long_wait_times_out() {
        let pool = pool(1, 1, 1);
        let held = pool.acquire(SlotClass::General).await.expect("slot");
        let err = pool.acquire(SlotClass::General).await.expect_err("no slot within queue_wait");
        assert_eq!(err, CapacityError::QueueTimeout(Duration::from_secs(5)));
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let pool = pool.clone();
            waiting.push(tokio::spawn(async move { pool.acquire(SlotClass::General).await.map(|_| ()) }));
        }
        until_queued(&pool, 10).await;
        assert_eq!(pool.acquire(SlotClass::General).await.expect_err("full"), CapacityError::QueueFull);
        held.release().await;
        for w in waiting {
            drop(w.await);
        }
    }
}
