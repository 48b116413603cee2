//! The OpenAI side of the wire: request extraction into `Fields`, and the response shapes the
//! OpenAI SDKs expect.

mod fields;

pub use fields::Fields;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON object body read into `Fields`. Any Content-Type is accepted as long as the body is
/// JSON (curl users often forget the header). A declared length over `JsonLimit` is a 413 before
/// any byte is read (checked here rather than by a layer: a layer costs every request in flight
/// a boxed future); the route's body limit stops a body that runs past it.
pub struct JsonFields(pub Fields);

/// The largest JSON body the gateway reads (`server.max_json_bytes`), from the app's state.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimit(pub usize);

impl<S: Send + Sync> FromRequest<S> for JsonFields
where
    JsonLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(e) = ApiError::declared_too_large(req.headers(), JsonLimit::from_ref(state).0) {
            return Err(e);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(None, "the request body is too large")
            } else if ApiError::is_body_timeout(&rejection) {
                ApiError::BodyTimeout
            } else {
                ApiError::InvalidRequest {
                    message: "the request body could not be read".into(),
                    param: None,
                    code: "invalid_body",
                }
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonFields(Fields::from_json(map))),
            Ok(_) => Err(not_json("the request body must be a JSON object")),
            Err(e) => Err(not_json(&format!("the request body is not valid JSON: {e}"))),
        }
    }
}

fn not_json(message: &str) -> ApiError {
    ApiError::InvalidRequest { message: message.to_owned(), param: None, code: "invalid_json" }
}

/// `{"created", "data": [...]}` of the Images API.
#[derive(Debug, Serialize)]
pub struct ImagesResponse {
    pub created: u64,
    pub data: Vec<ImageDatum>,
    pub output_format: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ImageDatum {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

/// `GET /v1/models` entry.
#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: &'static str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

impl ModelObject {
    pub fn new(id: &'static str) -> ModelObject {
        // The OpenAI shape wants a creation time; the catalog has none, so all share one.
        ModelObject { id, object: "model", created: 1_735_689_600, owned_by: "black-forest-labs" }
    }
}
