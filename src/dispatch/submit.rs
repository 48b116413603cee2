//! Getting a job accepted: a slot on a key, then the submit. Waiting for a slot can be abandoned
//! (every handle gone, no slot in time); a submit that has gone out always runs to its answer.
//!
//! A submit is re-sent only where BFL cannot have created the task: the connection was never made,
//! or BFL refused readably (5xx on the same key; 401/403, 402 and 429 set the key aside and move the
//! job to another). A timeout or reset after sending, or a success that cannot be read, is never
//! re-sent: the job fails as `SubmitLost` and its slot stays held until the deadline.

use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bfl::{SubmitBody, SubmitReply, UpstreamError};
use crate::capacity::{KeyTrouble, Lease};
use crate::job::ImageJob;
use crate::records::{JobFailure, JobStatus};
use crate::telemetry::metrics;

use super::Inner;
use super::reporter::Reporter;
use crate::retry::backoff;

/// Back-off for a key BFL called full without saying for how long.
const BUSY_BACKOFF: Duration = Duration::from_secs(2);

/// How getting a job accepted ended.
pub(super) enum Admission {
    /// BFL took the job; the lease holds its slot.
    Accepted { lease: Lease, reply: SubmitReply },
    /// Nothing reached BFL, or BFL refused readably: no task exists.
    Refused(JobFailure),
    /// The submit's answer was lost: BFL may run a task we cannot see.
    Lost { lease: Lease, failure: JobFailure },
    /// Every handle was dropped while the job waited for a slot; nothing was sent.
    Abandoned,
}

impl Inner {
    pub(super) async fn admit(
        &self,
        job: &ImageJob,
        body: &SubmitBody,
        deadline: Instant,
        abandon: &CancellationToken,
        reporter: &Reporter,
    ) -> Admission {
        // A slot that frees too late to run the job is a 429 now, not a 504 later.
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        let wait_until = deadline - expected.min(job.model.deadline / 2);
        // A job that every key has called full gives up rather than circling until its deadline.
        let mut busy_answers = 0;
        loop {
            let waiting = Instant::now();
            let lease = tokio::select! {
                biased;
                () = abandon.cancelled() => return Admission::Abandoned,
                lease = timeout_at(wait_until, Box::pin(self.pool.acquire(job.model.slot_class).instrument(tracing::info_span!("queue_wait")))) => match lease {
                    Ok(Ok(lease)) => lease,
                    Ok(Err(e)) => return Admission::Refused(JobFailure::Capacity(e)),
                    Err(_) => return Admission::Refused(JobFailure::TooLate),
                },
            };
            metrics::queue_wait(waiting.elapsed());
            if abandon.is_cancelled() {
                // The client left while the slot was being taken: nothing has been sent yet.
                lease.release().await;
                return Admission::Abandoned;
            }
            reporter.set(JobStatus::Submitted);
            let error = match self.send(&lease, job, body, deadline).await {
                Ok(reply) => return Admission::Accepted { lease, reply },
                Err(e) => e,
            };
            if error.submit_may_have_run() {
                return Admission::Lost { lease, failure: JobFailure::SubmitLost(error) };
            }
            match error {
                UpstreamError::KeyRefused => lease.report(KeyTrouble::Revoked),
                UpstreamError::OutOfCredits => lease.report(KeyTrouble::OutOfCredits),
                UpstreamError::Busy { retry_after } => {
                    busy_answers += 1;
                    lease.report(KeyTrouble::Busy(retry_after.unwrap_or(BUSY_BACKOFF)));
                    if busy_answers >= self.pool.key_count() {
                        lease.release().await;
                        return Admission::Refused(JobFailure::Refused(UpstreamError::Busy { retry_after }));
                    }
                }
                UpstreamError::Invalid { .. }
                | UpstreamError::NoSuchEndpoint
                | UpstreamError::Unavailable { .. }
                | UpstreamError::UnexpectedStatus { .. }
                | UpstreamError::Connect(_)
                | UpstreamError::Lost(_)
                | UpstreamError::Unreadable(_)
                | UpstreamError::NotAllowed(_) => {
                    lease.release().await;
                    return Admission::Refused(JobFailure::Refused(error));
                }
            }
            // The key was set aside; this job tries another.
            lease.release().await;
            reporter.set(JobStatus::Queued);
        }
    }

    /// One submit on one key, re-sent only where BFL cannot have taken the job, and never after
    /// the job's deadline (its client has its 504 by then).
    async fn send(
        &self,
        lease: &Lease,
        job: &ImageJob,
        body: &SubmitBody,
        deadline: Instant,
    ) -> Result<SubmitReply, UpstreamError> {
        let path = job.model.path();
        let mut attempt = 0;
        loop {
            let error = match Box::pin(
                self.client
                    .submit(lease.key(), &path, body)
                    .instrument(tracing::info_span!("submit", attempt)),
            )
            .await
            {
                Ok(reply) => {
                    metrics::upstream_submit("accepted");
                    return Ok(reply);
                }
                Err(e) => {
                    metrics::upstream_submit(e.kind());
                    e
                }
            };
            let retry_after = match &error {
                UpstreamError::Unavailable { retry_after, .. } => *retry_after,
                UpstreamError::Connect(_) => None,
                UpstreamError::Invalid { .. }
                | UpstreamError::KeyRefused
                | UpstreamError::OutOfCredits
                | UpstreamError::NoSuchEndpoint
                | UpstreamError::Busy { .. }
                | UpstreamError::UnexpectedStatus { .. }
                | UpstreamError::Lost(_)
                | UpstreamError::Unreadable(_)
                | UpstreamError::NotAllowed(_) => return Err(error),
            };
            let pause = backoff(self.settings.retry_base, attempt, retry_after);
            if attempt >= self.settings.submit_retries || Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(error = %error, attempt, "retrying submit");
            sleep(pause).await;
            attempt += 1;
        }
    }
}
