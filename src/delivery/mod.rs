//! Result delivery: a finished job becomes the Images API reply, as BFL's URL or as base64 of the
//! image downloaded here (`download`). Re-hosting and streaming will live here too.

mod download;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::time::Instant;

use crate::bfl::BflClient;
use crate::error::ApiError;
use crate::job::{OutputFormat, ResponseFormat};
use crate::openai::{ImageDatum, ImagesResponse};
use crate::records::Finished;

/// Bounds on what delivery fetches.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Largest result image downloaded (for `b64_json`).
    pub max_result_bytes: usize,
}

#[derive(Clone)]
pub struct Delivery {
    client: BflClient,
    settings: DeliverySettings,
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

impl Delivery {
    pub fn new(client: BflClient, settings: DeliverySettings) -> Delivery {
        Delivery { client, settings }
    }

    pub async fn respond(&self, finished: &Finished, wanted: Wanted) -> Result<ImagesResponse, ApiError> {
        let datum = match wanted.response_format {
            ResponseFormat::Url => ImageDatum {
                url: Some(finished.sample.to_string()),
                b64_json: None,
                revised_prompt: finished.revised_prompt.clone(),
            },
            ResponseFormat::B64Json => {
                let bytes = self.download(finished, wanted).await?;
                ImageDatum {
                    url: None,
                    b64_json: Some(STANDARD.encode(&bytes)),
                    revised_prompt: finished.revised_prompt.clone(),
                }
            }
        };
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(ImagesResponse { created, data: vec![datum], output_format: wanted.output_format.as_str() })
    }
}
