//! `AppState`: what every handler shares (built once from `Settings` by `startup`), and the
//! draining flag readiness reports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::batch::{Batches, SharedBatches};
use crate::capacity::RedisLedger;
use crate::catalog::Catalog;
use crate::clients::Clients;
use crate::coordination::SharedHolds;
use crate::delivery::Delivery;
use crate::dispatch::{Dispatcher, WebhookForwarder};
use crate::job::JobRules;
use crate::upload::Uploads;
use crate::usage::Usage;
use crate::webhooks::WebhookSender;

/// The HTTP side: where to listen, who may call, and how shutdown drains.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_json_bytes: usize,
    /// Model used when a request names none.
    pub default_model: String,
    /// After the signal: readiness fails for this long while requests are still served.
    pub drain_delay: Duration,
    /// Then in-flight requests and jobs get this long to finish.
    pub shutdown_grace: Duration,
    /// A connection must complete a request's headers within this long.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long fails with 408.
    pub body_timeout: Duration,
    /// A keep-alive connection with nothing in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Most connections open at once; beyond it new ones wait to be accepted.
    pub max_connections: usize,
    /// `GET /` and `/playground` serve the playground page (404 when off).
    pub playground: bool,
    /// The request's log line carries its prompt (`telemetry.log_prompts`).
    pub log_prompts: bool,
}

/// What a gateway is built from.
pub struct Parts {
    pub server: ServerSettings,
    pub uploads: Uploads,
    pub catalog: Catalog,
    pub dispatcher: Dispatcher,
    pub delivery: Delivery,
    pub batches: Batches,
    pub job_rules: JobRules,
    pub clients: Clients,
    pub usage: Usage,
    pub webhooks: WebhookSender,
    /// The slot ledger shared through Redis, when `coordination.backend = "redis"`.
    pub shared_ledger: Option<Arc<RedisLedger>>,
    /// Async jobs, idempotency keys and BFL webhooks shared through Redis, likewise.
    pub shared_batches: Option<Arc<SharedBatches>>,
    /// Client concurrency and budget holds shared through Redis, likewise.
    pub shared_holds: Option<Arc<SharedHolds>>,
    /// BFL webhooks passed between replicas through Redis, likewise.
    pub webhook_forwarder: Option<Arc<WebhookForwarder>>,
}

#[derive(Clone)]
pub struct AppState {
    pub server: Arc<ServerSettings>,
    pub uploads: Arc<Uploads>,
    pub catalog: Arc<Catalog>,
    pub dispatcher: Dispatcher,
    /// Request rules set by configuration (`jobs.max_n`).
    pub job_rules: JobRules,
    pub delivery: Delivery,
    /// Async jobs and idempotency keys.
    pub batches: Arc<Batches>,
    /// Who may call, with what limits.
    pub clients: Arc<Clients>,
    pub usage: Usage,
    /// Outgoing webhooks (`jobs.webhook_*`), on the dispatcher's tracker.
    pub webhooks: WebhookSender,
    pub shared_ledger: Option<Arc<RedisLedger>>,
    pub shared_batches: Option<Arc<SharedBatches>>,
    pub shared_holds: Option<Arc<SharedHolds>>,
    pub webhook_forwarder: Option<Arc<WebhookForwarder>>,
    draining: Arc<AtomicBool>,
}

impl axum::extract::FromRef<AppState> for crate::openai::JsonLimit {
    fn from_ref(state: &AppState) -> Self {
        crate::openai::JsonLimit(state.server.max_json_bytes)
    }
}

impl AppState {
    /// The state of a gateway built from these parts (`startup` builds them from `Settings`).
    pub fn from_parts(parts: Parts) -> AppState {
        let Parts {
            server,
            uploads,
            catalog,
            dispatcher,
            delivery,
            batches,
            job_rules,
            clients,
            usage,
            webhooks,
            shared_ledger,
            shared_batches,
            shared_holds,
            webhook_forwarder,
        } = parts;
        AppState {
            server: Arc::new(server),
            uploads: Arc::new(uploads),
            catalog: Arc::new(catalog),
            dispatcher,
            job_rules,
            delivery,
            batches: Arc::new(batches),
            clients: Arc::new(clients),
            usage,
            webhooks,
            shared_ledger,
            shared_batches,
            shared_holds,
            webhook_forwarder,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on readiness fails; requests are still served until the listener closes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// True while replicas cannot share slots (Redis does not answer) and this one counts its own.
    pub fn is_degraded(&self) -> bool {
        self.shared_ledger.as_ref().is_some_and(|l| l.is_degraded())
    }
}
