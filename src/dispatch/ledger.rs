//! The slot ledger: how many upstream tasks each key is running. It sits behind `SlotLedger` so
//! replicas can later share one ledger (in Redis) without the key pool or dispatcher changing;
//! `LocalLedger` is the in-process default for a single machine.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::catalog::SlotClass;

use super::KeyBudget;

pub trait SlotLedger: Send + Sync + 'static {
    /// Free slots on key `key` for a job of `class`.
    fn free(&self, key: usize, class: SlotClass, budget: &KeyBudget) -> usize;
    /// Records one more task; false when the budget is already full (a shared ledger may have
    /// been filled by another replica since `free` was read).
    fn take(&self, key: usize, class: SlotClass, budget: &KeyBudget) -> bool;
    /// Records the end of a task taken with `take`.
    fn give_back(&self, key: usize, class: SlotClass);
    /// Tasks recorded across all keys.
    fn in_use(&self) -> usize;
}

/// Counters in this process.
pub struct LocalLedger {
    active: Vec<AtomicUsize>,
    kontext_max: Vec<AtomicUsize>,
}

impl LocalLedger {
    pub fn new(keys: usize) -> LocalLedger {
        LocalLedger {
            active: (0..keys).map(|_| AtomicUsize::new(0)).collect(),
            kontext_max: (0..keys).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

impl SlotLedger for LocalLedger {
    fn free(&self, key: usize, class: SlotClass, budget: &KeyBudget) -> usize {
        let general = budget.tasks.saturating_sub(self.active[key].load(Ordering::SeqCst));
        match class {
            SlotClass::General => general,
            SlotClass::KontextMax => {
                general.min(budget.kontext_max.saturating_sub(self.kontext_max[key].load(Ordering::SeqCst)))
            }
        }
    }

    fn take(&self, key: usize, class: SlotClass, budget: &KeyBudget) -> bool {
        // The key pool calls this under its own lock, so check-then-add cannot race here.
        if self.free(key, class, budget) == 0 {
            return false;
        }
        self.active[key].fetch_add(1, Ordering::SeqCst);
        if class == SlotClass::KontextMax {
            self.kontext_max[key].fetch_add(1, Ordering::SeqCst);
        }
        true
    }

    fn give_back(&self, key: usize, class: SlotClass) {
        let dec = |counter: &AtomicUsize| {
            let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        };
        dec(&self.active[key]);
        if class == SlotClass::KontextMax {
            dec(&self.kontext_max[key]);
        }
    }

    fn in_use(&self) -> usize {
        self.active.iter().map(|a| a.load(Ordering::SeqCst)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn kontext_max_draws_on_both_budgets_and_general_jobs_only_on_one() {
        let budget = KeyBudget { key: SecretString::from("k"), tasks: 3, kontext_max: 1 };
        let ledger = LocalLedger::new(1);
        assert!(ledger.take(0, SlotClass::KontextMax, &budget));
        assert_eq!(ledger.free(0, SlotClass::KontextMax, &budget), 0);
        assert!(!ledger.take(0, SlotClass::KontextMax, &budget));
        assert!(ledger.take(0, SlotClass::General, &budget));
        assert!(ledger.take(0, SlotClass::General, &budget));
        assert!(!ledger.take(0, SlotClass::General, &budget));
        ledger.give_back(0, SlotClass::KontextMax);
        assert_eq!(ledger.in_use(), 2);
        assert_eq!(ledger.free(0, SlotClass::KontextMax, &budget), 1);
    }
}
