//! `GET /v1/models` and `GET /v1/models/{id}`. One model also carries a `fluxgate` object with its
//! catalog row (size rules, references, knobs, price), which the playground reads.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::{Model, Upsampling};
use crate::error::ApiError;
use crate::job::{DEFAULT_SAFETY, MAX_PROMPT_TOKENS, SizeRules};
use crate::openai::{ModelList, ModelObject};
use crate::state::AppState;

pub(super) async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: state.catalog.iter().map(|m| ModelObject::new(m.id)).collect() })
}

/// The OpenAI model object, with the catalog row beside its fields.
#[derive(Serialize)]
pub(super) struct ModelDetail {
    #[serde(flatten)]
    model: ModelObject,
    fluxgate: Value,
}

pub(super) async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelDetail>, ApiError> {
    let model = state.catalog.get(&id).ok_or(ApiError::ModelNotFound(id))?;
    Ok(Json(ModelDetail { model: ModelObject::new(model.id), fluxgate: catalog_row(model) }))
}

/// What a client needs to build a valid request for `model`.
fn catalog_row(model: &Model) -> Value {
    let knob = |k: Option<Value>| k.unwrap_or(Value::Null);
    json!({
        "size": SizeRules::of(model),
        "edits": model.max_refs > 0,
        "max_reference_images": model.max_refs,
        "max_prompt_tokens": MAX_PROMPT_TOKENS,
        "steps": knob(model.steps.map(|k| json!({"min": k.min, "max": k.max}))),
        "guidance": knob(model.guidance.map(|k| json!({"min": k.min, "max": k.max}))),
        "raw": model.raw,
        "prompt_upsampling": model.upsampling != Upsampling::Ignored,
        "safety_tolerance": {"min": 0, "max": 6, "default": DEFAULT_SAFETY, "upstream_max": model.safety_max},
        "output_formats": ["jpeg", "png", "webp"],
        "price_usd": model.price_usd,
        "deadline_secs": model.deadline.as_secs(),
    })
}
