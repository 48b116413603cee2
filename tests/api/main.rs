//! Integration tests: the real router on port 0 against the BFL simulator on port 0, over HTTP.

// Test and benchmark code drives servers from outside: plain spawns and sleeps are fine here.
#![allow(clippy::disallowed_methods)]
// One test binary: its helpers are `pub` for its own modules.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod scripted;
mod uploads;

mod allow_list;
mod async_jobs;
mod b64_budget;
mod bfl_webhooks;
mod capacity;
mod clients;
mod edits;
mod fan_out;
mod fuzz;
mod generations;
mod hostile_upstream;
mod idempotency;
mod metrics;
mod models_and_probes;
mod outgoing_webhooks;
mod playground;
mod rehosting;
mod result_urls;
mod shutdown;
mod streaming;
mod upload_limits;
mod upstream_outcomes;
mod validation;
