//! `Reporter`: a running job's voice. Every status change goes to the job store and to whoever
//! watches the job; a failure is logged once, here, where it happens.

use std::sync::Arc;

use tokio::sync::watch;

use crate::records::{Finished, JobFailure, JobId, JobStatus, JobStore};

pub(super) struct Reporter {
    id: JobId,
    model: &'static str,
    tx: watch::Sender<JobStatus>,
    store: Arc<dyn JobStore>,
}

impl Reporter {
    pub(super) fn new(
        id: JobId,
        model: &'static str,
        tx: watch::Sender<JobStatus>,
        store: Arc<dyn JobStore>,
    ) -> Reporter {
        Reporter { id, model, tx, store }
    }

    pub(super) fn id(&self) -> &JobId {
        &self.id
    }

    pub(super) fn set(&self, status: JobStatus) {
        if *self.tx.borrow() == status {
            return;
        }
        self.store.update(&self.id, status.clone());
        self.tx.send_replace(status);
    }

    pub(super) fn succeed(&self, finished: Finished) {
        tracing::debug!(job = %self.id, model = self.model, task = %finished.task_id, "image ready");
        self.set(JobStatus::Succeeded(Arc::new(finished)));
    }

    pub(super) fn fail(&self, failure: JobFailure) {
        tracing::info!(job = %self.id, model = self.model, error = %failure, "job failed");
        self.set(JobStatus::Failed(failure));
    }

    /// The job never reached BFL and nobody waits for it: no record is worth keeping.
    pub(super) fn forget(&self) {
        self.store.remove(&self.id);
    }
}

impl Drop for Reporter {
    /// A job task that ends without a final status (it panicked, or the runtime is going away)
    /// must not leave a record running forever in the store.
    fn drop(&mut self) {
        if !self.tx.borrow().is_terminal() {
            let failure = JobStatus::Failed(JobFailure::Unfollowable("the job stopped unexpectedly"));
            // A forgotten job has no record; updating a missing record does nothing.
            self.store.update(&self.id, failure.clone());
            // Whoever waits learns the same, rather than a closed channel.
            self.tx.send_replace(failure);
        }
    }
}
