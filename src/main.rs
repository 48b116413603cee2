//! The `fluxgate` binary: `serve`, `demo` (gateway + built-in BFL simulator), `simulate` and
//! `health`. Settings are loaded before logging starts, so the log format is configurable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fluxgate::clients::AuthMode;
use fluxgate::config::{Settings, Sources};
use fluxgate::server::{serve, shutdown_signal};
use fluxgate::telemetry::Traces;

#[derive(Parser)]
#[command(name = "fluxgate", version, about = "OpenAI-compatible gateway for Black Forest Labs' FLUX models")]
struct Cli {
    /// A TOML file layered over config/default.toml (environment variables still win).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway against BFL (needs FLUXGATE__UPSTREAM__KEYS or BFL_API_KEY).
    Serve,
    /// Run the gateway with the built-in BFL simulator: no key needed.
    #[cfg(feature = "simulator")]
    Demo {
        /// Simulated job durations are multiplied by this (1.0 ≈ real BFL timings).
        #[arg(long, default_value_t = 0.5)]
        time_scale: f64,
    },
    /// Exit 0 when the gateway on this machine answers /healthz (the container health check).
    Health,
    /// Client keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run only the BFL simulator (for tests and benchmarks run by hand).
    #[cfg(feature = "simulator")]
    Simulate(bfl_sim::cli::SimArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh random client token and the [[clients]] lines that admit it.
    New {
        /// The client's id, as usage, metrics and logs will name it.
        #[arg(long)]
        id: String,
    },
}

/// The process allocator: jemalloc or mimalloc by feature, otherwise the system's malloc.
#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!("choose one allocator: the `jemalloc` and `mimalloc` features exclude each other");
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Demo mode listens on loopback unless told otherwise, is open to any client (it says so), keeps
/// usage in memory, logs text, and re-hosts images in `images`, a temporary directory it owns,
/// with links signed by a key made for this run. A config file or the environment can still
/// choose otherwise.
#[cfg(feature = "simulator")]
fn demo_overlay(images: &std::path::Path) -> Result<String, String> {
    let dir =
        images.to_str().filter(|d| !d.contains('\'')).ok_or("the temporary directory's path is unusable")?;
    let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    Ok(format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\nauth = \"none\"\n\
         [usage]\npath = \"\"\n\
         [telemetry]\nlog_format = \"text\"\n\
         [delivery]\nstore = \"local\"\nlocal_dir = '{dir}'\nsigning_key = \"{key}\"\n"
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("fluxgate: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve => {
            let (settings, _traces) = load(Sources { file: cli.config.as_deref(), ..Sources::default() })?;
            if settings.capacity.keys.is_empty() {
                return Err(
                    "no BFL key: set FLUXGATE__UPSTREAM__KEYS or BFL_API_KEY (or try `fluxgate demo`)".into(),
                );
            }
            gateway(settings, None).await
        }
        #[cfg(feature = "simulator")]
        Command::Demo { time_scale } => {
            bfl_sim::cli::check_scale(time_scale)?;
            // A long demo must not grow: the simulator keeps no submit bodies here.
            let config = bfl_sim::SimConfig { time_scale, record_bodies: false, ..Default::default() };
            let sim = bfl_sim::Simulator::new(config);
            let sim_addr =
                sim.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| e.to_string())?;
            // Removed when the demo ends (the directory holds only this run's images).
            let images = tempfile::Builder::new()
                .prefix("fluxgate-demo-images-")
                .tempdir()
                .map_err(|e| format!("cannot create the demo's image directory: {e}"))?;
            let overlay = demo_overlay(images.path())?;
            let sources = Sources {
                overlay: Some(&overlay),
                file: cli.config.as_deref(),
                overrides: vec![
                    ("upstream.base_url", format!("http://{sim_addr}").into()),
                    ("upstream.keys", vec!["demo-key".to_owned()].into()),
                    // The allow-list matches ports: the simulator's, and no other local one.
                    (
                        "upstream.allowed_hosts",
                        vec![
                            format!("127.0.0.1:{}", sim_addr.port()),
                            format!("localhost:{}", sim_addr.port()),
                        ]
                        .into(),
                    ),
                    ("upstream.allow_http", true.into()),
                    ("upstream.first_poll_scale", time_scale.into()),
                ],
            };
            let (settings, _traces) = load(sources)?;
            let served = gateway(settings, Some(sim_addr)).await;
            drop(images);
            served
        }
        Command::Health => {
            let (settings, _traces) = load(Sources { file: cli.config.as_deref(), ..Sources::default() })?;
            let url = format!("http://127.0.0.1:{}/healthz", settings.server.listen.port());
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .map_err(|e| e.to_string())?;
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url} answered {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => bfl_sim::cli::run(&args).await,
        Command::Keys(KeysCommand::New { id }) => {
            let (token, lines) = fluxgate::clients::new_key(&id);
            println!("token (give it to the client; it is not stored anywhere): {token}\n");
            println!("add to the gateway's configuration file:\n\n{lines}");
            Ok(())
        }
    }
}

/// Settings from every layer, then logging (and trace export) as they configure it. Keep the
/// `Traces` until the command is done: dropping it flushes the spans not yet exported.
fn load(sources: Sources<'_>) -> Result<(Settings, Traces), String> {
    let settings = Settings::load(sources).map_err(|e| e.to_string())?;
    let traces = fluxgate::telemetry::init(&settings.telemetry);
    Ok((settings, traces))
}

async fn gateway(settings: Settings, simulator: Option<SocketAddr>) -> Result<(), String> {
    let listen = settings.server.listen;
    let open = settings.clients.auth == AuthMode::None;
    let upstream = settings.upstream.base_url.clone();
    let key_count = settings.capacity.keys.len();
    let unguarded = settings.clients.auth == AuthMode::Keys && !settings.clients.has_keys();
    let state = fluxgate::startup::build(settings).map_err(|e| e.to_string())?;
    // Checked once the rest of the configuration is known to be valid.
    if unguarded {
        return Err("no client keys: add [[clients]] entries (`fluxgate keys new --id NAME` prints one) or set server.auth = \"none\" on purpose".into());
    }
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, %upstream, keys = key_count, "fluxgate listening");
    if open {
        tracing::warn!(
            "server.auth = \"none\": open to any client, without limits (demo mode, or set on purpose)"
        );
    }
    if let Some(sim) = simulator {
        let base = format!("http://{}", display_addr(local));
        println!("fluxgate demo ready: {base} (BFL simulator on http://{sim})");
        println!("try: curl {base}/v1/images/generations -H 'content-type: application/json' \\");
        println!("       -d '{{\"model\": \"flux-2-pro\", \"prompt\": \"a lighthouse at dusk\"}}'");
        if state.server.playground {
            println!("or open the playground in a browser: {base}/");
        }
    }
    serve(listener, state, shutdown_signal()).await.map_err(|e| e.to_string())
}

/// 0.0.0.0 is where we listen, not an address to browse to.
fn display_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr }
}
