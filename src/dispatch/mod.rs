//! The dispatcher: takes a key, submits (with retries), polls until the task is terminal or the
//! model's deadline passes, and hands back where the image is. Each job runs in its own task, so a
//! client that disconnects does not stop the polling that keeps slot accounting exact.

mod keys;
mod outcome;
mod retry;
mod schedule;

pub use keys::{KeyPool, Lease};
pub use retry::backoff;
pub use schedule::next_poll;

use bytes::Bytes;
use reqwest::Url;
use std::sync::Arc;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_util::task::TaskTracker;

use crate::bfl::{BflClient, BflError, Status, job_body};
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

impl Dispatcher {
    pub fn new(settings: UpstreamSettings) -> Result<Dispatcher, reqwest::Error> {
        let client = BflClient::new(
            settings.base_url.clone(),
            settings.allow.clone(),
            settings.connect_timeout,
            settings.request_timeout,
        )?;
        let keys = KeyPool::new(settings.keys.clone());
        Ok(Dispatcher { inner: Arc::new(Inner { client, keys, settings, tracker: TaskTracker::new() }) })
    }

    /// Jobs still running, including those whose client has gone.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Runs `job` to a terminal state. The work continues in the background if the caller is
    /// dropped, so BFL's task is always followed to its end.
    pub async fn run(&self, job: ImageJob) -> Result<Finished, ApiError> {
        let inner = self.inner.clone();
        let handle = self.inner.tracker.spawn(async move { inner.execute(job).await });
        handle.await.map_err(|e| {
            tracing::error!(error = %e, "job task failed");
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

impl Inner {
    async fn execute(&self, job: ImageJob) -> Result<Finished, ApiError> {
        let deadline = Instant::now() + job.model.deadline;
        let expired = ApiError::DeadlineExceeded { deadline: job.model.deadline, accepted: true };
        let lease = timeout_at(deadline, self.keys.acquire(&job.model))
            .await
            .map_err(|_| ApiError::DeadlineExceeded { deadline: job.model.deadline, accepted: false })??;
        let body = Bytes::from(serde_json::to_vec(&job_body(&job)).map_err(|_| ApiError::Internal)?);
        let submitted =
            timeout_at(deadline, self.submit(&lease, &job, body)).await.map_err(|_| expired.clone())??;
        let submitted_at = Instant::now();
        tracing::info!(model = job.model.id, task = %submitted.id, cost = ?submitted.cost, "BFL accepted the job");
        let polling_url = Url::parse(&submitted.polling_url)
            .map_err(|_| ApiError::Upstream("BFL returned an unusable polling_url".into()))?;
        if !self.settings.allow.permits(&polling_url) {
            tracing::error!(host = ?polling_url.host_str(), "polling_url is off the allow-list; the key is not sent there");
            return Err(ApiError::Upstream("BFL returned a polling_url off the allow-list".into()));
        }
        let result = timeout_at(deadline, self.poll(&lease, &job, &polling_url, submitted_at)).await;
        let finished = result.map_err(|_| expired)??;
        let revised_prompt = finished.1.filter(|p| p != job.prompt.as_str());
        Ok(Finished { sample: finished.0, revised_prompt })
    }

    /// Submits, retrying 5xx answers and failed connections (the two cases where BFL cannot have
    /// taken the job). A broken exchange after the request went out is not retried: it may have
    /// been accepted, and a retry could pay twice.
    async fn submit(
        &self,
        lease: &Lease,
        job: &ImageJob,
        body: Bytes,
    ) -> Result<crate::bfl::SubmitReply, ApiError> {
        let mut attempt = 0;
        loop {
            let error =
                match self.client.submit(&lease.key, job.model.path, reqwest::Body::from(body.clone())).await
                {
                    Ok(reply) => return Ok(reply),
                    Err(e) => e,
                };
            let retry_after = match &error {
                BflError::Rejected { status: 500..=599, retry_after, .. } => *retry_after,
                BflError::Connect(_) => None,
                _ => return Err(outcome::submit_failed(error)),
            };
            if attempt >= self.settings.submit_retries {
                return Err(outcome::submit_failed(error));
            }
            tracing::debug!(error = %error, attempt, "retrying submit");
            sleep(backoff(self.settings.retry_base, attempt, retry_after)).await;
            attempt += 1;
        }
    }

    /// Polls until a terminal status. Transient failures are retried until the deadline (which the
    /// caller enforces).
    async fn poll(
        &self,
        lease: &Lease,
        job: &ImageJob,
        url: &Url,
        submitted_at: Instant,
    ) -> Result<(Url, Option<String>), ApiError> {
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        sleep_until(submitted_at + expected).await;
        loop {
            let elapsed = submitted_at.elapsed();
            match self.client.poll(&lease.key, url).await.map(|r| r.status()) {
                Ok(Status::Running) => {}
                Ok(Status::Ready { sample, prompt }) => {
                    let sample = Url::parse(&sample)
                        .map_err(|_| ApiError::Upstream("BFL returned an unusable result URL".into()))?;
                    return Ok((sample, prompt));
                }
                Ok(Status::RequestModerated) => return Err(outcome::moderated(true, job.safety_tolerance)),
                Ok(Status::ContentModerated) => return Err(outcome::moderated(false, job.safety_tolerance)),
                Ok(Status::TaskNotFound) if elapsed < self.settings.not_found_grace => {}
                Ok(Status::TaskNotFound) => {
                    return Err(ApiError::Upstream("BFL lost track of the task".into()));
                }
                Ok(Status::Error(details)) => {
                    tracing::warn!(%details, "BFL reported an error for the task");
                    return Err(ApiError::Upstream("BFL failed to generate the image".into()));
                }
                Ok(Status::Unknown(status)) => {
                    return Err(ApiError::Upstream(format!(
                        "BFL ended the task with unknown status \"{status}\""
                    )));
                }
                Err(BflError::Rejected { status: 401 | 403, .. }) => {
                    return Err(ApiError::Upstream("BFL refused the gateway's API key while polling".into()));
                }
                Err(e) => tracing::debug!(error = %e, "transient poll failure; polling on"),
            }
            sleep(next_poll(expected, submitted_at.elapsed(), self.settings.poll_interval)).await;
        }
    }
}
