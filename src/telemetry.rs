//! Logging setup: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`).
//! Nothing logged anywhere carries a BFL key or a client token.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless, so its error is ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in container logs.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
