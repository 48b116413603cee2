//! `POST /v1/images/generations` and `POST /v1/images/edits` (a JSON reply, or an event stream
//! with `stream: true`), and their async forms: `POST /v1/async/images/generations`,
//! `POST /v1/async/images/edits` (202 with a job) and `GET /v1/async/jobs/{id}`. Each reads and
//! validates the request, starts its batch (or joins the one its `Idempotency-Key` started), and
//! presents it.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::batch::{Batch, Claim, Holds, IdempotencyKey, Kind, Origin, Phase, fingerprint, stream};
use crate::clients::Caller;
use crate::delivery::request_origin;
use crate::error::ApiError;
use crate::job::ImageJob;
use crate::middleware::RequestId;
use crate::openai::{Fields, ImagesResponse, JsonFields};
use crate::state::AppState;
use crate::upload::{self, EditUpload, RefRule};
use crate::webhooks::check_target;

/// Header saying how many of the `n` images asked for failed (the reply carries the others).
const FAILED_IMAGES: &str = "x-fluxgate-images-failed";

/// What every image request carries besides its body: who sent it, its id, its headers, and
/// where it came in (links to re-hosted images are built on it).
pub(super) struct Incoming {
    request_id: Arc<str>,
    caller: Caller,
    headers: HeaderMap,
    link_base: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Incoming {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Incoming, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let request_id = parts.extensions.get::<RequestId>().map_or_else(|| Arc::from(""), |id| id.0.clone());
        let link_base = request_origin(&parts.headers, &parts.uri);
        Ok(Incoming { request_id, caller, headers: parts.headers.clone(), link_base })
    }
}

impl Incoming {
    fn origin(self, kind: Kind, asynchronous: bool) -> (Origin, HeaderMap) {
        let Incoming { request_id, caller, headers, link_base } = self;
        (Origin { owner: caller, request_id, kind, link_base, asynchronous }, headers)
    }
}

pub(super) async fn create_image(
    State(state): State<AppState>,
    incoming: Incoming,
    JsonFields(fields): JsonFields,
) -> Result<Response, ApiError> {
    let job = parse_generation(&state, &fields).await?;
    let (origin, headers) = incoming.origin(Kind::Generation, false);
    // Boxed: the request's future keeps only what it waits on now, not begin's state.
    let batch = Box::pin(begin(&state, origin, &headers, "generations", &fields, job)).await?;
    present(&state, batch.batch().clone()).await
}

/// Multipart (what the SDKs send) or the JSON form with `images: [{"image_url": …}]`.
pub(super) async fn edit_image(
    State(state): State<AppState>,
    incoming: Incoming,
    body: Body,
) -> Result<Response, ApiError> {
    let (fields, job) = Box::pin(parse_edit(&state, &incoming.headers, body)).await?;
    let (origin, headers) = incoming.origin(Kind::Edit, false);
    let batch = Box::pin(begin(&state, origin, &headers, "edits", &fields, job)).await?;
    present(&state, batch.batch().clone()).await
}

pub(super) async fn create_image_async(
    State(state): State<AppState>,
    incoming: Incoming,
    JsonFields(fields): JsonFields,
) -> Result<Response, ApiError> {
    let job = parse_generation(&state, &fields).await?;
    let (origin, headers) = incoming.origin(Kind::Generation, true);
    submit_async(&state, origin, &headers, "async/generations", &fields, job).await
}

pub(super) async fn edit_image_async(
    State(state): State<AppState>,
    incoming: Incoming,
    body: Body,
) -> Result<Response, ApiError> {
    let (fields, job) = Box::pin(parse_edit(&state, &incoming.headers, body)).await?;
    let (origin, headers) = incoming.origin(Kind::Edit, true);
    submit_async(&state, origin, &headers, "async/edits", &fields, job).await
}

pub(super) async fn get_async_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(batch) = state.batches.job(&caller, &id) {
        return Ok(Json(job_object(&state, &batch).await?).into_response());
    }
    // Another replica may run it.
    let shared = match &state.shared_batches {
        Some(shared) => shared.job(&caller, &id, &state.catalog).await?,
        None => None,
    };
    let batch = shared.ok_or(ApiError::JobNotFound(id))?;
    Ok(Json(job_object(&state, &batch).await?).into_response())
}

async fn parse_generation(state: &AppState, fields: &Fields) -> Result<ImageJob, ApiError> {
    ImageJob::parse(fields, &state.catalog, &state.server.default_model, state.job_rules).await
}

async fn parse_edit(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Fields, ImageJob), ApiError> {
    let upload = read_edit(state, headers, body).await?;
    let job = ImageJob::parse_edit(
        &upload.fields,
        upload.references,
        &state.catalog,
        &state.server.default_model,
        state.job_rules,
    )
    .await?;
    Ok((upload.fields, job))
}

/// Reads either form, refusing as early as it can: a declared length over the per-request cap
/// before any byte is read, too many references for the model as the parts arrive.
async fn read_edit(state: &AppState, headers: &HeaderMap, body: Body) -> Result<EditUpload, ApiError> {
    let uploads = &state.uploads;
    let content_length =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    uploads.check_declared_length(content_length)?;
    let rule: &dyn RefRule = &*state.catalog;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return upload::read_multipart(content_type, body, uploads, rule).await;
    }
    upload::read_json_body(body, content_length, uploads, rule).await
}

/// Starts the request's batch, or, with an `Idempotency-Key` seen before for the same request,
/// joins the batch the first one started (running or done): a retry never submits twice.
async fn begin(
    state: &AppState,
    origin: Origin,
    headers: &HeaderMap,
    endpoint: &str,
    fields: &Fields,
    job: ImageJob,
) -> Result<Claim, ApiError> {
    let span = tracing::Span::current();
    span.record("client", origin.owner.id());
    span.record("model", job.model.id);
    if state.server.log_prompts {
        span.record("prompt", job.prompt.as_str());
    }
    origin.owner.admit_request().await?;
    origin.owner.check_model(job.model.id)?;
    let key = IdempotencyKey::from_headers(headers)?;
    let print = match &key {
        Some(_) => Some(fingerprint(endpoint, fields, &job.references).await?),
        None => None,
    };
    let caller = origin.owner.clone();
    // A retry joins the first request's batch without holding more of the client's limits.
    if let (Some(key), Some(print)) = (&key, print) {
        let existing = match &state.shared_batches {
            Some(shared) => shared.existing(&state.batches, &caller, key, print, &state.catalog).await?,
            None => state.batches.joined(&caller, key, print)?,
        };
        if let Some(batch) = existing {
            tracing::info!(job = %batch.id, "a retry with the same Idempotency-Key joins the first request's job");
            return Ok(Claim::Joined(batch));
        }
    }
    let holds = Holds {
        jobs: caller.reserve_jobs(job.n).await?,
        budget: state.usage.reserve(&caller, job.model.price_usd * f64::from(job.n)).await?,
    };
    let start = move || Batch::start(&state.dispatcher, &state.usage, job, origin, holds);
    let (Some(key), Some(print)) = (key, print) else {
        return Ok(Claim::Started(Arc::new(start()?)));
    };
    let claim = match &state.shared_batches {
        Some(shared) => shared.claim(&state.batches, &caller, &key, print, &state.catalog, start).await?,
        None => state.batches.claim(&caller, &key, print, start)?,
    };
    if let Claim::Joined(batch) = &claim {
        tracing::info!(job = %batch.id, "a retry with the same Idempotency-Key joins the first request's job");
    }
    Ok(claim)
}

/// The reply to a synchronous request: the images in JSON once they are ready, or the stream.
async fn present(state: &AppState, batch: Arc<Batch>) -> Result<Response, ApiError> {
    if batch.stream {
        return Ok(stream::respond(
            batch,
            state.delivery.clone(),
            state.delivery.keepalive(),
            state.dispatcher.tracker(),
        ));
    }
    let images = batch.images(&state.delivery).await?;
    let body = ImagesResponse {
        created: batch.created_at,
        data: images.data,
        output_format: batch.wanted.output_format.as_str(),
    };
    let mut response = Json(body).into_response();
    // The reply is serialised: the images' share of the b64 budget can go.
    drop(images.budget);
    if batch.len() > 1 {
        response.headers_mut().insert(FAILED_IMAGES, HeaderValue::from(images.failed));
    }
    Ok(response)
}

/// Starts (or joins) an async job and answers 202 with it at once; the job runs to its end
/// whether or not anyone asks for it, and is kept `jobs.result_ttl_secs` after. With a
/// `webhook_url`, the job object is posted there once when it ends (`webhooks`).
async fn submit_async(
    state: &AppState,
    origin: Origin,
    headers: &HeaderMap,
    endpoint: &str,
    fields: &Fields,
    job: ImageJob,
) -> Result<Response, ApiError> {
    if job.stream {
        return Err(ApiError::invalid("stream", "async jobs do not stream; poll the job, or omit `stream`"));
    }
    let webhook = match fields.string("webhook_url")? {
        Some(url) => Some(check_target(url, state.webhooks.settings())?),
        None => None,
    };
    state.batches.check_room()?;
    let claim = Box::pin(begin(state, origin, headers, endpoint, fields, job)).await?;
    let batch = claim.batch().clone();
    if let Claim::Joined(batch) = &claim
        && !batch.is_elsewhere()
    {
        state.batches.recall_job(batch);
    }
    if let Claim::Started(batch) = claim {
        state.batches.insert_job(batch.clone());
        if let Some(shared) = &state.shared_batches {
            shared.publish(&batch, None).await;
        }
        let state = state.clone();
        state.dispatcher.tracker().clone().spawn(async move {
            batch.settled().await;
            batch.account_settled();
            state.batches.settle(&batch.id);
            if let Some(url) = webhook {
                // The job object as `GET /v1/async/jobs/{id}` shows it now, once.
                match job_object(&state, &batch).await {
                    Ok(object) => {
                        state.webhooks.send(format!("evt_{}", batch.id), url, object);
                    }
                    Err(e) => {
                        tracing::warn!(job = %batch.id, error = %e, "the job's webhook could not be made")
                    }
                }
            }
        });
    }
    Ok((StatusCode::ACCEPTED, Json(job_object(state, &batch).await?)).into_response())
}

/// An async job as the API shows it: `queued`, `running` (with `progress` when BFL reports one),
/// `succeeded` with the `data` of the synchronous reply, or `failed` with the OpenAI `error`.
async fn job_object(state: &AppState, batch: &Batch) -> Result<Value, ApiError> {
    let mut object = json!({
        "id": batch.id.as_str(),
        "object": "image.job",
        "created_at": batch.created_at,
        "model": batch.model,
    });
    let fields = match batch.phase() {
        Phase::Queued => json!({"status": "queued"}),
        Phase::Running { progress } => json!({"status": "running", "progress": progress}),
        Phase::Settled => match batch.images(&state.delivery).await {
            Ok(images) => json!({
                "status": "succeeded",
                "created": batch.created_at,
                "data": images.data,
                "output_format": batch.wanted.output_format.as_str(),
                "images_failed": images.failed,
            }),
            // The job is over, its image cannot be delivered now: the error is this reply's.
            Err(e) if batch.succeeded() => return Err(e),
            Err(e) => json!({"status": "failed", "error": e.body()["error"]}),
        },
    };
    if let (Some(object), Value::Object(fields)) = (object.as_object_mut(), fields) {
        object.extend(fields);
    }
    Ok(object)
}
