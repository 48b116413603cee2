//! Process-wide byte budgets: spooled reference bytes on disk, JSON-form bodies in memory. A
//! `Charge` takes bytes from its budget as they arrive and gives them all back when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub(super) struct Budget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    used: AtomicU64,
    max: u64,
}

/// The budget has no room for the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exhausted;

impl Budget {
    pub(super) fn new(max: u64) -> Budget {
        Budget(Arc::new(Inner { used: AtomicU64::new(0), max }))
    }

    /// Bytes held right now by every live charge.
    pub(super) fn used(&self) -> u64 {
        self.0.used.load(Ordering::Relaxed)
    }

    /// An empty charge against this budget.
    pub(super) fn charge(&self) -> Charge {
        Charge { budget: self.clone(), held: 0 }
    }
}

/// Bytes held against a budget; all of them go back when the charge is dropped.
#[derive(Debug)]
pub(super) struct Charge {
    budget: Budget,
    held: u64,
}

impl Charge {
    /// Takes `n` more bytes, or none if that would take the budget past its maximum.
    pub(super) fn grow(&mut self, n: u64) -> Result<(), Exhausted> {
        let inner = &self.budget.0;
        inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= inner.max)
            })
            .map_err(|_| Exhausted)?;
        self.held += n;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.0.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}
