//! Getting a job accepted: a slot on a key, then the submit. Waiting for a slot can be abandoned
//! (client gone, no slot in time); a submit that has gone out always runs to its answer, since
//! BFL may have taken it. 5xx answers and failed connections are retried on the same key (BFL
//! cannot have taken the job); a refused key (401/403), an empty one (402) or a full one (429) is
//! set aside and the job moves to another key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout_at};

use crate::bfl::{BflError, SubmitBody, SubmitReply};
use crate::error::ApiError;
use crate::job::ImageJob;

use super::outcome;
use super::{Inner, KeyTrouble, Lease, backoff};

/// Back-off for a key BFL called full without saying for how long.
const BUSY_BACKOFF: Duration = Duration::from_secs(2);

impl Inner {
    /// `Err(None)`: the client left while the job waited for a slot; nothing was sent.
    pub(super) async fn submit(
        &self,
        job: &ImageJob,
        body: &SubmitBody,
        deadline: Instant,
        client_gone: &mut oneshot::Receiver<()>,
        submitted: &AtomicBool,
    ) -> Result<(Lease, SubmitReply), Option<ApiError>> {
        // A slot that frees too late to run the job is a 429 now, not a 504 later.
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        let wait_until = deadline - expected.min(job.model.deadline / 2);
        // A job that every key has called full gives up rather than circling until its deadline.
        let mut busy_answers = 0;
        loop {
            let lease = tokio::select! {
                biased;
                _ = &mut *client_gone => return Err(None),
                lease = timeout_at(wait_until, self.keys.acquire(job.model.slot_class)) => match lease {
                    Ok(Ok(lease)) => lease,
                    Ok(Err(e)) => return Err(Some(e)),
                    Err(_) => return Err(Some(ApiError::Capacity {
                        message: "no upstream slot became free in time for this model's deadline; retry shortly".into(),
                        retry_after: Duration::from_secs(5),
                        retry_useful: true,
                    })),
                },
            };
            submitted.store(true, Ordering::SeqCst);
            let error = match self.send(&lease, job, body).await {
                Ok(reply) => return Ok((lease, reply)),
                Err(e) => e,
            };
            match error {
                BflError::Rejected { status: 401 | 403, .. } => lease.report(KeyTrouble::Revoked),
                BflError::Rejected { status: 402, .. } => lease.report(KeyTrouble::OutOfCredits),
                BflError::Rejected { status: 429, retry_after, .. } => {
                    busy_answers += 1;
                    lease.report(KeyTrouble::Busy(retry_after.unwrap_or(BUSY_BACKOFF)));
                    if busy_answers >= self.settings.keys.len() {
                        let all_busy = BflError::Rejected {
                            status: 429,
                            message: "every key is at capacity".into(),
                            field: None,
                            retry_after,
                        };
                        return Err(Some(outcome::submit_failed(all_busy)));
                    }
                }
                other => return Err(Some(outcome::submit_failed(other))),
            }
        }
    }

    /// One submit on one key, retried where BFL cannot have taken the job.
    async fn send(&self, lease: &Lease, job: &ImageJob, body: &SubmitBody) -> Result<SubmitReply, BflError> {
        let mut attempt = 0;
        loop {
            let error = match self.client.submit(lease.key(), job.model.path, body).await {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let retry_after = match &error {
                BflError::Rejected { status: 500..=599, retry_after, .. } => *retry_after,
                BflError::Connect(_) => None,
                _ => return Err(error),
            };
            if attempt >= self.settings.submit_retries {
                return Err(error);
            }
            tracing::debug!(error = %error, attempt, "retrying submit");
            sleep(backoff(self.settings.retry_base, attempt, retry_after)).await;
            attempt += 1;
        }
    }
}
