//! fluxgate: an OpenAI-compatible gateway for Black Forest Labs' FLUX image models.
//!
//! A request flows top to bottom through these modules: `server` and `middleware` (HTTP in),
//! `routes` → `openai` and `upload` (wire shapes) → `job` (a request that passed every rule, per
//! `catalog`) → `dispatch` (starts a job and follows it, recording it in `records`) → `capacity`
//! (keys, slots, the queue) and `bfl` (the upstream) → `delivery` (the reply). `config` assembles
//! every module's settings; `error` is the one client-facing error type. The BFL simulator used by
//! demo mode, tests and benchmarks is its own crate, `bfl-sim`.

pub mod batch;
pub mod bfl;
pub mod capacity;
pub mod catalog;
pub mod clients;
pub mod config;
pub mod coordination;
pub mod delivery;
pub mod dispatch;
pub mod error;
pub mod job;
pub mod middleware;
pub mod openai;
pub mod records;
pub mod retry;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod upload;
pub mod usage;
pub mod webhooks;
