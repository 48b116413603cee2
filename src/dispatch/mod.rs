//! The dispatcher: takes a slot on a key, submits (with retries, moving to another key when one is
//! refused), polls until the task is terminal or the model's deadline passes, and reports where the
//! image is. Each job runs in its own task that holds its slot until BFL's task is over, so a
//! client that disconnects never makes the slot count drift from BFL's.

mod keys;
mod ledger;
mod outcome;
mod retry;
mod schedule;

pub use keys::{KeyBudget, KeyPool, KeyTrouble, Lease, PoolLimits};
pub use ledger::{LocalLedger, SlotLedger};
pub use retry::backoff;
pub use schedule::next_poll;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Url;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_util::task::TaskTracker;

use crate::bfl::{BflClient, BflError, Status, SubmitBody, SubmitReply};
use crate::config::UpstreamSettings;
use crate::error::ApiError;
use crate::job::ImageJob;

/// Where a finished image is.
#[derive(Debug, Clone)]
pub struct Finished {
    pub sample: Url,
    /// BFL's upsampled prompt, when it differs from the client's.
    pub revised_prompt: Option<String>,
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

/// Default back-off for a key BFL called full without saying for how long.
const BUSY_BACKOFF: Duration = Duration::from_secs(2);

fn error_429(retry_after: Option<Duration>) -> BflError {
    BflError::Rejected { status: 429, message: "every key is at capacity".into(), field: None, retry_after }
}

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

    /// Runs `job` to a terminal state. If the caller goes away while the job is still queued, the
    /// job leaves the queue; once submitted, it is followed to its end in the background.
    pub async fn run(&self, job: ImageJob) -> Result<Finished, ApiError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (gone_tx, gone_rx) = oneshot::channel::<()>();
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move { inner.execute(job, reply_tx, gone_rx).await });
        // Dropped with this future: tells a queued job its client has gone.
        let _client = gone_tx;
        reply_rx.await.map_err(|_| {
            tracing::error!("a job ended without an outcome");
            ApiError::Internal
        })?
    }

    /// Downloads a finished image (for `b64_json`), within the allow-list and the size cap.
    pub async fn download(&self, url: &Url) -> Result<Bytes, ApiError> {
        self.inner.client.download(url, self.inner.settings.max_result_bytes).await.map_err(|e| {
            tracing::warn!(error = %e, "result download failed");
            ApiError::Upstream("the finished image could not be fetched from BFL".into())
        })
    }
}

type Reply = oneshot::Sender<Result<Finished, ApiError>>;

/// How polling can end without an image.
enum PollFailure {
    /// BFL's task is over (moderated, failed, lost).
    Terminal(ApiError),
    /// The key stopped working; the task may still run upstream.
    KeyRefused,
}

impl Inner {
    async fn execute(&self, mut job: ImageJob, reply: Reply, client_gone: oneshot::Receiver<()>) {
        let deadline = Instant::now() + job.model.deadline;
        let body = SubmitBody::new(&job);
        // Until BFL has the job, a vanished client cancels it: nobody would receive the image.
        let submitted = tokio::select! {
            result = timeout_at(deadline, self.submit(&job, &body)) => result,
            _ = client_gone => {
                tracing::info!(model = job.model.id, "client left before the job was submitted; dropped");
                return;
            }
        };
        // BFL has the images now (or never will): spooled references can go.
        drop(body);
        job.references.clear();
        let (lease, accepted) = match submitted {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return drop(reply.send(Err(e))),
            Err(_) => {
                let e = ApiError::DeadlineExceeded { deadline: job.model.deadline, accepted: false };
                return drop(reply.send(Err(e)));
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

    /// Polls an accepted task to its end. An error may come with an instant until which the slot
    /// must stay held.
    async fn follow(
        &self,
        lease: &Lease,
        job: &ImageJob,
        accepted: SubmitReply,
        deadline: Instant,
    ) -> Result<Finished, (ApiError, Option<Instant>)> {
        let submitted_at = Instant::now();
        tracing::info!(model = job.model.id, task = %accepted.id, cost = ?accepted.cost, "BFL accepted the job");
        let polling_url = match Url::parse(&accepted.polling_url) {
            Ok(url) if self.settings.allow.permits(&url) => url,
            Ok(url) => {
                tracing::error!(host = ?url.host_str(), "polling_url is off the allow-list; the key is not sent there");
                let e = ApiError::Upstream("BFL returned a polling_url off the allow-list".into());
                return Err((e, Some(deadline)));
            }
            Err(_) => {
                let e = ApiError::Upstream("BFL returned an unusable polling_url".into());
                return Err((e, Some(deadline)));
            }
        };
        match timeout_at(deadline, self.poll(lease, job, &polling_url, submitted_at)).await {
            Ok(Ok((sample, prompt))) => {
                let revised_prompt = prompt.filter(|p| p != job.prompt.as_str());
                Ok(Finished { sample, revised_prompt })
            }
            Ok(Err(PollFailure::Terminal(e))) => Err((e, None)),
            Ok(Err(PollFailure::KeyRefused)) => {
                let e = ApiError::Upstream("BFL refused the gateway's key while the job ran".into());
                Err((e, Some(deadline)))
            }
            Err(_) => {
                Err((ApiError::DeadlineExceeded { deadline: job.model.deadline, accepted: true }, None))
            }
        }
    }

    /// Takes a slot and submits. 5xx answers and failed connections are retried on the same key
    /// (BFL cannot have taken the job); a refused key (401/403), an empty one (402) or a full one
    /// (429) is set aside and the job moves to another key. A broken exchange after the request
    /// went out is not retried: it may have been accepted, and a retry could pay twice.
    async fn submit(&self, job: &ImageJob, body: &SubmitBody) -> Result<(Lease, SubmitReply), ApiError> {
        // A job that every key has called full gives up rather than circling until its deadline.
        let mut busy_answers = 0;
        loop {
            let lease = self.keys.acquire(job.model.slot_class).await?;
            let mut attempt = 0;
            let error = loop {
                let sent = self.client.submit(lease.key(), job.model.path, body).await;
                let error = match sent {
                    Ok(reply) => return Ok((lease, reply)),
                    Err(e) => e,
                };
                let retry_after = match &error {
                    BflError::Rejected { status: 500..=599, retry_after, .. } => *retry_after,
                    BflError::Connect(_) => None,
                    _ => break error,
                };
                if attempt >= self.settings.submit_retries {
                    break error;
                }
                tracing::debug!(error = %error, attempt, "retrying submit");
                sleep(backoff(self.settings.retry_base, attempt, retry_after)).await;
                attempt += 1;
            };
            match error {
                BflError::Rejected { status: 401 | 403, .. } => lease.report(KeyTrouble::Revoked),
                BflError::Rejected { status: 402, .. } => lease.report(KeyTrouble::OutOfCredits),
                BflError::Rejected { status: 429, retry_after, .. } => {
                    busy_answers += 1;
                    lease.report(KeyTrouble::Busy(retry_after.unwrap_or(BUSY_BACKOFF)));
                    if busy_answers >= self.settings.keys.len() {
                        return Err(outcome::submit_failed(error_429(retry_after)));
                    }
                }
                other => return Err(outcome::submit_failed(other)),
            }
        }
    }

    /// Polls until a terminal status; transient failures are polled through (the caller enforces
    /// the deadline).
    async fn poll(
        &self,
        lease: &Lease,
        job: &ImageJob,
        url: &Url,
        submitted_at: Instant,
    ) -> Result<(Url, Option<String>), PollFailure> {
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        sleep_until(submitted_at + expected).await;
        loop {
            let elapsed = submitted_at.elapsed();
            match self.client.poll(lease.key(), url, self.settings.poll_timeout).await.map(|r| r.status()) {
                Ok(Status::Running) => {}
                Ok(Status::Ready { sample, prompt }) => {
                    let sample = Url::parse(&sample).map_err(|_| {
                        PollFailure::Terminal(ApiError::Upstream(
                            "BFL returned an unusable result URL".into(),
                        ))
                    })?;
                    return Ok((sample, prompt));
                }
                Ok(Status::RequestModerated) => {
                    return Err(PollFailure::Terminal(outcome::moderated(true, job.safety_tolerance)));
                }
                Ok(Status::ContentModerated) => {
                    return Err(PollFailure::Terminal(outcome::moderated(false, job.safety_tolerance)));
                }
                Ok(Status::TaskNotFound) if elapsed < self.settings.not_found_grace => {}
                Ok(Status::TaskNotFound) => {
                    return Err(PollFailure::Terminal(ApiError::Upstream(
                        "BFL lost track of the task".into(),
                    )));
                }
                Ok(Status::Error(details)) => {
                    tracing::warn!(%details, "BFL reported an error for the task");
                    return Err(PollFailure::Terminal(ApiError::Upstream(
                        "BFL failed to generate the image".into(),
                    )));
                }
                Ok(Status::Unknown(status)) => {
                    let message = format!("BFL ended the task with unknown status \"{status}\"");
                    return Err(PollFailure::Terminal(ApiError::Upstream(message)));
                }
                Err(BflError::Rejected { status: 401 | 403, .. }) => return Err(PollFailure::KeyRefused),
                Err(e) => tracing::debug!(error = %e, "transient poll failure; polling on"),
            }
            sleep(next_poll(expected, submitted_at.elapsed(), self.settings.poll_interval)).await;
        }
    }
}
