//! Result delivery: a finished job becomes the Images API reply, as BFL's URL or as base64.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::dispatch::{Dispatcher, Finished};
use crate::error::ApiError;
use crate::job::{OutputFormat, ResponseFormat};
use crate::openai::{ImageDatum, ImagesResponse};

pub async fn respond(
    dispatcher: &Dispatcher,
    finished: Finished,
    response_format: ResponseFormat,
    output_format: OutputFormat,
) -> Result<ImagesResponse, ApiError> {
    let datum = match response_format {
        ResponseFormat::Url => ImageDatum {
            url: Some(finished.sample.to_string()),
            b64_json: None,
            revised_prompt: finished.revised_prompt,
        },
        ResponseFormat::B64Json => {
            let bytes = dispatcher.download(&finished).await?;
            ImageDatum {
                url: None,
                b64_json: Some(STANDARD.encode(&bytes)),
                revised_prompt: finished.revised_prompt,
            }
        }
    };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(ImagesResponse { created, data: vec![datum], output_format: output_format.as_str() })
}
