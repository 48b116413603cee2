//! Result delivery: a finished job becomes the Images API reply, as a URL or as base64 of the
//! image (`download`), within a process-wide budget of result bytes held in memory. With a store
//! (`delivery.store`), the job re-hosts its image as soon as BFL has it (`rehost`, into `store`),
//! and the reply carries a durable URL: signed links to the gateway's own file route (`links`) or
//! the operator's public base URL; without one, BFL's URL passes through.

mod download;
mod links;
mod rehost;
mod store;
mod sweep;

pub use links::{FILES_PATH, LinkError, LinkSigner, request_origin};
pub use store::{ImageStore, S3Settings, StoreChoice, StoreError};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::bfl::BflClient;
use crate::error::ApiError;
use crate::job::{OutputFormat, ResponseFormat};
use crate::openai::ImageDatum;
use crate::records::{Finished, ImageName};

/// Bounds on what delivery fetches, and where re-hosted images go.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Largest result image downloaded (for `b64_json` and re-hosting).
    pub max_result_bytes: usize,
    /// Most result bytes held at once, across all `b64_json` replies being built and images being
    /// re-hosted. Each b64 image also becomes 4/3 as many bytes of base64 text while it is encoded.
    pub max_b64_inflight_bytes: usize,
    /// How often a streamed reply sends a keep-alive comment while its job runs.
    pub keepalive: Duration,
    pub store: StoreChoice,
    /// One exchange with a bucket.
    pub store_timeout: Duration,
    /// Local images older than this are swept.
    pub retention: Duration,
    /// Re-hosted URLs are this base + name (a CDN in front of the bucket), unsigned.
    pub public_base_url: Option<String>,
    /// Signed links are built on this origin, else on the request's own host.
    pub link_base_url: Option<String>,
    /// Signs links to the file route; required with a store unless `public_base_url` is set.
    pub signing_key: Option<SecretString>,
    pub link_ttl: Duration,
    /// Origins the file route allows in `Access-Control-Allow-Origin` (`*` for any).
    pub cors_origins: Vec<String>,
}

#[derive(Clone)]
pub struct Delivery {
    client: BflClient,
    settings: Arc<DeliverySettings>,
    /// The result-bytes budget, one permit per KiB: a burst of b64 requests (or re-hosts) waits
    /// for room instead of holding (and encoding) more images at once than the process can afford.
    budget: Arc<Semaphore>,
    budget_kib: u32,
    store: Option<ImageStore>,
    signer: Option<LinkSigner>,
    sweeper: Arc<sweep::Sweeper>,
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

/// Where a request came in (`request_origin`: its scheme and host, signed links are built on it
/// unless `delivery.link_base_url` says otherwise) and when (unix seconds: links made for one
/// request are the same whenever they are made again, see `stored_url`).
#[derive(Debug, Clone, Copy)]
pub struct LinkOrigin<'a> {
    pub base: Option<&'a str>,
    pub anchor: u64,
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

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Delivery {
    /// Delivery with its store opened (a local directory is created here).
    pub fn new(client: BflClient, settings: DeliverySettings) -> Result<Delivery, StoreError> {
        let budget_kib = kib(settings.max_b64_inflight_bytes as u64).min(Semaphore::MAX_PERMITS as u32);
        let store = ImageStore::open(&settings.store, settings.store_timeout)?;
        let signer = match &settings.signing_key {
            Some(key) => {
                Some(LinkSigner::new(key, settings.link_ttl.as_secs()).map_err(|_| StoreError::SigningKey)?)
            }
            None => None,
        };
        Ok(Delivery {
            client,
            settings: Arc::new(settings),
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            store,
            signer,
            sweeper: Arc::default(),
        })
    }

    /// How often a streamed reply says it is alive.
    pub fn keepalive(&self) -> Duration {
        self.settings.keepalive
    }

    /// The store re-hosted images live in, when there is one.
    pub fn store(&self) -> Option<&ImageStore> {
        self.store.as_ref()
    }

    /// Checks a signed link to `name`; the seconds it has left when good.
    pub fn verify_link(&self, name: &ImageName, query: Option<&str>) -> Result<u64, LinkError> {
        match &self.signer {
            Some(signer) => signer.verify(name, query, unix_now()),
            None => Err(LinkError::BadSignature),
        }
    }

    /// True when `origin` may read re-hosted images from a browser (`delivery.cors_origins`).
    pub fn cors_allows(&self, origin: &str) -> bool {
        self.settings.cors_origins.iter().any(|o| o == origin)
    }

    /// True when any origin may (`*` in `delivery.cors_origins`).
    pub fn cors_allows_any(&self) -> bool {
        self.cors_allows("*")
    }

    /// The URL a client gets for a re-hosted image: the public base URL + name, or a signed link
    /// on `delivery.link_base_url` (else `origin`, the request's own). `None` without a way to
    /// build one (then BFL's URL goes out instead).
    ///
    /// A link's validity is counted from `anchor` (when its request was made) in steps of half
    /// the link TTL: every reply made from one request within such a step (an `Idempotency-Key`
    /// replay, a poll of an async job) carries the same link, and every link handed out still has
    /// at least half the TTL to live.
    fn stored_url(&self, name: &ImageName, origin: &LinkOrigin<'_>) -> Option<String> {
        if let Some(base) = &self.settings.public_base_url {
            return Some(format!("{base}{name}"));
        }
        let signer = self.signer.as_ref()?;
        let base = self.settings.link_base_url.as_deref().or(origin.base)?;
        let step = (self.settings.link_ttl.as_secs() / 2).max(1);
        let anchor = origin.anchor.min(unix_now());
        let since = anchor + (unix_now() - anchor) / step * step;
        Some(format!("{base}{FILES_PATH}/{name}?{}", signer.query(name, since)))
    }

    /// One finished image as the reply's `data` entry: its URL (the re-hosted one when there is
    /// one, else BFL's), or the image in base64 (read from the store when re-hosted, else from
    /// BFL). A base64 image keeps its share of the budget until the reply is built (`Delivered`).
    /// `origin` says where and when the request came in, for signed links.
    pub async fn datum(
        &self,
        finished: &Finished,
        wanted: Wanted,
        origin: &LinkOrigin<'_>,
    ) -> Result<Delivered, ApiError> {
        Ok(match wanted.response_format {
            ResponseFormat::Url => {
                let url = finished
                    .stored
                    .as_ref()
                    .and_then(|name| self.stored_url(name, origin))
                    .unwrap_or_else(|| finished.sample.to_string());
                Delivered {
                    datum: ImageDatum {
                        url: Some(url),
                        b64_json: None,
                        revised_prompt: finished.revised_prompt.clone(),
                    },
                    budget: None,
                }
            }
            ResponseFormat::B64Json => {
                let (bytes, permit) = self.image_bytes(finished, wanted).await?;
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
