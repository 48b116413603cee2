//! The simulator object: shared state behind one mutex, counters, and the public methods tests
//! use to inspect and steer it.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::signing::Signer;
use super::tasks::{Retention, Table};
use super::{Faults, Received, SimConfig, TaskInfo};

/// A running BFL look-alike; cheap to share as `Arc<Simulator>`.
pub struct Simulator {
    pub(super) cfg: SimConfig,
    pub(super) signer: Signer,
    /// Wall-clock anchor, so unix times in results and URLs follow tokio's (pausable) clock.
    epoch: Instant,
    epoch_unix_ms: u64,
    state: Mutex<State>,
    pub(super) submit_attempts: AtomicUsize,
    pub(super) rejected_429: AtomicUsize,
    pub(super) polls: AtomicUsize,
    pub(super) webhook_client: reqwest::Client,
    /// Scheduled and in-flight webhooks.
    pub(super) webhook_tasks: TaskTracker,
    /// At most `SimConfig::webhook_max_in_flight` webhooks scheduled at once.
    pub(super) webhook_slots: Arc<Semaphore>,
    pub(super) webhooks_sent: AtomicUsize,
    pub(super) webhooks_dropped: AtomicUsize,
    pub(super) webhooks_failed: AtomicUsize,
    pub(super) downloads: AtomicUsize,
}

/// Everything that changes while serving.
pub(super) struct State {
    pub table: Table,
    /// The newest `SimConfig::received_capacity` accepted submits, oldest first.
    pub received: VecDeque<Received>,
    pub revoked: HashSet<String>,
    pub broke: HashSet<String>,
    pub faults: Faults,
    /// Fault draws only, so a fault sequence depends on nothing but the seed and request order.
    pub fault_rng: fastrand::Rng,
    /// Submits accepted so far; feeds per-task jitter, seeds and colours.
    pub seq: u64,
    /// Where `polling_url` and result URLs point; starts as `SimConfig::public_base`.
    pub public_base: Option<String>,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Arc<Simulator> {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let state = State {
            table: Table::new(Retention { result_ttl: cfg.result_ttl, hung_ttl: cfg.hung_task_ttl }),
            received: VecDeque::new(),
            revoked: HashSet::new(),
            broke: HashSet::new(),
            faults: cfg.faults,
            fault_rng: fastrand::Rng::with_seed(cfg.seed),
            seq: 0,
            public_base: cfg.public_base.as_deref().map(trim_base),
        };
        Arc::new(Simulator {
            signer: Signer::new(),
            epoch: Instant::now(),
            epoch_unix_ms: u64::try_from(unix.as_millis()).unwrap_or(u64::MAX),
            state: Mutex::new(state),
            submit_attempts: AtomicUsize::new(0),
            rejected_429: AtomicUsize::new(0),
            polls: AtomicUsize::new(0),
            // Webhooks follow no redirect, as a careful sender would.
            webhook_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            webhook_tasks: TaskTracker::new(),
            webhook_slots: Arc::new(Semaphore::new(cfg.webhook_max_in_flight)),
            webhooks_sent: AtomicUsize::new(0),
            webhooks_dropped: AtomicUsize::new(0),
            webhooks_failed: AtomicUsize::new(0),
            downloads: AtomicUsize::new(0),
            cfg,
        })
    }

    /// Binds `addr` (port 0 allowed), serves in a spawned task, returns the bound address.
    pub async fn spawn(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = self.router();
        // The simulator's server lives outside any gateway request; nothing drains it.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "BFL simulator stopped serving");
            }
        });
        Ok(local)
    }

    /// A poisoned lock only means a panic elsewhere mid-update; the table is still usable.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unix milliseconds of a tokio instant (the start anchor plus the instant's offset from it).
    pub(super) fn unix_ms(&self, t: Instant) -> u64 {
        let since = u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        self.epoch_unix_ms.saturating_add(since)
    }

    /// The accepted submits (200) in order: the newest `SimConfig::received_capacity` of them.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.iter().cloned().collect()
    }

    /// Every POST to `/v1/{model}`, whatever the answer (unknown models included).
    pub fn submit_attempts(&self) -> usize {
        self.submit_attempts.load(Ordering::Relaxed)
    }

    /// Tasks submitted and not yet terminal, all keys.
    pub fn active_tasks(&self) -> usize {
        self.lock().table.active(Instant::now())
    }

    /// The most tasks ever active at once.
    pub fn peak_active(&self) -> usize {
        self.lock().table.peak
    }

    /// Submits refused because a key was at its cap (not `[submit:429]`).
    pub fn rejected_429(&self) -> usize {
        self.rejected_429.load(Ordering::Relaxed)
    }

    /// Every request to `/v1/get_result`, whatever the answer.
    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::Relaxed)
    }

    /// Result images served (200s from the result URLs).
    pub fn downloads(&self) -> usize {
        self.downloads.load(Ordering::Relaxed)
    }

    /// A task still kept (see the crate docs on what is forgotten when), any key.
    pub fn task(&self, id: &str) -> Option<TaskInfo> {
        let mut state = self.lock();
        let t = state.table.get(id, Instant::now())?;
        let never = Duration::from_secs(100 * 365 * 24 * 3600);
        let ready_at = t.ready_at.unwrap_or_else(|| t.submitted.checked_add(never).unwrap_or(t.submitted));
        Some(TaskInfo {
            model_path: format!("/v1/{}", t.model.path),
            key: t.key.clone(),
            submitted_at: t.submitted.into_std(),
            ready_at: ready_at.into_std(),
            polls: t.polls,
            status_when_done: if t.ready_at.is_some() { t.status.clone() } else { "Pending".to_owned() },
        })
    }

    /// Builds later `polling_url`s and result URLs on `base` (`scheme://host:port`), or on the
    /// submit's Host header when `None`. Tasks already accepted keep the base they were given.
    pub fn set_public_base(&self, base: Option<String>) {
        self.lock().public_base = base.as_deref().map(trim_base);
    }

    pub(super) fn public_base(&self) -> Option<String> {
        self.lock().public_base.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    /// Later requests with this key get 403.
    pub fn revoke_key(&self, key: &str) {
        self.lock().revoked.insert(key.to_owned());
    }

    /// While set, submits with this key get 402.
    pub fn set_out_of_credits(&self, key: &str, yes: bool) {
        let mut state = self.lock();
        if yes {
            state.broke.insert(key.to_owned());
        } else {
            state.broke.remove(key);
        }
    }

    /// Whether `key` may use the API at all (the 403 rule).
    pub(super) fn key_ok(&self, key: Option<&str>) -> bool {
        let Some(key) = key.filter(|k| !k.is_empty()) else { return false };
        let known = self.cfg.keys.is_empty() || self.cfg.keys.iter().any(|k| k == key);
        known && !self.lock().revoked.contains(key)
    }
}

fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_owned()
}
