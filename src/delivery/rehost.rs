//! Re-hosting a finished image: the job's own task downloads it as soon as BFL reports it Ready
//! (through the allow-list, within the size cap and the result-bytes budget), names it by its
//! content and writes it to the store, so the image outlives BFL's 10-minute URL even when the
//! client has gone. One failed attempt is tried once more; when both fail the job still succeeds
//! and BFL's URL passes through (logged once, here).

use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::records::{Finished, ImageName, StoredFormat};

use super::{Delivery, ImageStore};

impl Delivery {
    /// Keeps `finished`'s image in the store by `until`: its name, or `None` without a store or
    /// when both attempts failed.
    pub async fn rehost(&self, finished: &Finished, until: Instant) -> Option<ImageName> {
        let store = self.store.as_ref()?;
        let outcome = match self.rehost_once(store, finished, until).await {
            Ok(name) => Ok(name),
            Err(first) if Instant::now() < until => {
                tracing::debug!(error = %first, task = %finished.task_id, "re-hosting failed once; trying again");
                self.rehost_once(store, finished, until).await
            }
            Err(first) => Err(first),
        };
        match outcome {
            Ok(name) => Some(name),
            Err(e) => {
                tracing::warn!(error = %e, task = %finished.task_id, "the image could not be re-hosted; BFL's URL is passed on instead");
                None
            }
        }
    }

    async fn rehost_once(
        &self,
        store: &ImageStore,
        finished: &Finished,
        until: Instant,
    ) -> Result<ImageName, String> {
        // The budget is held until the image is written: re-hosts count against the same memory
        // bound as b64_json replies.
        let (bytes, _budget) =
            self.download(finished, until, Duration::ZERO).await.map_err(|e| format!("download: {e}"))?;
        let format = StoredFormat::sniff(&bytes).ok_or("the result is not a JPEG, PNG or WebP image")?;
        let hashed = bytes.clone();
        // Hashing tens of megabytes takes milliseconds of CPU: off the async workers.
        let name = tokio::task::spawn_blocking(move || ImageName::of(&hashed, format))
            .await
            .map_err(|e| format!("hashing failed: {e}"))?;
        match timeout_at(until, store.put(&name, bytes)).await {
            Ok(Ok(())) => Ok(name),
            Ok(Err(e)) => Err(format!("store: {e}")),
            Err(_) => Err("store: timed out".to_owned()),
        }
    }
}
