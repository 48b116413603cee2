//! A batch as an event stream (`stream: true`), in OpenAI's image stream format: `: keep-alive`
//! comments (with BFL's progress when it reports one) every `delivery.keepalive_secs` while the
//! jobs run, so idle-timeout proxies keep the connection; one `image_generation.completed`
//! (`image_edit.completed`) event per image with its base64; `data: [DONE]` at the end. When every
//! image fails, an `error` event carries the same OpenAI error object as the non-streamed reply;
//! when some do, a comment says how many. BFL sends no previews, so no `partial_image` events.
//!
//! The events are made by a task of their own; a client that leaves stops it, and its jobs follow
//! the usual rule (dropped while waiting for a slot, run to the end once submitted).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::task::TaskTracker;

use super::{Batch, Kind, Phase};
use crate::delivery::{Delivery, Wanted};
use crate::error::ApiError;
use crate::job::ResponseFormat;

/// Events made ahead of a slow reader: a reader that stops reading holds the task (and its
/// images) no further than this.
const AHEAD: usize = 2;

/// The event-stream reply for `batch`.
pub fn respond(
    batch: Arc<Batch>,
    delivery: Delivery,
    keepalive: Duration,
    tracker: &TaskTracker,
) -> Response {
    let (tx, mut rx) = mpsc::channel::<Event>(AHEAD);
    tracker.spawn(produce(batch, delivery, keepalive, tx));
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, Infallible>);
    let mut response = Sse::new(events).into_response();
    // nginx buffers proxied responses unless told not to; a buffered stream reaches nobody.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn event_names(kind: Kind) -> &'static str {
    match kind {
        Kind::Generation => "image_generation.completed",
        Kind::Edit => "image_edit.completed",
    }
}

async fn produce(batch: Arc<Batch>, delivery: Delivery, keepalive: Duration, tx: mpsc::Sender<Event>) {
    // Streams carry base64, whatever `response_format` says (OpenAI's streams do the same).
    let wanted = Wanted { response_format: ResponseFormat::B64Json, ..batch.wanted };
    let (delivery, batch_ref) = (&delivery, &*batch);
    let mut images: FuturesUnordered<_> =
        (0..batch.len()).map(|index| batch_ref.deliver(index, delivery, wanted)).collect();
    let mut ticks = interval(keepalive);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = Vec::new();
    let name = event_names(batch.kind);
    loop {
        let event = tokio::select! {
            image = images.next() => match image {
                None => break,
                Some(Ok(delivered)) => {
                    let (datum, budget) = delivered.into_parts();
                    let b64 = datum.b64_json.unwrap_or_default();
                    let size = dimensions(&b64).map_or_else(|| "auto".to_owned(), |(w, h)| format!("{w}x{h}"));
                    let data = json!({
                        "type": name,
                        "b64_json": b64,
                        "created_at": batch.created_at,
                        "size": size,
                        "output_format": wanted.output_format.as_str(),
                        "quality": "auto",
                        "background": "opaque",
                    });
                    let event = Event::default().event(name).data(data.to_string());
                    // The image's share of the b64 budget is held until its event is queued.
                    let sent = tx.send(event).await;
                    drop(budget);
                    if sent.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    failures.push(e);
                    continue;
                }
            },
            _ = ticks.tick() => Event::default().comment(keepalive_text(&batch)),
        };
        if tx.send(event).await.is_err() {
            // The client has gone; its jobs follow the usual rules.
            return;
        }
    }
    drop(images);
    let asked = batch.len();
    let failed = failures.len();
    let last = match failures.into_iter().next() {
        Some(first) if failed == asked => error_event(&first),
        Some(first) => {
            tracing::warn!(job = %batch.id, asked, failed, first = %first, "some images of the stream failed; sent the rest");
            Event::default().comment(format!("{failed} of {asked} images failed"))
        }
        None => Event::default().data("[DONE]"),
    };
    let done = failed > 0 && failed < asked;
    if tx.send(last).await.is_ok() && done {
        let _ = tx.send(Event::default().data("[DONE]")).await;
    }
}

/// `event: error` with the OpenAI error object the non-streamed reply would have had.
fn error_event(error: &ApiError) -> Event {
    let mut body = error.body();
    if let Some(object) = body.as_object_mut() {
        object.insert("type".into(), json!("error"));
    }
    Event::default().event("error").data(body.to_string())
}

fn keepalive_text(batch: &Batch) -> String {
    match batch.phase() {
        Phase::Queued => "keep-alive queued".to_owned(),
        Phase::Running { progress: Some(p) } => format!("keep-alive progress={:.2}", p.clamp(0.0, 1.0)),
        Phase::Running { progress: None } | Phase::Settled => "keep-alive".to_owned(),
    }
}

/// The image's width and height, read from the header bytes at the start of its base64.
fn dimensions(b64: &str) -> Option<(usize, usize)> {
    // 4 KiB of image is enough for any header the catalog's formats put first.
    let head = b64.get(..b64.len().min(5464) / 4 * 4)?;
    let bytes = STANDARD.decode(head).ok()?;
    imagesize::blob_size(&bytes).ok().map(|s| (s.width, s.height))
}
