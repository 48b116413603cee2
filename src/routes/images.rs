//! `POST /v1/images/generations`: validate, dispatch, deliver.

use axum::Json;
use axum::extract::State;

use crate::delivery;
use crate::error::ApiError;
use crate::job::ImageJob;
use crate::openai::{ImagesResponse, JsonFields};
use crate::state::AppState;

pub async fn generations(
    State(state): State<AppState>,
    JsonFields(fields): JsonFields,
) -> Result<Json<ImagesResponse>, ApiError> {
    let job = ImageJob::parse(&fields, &state.catalog, &state.settings.server.default_model)?;
    run(&state, job).await.map(Json)
}

async fn run(state: &AppState, job: ImageJob) -> Result<ImagesResponse, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let (response_format, output_format) = (job.response_format, job.output_format);
    let finished = state.dispatcher.run(job).await?;
    delivery::respond(&state.dispatcher, finished, response_format, output_format).await
}
