//! Result delivery: a finished job becomes the Images API reply, as BFL's URL or as base64 of the
//! image downloaded here (`download`), within a process-wide budget of result bytes held for
//! base64 replies. Re-hosting and streaming will live here too.

mod download;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::bfl::BflClient;
use crate::error::ApiError;
use crate::job::{OutputFormat, ResponseFormat};
use crate::openai::ImageDatum;
use crate::records::Finished;

/// Bounds on what delivery fetches.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Largest result image downloaded (for `b64_json`).
    pub max_result_bytes: usize,
    /// Most result bytes held at once, across all `b64_json` replies being built. Each image
    /// also becomes 4/3 as many bytes of base64 text while it is encoded.
    pub max_b64_inflight_bytes: usize,
    /// How often a streamed reply sends a keep-alive comment while its job runs.
    pub keepalive: Duration,
}

#[derive(Clone)]
pub struct Delivery {
    client: BflClient,
    settings: DeliverySettings,
    /// The b64 budget, one permit per KiB: a burst of b64 requests waits for room instead of
    /// holding (and encoding) more images at once than the process can afford.
    budget: Arc<Semaphore>,
    budget_kib: u32,
}

/// A `data` entry ready to send, with the share of the b64 budget it holds until the reply is
/// built (a request for n images holds all n: their base64 waits in memory for the last one).
pub struct Delivered {
    pub datum: ImageDatum,
    budget: Option<OwnedSemaphorePermit>,
}

impl Delivered {
    /// The entry, and the budget to keep until the reply is serialised.
    pub fn into_parts(self) -> (ImageDatum, Option<OwnedSemaphorePermit>) {
        (self.datum, self.budget)
    }
}

/// What the client asked to get back, and by when.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub response_format: ResponseFormat,
    pub output_format: OutputFormat,
    pub deadline: Instant,
    /// The model's deadline, for the 504's message.
    pub limit: Duration,
}

/// Permits (KiB, rounded up) for `bytes` of result; at least one, so even an empty body waits
/// its turn, and saturated rather than wrapped for absurd lengths.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl Delivery {
    pub fn new(client: BflClient, settings: DeliverySettings) -> Delivery {
        let budget_kib = kib(settings.max_b64_inflight_bytes as u64).min(Semaphore::MAX_PERMITS as u32);
        Delivery { client, settings, budget: Arc::new(Semaphore::new(budget_kib as usize)), budget_kib }
    }

    /// How often a streamed reply says it is alive.
    pub fn keepalive(&self) -> Duration {
        self.settings.keepalive
    }

    /// One finished image as the reply's `data` entry: BFL's URL, or the image in base64. A
    /// base64 image keeps its share of the b64 budget until the reply is built (`Delivered`).
    pub async fn datum(&self, finished: &Finished, wanted: Wanted) -> Result<Delivered, ApiError> {
        Ok(match wanted.response_format {
            ResponseFormat::Url => Delivered {
                datum: ImageDatum {
                    url: Some(finished.sample.to_string()),
                    b64_json: None,
                    revised_prompt: finished.revised_prompt.clone(),
                },
                budget: None,
            },
            ResponseFormat::B64Json => {
                let (bytes, permit) = self.download(finished, wanted).await?;
                // Encoding tens of megabytes takes milliseconds of CPU: off the async workers.
                let encoded = tokio::task::spawn_blocking(move || STANDARD.encode(&bytes))
                    .await
                    .map_err(|e| ApiError::internal(format!("base64 encoding failed: {e}")))?;
                Delivered {
                    datum: ImageDatum {
                        url: None,
                        b64_json: Some(encoded),
                        revised_prompt: finished.revised_prompt.clone(),
                    },
                    budget: Some(permit),
                }
            }
        })
    }
}
