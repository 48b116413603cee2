//! `POST /v1/{model}`: the checks in BFL's order (route, key, body, schema, credits, caps) and
//! the creation of a task when all pass.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::models::{self, KONTEXT_MAX, Model};
use super::replies;
use super::routes::{base_url, x_key};
use super::schema::{self, Job};
use super::state::Simulator;
use super::tasks::{Caps, Task};
use super::triggers::{self, AfterSubmit, Triggers};
use super::webhooks::Webhook;
use super::{Received, body};

pub(super) async fn submit(
    State(sim): State<Arc<Simulator>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    sim.submit_attempts.fetch_add(1, Ordering::Relaxed);
    let Some(model) = path.ok().and_then(|Path(name)| models::find(&name)) else {
        return replies::not_found();
    };
    let key = x_key(&headers);
    if !sim.key_ok(key) {
        return replies::forbidden();
    }
    if let Some(code) = sim.submit_fault() {
        return replies::status_reply(code);
    }
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return replies::detail(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
        Err(e) => return replies::detail(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let value = match body::parse(&headers, &bytes) {
        Ok(v) => v,
        Err(item) => return body::reject(item),
    };
    drop(bytes);
    let Some(fields) = value.as_object() else { return body::reject(body::not_an_object(value)) };
    let triggers = Triggers::parse(fields.get("prompt").and_then(Value::as_str).unwrap_or(""));
    if let Some(code) = triggers.submit {
        return replies::status_reply(code);
    }
    let job = match schema::validate(model, fields) {
        Ok(job) => job,
        Err(r) => return replies::unprocessable(&r),
    };
    let base = sim.public_base().unwrap_or_else(|| base_url(&headers, &uri));
    let after_submit = triggers.after_submit;
    let request = Accepted { model, key: key.unwrap_or_default(), job, triggers, body: value, base };
    match sim.accept(request) {
        Ok((reply, webhook)) => {
            if let Some((webhook, dropped)) = webhook {
                sim.schedule_webhook(webhook, dropped);
            }
            match after_submit {
                None => (StatusCode::OK, axum::Json(reply)).into_response(),
                Some(how) => lost_answer(how).await,
            }
        }
        Err(Refusal::Credits) => replies::detail(StatusCode::PAYMENT_REQUIRED, replies::NO_CREDITS),
        Err(Refusal::Capacity) => replies::detail(StatusCode::TOO_MANY_REQUESTS, replies::TOO_MANY_TASKS),
    }
}

/// The answer to a submit whose task exists, lost on the way back.
async fn lost_answer(how: AfterSubmit) -> Response {
    match how {
        AfterSubmit::Hang => {
            // Longer than any client waits; the task runs (and is billed) meanwhile.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            replies::status_reply(504)
        }
        AfterSubmit::Reset => {
            let broken = futures_util::stream::iter([
                Ok(Bytes::from_static(b"{\"id\": \"")),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut mid-reply")),
            ]);
            let mut response = Response::new(axum::body::Body::from_stream(broken));
            response
                .headers_mut()
                .insert("content-type", axum::http::HeaderValue::from_static("application/json"));
            response
        }
        AfterSubmit::Garbage => (StatusCode::OK, "<html>502 Bad Gateway</html>").into_response(),
    }
}

/// A submit that passed validation and awaits the account checks.
struct Accepted<'a> {
    model: &'static Model,
    key: &'a str,
    job: Job,
    triggers: Triggers,
    body: Value,
    base: String,
}

enum Refusal {
    Credits,
    Capacity,
}

impl Simulator {
    /// `Some(500 | 503)` when the submit fault fires.
    fn submit_fault(&self) -> Option<u16> {
        let mut st = self.lock();
        let rate = st.faults.submit_error_rate;
        let hit = st.fault_rng.f64() < rate;
        hit.then(|| if st.fault_rng.bool() { 500 } else { 503 })
    }

    /// The submit's answer, and the webhook to send when the task ends (with whether to drop it).
    fn accept(&self, a: Accepted) -> Result<(Value, Option<(Webhook, bool)>), Refusal> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.broke.contains(a.key) {
            return Err(Refusal::Credits);
        }
        let kontext_max = a.model.path == KONTEXT_MAX;
        let caps = Caps { all: self.cfg.task_cap, kontext_max: self.cfg.kontext_max_cap };
        if !st.table.has_room(a.key, kontext_max, caps, now) {
            self.rejected_429.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Capacity);
        }
        st.seq += 1;
        // Per-task randomness independent of the fault RNG, so faults stay reproducible.
        let mut rng = fastrand::Rng::with_seed(self.cfg.seed ^ st.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let run = run_time(a.model, &a.triggers, self.cfg.time_scale, &mut rng);
        let seed = a.job.seed.unwrap_or_else(|| rng.i64(0..=i64::from(u32::MAX)));
        let prompt = if a.job.upsample {
            format!("{}, highly detailed, cinematic lighting", a.job.prompt)
        } else {
            a.job.prompt.clone()
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (w, h) = a.job.size;
        let output_mp = mp(u64::from(w) * u64::from(h));
        let input_mp = mp(a.job.input_dims.iter().flatten().map(|&(w, h)| u64::from(w) * u64::from(h)).sum());
        let cost = ((a.model.credits * output_mp.max(1.0) + a.model.credits / 2.0 * input_mp) * 100.0)
            .round()
            / 100.0;
        let ready_at = run.and_then(|d| now.checked_add(d));
        let delay = a.triggers.webhook_delay.unwrap_or(self.cfg.webhook_delay);
        let webhook = Webhook::requested(&a.body, &id, ready_at, delay).map(|w| {
            let dropped = a.triggers.webhook_drop || rng.f64() < self.cfg.webhook_drop_rate;
            (w, dropped)
        });
        let task = Task {
            model: a.model,
            key: a.key.to_owned(),
            submitted: now,
            ready_at,
            status: if a.triggers.error_seed == Some(seed) {
                triggers::ERROR.to_owned()
            } else {
                a.triggers.status.clone().unwrap_or_else(|| "Ready".to_owned())
            },
            prompt,
            seed,
            size: a.job.size,
            format: a.job.format,
            base: a.base.clone(),
            polls: 0,
            notfound_left: a.triggers.notfound,
            poll_status: a.triggers.poll_status,
            interim: a.triggers.interim.clone(),
            no_progress: a.triggers.no_progress,
            image: Arc::default(),
        };
        st.table.insert(id.clone(), task, kontext_max, now);
        let body = if self.cfg.record_bodies { a.body } else { without_images(a.body) };
        if self.cfg.received_capacity > 0 {
            if st.received.len() >= self.cfg.received_capacity {
                st.received.pop_front();
            }
            st.received.push_back(Received {
                path: format!("/v1/{}", a.model.path),
                key: a.key.to_owned(),
                body,
                input_dims: a.job.input_dims,
            });
        }
        // With a webhook, BFL answers `AsyncWebhookResponse`: no polling_url.
        let reply = match &webhook {
            Some((w, _)) => json!({
                "id": id,
                "status": "Pending",
                "webhook_url": w.url,
                "cost": cost,
                "input_mp": input_mp,
                "output_mp": output_mp,
            }),
            None => json!({
                "id": id,
                "polling_url": format!("{}/v1/get_result?id={id}", a.base),
                "cost": cost,
                "input_mp": input_mp,
                "output_mp": output_mp,
            }),
        };
        Ok((reply, webhook))
    }
}

/// The body with each `input_image*` string replaced by its length, so a long benchmark's record
/// stays small (`SimConfig::record_bodies = false`).
fn without_images(mut body: Value) -> Value {
    if let Some(fields) = body.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            if name.starts_with("input_image")
                && let Some(s) = value.as_str()
            {
                *value = json!(s.len());
            }
        }
    }
    body
}

/// Megapixels to two decimals, as BFL reports them.
fn mp(pixels: u64) -> f64 {
    (pixels as f64 / 10_000.0).round() / 100.0
}

/// How long the job runs; `None` means forever.
fn run_time(model: &Model, t: &Triggers, scale: f64, rng: &mut fastrand::Rng) -> Option<Duration> {
    if t.hang {
        return None;
    }
    if let Some(d) = t.slow {
        return Some(d);
    }
    let secs = model.secs * (0.9 + 0.2 * rng.f64()) * scale;
    if secs.is_nan() || secs <= 0.0 {
        return Some(Duration::ZERO);
    }
    // Too long to represent is as good as forever.
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrecorded_bodies_keep_every_field_but_image_data() {
        let body =
            json!({"prompt": "p", "input_image": "aGVsbG8=", "input_image_8": "https://x/y.png", "seed": 3});
        assert_eq!(
            without_images(body),
            json!({"prompt": "p", "input_image": 8, "input_image_8": 15, "seed": 3})
        );
        assert_eq!(without_images(json!({"input_image": 5})), json!({"input_image": 5}));
    }
}
