//! Turning a submit body into JSON the way FastAPI does, with its 422s for empty bodies,
//! undecodable JSON and non-JSON content types.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The body as JSON, or the FastAPI error item explaining why not.
pub(super) fn parse(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, Value> {
    if bytes.is_empty() {
        return Err(json!({ "type": "missing", "loc": ["body"], "msg": "Field required", "input": null }));
    }
    // FastAPI only decodes JSON for json content types (or none); anything else is validated as
    // raw bytes and fails the object check.
    let json_type = match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => true,
        Some(Ok(ct)) => {
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        }
        Some(Err(_)) => false,
    };
    if !json_type {
        let shown: String = String::from_utf8_lossy(bytes).chars().take(200).collect();
        return Err(not_an_object(Value::String(shown)));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        json!({
            "type": "json_invalid",
            "loc": ["body", offset(bytes, e.line(), e.column())],
            "msg": "JSON decode error",
            "input": {},
            "ctx": { "error": e.to_string() },
        })
    })
}

/// The error item for a body that is not a JSON object.
pub(super) fn not_an_object(input: Value) -> Value {
    let msg = "Input should be a valid dictionary or object to extract fields from";
    json!({ "type": "model_attributes_type", "loc": ["body"], "msg": msg, "input": input })
}

/// The 422 carrying one error item.
pub(super) fn reject(item: Value) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "detail": [item] }))).into_response()
}

/// Byte offset of a serde_json (1-based line, 1-based column) position, like Python's `pos`.
fn offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize =
        bytes.split(|&b| b == b'\n').take(line.saturating_sub(1)).map(|l| l.len() + 1).sum();
    line_start.saturating_add(column.saturating_sub(1)).min(bytes.len())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    async fn detail(r: Result<Value, Value>) -> Value {
        let Err(item) = r else { panic!("body accepted: {r:?}") };
        let resp = reject(item);
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        v["detail"][0].clone()
    }

    #[tokio::test]
    async fn empty_broken_and_non_json_bodies_get_fastapi_422s() {
        let h = HeaderMap::new();
        assert_eq!(detail(parse(&h, b"")).await["type"], "missing");
        let d = detail(parse(&h, b"{\n \"a\": }")).await;
        assert_eq!((d["type"].as_str(), d["loc"][1].as_u64()), (Some("json_invalid"), Some(8)));
        let mut form = HeaderMap::new();
        form.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(detail(parse(&form, b"{}")).await["type"], "model_attributes_type");
        assert_eq!(detail(parse(&h, &[0xff, 0xfe, 0x00])).await["type"], "json_invalid");
        assert_eq!(parse(&h, b"[1]").ok(), Some(json!([1])));
    }
}
