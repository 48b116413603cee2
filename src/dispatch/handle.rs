//! `JobHandle`: what a caller holds while a job runs. It waits for the job's end up to the model's
//! deadline; dropping every clone of it before the submit drops the job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::DropGuard;

use crate::error::ApiError;
use crate::records::{Finished, JobFailure, JobId, JobStatus};

#[derive(Clone)]
pub struct JobHandle {
    id: JobId,
    status: watch::Receiver<JobStatus>,
    deadline: Instant,
    limit: Duration,
    /// Cancels the job's wait for a slot when the last clone goes.
    _abandon: Arc<DropGuard>,
}

impl JobHandle {
    pub(super) fn new(
        id: JobId,
        status: watch::Receiver<JobStatus>,
        deadline: Instant,
        limit: Duration,
        abandon: DropGuard,
    ) -> JobHandle {
        JobHandle { id, status, deadline, limit, _abandon: Arc::new(abandon) }
    }

    /// A handle on a job another replica runs, whose statuses `status` brings (from the shared
    /// record); the caller waits the model's deadline `limit` from now.
    pub fn watching(id: JobId, status: watch::Receiver<JobStatus>, limit: Duration) -> JobHandle {
        let abandon = tokio_util::sync::CancellationToken::new().drop_guard();
        JobHandle::new(id, status, Instant::now() + limit, limit, abandon)
    }

    /// The job's statuses as they change.
    pub fn subscribe(&self) -> watch::Receiver<JobStatus> {
        self.status.clone()
    }

    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// When the model's deadline passes for this job.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The status right now.
    pub fn status(&self) -> JobStatus {
        self.status.borrow().clone()
    }

    /// Waits for the job's end, however long it takes (a job task always ends: its task's
    /// lifetime is bounded). A job task gone without a word counts as failed.
    /// The future holds no handle: waiting on it does not keep a job from being abandoned.
    pub fn settled(&self) -> impl Future<Output = JobStatus> + Send + 'static {
        let mut status = self.status.clone();
        async move {
            let ended = status.wait_for(JobStatus::is_terminal).await.map(|s| s.clone());
            ended.unwrap_or(JobStatus::Failed(JobFailure::Unfollowable("the job stopped unexpectedly")))
        }
    }

    /// Waits for the image, or the job's failure, until the model's deadline (504 past it; the
    /// job itself goes on following BFL's task in the background).
    ///
    /// A request that joins the job later (a retry with its `Idempotency-Key`) waits the model's
    /// deadline from when it came, not from when the job began.
    pub async fn outcome(&self) -> Result<Arc<Finished>, ApiError> {
        let now = Instant::now();
        let until = if now < self.deadline { self.deadline } else { now + self.limit };
        let mut status = self.status.clone();
        let ended = timeout_at(until, status.wait_for(JobStatus::is_terminal))
            .await
            .map(|waited| waited.map(|status| status.clone()));
        let status = match ended {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => return Err(ApiError::internal("a job ended without an outcome")),
            Err(_) => {
                let accepted = self.status.borrow().reached_upstream();
                return Err(JobFailure::DeadlineExceeded { deadline: self.limit, accepted }.into());
            }
        };
        match status {
            JobStatus::Succeeded(finished) => Ok(finished),
            JobStatus::Failed(failure) => Err(failure.into()),
            JobStatus::Queued | JobStatus::Submitted | JobStatus::Running { .. } => {
                Err(ApiError::internal("a job reported a running status as its end"))
            }
        }
    }
}
