//! Downloading a finished image from BFL's result URL: through the allow-list, within the size cap,
//! the b64 budget and the job's deadline. The image is sized (Content-Length, else the size cap)
//! before its body is read, and its bytes are reserved in the budget first; when the budget is
//! full, the open download is dropped (an upstream would time out a stalled body) and fetched
//! again once room is free. A re-hosted image is read back from the store the same way (sized
//! by its metadata first), so `b64_json` keeps working after BFL's URL has expired.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};

use crate::bfl::{Download, UpstreamError};
use crate::error::ApiError;
use crate::records::{Finished, ImageName, JobFailure};

use super::{Delivery, Wanted, kib};

/// Suggested wait before asking again when the budget stayed full until the deadline.
const BUDGET_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a re-hosted image could not be read back from the store (then BFL's URL is tried).
#[derive(Debug, thiserror::Error)]
enum StoredRead {
    #[error("not in the store")]
    Missing,
    #[error("the store failed: {0}")]
    Store(#[from] super::StoreError),
    #[error("the stored image changed size while it was read")]
    Changed,
    #[error("past the deadline")]
    Late,
    /// The client's own error (no room in the budget): reading elsewhere would not help.
    #[error("{0}")]
    Refused(ApiError),
}

impl Delivery {
    /// The image's bytes for a `b64_json` reply: from the store when it was re-hosted there (BFL's
    /// URL may have expired), else, or when the store cannot give it, from BFL.
    pub(super) async fn image_bytes(
        &self,
        finished: &Finished,
        wanted: Wanted,
    ) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
        if let Some(name) = &finished.stored {
            match self.read_stored(name, wanted.deadline).await {
                Ok(found) => return Ok(found),
                Err(StoredRead::Refused(e)) => return Err(e),
                Err(StoredRead::Late) => {
                    return Err(
                        JobFailure::DeadlineExceeded { deadline: wanted.limit, accepted: true }.into()
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, image = %name, "re-hosted image unreadable; trying BFL's URL")
                }
            }
        }
        self.download(finished, wanted.deadline, wanted.limit).await
    }

    /// A re-hosted image's bytes, sized from its metadata and reserved in the budget before its
    /// body is read.
    async fn read_stored(
        &self,
        name: &ImageName,
        deadline: Instant,
    ) -> Result<(Bytes, OwnedSemaphorePermit), StoredRead> {
        let store = self.store.as_ref().ok_or(StoredRead::Missing)?;
        let meta = timeout_at(deadline, store.head(name)).await.map_err(|_| StoredRead::Late)??;
        let size = meta.ok_or(StoredRead::Missing)?.size;
        let need = self.within_caps(size.try_into().unwrap_or(usize::MAX)).map_err(StoredRead::Refused)?;
        let permit = self.reserve(need, deadline).await.map_err(StoredRead::Refused)?;
        let found = timeout_at(deadline, store.get(name)).await.map_err(|_| StoredRead::Late)??;
        let mut stream = found.ok_or(StoredRead::Missing)?.into_stream();
        let mut body = Vec::with_capacity(need);
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| StoredRead::Store(e.into()))?;
                if body.len() + chunk.len() > need {
                    return Err(StoredRead::Changed);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        };
        timeout_at(deadline, read).await.map_err(|_| StoredRead::Late)??;
        if body.len() != need {
            return Err(StoredRead::Changed);
        }
        Ok((Bytes::from(body), permit))
    }

    /// Waits for `need` bytes of room in the budget until `deadline` (503 with retry-after then).
    async fn reserve(&self, need: usize, deadline: Instant) -> Result<OwnedSemaphorePermit, ApiError> {
        match timeout_at(deadline, self.budget.clone().acquire_many_owned(kib(need as u64))).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ApiError::internal("the b64 budget was closed")),
            Err(_) => Err(ApiError::Unavailable {
                message: "the image is ready, but the gateway had no room to encode it as \
                          b64_json before the deadline; BFL has charged for it, so ask again \
                          later or use response_format=url"
                    .into(),
                retry_after: Some(BUDGET_RETRY_AFTER),
            }),
        }
    }

    /// The image's bytes and the budget they hold (released when the permit is dropped).
    /// `deadline` ends the wait (`limit` is the model's deadline, for the 504's message).
    pub(super) async fn download(
        &self,
        finished: &Finished,
        deadline: Instant,
        limit: std::time::Duration,
    ) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
        let past_deadline = || JobFailure::DeadlineExceeded { deadline: limit, accepted: true }.into();
        let open = timeout_at(deadline, self.client.open_download(&finished.sample));
        let download = open.await.map_err(|_| past_deadline())?.map_err(|e| failed(finished, e))?;
        let need = self.size(&download)?;
        let (download, permit) = match self.budget.clone().try_acquire_many_owned(kib(need as u64)) {
            Ok(permit) => (download, permit),
            Err(_) => {
                drop(download);
                let permit = self.reserve(need, deadline).await?;
                let again = timeout_at(deadline, self.client.open_download(&finished.sample));
                let download = again.await.map_err(|_| past_deadline())?.map_err(|e| failed(finished, e))?;
                if self.size(&download)? > need {
                    let e = UpstreamError::Unreadable("the result grew between two downloads".into());
                    return Err(failed(finished, e));
                }
                (download, permit)
            }
        };
        // The body may not outgrow what was reserved for it.
        match timeout_at(deadline, download.read(need)).await {
            Ok(Ok(bytes)) => Ok((bytes, permit)),
            Ok(Err(e)) => Err(failed(finished, e)),
            Err(_) => Err(past_deadline()),
        }
    }

    /// Bytes to reserve for `download`: its announced length, else the size cap; refused when
    /// over the size cap or over the whole budget (it could never be delivered).
    fn size(&self, download: &Download) -> Result<usize, ApiError> {
        let need = match download.announced_len() {
            Some(len) => usize::try_from(len).unwrap_or(usize::MAX),
            None => self.settings.max_result_bytes,
        };
        self.within_caps(need)
    }

    /// `need` bytes, refused when over the size cap or over the whole budget.
    fn within_caps(&self, need: usize) -> Result<usize, ApiError> {
        let max = self.settings.max_result_bytes;
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
