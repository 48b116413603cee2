//! The two child processes every scenario runs, `fluxgate simulate` and `fluxgate serve`. The
//! simulator always runs the binary cargo built for this bench; the gateway runs
//! `$FLUXGATE_BENCH_BIN` when set (e.g. a copy built with other features), so two runs compare
//! two gateway builds against the same baseline. A `Proc` kills its child when dropped, so a
//! finished, failed, timed-out or panicking scenario never leaves a process behind.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary cargo built in the bench profile: the simulator, and the gateway by default.
const BIN: &str = env!("CARGO_BIN_EXE_fluxgate");
/// Names another `fluxgate` binary to run as the gateway.
pub const BIN_VAR: &str = "FLUXGATE_BENCH_BIN";
/// The one BFL key the simulator accepts and the gateway uses.
pub const KEY: &str = "bench-key";
/// Child logs go here, one file per process per scenario.
const LOG_DIR: &str = env!("CARGO_TARGET_TMPDIR");

/// A child process that dies with its guard.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Resident memory of a process, from `/proc/PID/status`, in kB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kb: u64,
    /// VmHWM: the most ever resident.
    pub hwm_kb: u64,
}

impl Proc {
    fn start(name: &str, mut cmd: Command) -> Result<Proc, String> {
        std::fs::create_dir_all(LOG_DIR).map_err(|e| format!("{LOG_DIR}: {e}"))?;
        let log = PathBuf::from(LOG_DIR).join(format!("{name}.log"));
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        // Plain log lines in the files (tracing-subscriber honours NO_COLOR).
        cmd.stderr(file).stdin(Stdio::null()).env("NO_COLOR", "1");
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
        Ok(Proc { name: name.to_owned(), child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None once the process is gone.
    pub fn memory(&self) -> Option<Memory> {
        memory_of(self.pid())
    }

    /// An error naming the log if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited ({status}); see {}", self.name, self.log.display())),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of process `pid`; None once it is gone.
pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some(Memory { rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")? })
}

/// How a scenario wants its simulator.
pub struct SimOptions {
    pub name: &'static str,
    pub time_scale: f64,
    pub task_cap: usize,
}

pub struct Sim {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// Starts `fluxgate simulate` on a free loopback port and waits for its "listening" line.
pub fn simulator(o: &SimOptions) -> Result<Sim, String> {
    let mut cmd = Command::new(BIN);
    cmd.args(["simulate", "--listen", "127.0.0.1:0", "--keys", KEY])
        .args(["--time-scale", &o.time_scale.to_string(), "--task-cap", &o.task_cap.to_string()])
        .args(["--kontext-max-cap", &o.task_cap.to_string()])
        .stdout(Stdio::piped());
    if simulate_accepts("--no-record-bodies") {
        // Edits send gigabytes of base64; the simulator need not keep them.
        cmd.arg("--no-record-bodies");
    }
    let mut proc = Proc::start(&format!("{}-simulator", o.name), cmd)?;
    let stdout = proc.child.stdout.take().ok_or("simulator stdout not captured")?;
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the first line so the simulator never writes into a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("BFL simulator listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(base) => Ok(Sim { proc, base }),
        Err(_) => {
            proc.check_alive()?;
            Err(format!("the simulator did not say where it listens within 15 s; see {}", proc.log.display()))
        }
    }
}

/// Whether `fluxgate simulate --help` lists `flag` (lets the bench use flags added later).
fn simulate_accepts(flag: &str) -> bool {
    static HELP: OnceLock<String> = OnceLock::new();
    let help = HELP.get_or_init(|| {
        Command::new(BIN)
            .args(["simulate", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    });
    help.contains(flag)
}

pub struct Gateway {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// Starts `fluxgate serve` against `sim_base` on a port chosen here (serve logs its address only
/// on stderr) and waits until `GET /readyz` answers 200. `extra` env vars override the defaults.
pub async fn gateway(name: &str, sim_base: &str, extra: &[(&str, &str)]) -> Result<Gateway, String> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("serve")
        .env("FLUXGATE__SERVER__LISTEN", &listen)
        .env("FLUXGATE__UPSTREAM__BASE_URL", sim_base)
        .env("FLUXGATE__UPSTREAM__KEYS", KEY)
        // The allow-list matches ports: the simulator's own host:port.
        .env(
            "FLUXGATE__UPSTREAM__ALLOWED_HOSTS",
            sim_base.trim_start_matches("http://").trim_end_matches('/'),
        )
        .env("FLUXGATE__UPSTREAM__ALLOW_HTTP", "true")
        .env("FLUXGATE__UPSTREAM__FIRST_POLL_SCALE", "1.0")
        // Open, in memory, logging text: the benchmark measures the gateway, not client keys.
        .env("FLUXGATE__SERVER__AUTH", "none")
        .env("FLUXGATE__USAGE__PATH", "")
        .env("FLUXGATE__TELEMETRY__LOG_FORMAT", "text")
        .stdout(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut proc = Proc::start(&format!("{name}-gateway"), cmd)?;
    let base = format!("http://{listen}");
    let http = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        proc.check_alive()?;
        let ready = http.get(format!("{base}/readyz")).timeout(Duration::from_secs(1)).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return Ok(Gateway { proc, base });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the gateway was not ready within 20 s; see {}", proc.log.display()))
}

/// A `redis-server` (Debian's package, on the PATH) on a free loopback port, without persistence.
pub struct RedisServer {
    pub proc: Proc,
    /// `redis://127.0.0.1:PORT`
    pub url: String,
}

pub fn redis(name: &str) -> Result<RedisServer, String> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null());
    let mut proc = Proc::start(name, cmd).map_err(|e| format!("{e} (install Debian's redis-server)"))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        proc.check_alive()?;
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(RedisServer { proc, url: format!("redis://127.0.0.1:{port}") });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("redis-server did not listen within 10 s; see {}", proc.log.display()))
}

/// The gateway's binary: `$FLUXGATE_BENCH_BIN`, else the one cargo built for this bench.
pub fn gateway_bin() -> String {
    std::env::var(BIN_VAR).ok().filter(|b| !b.is_empty()).unwrap_or_else(|| BIN.to_owned())
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The soft open-file limit of this process (children inherit it), from `/proc/self/limits`.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line.split_whitespace().nth(3)? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}
