//! `idle`: the gateway's resident memory before, while holding, and 10 s after 10,000 idle client
//! connections, in two waves: connections that send nothing, and connections that send one
//! complete request (`GET /healthz`), read the reply and then idle (keep-alive). The client holds
//! them ~1 s and closes them itself (with a reset); the gateway's default header (10 s) and idle
//! (75 s) timeouts never fire. The baseline is the simulator (the same axum/hyper stack served by
//! `axum::serve`, without the gateway's accept loop and watchdog) holding the same connections
//! right after, and, for the memory that comes back, the gateway's own RSS before the wave.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client;
use crate::procs::{self, Memory, Proc, SimOptions};
use crate::report::{Fig, Report};

pub const CONNECTIONS: usize = 10_000;
const BATCH: usize = 500;
const PAUSE: Duration = Duration::from_millis(50);
/// How long the connections are held open before the RSS sample.
const HOLD: Duration = Duration::from_secs(1);
/// How long after the client closed them the RSS is sampled again.
const AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Kind {
    /// Connect and send nothing.
    Silent,
    /// One complete `GET` and its reply, then nothing (keep-alive).
    OneRequest,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Silent => "silent",
            Kind::OneRequest => "one request then idle",
        }
    }

    /// The path each server answers cheaply without a key.
    fn path(self, gateway: bool) -> Option<&'static str> {
        match self {
            Kind::Silent => None,
            Kind::OneRequest if gateway => Some("/healthz"),
            Kind::OneRequest => Some("/sim/stats"),
        }
    }
}

/// RSS of one process around one wave.
struct Wave {
    before: Memory,
    held: Memory,
    after: Memory,
}

pub async fn run(report: &mut Report) -> Result<(), String> {
    let sim = procs::simulator(&SimOptions { name: "idle", time_scale: 1.0, task_cap: 100_000 })?;
    let gw = procs::gateway("idle", &sim.base, &[]).await?;
    {
        // Warm-up: one generation, then the client and its connection are gone (the gateway's
        // `max_connections` is 10,000: no slot stays taken by the bench's own client).
        let http = client::http();
        client::generate(&http, &gw.base, "flux-2-klein-4b", "warm [slow:0]").await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = |who: &str| format!("cannot read the {who}'s /proc status");
    let (g_idle, s_idle) =
        (gw.proc.memory().ok_or(gone("gateway"))?, sim.proc.memory().ok_or(gone("simulator"))?);
    report.add(
        "idle",
        "RSS before any idle connection",
        Fig::kb(g_idle.rss_kb),
        "simulator idle",
        Fig::kb(s_idle.rss_kb),
        None,
    );
    for kind in [Kind::Silent, Kind::OneRequest] {
        eprintln!("idle: {CONNECTIONS} {} connections to the gateway…", kind.label());
        let g = wave(&gw.proc, &gw.base, kind, true).await?;
        eprintln!("idle: {CONNECTIONS} {} connections to the simulator…", kind.label());
        let s = wave(&sim.proc, &sim.base, kind, false).await?;
        let what = format!("{CONNECTIONS} {} connections", kind.label());
        report.add(
            "idle",
            format!("RSS holding {what}"),
            Fig::kb(g.held.rss_kb),
            "simulator holding the same",
            Fig::kb(s.held.rss_kb),
            None,
        );
        let per = |w: &Wave| {
            Fig::Bytes(w.held.rss_kb.saturating_sub(w.before.rss_kb) as f64 * 1024.0 / CONNECTIONS as f64)
        };
        report.add(
            "idle",
            format!("RSS growth per connection ({})", kind.label()),
            per(&g),
            "simulator, per connection",
            per(&s),
            None,
        );
        report.add(
            "idle",
            format!("RSS {} s after closing {what}", AFTER.as_secs()),
            Fig::kb(g.after.rss_kb),
            "gateway RSS before the wave",
            Fig::kb(g.before.rss_kb),
            None,
        );
        report.add(
            "idle",
            format!("RSS {} s after closing {what}", AFTER.as_secs()),
            Fig::kb(g.after.rss_kb),
            "simulator, same wave",
            Fig::kb(s.after.rss_kb),
            None,
        );
    }
    let (g_end, s_end) =
        (gw.proc.memory().ok_or(gone("gateway"))?, sim.proc.memory().ok_or(gone("simulator"))?);
    report.add(
        "idle",
        "peak RSS (VmHWM)",
        Fig::kb(g_end.hwm_kb),
        "simulator VmHWM",
        Fig::kb(s_end.hwm_kb),
        None,
    );
    report.note(
        "idle",
        format!(
            "each wave: {CONNECTIONS} connections opened in batches of {BATCH}, held {} s by the \
             client, closed by the client; no server timeout shortened",
            HOLD.as_secs()
        ),
    );
    Ok(())
}

/// Opens `CONNECTIONS` connections of `kind` to `base`, holds them, closes them, and samples
/// `proc`'s RSS before, while held and `AFTER` later.
async fn wave(proc: &Proc, base: &str, kind: Kind, gateway: bool) -> Result<Wave, String> {
    let gone = || "cannot read a child's /proc status".to_owned();
    let before = proc.memory().ok_or_else(gone)?;
    let addr = base.trim_start_matches("http://").to_owned();
    let request = kind.path(gateway).map(|p| format!("GET {p} HTTP/1.1\r\nhost: {addr}\r\n\r\n"));
    let mut open = Vec::with_capacity(CONNECTIONS);
    while open.len() < CONNECTIONS {
        if !open.is_empty() {
            tokio::time::sleep(PAUSE).await;
        }
        let batch = (open.len()..(open.len() + BATCH).min(CONNECTIONS)).map(|i| {
            let (addr, request) = (addr.clone(), request.clone());
            async move {
                let mut conn = TcpStream::connect(&addr).await.map_err(|e| format!("connect {i}: {e}"))?;
                // Closed with a reset: 10,000 client ports in TIME_WAIT per wave would slow
                // the next wave's connects to the same port (the server sees the close either way).
                conn.set_zero_linger().map_err(|e| format!("linger {i}: {e}"))?;
                if let Some(request) = request {
                    exchange(&mut conn, request.as_bytes()).await.map_err(|e| format!("request {i}: {e}"))?;
                }
                Ok::<_, String>(conn)
            }
        });
        let batch = futures_util::future::try_join_all(batch);
        let conns = tokio::time::timeout(Duration::from_secs(20), batch)
            .await
            .map_err(|_| format!("a batch of connections to {addr} took over 20 s"))??;
        open.extend(conns);
    }
    tokio::time::sleep(HOLD).await;
    let held = proc.memory().ok_or_else(gone)?;
    drop(open);
    tokio::time::sleep(AFTER).await;
    let after = proc.memory().ok_or_else(gone)?;
    Ok(Wave { before, held, after })
}

/// Sends `request` and reads one whole `200` reply (headers, then `content-length` bytes).
async fn exchange(conn: &mut TcpStream, request: &[u8]) -> Result<(), String> {
    conn.write_all(request).await.map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the whole reply".into());
        }
        got.extend_from_slice(&chunk[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(format!("answered {}", head.lines().next().unwrap_or("")));
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + length {
            return Ok(());
        }
    }
}
