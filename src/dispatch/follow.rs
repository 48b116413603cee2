//! Following an accepted task: polls its `polling_url` (only if it is on the allow-list) until a
//! terminal status or the deadline. Transient poll failures are polled through.

use reqwest::Url;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::bfl::{BflError, Status, SubmitReply};
use crate::error::ApiError;
use crate::job::ImageJob;

use super::outcome;
use super::{Finished, Inner, KeyTrouble, Lease, next_poll};

/// How polling can end without an image.
enum PollFailure {
    /// BFL's task is over (moderated, failed, lost).
    Terminal(ApiError),
    /// The key stopped working; the task may still run upstream.
    KeyRefused,
}

impl Inner {
    /// Polls an accepted task to its end. An error may come with an instant until which the slot
    /// must stay held.
    pub(super) async fn follow(
        &self,
        lease: &Lease,
        job: &ImageJob,
        accepted: SubmitReply,
        deadline: Instant,
    ) -> Result<Finished, (ApiError, Option<Instant>)> {
        let submitted_at = Instant::now();
        tracing::debug!(model = job.model.id, task = %accepted.id, cost = ?accepted.cost, "BFL accepted the job");
        let polling_url = match Url::parse(&accepted.polling_url) {
            Ok(url) if self.settings.allow.permits(&url) => url,
            Ok(url) => {
                tracing::error!(host = ?url.host_str(), "polling_url is off the allow-list; the key is not sent there");
                let e = ApiError::UpstreamAfterSubmit("BFL returned a polling_url off the allow-list".into());
                return Err((e, Some(deadline)));
            }
            Err(_) => {
                let e = ApiError::UpstreamAfterSubmit("BFL returned an unusable polling_url".into());
                return Err((e, Some(deadline)));
            }
        };
        match timeout_at(deadline, self.poll(lease, job, &polling_url, submitted_at)).await {
            Ok(Ok((sample, prompt))) => {
                tracing::debug!(model = job.model.id, price_usd = job.model.price_usd, "image ready");
                let revised_prompt = prompt.filter(|p| p != job.prompt.as_str());
                Ok(Finished { sample, revised_prompt, deadline, limit: job.model.deadline })
            }
            Ok(Err(PollFailure::Terminal(e))) => Err((e, None)),
            Ok(Err(PollFailure::KeyRefused)) => {
                lease.report(KeyTrouble::Revoked);
                let e =
                    ApiError::UpstreamAfterSubmit("BFL refused the gateway's key while the job ran".into());
                Err((e, Some(deadline)))
            }
            Err(_) => {
                Err((ApiError::DeadlineExceeded { deadline: job.model.deadline, accepted: true }, None))
            }
        }
    }

    async fn poll(
        &self,
        lease: &Lease,
        job: &ImageJob,
        url: &Url,
        submitted_at: Instant,
    ) -> Result<(Url, Option<String>), PollFailure> {
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        let after_submit =
            |message: &str| PollFailure::Terminal(ApiError::UpstreamAfterSubmit(message.to_owned()));
        sleep_until(submitted_at + expected).await;
        loop {
            let elapsed = submitted_at.elapsed();
            match self.client.poll(lease.key(), url, self.settings.poll_timeout).await.map(|r| r.status()) {
                Ok(Status::Running) => {}
                Ok(Status::Ready { sample, prompt }) => {
                    let sample = Url::parse(&sample)
                        .map_err(|_| after_submit("BFL returned an unusable result URL"))?;
                    return Ok((sample, prompt));
                }
                Ok(Status::RequestModerated) => {
                    return Err(PollFailure::Terminal(outcome::moderated(true, job.safety_tolerance)));
                }
                Ok(Status::ContentModerated) => {
                    return Err(PollFailure::Terminal(outcome::moderated(false, job.safety_tolerance)));
                }
                Ok(Status::TaskNotFound) if elapsed < self.settings.not_found_grace => {}
                Ok(Status::TaskNotFound) => return Err(after_submit("BFL lost track of the task")),
                Ok(Status::Error(details)) => {
                    // BFL does not charge a failed task, so trying again is fair.
                    tracing::warn!(%details, "BFL reported an error for the task");
                    return Err(PollFailure::Terminal(ApiError::Upstream(
                        "BFL failed to generate the image".into(),
                    )));
                }
                Ok(Status::Unknown(status)) => {
                    return Err(after_submit(&format!(
                        "BFL ended the task with unknown status \"{status}\""
                    )));
                }
                Err(BflError::Rejected { status: 401 | 403, .. }) => return Err(PollFailure::KeyRefused),
                Err(e) => tracing::debug!(error = %e, "transient poll failure; polling on"),
            }
            sleep(next_poll(expected, submitted_at.elapsed(), self.settings.poll_interval)).await;
        }
    }
}
