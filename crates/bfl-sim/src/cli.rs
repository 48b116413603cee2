//! The simulator's command-line options, shared by the `bfl-sim` binary and `fluxgate simulate`.

use std::net::SocketAddr;

use super::SimConfig;

/// Options of a standalone simulator process.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Simulated job durations are multiplied by this (1.0 ≈ real BFL timings).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Accepted BFL keys, comma-separated (empty: any key).
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Active tasks allowed per key (BFL: 24).
    #[arg(long, default_value_t = 24)]
    pub task_cap: usize,
    /// Active flux-kontext-max tasks allowed per key (BFL: 6).
    #[arg(long, default_value_t = 6)]
    pub kontext_max_cap: usize,
    /// Keep submit bodies without their input_image* data (bounded memory in long benchmarks).
    #[arg(long)]
    pub no_record_bodies: bool,
}

impl SimArgs {
    /// The simulator these options describe, or why they are unusable.
    pub fn config(&self) -> Result<SimConfig, String> {
        check_scale(self.time_scale)?;
        Ok(SimConfig {
            time_scale: self.time_scale,
            keys: self.keys.clone(),
            task_cap: self.task_cap,
            kontext_max_cap: self.kontext_max_cap,
            record_bodies: !self.no_record_bodies,
            ..SimConfig::default()
        })
    }
}

/// A time scale that keeps simulated durations meaningful.
pub fn check_scale(scale: f64) -> Result<(), String> {
    if scale.is_finite() && scale > 0.0 && scale <= 10.0 {
        Ok(())
    } else {
        Err(format!("--time-scale must be above 0 and at most 10, got {scale}"))
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Serves a simulator with `args` until SIGTERM or Ctrl-C, printing where it listens first.
pub async fn run(args: &SimArgs) -> Result<(), String> {
    let sim = super::Simulator::new(args.config()?);
    let addr = sim.spawn(args.listen).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("BFL simulator listening on http://{addr}");
    stop_signal().await;
    Ok(())
}
