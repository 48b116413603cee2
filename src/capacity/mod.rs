//! Upstream capacity: which BFL key runs a job, how many tasks each key may run, the fair queue of
//! jobs waiting for a slot, and key health.
//!
//! A `Lease` is one upstream task slot on one key. The dispatcher gives it back with
//! `Lease::release` once BFL's task is terminal. Counting lives behind `SlotLedger`, keyed by the
//! key's stable `KeyId`, so replicas can share one ledger without the pool or dispatcher changing.

mod keys;
mod ledger;
mod pool;
mod queue;
mod shared;

pub use keys::{KeyBudget, KeyId};
pub use ledger::{LedgerError, LocalLedger, SlotId, SlotLedger};
pub use pool::{KeyPool, KeyTrouble, Lease};
pub use shared::{RedisLedger, shared_count};

use std::time::Duration;

/// The keys and the queue in front of them.
#[derive(Debug, Clone)]
pub struct CapacitySettings {
    /// Every key with its slot budget.
    pub keys: Vec<KeyBudget>,
    /// Jobs allowed to wait for a slot at once.
    pub queue_max: usize,
    /// Longest wait for a slot.
    pub queue_wait: Duration,
    /// How long a key answered with 402 (out of credits) is left alone.
    pub credit_cooldown: Duration,
}

/// Why no slot could be had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    #[error("every upstream slot is busy and the queue is full")]
    QueueFull,
    #[error("no upstream slot became free within {} s", .0.as_secs())]
    QueueTimeout(Duration),
    #[error("no usable BFL key: every key was refused")]
    NoUsableKey,
    #[error("every usable BFL key is out of credits")]
    OutOfCredits { retry_after: Duration },
    /// The gateway is shutting down and takes no new upstream work.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}
