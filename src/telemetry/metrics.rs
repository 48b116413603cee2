//! Prometheus metrics, served at `GET /metrics`: the one place their names and labels live. Labels
//! stay low-cardinality: routes are route patterns, keys are stable key ids, clients are
//! configured ids, models are catalog ids; never a request id, a prompt, a token or a key.
//!
//! The recorder is process-wide (the `metrics` crate's global), installed once.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Seconds buckets for request, job and wait durations (up to the longest model deadline).
const SECONDS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Installs the recorder (once per process) and returns what renders it.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS);
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::error!(error = %e, "the metrics recorder could not be installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// What is true right now, sampled when `/metrics` is read.
pub struct Now {
    pub jobs_in_flight: usize,
    pub queue_length: usize,
    /// Slots this process holds, per stable key id.
    pub slots_in_use: Vec<(String, usize)>,
    /// Redis does not answer and slots are counted on a local share.
    pub coordination_degraded: bool,
}

/// The Prometheus text for everything recorded, with `now` sampled into its gauges.
pub fn render(now: Now) -> String {
    gauge!("fluxgate_jobs_in_flight").set(now.jobs_in_flight as f64);
    gauge!("fluxgate_queue_length").set(now.queue_length as f64);
    gauge!("fluxgate_coordination_degraded").set(if now.coordination_degraded { 1.0 } else { 0.0 });
    for (key, held) in now.slots_in_use {
        gauge!("fluxgate_slots_in_use", "key" => key).set(held as f64);
    }
    install().map(PrometheusHandle::render).unwrap_or_default()
}

pub fn http_request(route: &str, status: u16, took: Duration) {
    counter!("fluxgate_http_requests_total", "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!("fluxgate_http_request_duration_seconds", "route" => route.to_owned())
        .record(took.as_secs_f64());
}

/// One submit's outcome: `accepted`, or the kind of error.
pub fn upstream_submit(outcome: &'static str) {
    counter!("fluxgate_upstream_submits_total", "outcome" => outcome).increment(1);
}

/// One poll's outcome: the task's status, or the kind of error.
pub fn upstream_poll(outcome: &'static str) {
    counter!("fluxgate_upstream_polls_total", "outcome" => outcome).increment(1);
}

/// A task from its submit to its terminal status.
pub fn job_duration(model: &'static str, took: Duration) {
    histogram!("fluxgate_job_duration_seconds", "model" => model).record(took.as_secs_f64());
}

/// How late Ready was noticed, at most: the time since the poll before the one that saw it.
pub fn ready_lag(model: &'static str, at_most: Duration) {
    histogram!("fluxgate_ready_lag_seconds", "model" => model).record(at_most.as_secs_f64());
}

/// What the poll schedule has learned of a model's durations (submit to Ready) in one size band
/// (`1mp`, `2mp`, `4mp`): its `0.05`, `0.5` and `0.95` quantiles.
pub fn learned_duration(model: &'static str, size: &'static str, quantile: &'static str, took: Duration) {
    gauge!("fluxgate_learned_duration_seconds", "model" => model, "size" => size, "quantile" => quantile)
        .set(took.as_secs_f64());
}

pub fn queue_wait(took: Duration) {
    histogram!("fluxgate_queue_wait_seconds").record(took.as_secs_f64());
}

pub fn billed(model: &str, client: &str, usd: f64) {
    let labels = [("model", model.to_owned()), ("client", client.to_owned())];
    counter!("fluxgate_images_billed_total", &labels).increment(1);
    // The `metrics` crate's counters count whole units; money is a float that only grows.
    gauge!("fluxgate_billed_usd_total", &labels).increment(usd);
}
