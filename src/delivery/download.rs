//! Downloading a finished image from BFL's result URL: through the allow-list, within the size cap,
//! the b64 budget and the job's deadline. The image is sized (Content-Length, else the size cap)
//! before its body is read, and its bytes are reserved in the budget first; when the budget is
//! full, the open download is dropped (an upstream would time out a stalled body) and fetched
//! again once room is free.

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout_at;

use crate::bfl::{Download, UpstreamError};
use crate::error::ApiError;
use crate::records::{Finished, JobFailure};

use super::{Delivery, Wanted, kib};

/// Suggested wait before asking again when the budget stayed full until the deadline.
const BUDGET_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl Delivery {
    /// The image's bytes and the budget they hold (released when the permit is dropped).
    pub(super) async fn download(
        &self,
        finished: &Finished,
        wanted: Wanted,
    ) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
        let past_deadline = || JobFailure::DeadlineExceeded { deadline: wanted.limit, accepted: true }.into();
        let open = timeout_at(wanted.deadline, self.client.open_download(&finished.sample));
        let download = open.await.map_err(|_| past_deadline())?.map_err(|e| failed(finished, e))?;
        let need = self.size(&download)?;
        let (download, permit) = match self.budget.clone().try_acquire_many_owned(kib(need as u64)) {
            Ok(permit) => (download, permit),
            Err(_) => {
                drop(download);
                let wait =
                    timeout_at(wanted.deadline, self.budget.clone().acquire_many_owned(kib(need as u64)));
                let permit = match wait.await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return Err(ApiError::internal("the b64 budget was closed")),
                    Err(_) => {
                        return Err(ApiError::Unavailable {
                            message: "the image is ready, but the gateway had no room to encode it as \
                                      b64_json before the deadline; BFL has charged for it, so ask again \
                                      later or use response_format=url"
                                .into(),
                            retry_after: Some(BUDGET_RETRY_AFTER),
                        });
                    }
                };
                let again = timeout_at(wanted.deadline, self.client.open_download(&finished.sample));
                let download = again.await.map_err(|_| past_deadline())?.map_err(|e| failed(finished, e))?;
                if self.size(&download)? > need {
                    let e = UpstreamError::Unreadable("the result grew between two downloads".into());
                    return Err(failed(finished, e));
                }
                (download, permit)
            }
        };
        // The body may not outgrow what was reserved for it.
        match timeout_at(wanted.deadline, download.read(need)).await {
            Ok(Ok(bytes)) => Ok((bytes, permit)),
            Ok(Err(e)) => Err(failed(finished, e)),
            Err(_) => Err(past_deadline()),
        }
    }

    /// Bytes to reserve for `download`: its announced length, else the size cap; refused when
    /// over the size cap or over the whole budget (it could never be delivered).
    fn size(&self, download: &Download) -> Result<usize, ApiError> {
        let max = self.settings.max_result_bytes;
        let need = match download.announced_len() {
            Some(len) => usize::try_from(len).unwrap_or(usize::MAX),
            None => max,
        };
        if need > max {
            return Err(JobFailure::Download(UpstreamError::Unreadable(format!(
                "result of {need} bytes is larger than {max} bytes"
            )))
            .into());
        }
        if kib(need as u64) > self.budget_kib {
            return Err(ApiError::Unavailable {
                message: format!(
                    "the image ({need} bytes) is larger than the gateway may hold for a b64_json reply \
                     (upstream.max_b64_inflight_bytes); BFL has charged for it: use response_format=url"
                ),
                retry_after: None,
            });
        }
        Ok(need)
    }
}

fn failed(finished: &Finished, e: UpstreamError) -> ApiError {
    tracing::warn!(error = %e, task = %finished.task_id, "result download failed");
    JobFailure::Download(e).into()
}
