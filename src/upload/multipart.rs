//! The multipart form of an edit request, streamed part by part: text parts become `Fields`,
//! `image` / `image[]` parts become checked references in upload order, `mask` is refused. The
//! per-model reference count is checked when a file part starts and when `model` arrives.

use std::time::Duration;

use axum::body::Body;

use super::intake::Intake;
use super::meter::{Delivered, MeterError, Metered, Source};
use super::{
    EditUpload, RefRule, Reference, Uploads, body_error, check_count, mask_unsupported, request_too_large,
    too_many_images,
};
use crate::error::ApiError;

/// Most of a refused body read and thrown away so its client can read the refusal.
const DRAIN_BYTES: u64 = 32 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads a `multipart/form-data` body; `content_type` is the request's Content-Type header value.
pub async fn read_multipart(
    content_type: &str,
    body: Body,
    uploads: &Uploads,
    rule: &dyn RefRule,
) -> Result<EditUpload, ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| body_error("the Content-Type must be multipart/form-data with a boundary"))?;
    let source = Source::new(body.into_data_stream());
    let read = read_form(source.clone(), boundary, uploads, rule).await;
    match read {
        // Too large or stalled: the rest is not worth reading. Anything else (a reference too
        // many, a mask) is refused mid-upload; SDKs that stream files (Node's) only read the
        // answer once their upload is done, so the rest is read, bounded, and thrown away.
        Err(e @ (ApiError::PayloadTooLarge { .. } | ApiError::BodyTimeout)) => Err(e),
        Err(e) => {
            source.drain(DRAIN_BYTES.min(uploads.settings.max_request_bytes), DRAIN_TIME).await;
            Err(e)
        }
        Ok(upload) => Ok(upload),
    }
}

async fn read_form(
    source: Source,
    boundary: String,
    uploads: &Uploads,
    rule: &dyn RefRule,
) -> Result<EditUpload, ApiError> {
    let limits = uploads.limits();
    let delivered = Delivered::default();
    let stream = Metered::new(source, delivered.clone(), uploads.settings.max_request_bytes);
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut upload = EditUpload::default();
    // The `model` field as read so far; until it arrives, the bound is what any model takes.
    let mut model: Option<String> = None;
    let mut text_left = limits.max_text_bytes.saturating_mul(2);
    let mut parts = 0usize;

    while let Some(mut part) = multipart.next_field().await.map_err(malformed)? {
        parts += 1;
        if parts > limits.max_parts {
            return Err(body_error(format!("the form has more than {} parts", limits.max_parts)));
        }
        let Some(name) = part.name().map(str::to_owned) else {
            return Err(body_error("a form part has no name in its Content-Disposition"));
        };
        let is_file = part.file_name().is_some() || matches!(name.as_str(), "image" | "image[]" | "mask");
        match name.as_str() {
            // Any mask part, even an empty one: the client asked for a masked edit.
            "mask" => return Err(mask_unsupported()),
            "image" | "image[]" if is_file => {
                let index = upload.references.len();
                // Before a byte of it is read: a reference the model cannot take is never spooled.
                check_count(rule, model.as_deref(), index + 1, "image")?;
                if index >= limits.max_images {
                    return Err(too_many_images("image", limits.max_images));
                }
                let mut intake = Intake::new(index, "image", uploads);
                while let Some(chunk) = part.chunk().await.map_err(malformed)? {
                    delivered.add(chunk.len());
                    intake.push(&chunk).await?;
                }
                upload.references.push(Reference::Image(intake.finish().await?));
            }
            _ if is_file => {
                return Err(ApiError::invalid(
                    name.as_str(),
                    format!("unexpected file field `{name}`; send reference images as `image` or `image[]`"),
                ));
            }
            _ => {
                let mut value = Vec::new();
                while let Some(chunk) = part.chunk().await.map_err(malformed)? {
                    delivered.add(chunk.len());
                    if value.len() + chunk.len() > limits.max_text_bytes {
                        let message =
                            format!("the form field `{name}` is larger than {} bytes", limits.max_text_bytes);
                        return Err(ApiError::too_large(Some(name), message));
                    }
                    if chunk.len() > text_left {
                        let total = limits.max_text_bytes.saturating_mul(2);
                        let message =
                            format!("the form's text fields together are larger than {total} bytes");
                        return Err(ApiError::too_large(None, message));
                    }
                    text_left -= chunk.len();
                    value.extend_from_slice(&chunk);
                }
                let value = String::from_utf8(value).map_err(|_| {
                    ApiError::invalid(name.as_str(), format!("`{name}` is not valid UTF-8 text"))
                })?;
                if name == "model" {
                    // Files sent before the model are counted against it now.
                    check_count(rule, Some(&value), upload.references.len(), "image")?;
                    model = Some(value.clone());
                }
                upload.fields.insert_text(name, value);
            }
        }
    }
    Ok(upload)
}

/// A multipart error is the client's: a malformed body (400), a body over the server's limit
/// (413), a body that stalled past the body timeout (408), or one that broke off (400; the client
/// is usually gone by then).
fn malformed(error: multer::Error) -> ApiError {
    if let multer::Error::StreamReadFailed(source) = &error {
        if ApiError::is_body_timeout(source.as_ref()) {
            return ApiError::BodyTimeout;
        }
        match source.downcast_ref::<MeterError>() {
            Some(MeterError::Overrun) => {
                return body_error("malformed multipart body: part headers or preamble are too long");
            }
            Some(MeterError::TooLong(max)) => return request_too_large(*max),
            Some(MeterError::Body(e)) if over_length_limit(e) => {
                return ApiError::too_large(None, "the request body is too large");
            }
            _ => return body_error("the request body could not be read"),
        }
    }
    body_error(format!("malformed multipart body: {error}"))
}

/// A body limit layer (http-body-util `Limited`) reports itself only through its message.
fn over_length_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.to_string().contains("length limit exceeded") {
            return true;
        }
        cause = e.source();
    }
    false
}
