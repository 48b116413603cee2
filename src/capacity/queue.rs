//! The fair FIFO of jobs waiting for a slot. Only the oldest waiter of each slot class tries the
//! ledger (so a kontext-max job stuck on its sub-cap never blocks general jobs); it is woken when a
//! slot is given back or when the waiter ahead of it leaves, never by a fixed tick.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::catalog::SlotClass;

struct Waiter {
    id: u64,
    class: SlotClass,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    waiters: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Default)]
pub(super) struct Queue {
    state: Mutex<State>,
}

/// A place in the queue; leaving (drop) hands the turn to the next waiter of the same class.
pub(super) struct Ticket<'a> {
    queue: &'a Queue,
    id: u64,
    class: SlotClass,
    wake: Arc<Notify>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the deque whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins at the back, or `None` when `max` jobs already wait.
    pub(super) fn join(&self, class: SlotClass, max: usize) -> Option<Ticket<'_>> {
        let mut state = self.lock();
        if state.waiters.len() >= max {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let wake = Arc::new(Notify::new());
        state.waiters.push_back(Waiter { id, class, wake: wake.clone() });
        Some(Ticket { queue: self, id, class, wake })
    }

    /// True when a job of `class` waits.
    pub(super) fn has_waiter(&self, class: SlotClass) -> bool {
        self.lock().waiters.iter().any(|w| w.class == class)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Wakes every waiter (the pool is closing).
    pub(super) fn wake_all(&self) {
        for w in &self.lock().waiters {
            w.wake.notify_one();
        }
    }

    /// Wakes the oldest waiter of every class: capacity may have come back.
    pub(super) fn wake_turns(&self) {
        let state = self.lock();
        for class in [SlotClass::General, SlotClass::KontextMax] {
            if let Some(w) = state.waiters.iter().find(|w| w.class == class) {
                w.wake.notify_one();
            }
        }
    }
}

impl Ticket<'_> {
    /// True while this is the oldest waiter of its class.
    pub(super) fn is_turn(&self) -> bool {
        let state = self.queue.lock();
        state.waiters.iter().find(|w| w.class == self.class).is_some_and(|w| w.id == self.id)
    }

    /// Resolves when the queue wakes this waiter (a wake-up sent meanwhile is not lost).
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        let Some(pos) = state.waiters.iter().position(|w| w.id == self.id) else { return };
        let was_turn = !state.waiters.iter().take(pos).any(|w| w.class == self.class);
        state.waiters.remove(pos);
        if was_turn && let Some(next) = state.waiters.iter().find(|w| w.class == self.class) {
            // The next job of this class tries now: more than one slot may be free.
            next.wake.notify_one();
        }
    }
}
