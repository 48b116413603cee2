//! The slot ledger: how many upstream tasks each key is running. It sits behind `SlotLedger`, an
//! async trait keyed by `KeyId`, so replicas can share one ledger (in Redis) with leases that
//! expire on their own; `LocalLedger` is the in-process default for a single machine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::{BoxFuture, FutureExt, ready};

use crate::catalog::SlotClass;

use super::{KeyBudget, KeyId};

/// One taken slot, as the ledger knows it (a shared ledger keeps it as its lease's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotId(pub u64);

/// The ledger could not be reached or could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("slot ledger: {0}")]
pub struct LedgerError(pub String);

pub trait SlotLedger: Send + Sync + 'static {
    /// Takes one slot of `class` on `budget`'s key if its budget allows, atomically; `None` when
    /// the key is full (possibly filled by another replica).
    fn reserve<'a>(
        &'a self,
        budget: &'a KeyBudget,
        class: SlotClass,
    ) -> BoxFuture<'a, Result<Option<SlotId>, LedgerError>>;

    /// Gives back a slot taken with `reserve`.
    fn release<'a>(
        &'a self,
        key: &'a KeyId,
        class: SlotClass,
        slot: &'a SlotId,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Keeps a slot's lease alive while its task runs (a shared ledger lets unrenewed leases of a
    /// dead replica expire).
    fn renew<'a>(&'a self, key: &'a KeyId, slot: &'a SlotId) -> BoxFuture<'a, Result<(), LedgerError>>;
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    general: usize,
    kontext_max: usize,
}

/// Counters in this process. Leases never expire here: a process that dies takes its counts along.
#[derive(Debug, Default)]
pub struct LocalLedger {
    counts: Mutex<HashMap<KeyId, Counts>>,
    next: AtomicU64,
}

impl LocalLedger {
    pub fn new() -> LocalLedger {
        LocalLedger::default()
    }

    /// Slots held on `key` (for tests and diagnostics).
    pub fn held(&self, key: &KeyId) -> usize {
        self.lock().get(key).map_or(0, |c| c.general)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Counts>> {
        // Every update is a single field write, so a poisoned map is still consistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SlotLedger for LocalLedger {
    fn reserve<'a>(
        &'a self,
        budget: &'a KeyBudget,
        class: SlotClass,
    ) -> BoxFuture<'a, Result<Option<SlotId>, LedgerError>> {
        let taken = {
            let mut counts = self.lock();
            let c = counts.entry(budget.id.clone()).or_default();
            let fits = c.general < budget.tasks
                && match class {
                    SlotClass::General => true,
                    SlotClass::KontextMax => c.kontext_max < budget.kontext_max,
                };
            if fits {
                c.general += 1;
                if class == SlotClass::KontextMax {
                    c.kontext_max += 1;
                }
            }
            fits
        };
        let slot = taken.then(|| SlotId(self.next.fetch_add(1, Ordering::Relaxed)));
        ready(Ok(slot)).boxed()
    }

    fn release<'a>(
        &'a self,
        key: &'a KeyId,
        class: SlotClass,
        _slot: &'a SlotId,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        if let Some(c) = self.lock().get_mut(key) {
            c.general = c.general.saturating_sub(1);
            if class == SlotClass::KontextMax {
                c.kontext_max = c.kontext_max.saturating_sub(1);
            }
        }
        ready(Ok(())).boxed()
    }

    fn renew<'a>(&'a self, _key: &'a KeyId, _slot: &'a SlotId) -> BoxFuture<'a, Result<(), LedgerError>> {
        ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[tokio::test]
    async fn kontext_max_draws_on_both_budgets_and_general_jobs_only_on_one() {
        let budget =
            KeyBudget { id: KeyId::named("k"), key: SecretString::from("k"), tasks: 3, kontext_max: 1 };
        let ledger = LocalLedger::new();
        let kontext = ledger.reserve(&budget, SlotClass::KontextMax).await.expect("local").expect("free");
        assert_eq!(ledger.reserve(&budget, SlotClass::KontextMax).await, Ok(None));
        assert!(ledger.reserve(&budget, SlotClass::General).await.expect("local").is_some());
        assert!(ledger.reserve(&budget, SlotClass::General).await.expect("local").is_some());
        assert_eq!(ledger.reserve(&budget, SlotClass::General).await, Ok(None));
        ledger.release(&budget.id, SlotClass::KontextMax, &kontext).await.expect("local");
        assert_eq!(ledger.held(&budget.id), 2);
        assert!(ledger.reserve(&budget, SlotClass::KontextMax).await.expect("local").is_some());
    }
}
