//! `Idempotency-Key`: the header read and checked, and the fingerprint of the request it names,
//! so that the same key with another request is told apart from a retry.

use axum::http::HeaderMap;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::openai::Fields;
use crate::upload::Reference;

const HEADER: &str = "idempotency-key";
/// Longest key accepted (Stripe's limit). Neither OpenAI SDK sends a key of its own: clients add it.
const MAX_LEN: usize = 255;

/// A client's idempotency key, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The request's key, if it sent one: 1 to 255 visible ASCII characters.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
        let Some(value) = headers.get(HEADER) else { return Ok(None) };
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| (1..=MAX_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        match key {
            Some(key) => Ok(Some(IdempotencyKey(key.to_owned()))),
            None => Err(ApiError::InvalidRequest {
                message: format!("`Idempotency-Key` must be 1 to {MAX_LEN} visible ASCII characters"),
                param: None,
                code: "invalid_idempotency_key",
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two requests the same: the endpoint, every field, and each reference image's bytes
/// (or URL), in order.
pub async fn fingerprint(
    endpoint: &str,
    fields: &Fields,
    references: &[Reference],
) -> Result<[u8; 32], ApiError> {
    let mut hash = Sha256::new();
    hash.update(endpoint.as_bytes());
    for (name, value) in fields.canonical() {
        // Lengths first, so no two lists of fields run together into the same bytes.
        for part in [name.as_bytes(), value.as_bytes()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    }
    for reference in references {
        match reference {
            Reference::Url(url) => {
                hash.update(b"url");
                hash.update((url.len() as u64).to_le_bytes());
                hash.update(url.as_bytes());
            }
            Reference::Image(image) => {
                hash.update(b"image");
                hash.update(image.len.to_le_bytes());
                let mut chunks = std::pin::pin!(image.base64_stream());
                while let Some(chunk) = chunks.next().await {
                    let chunk =
                        chunk.map_err(|e| ApiError::internal(format!("reading a spooled reference: {e}")))?;
                    hash.update(&chunk);
                }
            }
        }
    }
    Ok(hash.finalize().into())
}
