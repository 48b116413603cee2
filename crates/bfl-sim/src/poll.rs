//! `GET /v1/get_result?id=`: injected faults first, then the task's progress or outcome as a
//! `ResultResponse`, with a freshly signed result URL once it is `Ready`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::replies;
use super::routes::x_key;
use super::state::Simulator;
use super::tasks::{Phase, Task};
use super::triggers::{CONTENT_MODERATED, ERROR, REQUEST_MODERATED};

/// A hung poll answers after a day, which no sane client waits for.
const HANG: Duration = Duration::from_secs(24 * 3600);

enum Fault {
    Status(u16),
    Garbage,
    Hang,
}

pub(super) async fn poll(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    sim.polls.fetch_add(1, Ordering::Relaxed);
    let key = x_key(&headers);
    if !sim.key_ok(key) {
        return replies::forbidden();
    }
    let Some(id) = query.ok().and_then(|Query(mut q)| q.remove("id")) else {
        let loc = vec![json!("query"), json!("id")];
        return replies::unprocessable_at(loc, "missing", "Field required", Value::Null);
    };
    match sim.poll_fault() {
        Some(Fault::Status(code)) => return replies::status_reply(code),
        Some(Fault::Garbage) => return replies::garbage(&id),
        Some(Fault::Hang) => {
            tokio::time::sleep(HANG).await;
            return replies::detail(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout");
        }
        None => {}
    }
    sim.answer(&id, key.unwrap_or_default(), Instant::now())
}

impl Simulator {
    /// One draw decides among error, garbage and hang, so each rate means what it says.
    fn poll_fault(&self) -> Option<Fault> {
        let mut st = self.lock();
        let f = st.faults;
        let r = st.fault_rng.f64();
        if r < f.poll_error_rate {
            Some(Fault::Status(if st.fault_rng.bool() { 500 } else { 503 }))
        } else if r < f.poll_error_rate + f.poll_garbage_rate {
            Some(Fault::Garbage)
        } else if r < f.poll_error_rate + f.poll_garbage_rate + f.poll_hang_rate {
            Some(Fault::Hang)
        } else {
            None
        }
    }

    /// The poll answer for task `id` as seen by `key` at `now`.
    fn answer(&self, id: &str, key: &str, now: Instant) -> Response {
        let mut st = self.lock();
        // Tasks belong to the key that submitted them; other keys cannot see them.
        let Some(task) = st.table.get_mut(id, now).filter(|t| t.key == key) else {
            return replies::task_not_found(id);
        };
        task.polls = task.polls.saturating_add(1);
        if let Some(code) = task.poll_status {
            return replies::status_reply(code);
        }
        if task.notfound_left > 0 {
            task.notfound_left -= 1;
            return replies::task_not_found(id);
        }
        let task: &Task = task;
        match task.phase(now) {
            Phase::Running { status, progress } => {
                let status = task.interim.as_deref().unwrap_or(status);
                let progress = if task.no_progress { Value::Null } else { json!(progress) };
                replies::poll(id, status, Value::Null, progress, Value::Null)
            }
            Phase::Done => {
                let (result, details) = self.outcome(id, task);
                replies::poll(id, &task.status, result, Value::Null, details)
            }
        }
    }

    /// `(result, details)` of a finished task.
    pub(super) fn outcome(&self, id: &str, task: &Task) -> (Value, Value) {
        match task.status.as_str() {
            "Ready" => (self.result(id, task), Value::Null),
            REQUEST_MODERATED | CONTENT_MODERATED => {
                (Value::Null, json!({ "Moderation Reasons": ["Simulated moderation"] }))
            }
            ERROR => (Value::Null, json!({ "error": "Simulated generation failure" })),
            _ => (Value::Null, Value::Null),
        }
    }

    fn result(&self, id: &str, task: &Task) -> Value {
        let start = self.unix_ms(task.submitted);
        let end = self.unix_ms(task.ready_at.unwrap_or(task.submitted));
        let ttl = u64::try_from(self.cfg.result_ttl.as_millis()).unwrap_or(u64::MAX);
        let exp = end.saturating_add(ttl);
        let file = format!("{id}.{}", task.format.ext());
        let sig = self.signer.sign(&file, exp);
        json!({
            "sample": format!("{}/results/{file}?exp={exp}&sig={sig}", task.base),
            "prompt": task.prompt,
            "seed": task.seed,
            "start_time": start as f64 / 1000.0,
            "end_time": end as f64 / 1000.0,
            "duration": end.saturating_sub(start) as f64 / 1000.0,
        })
    }
}
