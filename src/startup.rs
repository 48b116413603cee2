//! Building a gateway from `Settings`: the catalog with its overrides, the BFL client, the key
//! pool with its ledger, the job store, delivery (with its image store and the sweep of old
//! images) and the dispatcher, wired into one `AppState`.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::bfl::BflClient;
use crate::capacity::{KeyPool, LocalLedger};
use crate::catalog::{Catalog, CatalogError};
use crate::config::Settings;
use crate::delivery::{Delivery, StoreError};
use crate::dispatch::Dispatcher;
use crate::records::MemoryJobStore;
use crate::state::AppState;
use crate::upload::Uploads;

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
    let tracker = TaskTracker::new();
    let pool = KeyPool::new(settings.capacity, Arc::new(LocalLedger::new()), tracker.clone());
    let store = Arc::new(MemoryJobStore::new(settings.jobs));
    let delivery = Delivery::new(client.clone(), settings.delivery)?;
    delivery.start_sweeping();
    let dispatcher = Dispatcher::new(client, pool, store, settings.dispatch, tracker, delivery.clone());
    Ok(AppState::from_parts(settings.server, uploads, catalog, dispatcher, delivery, settings.job_limits))
}
