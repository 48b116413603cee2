//! What the gateway tells its operator: log lines on stderr (JSON or text as configured, filtered
//! by `RUST_LOG`, default `info`), Prometheus metrics (`metrics`), and, with
//! `telemetry.otlp_endpoint`, traces exported over OTLP/HTTP (`traces`). Nothing logged or
//! exported carries a BFL key, a client token or a secret.

pub mod metrics;
mod traces;

pub use traces::Traces;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// OTLP/HTTP collector base URL; `None`: no traces.
    pub otlp_endpoint: Option<String>,
}

/// Installs logging (and trace export when configured). Keep what it returns until the process
/// ends: dropping it flushes the spans not yet exported.
pub fn init(settings: &TelemetrySettings) -> Traces {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match settings.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        // Colour codes only for a person at a terminal, not in container logs.
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
    };
    let (traces, layer) = Traces::start(settings.otlp_endpoint.as_deref());
    // A second init (tests) is harmless, so its error is ignored.
    let _ = tracing_subscriber::registry().with(layer).with(fmt).with(filter).try_init();
    traces
}
