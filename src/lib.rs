//! fluxgate: an OpenAI-compatible gateway for Black Forest Labs' FLUX image models.
//!
//! A request flows top to bottom through these modules: `server` and `middleware` (HTTP in),
//! `routes` → `openai` (wire shapes) → `job` (a request that passed every rule, per `catalog`) →
//! `dispatch` (keys, retries, polling, deadlines) → `bfl` (the upstream) → `delivery` (the reply).
//! `simulator` is a faithful BFL stand-in used by demo mode, tests and benchmarks.

pub mod bfl;
pub mod catalog;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod error;
pub mod job;
pub mod middleware;
pub mod openai;
pub mod routes;
pub mod server;
pub mod simulator;
pub mod state;
pub mod telemetry;
pub mod upload;
