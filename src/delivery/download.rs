//! Downloading a finished image from BFL's result URL: through the allow-list, within the size cap
//! and the job's deadline.

use bytes::Bytes;
use tokio::time::timeout_at;

use crate::error::ApiError;
use crate::records::{Finished, JobFailure};

use super::{Delivery, Wanted};

impl Delivery {
    pub(super) async fn download(&self, finished: &Finished, wanted: Wanted) -> Result<Bytes, ApiError> {
        let fetch = self.client.download(&finished.sample, self.settings.max_result_bytes);
        match timeout_at(wanted.deadline, fetch).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, task = %finished.task_id, "result download failed");
                Err(JobFailure::Download(e).into())
            }
            Err(_) => Err(JobFailure::DeadlineExceeded { deadline: wanted.limit, accepted: true }.into()),
        }
    }
}
