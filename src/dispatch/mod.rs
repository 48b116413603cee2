//! The dispatcher: takes a slot on a key, submits (with retries, moving to another key when one is
//! refused), polls until the task is terminal or the model's deadline passes, and reports where the
//! image is. Each job runs in its own task that holds its slot until BFL's task is over, so a
//! client that disconnects never makes the slot count drift from BFL's.
//!
//! Cancellation is only safe before money is at stake: a job whose client leaves while it waits
//! for a slot is dropped, but once a submit has gone out it always runs to its answer.

mod follow;
mod keys;
mod ledger;
mod outcome;
mod retry;
mod schedule;
mod submit;

pub use keys::{KeyBudget, KeyPool, KeyTrouble, Lease, PoolLimits};
pub use ledger::{LocalLedger, SlotLedger};
use retry::backoff;
use schedule::next_poll;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use reqwest::Url;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::task::TaskTracker;

use crate::bfl::{BflClient, SubmitBody};
use crate::config::UpstreamSettings;
use crate::error::ApiError;
use crate::job::ImageJob;

/// Where a finished image is.
#[derive(Debug, Clone)]
pub struct Finished {
    pub sample: Url,
    /// BFL's upsampled prompt, when it differs from the client's.
    pub revised_prompt: Option<String>,
    /// The job's deadline, which delivery must respect too, and the model's limit it came from.
    pub deadline: Instant,
    pub limit: std::time::Duration,
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: BflClient,
    keys: Arc<KeyPool>,
    settings: UpstreamSettings,
    tracker: TaskTracker,
}

type Reply = oneshot::Sender<Result<Finished, ApiError>>;

impl Dispatcher {
    pub fn new(settings: UpstreamSettings) -> Result<Dispatcher, reqwest::Error> {
        let client = BflClient::new(&settings)?;
        let ledger = Arc::new(LocalLedger::new(settings.keys.len()));
        let keys = KeyPool::new(settings.keys.clone(), settings.pool.clone(), ledger);
        Ok(Dispatcher { inner: Arc::new(Inner { client, keys, settings, tracker: TaskTracker::new() }) })
    }

    /// Jobs still running, including those whose client has gone.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Upstream slots held right now (one per BFL task not yet terminal).
    pub fn slots_in_use(&self) -> usize {
        self.inner.keys.in_use()
    }

    /// Jobs waiting in the queue for a slot.
    pub fn queued(&self) -> usize {
        self.inner.keys.queued()
    }

    /// Runs `job` and answers by its model's deadline at the latest. The job itself goes on in
    /// the background if the caller leaves or the deadline passes, until BFL's task is over.
    pub async fn run(&self, job: ImageJob) -> Result<Finished, ApiError> {
        let limit = job.model.deadline;
        let deadline = Instant::now() + limit;
        let (reply_tx, reply_rx) = oneshot::channel();
        let (gone_tx, gone_rx) = oneshot::channel::<()>();
        let submitted = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let flag = submitted.clone();
        self.inner.tracker.spawn(async move { inner.execute(job, deadline, reply_tx, gone_rx, flag).await });
        // Dropped with this future: tells a job still waiting for a slot that nobody waits for it.
        let _client = gone_tx;
        match timeout_at(deadline, reply_rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => {
                tracing::error!("a job ended without an outcome");
                Err(ApiError::Internal)
            }
            Err(_) => Err(ApiError::DeadlineExceeded {
                deadline: limit,
                accepted: submitted.load(Ordering::SeqCst),
            }),
        }
    }

    /// Downloads a finished image (for `b64_json`), within the allow-list, the size cap and the
    /// job's deadline.
    pub async fn download(&self, finished: &Finished) -> Result<Bytes, ApiError> {
        let fetch = self.inner.client.download(&finished.sample, self.inner.settings.max_result_bytes);
        match timeout_at(finished.deadline, fetch).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "result download failed");
                Err(ApiError::UpstreamAfterSubmit("the finished image could not be fetched from BFL".into()))
            }
            Err(_) => Err(ApiError::DeadlineExceeded { deadline: finished.limit, accepted: true }),
        }
    }
}

impl Inner {
    async fn execute(
        &self,
        mut job: ImageJob,
        deadline: Instant,
        reply: Reply,
        mut client_gone: oneshot::Receiver<()>,
        submitted: Arc<AtomicBool>,
    ) {
        let body = SubmitBody::new(&job);
        let result = self.submit(&job, &body, deadline, &mut client_gone, &submitted).await;
        // BFL has the images now (or never will): spooled references can go.
        drop(body);
        job.references.clear();
        let (lease, accepted) = match result {
            Ok(done) => done,
            Err(Some(e)) => return drop(reply.send(Err(e))),
            Err(None) => {
                tracing::info!(model = job.model.id, "client left before the job was submitted; dropped");
                return;
            }
        };
        match self.follow(&lease, &job, accepted, deadline).await {
            Ok(finished) => drop(reply.send(Ok(finished))),
            Err((e, hold)) => {
                drop(reply.send(Err(e)));
                if let Some(until) = hold {
                    // BFL still runs a task we cannot follow: its slot stays taken until the task
                    // must be over.
                    sleep_until(until).await;
                }
            }
        }
        drop(lease);
    }
}
