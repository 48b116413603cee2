//! The JSON form of an edit request: `images: [{"image_url": "https://…" | "data:…;base64,…"} |
//! {"file_id": …}]`. https URLs pass through for BFL to fetch; data: URLs are decoded in chunks and
//! checked exactly like multipart uploads. The body is held in memory against a process-wide budget.

use axum::body::Body;
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::intake::{self, Intake};
use super::{
    EditUpload, RefRule, Reference, Uploads, body_error, check_count, mask_unsupported, no_room,
    too_many_images,
};
use crate::error::ApiError;
use crate::openai::Fields;

/// Base64 characters decoded at a time (a multiple of 4: padding can only come last).
const TEXT_CHUNK: usize = 64 * 1024;

/// Padding optional and lax trailing bits: what browsers and scripts produce varies.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Reads a JSON-form body (`content_length` as declared, if it was) and then the form. The body's
/// bytes count against `uploads.max_json_inflight_bytes` until this returns.
pub async fn read_json_body(
    body: Body,
    content_length: Option<u64>,
    uploads: &Uploads,
    rule: &dyn RefRule,
) -> Result<EditUpload, ApiError> {
    let max = uploads.settings.max_json_bytes;
    let too_large = || {
        ApiError::too_large(
            None,
            format!("a JSON edit body may be at most {max} bytes; send large images as multipart/form-data"),
        )
    };
    if content_length.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let mut charge = uploads.json.charge();
    let mut bytes = BytesMut::new();
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| {
            if ApiError::is_body_timeout(&e) {
                ApiError::BodyTimeout
            } else {
                body_error("the request body could not be read")
            }
        })?;
        if bytes.len() + frame.len() > max {
            return Err(too_large());
        }
        charge.grow(frame.len() as u64).map_err(|_| no_room(None, "this JSON body"))?;
        bytes.extend_from_slice(&frame);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => {
            drop(bytes);
            read_json(map, uploads, rule).await
        }
        _ => Err(body_error("send multipart/form-data with `image` files, or a JSON object with `images`")),
    }
}

/// Reads the JSON form. The keys other than `images` and `mask` become `Fields`; no `images` at
/// all is an empty list (whether a model needs one is the caller's rule). The count is checked
/// against `rule` before any data: URL is decoded.
pub async fn read_json(
    mut map: Map<String, Value>,
    uploads: &Uploads,
    rule: &dyn RefRule,
) -> Result<EditUpload, ApiError> {
    let limits = uploads.limits();
    if map.get("mask").is_some_and(|mask| !mask.is_null()) {
        return Err(mask_unsupported());
    }
    map.remove("mask");
    let images = match map.remove("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(images)) => images,
        Some(_) => return Err(ApiError::invalid("images", "`images` must be an array of objects")),
    };
    let model = map.get("model").and_then(Value::as_str);
    check_count(rule, model, images.len(), "image")?;
    if images.len() > limits.max_images {
        return Err(too_many_images("images", limits.max_images));
    }
    let mut references = Vec::with_capacity(images.len());
    for (index, entry) in images.iter().enumerate() {
        references.push(reference(index, entry, uploads).await?);
    }
    Ok(EditUpload { fields: Fields::from_json(map), references })
}

async fn reference(index: usize, entry: &Value, uploads: &Uploads) -> Result<Reference, ApiError> {
    let param = format!("images[{index}]");
    let n = index + 1;
    let Some(entry) = entry.as_object() else {
        return Err(ApiError::invalid(param, format!("reference {n} must be an object with `image_url`")));
    };
    if entry.get("file_id").is_some_and(|id| !id.is_null()) {
        return Err(ApiError::invalid(
            param,
            format!(
                "reference {n}: file ids are not supported; send the image itself as a data: URL or https URL"
            ),
        ));
    }
    // `{"image_url": "…"}` per the Images API; `{"image_url": {"url": "…"}}` as in chat messages.
    let url = match entry.get("image_url") {
        Some(Value::String(url)) => url.trim(),
        Some(Value::Object(inner)) => match inner.get("url") {
            Some(Value::String(url)) => url.trim(),
            _ => {
                return Err(ApiError::invalid(
                    param,
                    format!("reference {n}: `image_url.url` must be a string"),
                ));
            }
        },
        _ => return Err(ApiError::invalid(param, format!("reference {n} needs an `image_url` string"))),
    };
    if let Some(data) = strip_prefix_ignore_case(url, "data:") {
        return decode_data_url(index, data, uploads).await.map(Reference::Image);
    }
    let https = strip_prefix_ignore_case(url, "https://").is_some()
        && reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
    if https {
        Ok(Reference::Url(url.to_owned()))
    } else {
        Err(ApiError::invalid(param, format!("reference {n}: `image_url` must be https or a data: URL")))
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// `data` is what follows `data:`: `<mime>[;params];base64,<payload>`. The mime type is not
/// trusted; the bytes decide the format.
async fn decode_data_url(
    index: usize,
    data: &str,
    uploads: &Uploads,
) -> Result<super::CheckedImage, ApiError> {
    let limits = uploads.limits();
    let bad =
        |what: &str| ApiError::invalid(format!("images[{index}]"), format!("reference {} {what}", index + 1));
    let Some((meta, payload)) = data.split_once(',') else {
        return Err(bad("is not a valid data: URL (no comma before the data)"));
    };
    if !meta.rsplit(';').next().is_some_and(|enc| enc.trim().eq_ignore_ascii_case("base64")) {
        return Err(bad("must be a base64 data: URL (`data:image/png;base64,…`)"));
    }
    // Line breaks inside base64 are common in hand-made payloads.
    let payload: std::borrow::Cow<'_, str> = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        payload.chars().filter(|c| !c.is_ascii_whitespace()).collect::<String>().into()
    } else {
        payload.into()
    };
    let significant = payload.trim_end_matches('=').len() as u64;
    if significant * 3 / 4 > limits.max_file_bytes {
        return Err(intake::too_large("images", index, limits.max_file_bytes));
    }
    let mut intake = Intake::new(index, "images", uploads);
    let mut decoded = Vec::with_capacity(TEXT_CHUNK / 4 * 3);
    for text in payload.as_bytes().chunks(TEXT_CHUNK) {
        decoded.clear();
        LENIENT.decode_vec(text, &mut decoded).map_err(|_| bad("is not valid base64"))?;
        intake.push(&decoded).await?;
    }
    intake.finish().await
}
