//! `AppState`: what every handler shares, built once from `Settings`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalog::Catalog;
use crate::config::Settings;
use crate::dispatch::Dispatcher;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub catalog: Arc<Catalog>,
    pub dispatcher: Dispatcher,
    draining: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("configuration: {0}")]
    Catalog(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl AppState {
    pub fn new(settings: Settings) -> Result<AppState, StateError> {
        let catalog = Catalog::new(&settings.models).map_err(StateError::Catalog)?;
        if catalog.get(&settings.server.default_model).is_none() {
            return Err(StateError::Catalog(format!(
                "server.default_model: `{}` is not in the catalog",
                settings.server.default_model
            )));
        }
        let dispatcher = Dispatcher::new(settings.upstream.clone())?;
        Ok(AppState {
            settings: Arc::new(settings),
            catalog: Arc::new(catalog),
            dispatcher,
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// From now on readiness fails; requests are still served until the listener closes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
