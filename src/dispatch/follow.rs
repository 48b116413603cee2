//! Following an accepted task until a terminal status, or until the maximum task lifetime. The
//! model's deadline does not stop it: the client has its 504 by then, but the slot stays held
//! until BFL's task is really over.
//!
//! Two sources say how the task stands, and both go through the same classification (`judge`):
//! polls of its `polling_url` (only if it is on the allow-list), and, with BFL webhooks on, the
//! document BFL posts to the job's webhook URL, which wakes the loop at once. With webhooks on,
//! polling is only a slow fallback (first at twice the expected time, then every
//! `BflWebhookSettings::poll_interval`), so a lost webhook costs latency, never the image.
//! Without webhooks, `schedule` says when each poll goes out, and learns from each Ready.
//! Transient poll failures are polled through; statuses this version does not know mean running.

use std::time::Duration;

use reqwest::Url;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use crate::bfl::{PollReply, Status, SubmitReply, UpstreamError};
use crate::capacity::{KeyTrouble, Lease};
use crate::job::ImageJob;
use crate::records::{Finished, JobFailure, JobStatus};
use crate::telemetry::metrics;

use super::Inner;
use super::inbox::Registration;
use super::reporter::Reporter;

/// Most distinct unknown statuses remembered (each is logged once).
const MAX_UNRECOGNIZED: usize = 32;

/// How following a task ended.
pub(super) enum Followed {
    /// BFL's task is over, with or without an image: its slot can go.
    Over(Result<Finished, JobFailure>),
    /// BFL may still run a task we cannot follow: its slot stays held until the deadline.
    Unfollowable(JobFailure),
}

/// What woke the follow loop.
enum Wake {
    /// Time for a poll.
    Poll,
    /// BFL's webhook brought the task's document.
    Pushed(PollReply),
}

impl Inner {
    pub(super) async fn follow(
        &self,
        lease: &Lease,
        job: &ImageJob,
        accepted: SubmitReply,
        reporter: &Reporter,
        mut webhook: Option<&mut Registration>,
    ) -> Followed {
        let submitted_at = Instant::now();
        tracing::debug!(job = %reporter.id(), model = job.model.id, task = %accepted.id, cost = ?accepted.cost, "BFL accepted the job");
        reporter.set(JobStatus::Running { progress: None });
        let polling_url = match accepted.polling_url.as_deref().map(Url::parse) {
            // A submit that carried a webhook_url is answered without one.
            None => self.client.result_url(&accepted.id),
            Some(Ok(url)) if self.client.allows(&url) => url,
            Some(Ok(url)) => {
                tracing::error!(host = ?url.host_str(), "polling_url is off the allow-list; the key is not sent there");
                return Followed::Unfollowable(JobFailure::Unfollowable(
                    "BFL returned a polling_url off the allow-list",
                ));
            }
            Some(Err(_)) => {
                return Followed::Unfollowable(JobFailure::Unfollowable(
                    "BFL returned an unusable polling_url",
                ));
            }
        };
        let lifetime = self.settings.max_task_lifetime.max(job.model.deadline);
        let expected = job.model.expected.mul_f64(self.settings.first_poll_scale);
        let (band, mut plan) = self.schedule.plan(&job.model, job.size);
        // With webhooks, the first poll waits long enough for BFL's call to come first.
        let fallback =
            self.settings.bfl_webhooks.as_ref().filter(|_| webhook.is_some()).map(|w| w.poll_interval);
        let first_poll = if fallback.is_some() { expected * 2 } else { plan.first() };
        let mut next = submitted_at + first_poll;
        // When the last poll went out: a Ready a poll sees was noticed at most this late.
        let mut previous_poll = submitted_at;
        loop {
            let mut lag = None;
            let wake = match webhook.as_deref_mut() {
                Some(registration) => tokio::select! {
                    () = sleep_until(next) => Wake::Poll,
                    pushed = registration.rx.recv() => match pushed {
                        Some(document) => Wake::Pushed(document),
                        // The inbox holds the sender while the registration lives: not reached.
                        None => {
                            webhook = None;
                            continue;
                        }
                    },
                },
                None => {
                    sleep_until(next).await;
                    Wake::Poll
                }
            };
            let elapsed = submitted_at.elapsed();
            if elapsed >= lifetime {
                tracing::warn!(job = %reporter.id(), task = %accepted.id, "task outlived the maximum task lifetime; its slot is freed");
                return Followed::Over(Err(JobFailure::DeadlineExceeded {
                    deadline: job.model.deadline,
                    accepted: true,
                }));
            }
            let status = match wake {
                Wake::Pushed(document) => {
                    if document.id.as_deref().is_some_and(|id| id != accepted.id) {
                        tracing::warn!(job = %reporter.id(), task = %accepted.id, "a webhook named another task; ignored");
                        continue;
                    }
                    match document.status() {
                        // Only a poll can tell a task is missing.
                        Status::TaskNotFound => continue,
                        status => status,
                    }
                }
                Wake::Poll => {
                    lease.renew().await;
                    let sent = Instant::now();
                    // Boxed: an HTTP exchange's state exists only while a poll is out.
                    let polled = Box::pin(
                        self.client
                            .poll(lease.key(), &polling_url, self.settings.poll_timeout)
                            .instrument(tracing::info_span!("poll")),
                    )
                    .await;
                    let polled = polled.map(|reply| reply.status());
                    metrics::upstream_poll(match &polled {
                        Ok(status) => status.kind(),
                        Err(e) => e.kind(),
                    });
                    lag = Some(sent.duration_since(previous_poll));
                    previous_poll = sent;
                    plan.sent(sent.duration_since(submitted_at));
                    next = match fallback {
                        Some(interval) => Instant::now() + interval,
                        None => {
                            let progress = match &polled {
                                Ok(Status::Running { progress }) => *progress,
                                _ => None,
                            };
                            submitted_at + plan.next(submitted_at.elapsed(), progress)
                        }
                    };
                    match polled {
                        // BFL may not know a task for a moment after its submit; the grace counts
                        // from the first poll, which for slow models comes after the grace itself.
                        Ok(Status::TaskNotFound) if elapsed < first_poll + self.settings.not_found_grace => {
                            continue;
                        }
                        // The task may still run upstream: its slot stays held until the deadline.
                        Ok(Status::TaskNotFound) => return Followed::Unfollowable(JobFailure::TaskLost),
                        Ok(status) => status,
                        Err(UpstreamError::KeyRefused) => {
                            lease.report(KeyTrouble::Revoked);
                            return Followed::Unfollowable(JobFailure::Unfollowable(
                                "BFL refused the gateway's key while the job ran",
                            ));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "transient poll failure; polling on");
                            continue;
                        }
                    }
                }
            };
            if !matches!(status, Status::Running { .. } | Status::Unrecognized(_) | Status::TaskNotFound) {
                metrics::job_duration(job.model.id, submitted_at.elapsed());
                if let Status::Ready { .. } = &status {
                    // A poll saw Ready somewhere after the poll before it; a webhook, at once.
                    let took = match lag {
                        Some(lag) => {
                            metrics::ready_lag(job.model.id, lag);
                            plan.took_when_polled_ready()
                        }
                        None => submitted_at.elapsed(),
                    };
                    self.schedule.observe(band, &plan, took);
                }
            }
            if let Some(mut followed) = self.judge(status, job, &accepted, reporter) {
                if let Followed::Over(Ok(finished)) = &mut followed {
                    finished.upstream = submitted_at.elapsed();
                }
                return followed;
            }
        }
    }

    /// What a status (from a poll or a webhook) means for the job: `None` while it runs. A result
    /// URL must be on the allow-list whichever way it came.
    fn judge(
        &self,
        status: Status,
        job: &ImageJob,
        accepted: &SubmitReply,
        reporter: &Reporter,
    ) -> Option<Followed> {
        match status {
            Status::Running { progress } => {
                reporter.set(JobStatus::Running { progress });
                None
            }
            Status::Unrecognized(status) => {
                self.note_unrecognized(status);
                None
            }
            // Handled by the caller, which knows where the status came from.
            Status::TaskNotFound => None,
            Status::Ready { sample, prompt } => {
                let sample = match Url::parse(&sample) {
                    Ok(url) if self.client.allows(&url) => url,
                    Ok(_) => {
                        return Some(Followed::Over(Err(JobFailure::Unfollowable(
                            "BFL returned a result URL off the allow-list",
                        ))));
                    }
                    Err(_) => {
                        return Some(Followed::Over(Err(JobFailure::Unfollowable(
                            "BFL returned an unusable result URL",
                        ))));
                    }
                };
                let revised_prompt = prompt.filter(|p| p != job.prompt.as_str());
                Some(Followed::Over(Ok(Finished {
                    sample,
                    revised_prompt,
                    task_id: accepted.id.clone(),
                    cost: accepted.cost,
                    upstream: Duration::ZERO,
                    stored: None,
                })))
            }
            Status::RequestModerated => Some(Followed::Over(Err(JobFailure::Moderated {
                request: true,
                safety_tolerance: job.safety_tolerance,
            }))),
            Status::ContentModerated => Some(Followed::Over(Err(JobFailure::Moderated {
                request: false,
                safety_tolerance: job.safety_tolerance,
            }))),
            Status::Failed(details) => Some(Followed::Over(Err(JobFailure::TaskFailed(details)))),
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
