//! Building a gateway from `Settings`: the catalog with its overrides, the BFL client, the key
//! pool with its ledger, the job store, delivery (with its image store and the sweep of old
//! images) and the dispatcher, wired into one `AppState`.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::batch::{Batches, SharedBatches};
use crate::bfl::BflClient;
use crate::capacity::{KeyPool, LocalLedger, RedisLedger, SlotLedger};
use crate::catalog::{Catalog, CatalogError};
use crate::clients::Clients;
use crate::config::Settings;
use crate::coordination::{Redis, RedisError, SharedHolds};
use crate::delivery::{Delivery, StoreError};
use crate::dispatch::{Dispatcher, WebhookForwarder};
use crate::records::MemoryJobStore;
use crate::state::{AppState, Parts};
use crate::telemetry;
use crate::upload::Uploads;
use crate::usage::{JournalError, Usage};
use crate::webhooks::WebhookSender;

/// Why the gateway cannot be built from valid-looking settings.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Catalog(#[from] CatalogError),
    #[error("configuration: server.default_model: `{0}` is not in the catalog")]
    DefaultModel(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("uploads.spool_dir: {0}")]
    Spool(std::io::Error),
    #[error("configuration: clients: `{client}` lists the model `{model}`, which is not in the catalog")]
    ClientModel { client: String, model: String },
    #[error("{0}")]
    Usage(#[from] JournalError),
    #[error("coordination: {0}")]
    Coordination(#[from] RedisError),
    #[error("delivery.store: {0}")]
    Store(#[from] StoreError),
}

/// Everything the gateway shares, built from `settings`.
pub fn build(settings: Settings) -> Result<AppState, StartupError> {
    let catalog = Catalog::new(&settings.models)?.with_aliases(&settings.aliases)?;
    if catalog.get(&settings.server.default_model).is_none() {
        return Err(StartupError::DefaultModel(settings.server.default_model));
    }
    let uploads = Uploads::start(settings.uploads).map_err(StartupError::Spool)?;
    let client = BflClient::new(&settings.upstream)?;
    telemetry::metrics::install();
    let tracker = TaskTracker::new();
    let redis = match &settings.coordination {
        Some(coordination) => Some(Redis::open(&coordination.redis_url)?),
        None => None,
    };
    let holds = match (&settings.coordination, &redis) {
        (Some(coordination), Some(redis)) => Some(SharedHolds::start(redis.clone(), coordination.lease)),
        _ => None,
    };
    let shared = match (settings.coordination, &redis) {
        (Some(coordination), Some(redis)) => Some(RedisLedger::new(coordination, redis.clone())),
        _ => None,
    };
    let ledger: Arc<dyn SlotLedger> = match &shared {
        Some(shared) => shared.clone(),
        None => Arc::new(LocalLedger::new()),
    };
    let pool = KeyPool::new(settings.capacity, ledger, tracker.clone());
    if let Some(shared) = &shared {
        let waiters = Arc::downgrade(&pool);
        shared.start(move || {
            if let Some(pool) = waiters.upgrade() {
                pool.wake();
            }
        });
    }
    let store = Arc::new(MemoryJobStore::new(settings.jobs));
    // Deliveries run on the jobs' tracker, so shutdown gives them the same grace.
    let webhooks = WebhookSender::new(settings.webhooks, tracker.clone())?;
    let delivery = Delivery::new(client.clone(), settings.delivery)?;
    delivery.start_sweeping();
    let dispatcher = Dispatcher::new(client, pool, store, settings.dispatch, tracker, delivery.clone());
    for client in &settings.clients.clients {
        for model in client.models.iter().flatten() {
            if catalog.get(model).is_none() {
                return Err(StartupError::ClientModel { client: client.id.clone(), model: model.clone() });
            }
        }
    }
    let limits = redis.clone().zip(holds.clone());
    let clients = Clients::new(&settings.clients, limits.clone());
    let usage = Usage::open(&settings.usage, limits)?;
    let ledger = shared.clone();
    let degraded: Arc<dyn Fn() -> bool + Send + Sync> =
        Arc::new(move || ledger.as_ref().is_some_and(|l| l.is_degraded()));
    let webhook_forwarder =
        redis.clone().map(|redis| WebhookForwarder::start(redis, dispatcher.bfl_webhooks().clone()));
    let shared_batches = redis.map(|redis| {
        SharedBatches::new(
            redis,
            usage.clone(),
            settings.batches.result_ttl,
            settings.batches.idempotency_ttl,
            dispatcher.tracker().clone(),
            degraded,
        )
    });
    let batches = Batches::new(settings.batches);
    Ok(AppState::from_parts(Parts {
        server: settings.server,
        uploads,
        catalog,
        dispatcher,
        delivery,
        batches,
        job_rules: settings.job_rules,
        clients,
        usage,
        webhooks,
        shared_ledger: shared,
        shared_batches,
        shared_holds: holds,
        webhook_forwarder,
    }))
}
