//! The JSON form of an edit request: `images: [{"image_url": "https://…" | "data:…;base64,…"} |
//! {"file_id": …}]`. https URLs pass through for BFL to fetch; data: URLs are decoded in chunks and
//! checked exactly like multipart uploads.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::intake::{self, Intake};
use super::{EditUpload, Reference, UploadLimits, mask_unsupported, too_many_images};
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

/// Reads the JSON form. The keys other than `images` and `mask` become `Fields`; no `images` at
/// all is an empty list (whether a model needs one is the caller's rule).
pub async fn read_json(mut map: Map<String, Value>, limits: &UploadLimits) -> Result<EditUpload, ApiError> {
    if map.get("mask").is_some_and(|mask| !mask.is_null()) {
        return Err(mask_unsupported());
    }
    map.remove("mask");
    let images = match map.remove("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(images)) => images,
        Some(_) => return Err(ApiError::invalid("images", "`images` must be an array of objects")),
    };
    if images.len() > limits.max_images {
        return Err(too_many_images("images", limits.max_images));
    }
    let mut references = Vec::with_capacity(images.len());
    for (index, entry) in images.iter().enumerate() {
        references.push(reference(index, entry, limits).await?);
    }
    Ok(EditUpload { fields: Fields::from_json(map), references })
}

async fn reference(index: usize, entry: &Value, limits: &UploadLimits) -> Result<Reference, ApiError> {
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
        return decode_data_url(index, data, limits).await.map(Reference::Image);
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
    limits: &UploadLimits,
) -> Result<super::CheckedImage, ApiError> {
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
    let mut intake = Intake::new(index, "images", limits);
    let mut decoded = Vec::with_capacity(TEXT_CHUNK / 4 * 3);
    for text in payload.as_bytes().chunks(TEXT_CHUNK) {
        decoded.clear();
        LENIENT.decode_vec(text, &mut decoded).map_err(|_| bad("is not valid base64"))?;
        intake.push(&decoded).await?;
    }
    intake.finish().await
}
