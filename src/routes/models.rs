//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::Json;
use axum::extract::{Path, State};

use crate::error::ApiError;
use crate::openai::{ModelList, ModelObject};
use crate::state::AppState;

pub(super) async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: state.catalog.iter().map(|m| ModelObject::new(m.id)).collect() })
}

pub(super) async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    let model = state.catalog.get(&id).ok_or(ApiError::ModelNotFound(id))?;
    Ok(Json(ModelObject::new(model.id)))
}
