//! Following an accepted task: polls its `polling_url` (only if it is on the allow-list) until a
//! terminal status, or until the maximum task lifetime. The model's deadline does not stop it:
//! the client has its 504 by then, but the slot stays held until BFL's task is really over.
//! Transient poll failures are polled through; statuses this version does not know mean running.

use reqwest::Url;
use tokio::time::{Instant, sleep, sleep_until};

use crate::bfl::{Status, SubmitReply, UpstreamError};
use crate::capacity::{KeyTrouble, Lease};
use crate::job::ImageJob;
use crate::records::{Finished, JobFailure, JobStatus};

use super::Inner;
use super::reporter::Reporter;
use super::schedule::next_poll;

/// Most distinct unknown statuses remembered (each is logged once).
const MAX_UNRECOGNIZED: usize = 32;

/// How following a task ended.
pub(super) enum Followed {
    /// BFL's task is over, with or without an image: its slot can go.
    Over(Result<Finished, JobFailure>),
    /// BFL may still run a task we cannot follow: its slot stays held until the deadline.
    Unfollowable(JobFailure),
}

impl Inner {
    pub(super) async fn follow(
        &self,
        lease: &Lease,
        job: &ImageJob,
        accepted: SubmitReply,
        reporter: &Reporter,
    ) -> Followed {
        let submitted_at = Instant::now();
        tracing::debug!(job = %reporter.id(), model = job.model.id, task = %accepted.id, cost = ?accepted.cost, "BFL accepted the job");
        reporter.set(JobStatus::Running { progress: None });
        let polling_url = match Url::parse(&accepted.polling_url) {
            Ok(url) if self.client.allows(&url) => url,
            Ok(url) => {
                tracing::error!(host = ?url.host_str(), "polling_url is off the allow-list; the key is not sent there");
                return Followed::Unfollowable(JobFailure::Unfollowable(
                    "BFL returned a polling_url off the allow-list",
                ));
            }
            Err(_) => {
                return Followed::Unfollowable(JobFailure::Unfollowable(
                    "BFL returned an unusable polling_url",
                ));
            }
        };
        let lifetime = self.settings.max_task_lifetime.max(job.model.deadline);
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        sleep_until(submitted_at + expected).await;
        loop {
            let elapsed = submitted_at.elapsed();
            if elapsed >= lifetime {
                tracing::warn!(job = %reporter.id(), task = %accepted.id, "task outlived the maximum task lifetime; its slot is freed");
                return Followed::Over(Err(JobFailure::DeadlineExceeded {
                    deadline: job.model.deadline,
                    accepted: true,
                }));
            }
            lease.renew().await;
            // Boxed: an HTTP exchange's state exists only while a poll is out, not between polls.
            let polled =
                Box::pin(self.client.poll(lease.key(), &polling_url, self.settings.poll_timeout)).await;
            match polled.map(|r| r.status()) {
                Ok(Status::Running { progress }) => reporter.set(JobStatus::Running { progress }),
                Ok(Status::Unrecognized(status)) => self.note_unrecognized(status),
                Ok(Status::Ready { sample, prompt }) => {
                    let sample = match Url::parse(&sample) {
                        Ok(url) if self.client.allows(&url) => url,
                        Ok(_) => {
                            return Followed::Over(Err(JobFailure::Unfollowable(
                                "BFL returned a result URL off the allow-list",
                            )));
                        }
                        Err(_) => {
                            return Followed::Over(Err(JobFailure::Unfollowable(
                                "BFL returned an unusable result URL",
                            )));
                        }
                    };
                    let revised_prompt = prompt.filter(|p| p != job.prompt.as_str());
                    return Followed::Over(Ok(Finished {
                        sample,
                        revised_prompt,
                        task_id: accepted.id,
                        cost: accepted.cost,
                        stored: None,
                    }));
                }
                Ok(Status::RequestModerated) => {
                    return Followed::Over(Err(JobFailure::Moderated {
                        request: true,
                        safety_tolerance: job.safety_tolerance,
                    }));
                }
                Ok(Status::ContentModerated) => {
                    return Followed::Over(Err(JobFailure::Moderated {
                        request: false,
                        safety_tolerance: job.safety_tolerance,
                    }));
                }
                // BFL may not know a task for a moment after its submit; the grace counts from
                // the first poll, which for slow models comes after the grace itself.
                Ok(Status::TaskNotFound) if elapsed < expected + self.settings.not_found_grace => {}
                // The task may still run upstream: its slot stays held until the deadline.
                Ok(Status::TaskNotFound) => return Followed::Unfollowable(JobFailure::TaskLost),
                Ok(Status::Failed(details)) => return Followed::Over(Err(JobFailure::TaskFailed(details))),
                Err(UpstreamError::KeyRefused) => {
                    lease.report(KeyTrouble::Revoked);
                    return Followed::Unfollowable(JobFailure::Unfollowable(
                        "BFL refused the gateway's key while the job ran",
                    ));
                }
                Err(e) => tracing::debug!(error = %e, "transient poll failure; polling on"),
            }
            sleep(next_poll(expected, submitted_at.elapsed(), self.settings.poll_interval)).await;
        }
    }

    /// A status BFL added after this version: the task still runs; said once per new value.
    fn note_unrecognized(&self, status: String) {
        let mut seen = self.unrecognized.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_UNRECOGNIZED && seen.insert(status.clone()) {
            tracing::warn!(%status, "BFL sent a status this version does not know; treating the task as running");
        }
    }
}
