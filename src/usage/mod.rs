//! Usage and cost: every delivered image is billed to its client and model at the model's price
//! (the catalog's, or `[models.<id>] price_usd`), with BFL's own cost of the task beside it when
//! its submit reply said (credits; 1 credit = $0.01). Failures are counted by kind and not billed.
//! Each entry is one structured `usage` log event and one line appended to the journal
//! (`usage.path`), which is replayed at start-up, so usage survives a restart. Budgets
//! (`[[clients]] budget_usd` over a day or a month, UTC) are checked against what was billed in
//! the period plus what requests in flight may still cost.

mod journal;
mod period;
mod shared;

pub use journal::JournalError;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clients::{Budget, Caller, Period};
use crate::coordination::{Hold, InUse, Limit, Redis, SharedHolds};
use crate::error::ApiError;
use crate::telemetry::metrics;

use journal::Journal;
use shared::SharedUsage;

#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// The journal file; `None`: usage is kept in memory only.
    pub path: Option<PathBuf>,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    Billed {
        at: u64,
        client: String,
        model: String,
        price_usd: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream_cost_usd: Option<f64>,
    },
    Failed {
        at: u64,
        client: String,
        model: String,
        kind: String,
    },
}

/// Totals for one client and model.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub images: u64,
    pub price_usd: f64,
    pub upstream_cost_usd: f64,
    pub failures: BTreeMap<String, u64>,
}

/// One row of `/v1/usage`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub client_id: String,
    pub model: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Totals are kept per hour, so `since` selects whole hours.
const BUCKET_SECS: u64 = 3600;

#[derive(Default)]
struct Ledger {
    /// (hour start, client, model) → totals.
    buckets: BTreeMap<(u64, String, String), Totals>,
    /// What requests in flight may still cost, per client.
    pending: HashMap<String, f64>,
}

#[derive(Clone)]
pub struct Usage {
    ledger: Arc<Mutex<Ledger>>,
    journal: Option<Arc<Journal>>,
    /// With Redis: the cluster's totals, which `/v1/usage` answers from.
    shared: Option<Arc<SharedUsage>>,
    /// With Redis: budgets held across replicas.
    holds: Option<Arc<SharedHolds>>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Usage {
    /// Opens (and replays) the journal, if there is one.
    /// `shared`: Redis, when replicas keep cluster-wide totals (and hold budgets) there.
    pub fn open(
        settings: &UsageSettings,
        shared: Option<(Arc<Redis>, Arc<SharedHolds>)>,
    ) -> Result<Usage, JournalError> {
        let mut ledger = Ledger::default();
        let journal = match &settings.path {
            Some(path) => {
                let (journal, entries) = Journal::open(path)?;
                for entry in entries {
                    ledger.apply(&entry);
                }
                Some(Arc::new(journal))
            }
            None => None,
        };
        let (shared, holds) = match shared {
            Some((redis, holds)) => (Some(Arc::new(SharedUsage::start(redis))), Some(holds)),
            None => (None, None),
        };
        Ok(Usage { ledger: Arc::new(Mutex::new(ledger)), journal, shared, holds })
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Every change is one whole update; a poisoned lock is usable.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an entry: the ledger, the journal, and one `usage` log event.
    pub fn record(&self, entry: Entry, request_id: &str, task_id: Option<&str>, megapixels: Option<f64>) {
        match &entry {
            Entry::Billed { client, model, price_usd, upstream_cost_usd, .. } => {
                metrics::billed(model, client, *price_usd);
                tracing::info!(
                    target: "usage", request_id, client, model, megapixels, price_usd, upstream_cost_usd, task_id,
                    "usage: image billed"
                );
            }
            Entry::Failed { client, model, kind, .. } => {
                tracing::info!(target: "usage", request_id, client, model, kind, task_id, "usage: image failed, not billed")
            }
        }
        self.lock().apply(&entry);
        if let Some(journal) = &self.journal {
            journal.append(&entry);
        }
        if let Some(shared) = &self.shared {
            shared.add(entry);
        }
    }

    /// Rows per client and model, for entries at or after `since` (rounded down to the hour),
    /// sorted by client then model: the cluster's with Redis (this replica's own when Redis does
    /// not answer), else this process's.
    pub async fn rows(&self, since: u64) -> Vec<Row> {
        if let Some(shared) = &self.shared {
            match shared.rows(since - since % BUCKET_SECS).await {
                Ok(rows) => return rows,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster usage unavailable; answering with this replica's")
                }
            }
        }
        self.local_rows(since)
    }

    fn local_rows(&self, since: u64) -> Vec<Row> {
        let from = since - since % BUCKET_SECS;
        let mut rows: BTreeMap<(String, String), Totals> = BTreeMap::new();
        for ((hour, client, model), totals) in self.lock().buckets.iter() {
            if *hour < from {
                continue;
            }
            let row = rows.entry((client.clone(), model.clone())).or_default();
            row.images += totals.images;
            row.price_usd += totals.price_usd;
            row.upstream_cost_usd += totals.upstream_cost_usd;
            for (kind, n) in &totals.failures {
                *row.failures.entry(kind.clone()).or_default() += n;
            }
        }
        rows.into_iter().map(|((client_id, model), totals)| Row { client_id, model, totals }).collect()
    }

    /// Holds `amount` of the client's budget for a request in flight, or 429 `budget_exceeded`
    /// when what it has spent in the period plus what is in flight plus `amount` passes it. With
    /// Redis the budget is the cluster's (what every replica billed and holds); when Redis does not
    /// answer, this replica's own count decides.
    pub async fn reserve(&self, caller: &Caller, amount: f64) -> Result<Option<Reservation>, ApiError> {
        let Some(budget) = caller.budget() else { return Ok(None) };
        let now = now_secs();
        let start = period::start(budget.period, now);
        if let Some(holds) = &self.holds {
            let limit = Limit {
                key: format!("fluxgate:budget:{{{}}}", caller.id()),
                limit: budget.usd,
                base: Some(shared::spent_key(caller.id(), budget.period, start)),
            };
            match holds.take(limit, amount).await {
                Ok(Ok(hold)) => return Ok(Some(Reservation { local: None, _shared: Some(hold) })),
                Ok(Err(InUse(used))) => return Err(over_budget(caller, budget, now, used, amount)),
                Err(e) => tracing::debug!(error = %e, "shared budget unavailable; counting here"),
            }
        }
        let mut ledger = self.lock();
        let spent: f64 = ledger
            .buckets
            .iter()
            .filter(|((hour, client, _), _)| *hour + BUCKET_SECS > start && client == caller.id())
            .map(|(_, t)| t.price_usd)
            .sum();
        let pending = ledger.pending.get(caller.id()).copied().unwrap_or(0.0);
        // A cent's millionth of slack, so sums of prices do not refuse an exact fit.
        if spent + pending + amount > budget.usd + 1e-9 {
            return Err(over_budget(caller, budget, now, spent + pending, amount));
        }
        *ledger.pending.entry(caller.id().to_owned()).or_default() += amount;
        let local = Some((self.clone(), caller.id().to_owned(), amount));
        Ok(Some(Reservation { local, _shared: None }))
    }
}

/// 429 `budget_exceeded`: `used` (spent in the period, and held by requests in flight) plus
/// `amount` passes the client's budget.
fn over_budget(caller: &Caller, budget: Budget, now: u64, used: f64, amount: f64) -> ApiError {
    let retry_after = Duration::from_secs(period::end(budget.period, now).saturating_sub(now).max(1));
    ApiError::ClientLimit {
        code: "budget_exceeded",
        message: format!(
            "client `{}` has spent or holds for requests in flight ${used:.3} of its {} budget of ${:.2}; this request would cost ${amount:.3}",
            caller.id(),
            match budget.period {
                Period::Day => "daily",
                Period::Month => "monthly",
            },
            budget.usd
        ),
        retry_after,
        retry_useful: false,
    }
}

impl Ledger {
    fn apply(&mut self, entry: &Entry) {
        let (at, client, model) = match entry {
            Entry::Billed { at, client, model, .. } | Entry::Failed { at, client, model, .. } => {
                (at, client, model)
            }
        };
        let totals = self.buckets.entry((at - at % BUCKET_SECS, client.clone(), model.clone())).or_default();
        match entry {
            Entry::Billed { price_usd, upstream_cost_usd, .. } => {
                totals.images += 1;
                totals.price_usd += price_usd;
                totals.upstream_cost_usd += upstream_cost_usd.unwrap_or(0.0);
            }
            Entry::Failed { kind, .. } => *totals.failures.entry(kind.clone()).or_default() += 1,
        }
    }
}

/// A share of a client's budget held by a request in flight; given back when dropped (by then
/// what the request cost has been billed).
pub struct Reservation {
    /// Held in this replica's ledger: (usage, client, amount).
    local: Option<(Usage, String, f64)>,
    /// Held in Redis, for the cluster.
    _shared: Option<Hold>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some((usage, client, amount)) = self.local.take() else { return };
        let mut ledger = usage.lock();
        if let Some(pending) = ledger.pending.get_mut(&client) {
            *pending = (*pending - amount).max(0.0);
        }
    }
}

/// The time now, in unix seconds, for entries.
pub fn timestamp() -> u64 {
    now_secs()
}
