//! The dispatcher: starts a job in a task of its own and hands back a `JobHandle` to wait on. The
//! job takes a slot (`capacity`), submits (with retries, moving to another key when one is
//! refused), polls until BFL's task is terminal, and records each step in the job store, where
//! its status can be watched. The slot is held until BFL's task is over, so a client that leaves
//! or a deadline that passes never makes the slot count drift below BFL's.
//!
//! A Ready image is re-hosted by the job itself when a store is configured (`delivery.store`),
//! after its slot is given back and before success is reported, so the kept copy exists even
//! when the client has gone; it takes at most what is left of the deadline (minus a margin for
//! the reply), and a failure leaves BFL's URL in the result.
//!
//! Cancellation is only safe before money is at stake: a job whose every handle is dropped while
//! it waits for a slot is dropped, but once a submit has gone out it always runs to its answer.

mod follow;
mod forward;
mod handle;
mod inbox;
mod reporter;
mod schedule;
mod submit;

pub use forward::WebhookForwarder;
pub use handle::JobHandle;
pub use inbox::{BflWebhookSettings, Delivered, WebhookInbox};
pub use schedule::PollSchedule;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::bfl::{BflClient, SubmitBody};
use crate::capacity::KeyPool;
use crate::delivery::Delivery;
use crate::error::ApiError;
use crate::job::ImageJob;
use crate::records::{JobFailure, JobId, JobRecord, JobStatus, JobStore};

use follow::Followed;
use reporter::Reporter;
use schedule::Schedule;
use submit::Admission;

/// Submit retries, the poll loop's timing, and how long a task may be followed.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Extra submit attempts where BFL cannot have taken the job (5xx, connection refused).
    pub submit_retries: u32,
    pub retry_base: Duration,
    /// The steady poll interval, and the unit of the poll budget (`duration / interval + 3`).
    pub poll_interval: Duration,
    /// Learned from observed durations, or the fixed schedule of old (`upstream.poll_schedule`).
    pub poll_schedule: PollSchedule,
    pub poll_timeout: Duration,
    /// How long `Task not found` is tolerated right after a submit.
    pub not_found_grace: Duration,
    /// Scales each model's expected run time (when the first poll goes out).
    pub first_poll_scale: f64,
    /// A task still running after this is given up (its slot freed), whatever BFL says.
    pub max_task_lifetime: Duration,
    /// BFL calls back when a task ends (`upstream.webhook_base_url`); polling slows to a fallback.
    pub bfl_webhooks: Option<BflWebhookSettings>,
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: BflClient,
    pool: Arc<KeyPool>,
    store: Arc<dyn JobStore>,
    settings: DispatchSettings,
    tracker: TaskTracker,
    /// Tokens of jobs waiting for BFL's webhook.
    inbox: Arc<WebhookInbox>,
    /// Re-hosts Ready images when a store is configured.
    delivery: Delivery,
    /// Statuses BFL sent that this version does not know, each logged once (bounded).
    unrecognized: Mutex<HashSet<String>>,
    /// Job tasks running now.
    in_flight: AtomicUsize,
    /// When to poll: what every job of this process taught it.
    schedule: Schedule,
}

/// Counts a job task while it runs, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Dispatcher {
    pub fn new(
        client: BflClient,
        pool: Arc<KeyPool>,
        store: Arc<dyn JobStore>,
        settings: DispatchSettings,
        tracker: TaskTracker,
        delivery: Delivery,
    ) -> Dispatcher {
        let unrecognized = Mutex::new(HashSet::new());
        let inbox = Arc::new(WebhookInbox::new(settings.bfl_webhooks.clone()));
        let in_flight = AtomicUsize::new(0);
        let schedule =
            Schedule::new(settings.poll_schedule, settings.poll_interval, settings.first_poll_scale);
        let inner = Inner {
            client,
            pool,
            store,
            settings,
            tracker,
            inbox,
            delivery,
            unrecognized,
            in_flight,
            schedule,
        };
        Dispatcher { inner: Arc::new(inner) }
    }

    /// Where BFL's webhooks are taken (`POST /v1/bfl/webhooks/{token}`).
    pub fn bfl_webhooks(&self) -> &Arc<WebhookInbox> {
        &self.inner.inbox
    }

    /// Jobs still running, including those whose client has gone.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Upstream slots this process holds right now (one per BFL task not yet terminal).
    pub fn slots_in_use(&self) -> usize {
        self.inner.pool.in_use()
    }

    /// Slots this process holds per key (stable key id), for metrics.
    pub fn slots_by_key(&self) -> Vec<(String, usize)> {
        self.inner.pool.in_use_by_key()
    }

    /// Jobs started and not yet over (queued, submitted or running).
    pub fn jobs_in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Jobs waiting in the queue for a slot.
    pub fn queued(&self) -> usize {
        self.inner.pool.queued()
    }

    /// Shutdown: jobs still waiting for a slot, and new ones, are refused (429, retry elsewhere);
    /// jobs already submitted run on.
    pub fn stop_admitting(&self) {
        self.inner.pool.close();
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// Starts every job of a request, or none: all records are admitted to the store before any
    /// job is spawned, so a request refused part-way has sent nothing to BFL.
    pub fn start_all(&self, jobs: Vec<ImageJob>) -> Result<Vec<JobHandle>, ApiError> {
        let mut admitted = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let id = JobId::new();
            if self.inner.store.insert(JobRecord::new(id.clone(), job.model.id)).is_err() {
                for id in &admitted {
                    self.inner.store.remove(id);
                }
                return Err(JobFailure::StoreFull.into());
            }
            admitted.push(id);
        }
        Ok(jobs.into_iter().zip(admitted).map(|(job, id)| self.spawn(job, id)).collect())
    }

    /// Starts `job` in the background and returns a handle to wait on. Dropping every handle
    /// while the job still waits for a slot drops the job; after its submit it runs to the end.
    pub fn start(&self, job: ImageJob) -> Result<JobHandle, ApiError> {
        let id = JobId::new();
        self.inner
            .store
            .insert(JobRecord::new(id.clone(), job.model.id))
            .map_err(|_| ApiError::from(JobFailure::StoreFull))?;
        Ok(self.spawn(job, id))
    }

    /// Spawns a job whose record is in the store.
    fn spawn(&self, job: ImageJob, id: JobId) -> JobHandle {
        let limit = job.model.deadline;
        let deadline = Instant::now() + limit;
        let (tx, rx) = watch::channel(JobStatus::Queued);
        let reporter = Reporter::new(id.clone(), job.model.id, tx, self.inner.store.clone());
        let abandon = CancellationToken::new();
        let inner = self.inner.clone();
        let cancelled = abandon.clone();
        // A child of the request's span (traces show the job under the request that started it).
        let span = tracing::info_span!("job", job = %id, model = job.model.id);
        self.inner.tracker.spawn(
            async move {
                let _counted = InFlight::enter(&inner.in_flight);
                inner.execute(job, reporter, deadline, cancelled).await;
            }
            .instrument(span),
        );
        JobHandle::new(id, rx, deadline, limit, abandon.drop_guard())
    }
}

impl Inner {
    async fn execute(
        &self,
        mut job: ImageJob,
        reporter: Reporter,
        deadline: Instant,
        abandon: CancellationToken,
    ) {
        // With webhooks on, BFL is told where to call back (a token of this job's own).
        let mut webhook = self.inbox.register();
        let body = match (&webhook, self.inbox.secret()) {
            (Some(registration), Some(secret)) => {
                SubmitBody::new(&job).with_webhook(&registration.url, secret)
            }
            _ => SubmitBody::new(&job),
        };
        // Each stage (and each slot release) is boxed while it runs, so the task's own state
        // between polls (most of a job's life, times ten thousand) is only the stage in
        // progress, not the largest one.
        let admission = Box::pin(self.admit(&job, &body, deadline, &abandon, &reporter)).await;
        // BFL has the images now (or never will): spooled references can go.
        drop(body);
        job.references.clear();
        match admission {
            Admission::Abandoned => {
                tracing::info!(job = %reporter.id(), model = job.model.id, "client left before the job was submitted; dropped");
                reporter.forget();
            }
            Admission::Refused(failure) => reporter.fail(failure),
            Admission::Lost { lease, failure } => {
                reporter.fail(failure);
                // BFL may run a task we cannot see: its slot stays taken until it must be over
                // (and for at least a typical run, should the answer have come late).
                sleep_until(deadline.max(Instant::now() + job.model.expected)).await;
                Box::pin(lease.release()).await;
            }
            Admission::Accepted { lease, reply } => {
                match Box::pin(self.follow(&lease, &job, reply, &reporter, webhook.as_mut())).await {
                    Followed::Over(Ok(mut finished)) => {
                        // BFL's task is over: its slot goes before the image is copied.
                        Box::pin(lease.release()).await;
                        if self.delivery.store().is_some() {
                            let until = rehost_until(deadline);
                            finished.stored = Box::pin(self.delivery.rehost(&finished, until)).await;
                        }
                        reporter.succeed(finished);
                    }
                    Followed::Over(Err(failure)) => {
                        reporter.fail(failure);
                        Box::pin(lease.release()).await;
                    }
                    Followed::Unfollowable(failure) => {
                        reporter.fail(failure);
                        sleep_until(deadline.max(Instant::now() + job.model.expected)).await;
                        Box::pin(lease.release()).await;
                    }
                }
            }
        }
    }
}

/// Time left before the deadline that a waiting client needs for its reply.
const REPLY_MARGIN: Duration = Duration::from_secs(1);
/// How long a re-host may take once the client's deadline has passed (nobody waits then).
const LATE_REHOST: Duration = Duration::from_secs(60);

/// When re-hosting must be over: before the client's deadline, leaving room for the reply;
/// right away when the deadline is too close (the client gets BFL's URL in time); or, once the
/// deadline has passed and the client has its 504, within `LATE_REHOST` (the kept copy is for
/// whoever asks for the job later).
fn rehost_until(deadline: Instant) -> Instant {
    let now = Instant::now();
    if deadline <= now {
        now + LATE_REHOST
    } else {
        deadline.checked_sub(REPLY_MARGIN).filter(|t| *t > now).unwrap_or(now)
    }
}
