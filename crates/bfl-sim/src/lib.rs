//! An in-process simulator of Black Forest Labs' FLUX API, faithful enough to judge the gateway:
//! BFL's endpoint schemas and FastAPI-style 422s, `x-key` auth, per-key active-task caps (429),
//! Pending → Ready with progress, moderation and error outcomes, fault injection, and expiring
//! signed result URLs serving real JPEG/PNG/WebP bytes of the requested size.
//!
//! Endpoints: `POST /v1/{model}` (submit), `GET /v1/get_result?id=` (poll, the `polling_url`),
//! `GET /results/{id}.{ext}?exp=&sig=` (signed result download, no `x-key`, no CORS).
//! Test tooling, not BFL (no `x-key`, for benchmarks in another process): `GET /sim/stats`
//! (counters) and `GET /sim/tasks` (every task with unix-ms timings).
//!
//! Submit checks run in this order: unknown model 404, `x-key` 403, injected 500/503,
//! body (256 MiB limit → 413; bad JSON → 422), `[submit:CODE]`, schema 422, credits 402, caps 429.
//! URLs are built on `SimConfig::public_base` (changeable with `Simulator::set_public_base`), else
//! on `http://` + the submit's Host header. A task is visible only to the key that submitted it
//! (others get 404 `Task not found`).
//!
//! Prompt triggers (kept in the recorded prompt; unknown brackets are ordinary text):
//! - `[moderate-request]` → terminal status `Request Moderated`; `[moderate-content]` →
//!   `Content Moderated`; `[error]` → `Error` with a `details` object; `[status:XYZ]` → terminal
//!   status literally `XYZ`. The first of these in the prompt wins.
//! - `[slow:MS]` → the job takes exactly MS milliseconds (not scaled by `time_scale`).
//! - `[interim:XYZ]` → while the job runs, polls report status `XYZ` instead of `Pending`.
//! - `[no-progress]` → while the job runs, polls report `progress: null`.
//! - `[after-submit:hang|reset|garbage]` → the task is created, but the submit's answer never
//!   comes, breaks off mid-body, or is not JSON (how a lost answer looks to the gateway).
//! - `[error-seed:N]` → the task whose seed is N ends with `Error` (the others are Ready).
//! - `[hang]` → the job never finishes (`Pending` forever, and it keeps its slot).
//! - `[submit:CODE]` → the submit answers HTTP CODE (400–599) with BFL's body for it, no task.
//! - `[notfound:N]` → the first N polls of the task answer 404 `Task not found`.
//! - `[poll-status:CODE]` → every poll of the task answers HTTP CODE (400–599).
//! - `[webhook:drop]` → the task's webhook is never sent; `[webhook-delay:MS]` → it goes out MS
//!   milliseconds after the task turns terminal (instead of `SimConfig::webhook_delay`).
//!
//! Webhooks: a submit with a `webhook_url` is answered as BFL does (`{id, status, webhook_url,
//! cost…}`, no `polling_url`; `GET /v1/get_result?id=` still works), and once the task is terminal
//! (Ready, moderated, failed) its `ResultResponse` is POSTed to the URL with `X-Webhook-Secret:
//! <webhook_secret>` and `X-BFL-Signature: sha256=<hex HMAC-SHA256 of the body>` when a secret was
//! given. One attempt each (no retries), `SimConfig::webhook_timeout` long, at most
//! `SimConfig::webhook_max_in_flight` scheduled at once (more are dropped and counted); any URL is
//! allowed, loopback included (this is a test tool). `SimConfig::webhook_drop_rate` drops some.
//!
//! Memory is bounded, so a long `fluxgate demo` or benchmark does not grow without end. Nothing
//! runs in the background: expired entries are swept by the requests that follow (min-heaps of
//! deadlines: O(1) per request when nothing is due, O(log n + task_cap) once per task).
//! - A finished task, with its cached image, is forgotten once its signed result URL has
//!   expired (`SimConfig::result_ttl` after it turned terminal). Polls of it then answer 404
//!   `Task not found`, its URL answers 403 like any expired link, and `Simulator::task`,
//!   `GET /sim/tasks` no longer list it. Counters (`/sim/stats`) keep counting.
//! - A running task is never forgotten while it holds a cap slot (at most `task_cap` per key).
//!   A `[hang]` task holds its slot for `SimConfig::hung_task_ttl` (6 hours by default), then is
//!   forgotten and frees it. A `[slow:MS]` task is kept until MS has passed plus `result_ttl`,
//!   however long that is.
//! - `Simulator::received` is a ring of the newest `SimConfig::received_capacity` accepted
//!   submits (10,000 by default). With `record_bodies` on, each keeps its whole body, input
//!   images included; turn it off (or lower the capacity) when those are large.
//! - Keys given to `revoke_key` / `set_out_of_credits` are kept until undone: they come from the
//!   test driving the simulator, not from traffic.

mod body;
pub mod cli;
mod fields;
mod images;
mod inputs;
mod introspect;
mod models;
mod poll;
mod replies;
mod results;
mod routes;
mod schema;
mod signing;
mod state;
mod submit;
mod tasks;
mod triggers;
mod webhooks;

#[cfg(test)]
mod http_tests;

use std::time::Duration;

pub use state::Simulator;

/// How the simulator behaves; `Default` mirrors BFL's real limits at demo speed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Keys accepted in `x-key`. Empty = any non-empty key is accepted.
    pub keys: Vec<String>,
    /// Active tasks allowed per key across all models (BFL: 24).
    pub task_cap: usize,
    /// Extra cap per key for flux-kontext-max (BFL: 6).
    pub kontext_max_cap: usize,
    /// Multiplies every simulated job duration (1.0 = realistic-ish demo speed; tests use e.g. 0.02).
    pub time_scale: f64,
    /// How long signed result URLs stay valid (BFL: 10 minutes). A finished task, and its
    /// encoded image, is forgotten once its URL has expired: this long after it turned terminal.
    pub result_ttl: Duration,
    /// How long a task that never finishes (`[hang]`) is kept after submit, holding its slot;
    /// then it is forgotten and its slot freed (default 6 hours).
    pub hung_task_ttl: Duration,
    /// Base URL (scheme://host:port, no trailing slash) used to build `polling_url` and result URLs.
    /// None = derive from the submit request's Host header (http).
    pub public_base: Option<String>,
    pub faults: Faults,
    /// Seed for the fault RNG, so fault tests are reproducible.
    pub seed: u64,
    /// Keep whole submit bodies in `Simulator::received`. When false, `input_image*` values are
    /// replaced by their length, so long benchmarks with reference images keep memory bounded.
    pub record_bodies: bool,
    /// How many accepted submits `Simulator::received` keeps (the newest; 0 = none).
    pub received_capacity: usize,
    /// How long after a task turns terminal its webhook goes out.
    pub webhook_delay: Duration,
    /// Probability (0.0–1.0) that a task's webhook is never sent, drawn per task.
    pub webhook_drop_rate: f64,
    /// Timeout of one webhook POST.
    pub webhook_timeout: Duration,
    /// Webhooks scheduled or being sent at once; beyond, a task's webhook is dropped.
    pub webhook_max_in_flight: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            keys: Vec::new(),
            task_cap: 24,
            kontext_max_cap: 6,
            time_scale: 1.0,
            result_ttl: Duration::from_secs(600),
            public_base: None,
            faults: Faults::default(),
            seed: 1,
            record_bodies: true,
            hung_task_ttl: Duration::from_secs(6 * 3600),
            received_capacity: 10_000,
            webhook_delay: Duration::ZERO,
            webhook_drop_rate: 0.0,
            webhook_timeout: Duration::from_secs(10),
            webhook_max_in_flight: 1024,
        }
    }
}

/// Probabilities (0.0–1.0) of misbehaviour, drawn from the seeded RNG.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Answer a submit with 500 or 503 (no task created).
    pub submit_error_rate: f64,
    /// Answer a poll with 500 or 503.
    pub poll_error_rate: f64,
    /// Answer a poll with 200 and a non-JSON body.
    pub poll_garbage_rate: f64,
    /// A poll that never answers (sleeps ~forever; the client must time out).
    pub poll_hang_rate: f64,
}

/// One accepted submit, as the simulator received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub key: String,
    pub body: serde_json::Value,
    /// (width, height) of each decoded input_image, input_image_2.. in order (base64 ones only; URL refs give None)
    pub input_dims: Vec<Option<(u32, u32)>>,
}

/// A snapshot of one task, for assertions.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub model_path: String,
    pub key: String,
    pub submitted_at: std::time::Instant,
    /// When it turns terminal (for `[hang]`, about a century after submit).
    pub ready_at: std::time::Instant,
    pub polls: u32,
    pub status_when_done: String,
}
