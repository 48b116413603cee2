//! `memory`: the gateway's resident memory idle and with 10,000 generations in flight
//! (`[slow:20000]` jobs, opened in batches), next to the simulator's, which holds the same 10,000
//! tasks at the same moment, and next to the HTTP layer's own floor: a fresh simulator holding
//! 10,000 requests whose bodies never arrive.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client;
use crate::procs::{self, Memory, SimOptions};
use crate::report::{Fig, Report, Target};

pub const IN_FLIGHT: usize = 10_000;
const BATCH: usize = 500;
const PAUSE: Duration = Duration::from_millis(50);
/// flux-2-pro's first poll comes 3 s after submit, which leaves the CPU to the submits first.
const MODEL: &str = "flux-2-pro";
const JOB: Duration = Duration::from_secs(20);
const TARGET_BYTES: f64 = 200e6;
/// The gateway's own state per job in flight (measured over h2c).
const PER_JOB_TARGET_BYTES: f64 = 4e3;
/// How long after the last reply (and the clients closing) the RSS is sampled again.
const AFTER: Duration = Duration::from_secs(10);

/// How the bench's clients reach the gateway.
#[derive(Clone, Copy)]
enum Wire {
    /// HTTP/1.1: one connection per request in flight, as the OpenAI SDKs talk.
    Http1,
    /// HTTP/2 without TLS (prior knowledge), as a load balancer multiplexing onto the gateway
    /// would: many streams per connection.
    H2c,
}

impl Wire {
    fn label(self) -> String {
        match self {
            Wire::Http1 => format!("HTTP/1.1, {IN_FLIGHT} connections"),
            Wire::H2c => format!("h2c, {H2_CONNECTIONS} connections"),
        }
    }

    fn clients(self) -> Vec<reqwest::Client> {
        match self {
            Wire::Http1 => vec![client::http()],
            // hyper's server allows 200 concurrent streams per connection by default.
            Wire::H2c => (0..H2_CONNECTIONS)
                .map(|_| {
                    reqwest::Client::builder()
                        .no_proxy()
                        .http2_prior_knowledge()
                        .build()
                        .expect("an h2c client builds")
                })
                .collect(),
        }
    }
}

const H2_CONNECTIONS: usize = 64;

pub async fn run(report: &mut Report) -> Result<(), String> {
    eprintln!("memory: HTTP floor, {IN_FLIGHT} half-sent requests to a fresh simulator…");
    let (floor_idle, floor_busy) = http_floor().await?;
    for wire in [Wire::Http1, Wire::H2c] {
        wave(report, wire, (floor_idle, floor_busy)).await?;
    }
    Ok(())
}

/// One fresh simulator and gateway, `IN_FLIGHT` slow generations over `wire`, RSS sampled when
/// all of them are running upstream.
async fn wave(
    report: &mut Report,
    wire: Wire,
    (floor_idle, floor_busy): (Memory, Memory),
) -> Result<(), String> {
    let sim = procs::simulator(&SimOptions { name: "memory", time_scale: 1.0, task_cap: 100_000 })?;
    let cap = [("FLUXGATE__UPSTREAM__TASK_CAP", "100000")];
    let mut gw = procs::gateway("memory", &sim.base, &cap).await?;
    let http = client::http();
    let clients = wire.clients();
    // Opens every client's connection, all at once (each warm-up job lasts a first-poll wait).
    let warm = clients.iter().map(|c| client::generate(c, &gw.base, MODEL, "warm [slow:0]"));
    futures_util::future::try_join_all(warm).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = |who: &str| format!("cannot read the {who}'s /proc status");
    let (g_idle, s_idle) =
        (gw.proc.memory().ok_or(gone("gateway"))?, sim.proc.memory().ok_or(gone("simulator"))?);

    eprintln!("memory: opening {IN_FLIGHT} requests of {} s each over {}…", JOB.as_secs(), wire.label());
    let started = Instant::now();
    let mut handles = Vec::with_capacity(IN_FLIGHT);
    for i in 0..IN_FLIGHT {
        if i > 0 && i % BATCH == 0 {
            tokio::time::sleep(PAUSE).await;
        }
        let (h, base) = (clients[i % clients.len()].clone(), gw.base.clone());
        let prompt = format!("memory {i} [slow:{}]", JOB.as_millis());
        handles.push(tokio::spawn(async move { client::generate(&h, &base, MODEL, &prompt).await }));
    }
    let opened = started.elapsed();
    // Jobs start finishing JOB after the first submit, so waiting longer cannot raise the count.
    let mut active = 0;
    while started.elapsed() < JOB - Duration::from_secs(2) {
        gw.proc.check_alive()?;
        active = client::sim_stats(&http, &sim.base).await?["active"].as_u64().unwrap_or(0) as usize;
        if active >= IN_FLIGHT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reached = started.elapsed();
    let (g_busy, s_busy) =
        (gw.proc.memory().ok_or(gone("gateway"))?, sim.proc.memory().ok_or(gone("simulator"))?);
    eprintln!("memory: sampled at {active} active upstream tasks; letting the jobs finish…");

    // Every job ends JOB after its submit; give replies 15 s more, then give up on the rest.
    let deadline = tokio::time::Instant::from_std(started + opened + JOB + Duration::from_secs(15));
    let (mut ok, mut failed, mut unfinished, mut first_error) = (0, 0, 0, None);
    for h in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(deadline, h).await {
            Ok(Ok(Ok(()))) => ok += 1,
            Ok(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(_) => {
                abort.abort();
                unfinished += 1;
            }
        }
    }

    // The spike is over: the clients close their connections; what is still resident later is
    // what the allocator did not give back (the simulator forgets finished tasks on its own clock).
    drop(clients);
    tokio::time::sleep(AFTER).await;
    let (g_after, s_after) =
        (gw.proc.memory().ok_or(gone("gateway"))?, sim.proc.memory().ok_or(gone("simulator"))?);

    let n = format!("{active} in flight ({})", wire.label());
    let under = |m: Memory| Target::new("< 200 MB", m.rss_kb as f64 * 1024.0 < TARGET_BYTES);
    if matches!(wire, Wire::Http1) {
        report.add(
            "memory",
            "RSS idle",
            Fig::kb(g_idle.rss_kb),
            "simulator idle",
            Fig::kb(s_idle.rss_kb),
            None,
        );
    }
    report.add(
        "memory",
        format!("RSS, {n}"),
        Fig::kb(g_busy.rss_kb),
        "simulator, same tasks",
        Fig::kb(s_busy.rss_kb),
        under(g_busy),
    );
    let hwm = Memory { rss_kb: g_busy.hwm_kb, hwm_kb: g_busy.hwm_kb };
    report.add(
        "memory",
        format!("peak RSS ({})", wire.label()),
        Fig::kb(g_busy.hwm_kb),
        "simulator VmHWM",
        Fig::kb(s_busy.hwm_kb),
        under(hwm),
    );
    let per = |busy: Memory, idle: Memory| {
        Fig::Bytes(busy.rss_kb.saturating_sub(idle.rss_kb) as f64 * 1024.0 / active.max(1) as f64)
    };
    // Over h2c the connections' buffers are shared by ~150 streams each: the growth per request is
    // the gateway's own state per job.
    let per_job = per(g_busy, g_idle);
    let own = match (wire, per_job) {
        (Wire::H2c, Fig::Bytes(b)) => Target::new("≤ 4 kB per job", b <= PER_JOB_TARGET_BYTES),
        _ => None,
    };
    report.add(
        "memory",
        format!("RSS growth per request ({})", wire.label()),
        per_job,
        "simulator, per task",
        per(s_busy, s_idle),
        own,
    );
    report.add(
        "memory",
        format!("RSS growth per request ({})", wire.label()),
        per(g_busy, g_idle),
        "HTTP/1.1 floor: open request, no task",
        per(floor_busy, floor_idle),
        None,
    );
    report.add(
        "memory",
        format!("RSS {} s after the spike ({})", AFTER.as_secs(), wire.label()),
        Fig::kb(g_after.rss_kb),
        "gateway idle before the spike",
        Fig::kb(g_idle.rss_kb),
        None,
    );
    report.note(
        "memory",
        format!(
            "{}: simulator RSS {} s after the spike: {:.1} MB (idle before: {:.1} MB)",
            wire.label(),
            AFTER.as_secs(),
            s_after.rss_kb as f64 * 1024.0 / 1e6,
            s_idle.rss_kb as f64 * 1024.0 / 1e6
        ),
    );
    report.note(
        "memory",
        format!(
            "{}: {active} of {IN_FLIGHT} tasks active upstream {:.1} s after the first request \
             (all opened in {:.1} s); replies: {ok} ok, {failed} failed, \
             {unfinished} unfinished at the deadline",
            wire.label(),
            reached.as_secs_f64(),
            opened.as_secs_f64()
        ),
    );
    if active < IN_FLIGHT {
        let why = "the gateway queued the rest (does it honour FLUXGATE__UPSTREAM__TASK_CAP?)";
        report.note("memory", format!("fewer tasks than requests reached the simulator: {why}"));
    }
    if let Some(e) = first_error {
        report.note("memory", format!("first error: {e}"));
    }
    Ok(())
}

/// The HTTP server's own cost per open request, in the same stack (axum on hyper): a fresh
/// simulator holding `IN_FLIGHT` submits whose declared body never comes, so each is a
/// connection, a hyper task and a handler waiting on the body, and no task exists.
async fn http_floor() -> Result<(Memory, Memory), String> {
    let sim = procs::simulator(&SimOptions { name: "memory-floor", time_scale: 1.0, task_cap: 100_000 })?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone = || "cannot read the simulator's /proc status".to_owned();
    let idle = sim.proc.memory().ok_or_else(gone)?;
    let addr = sim.base.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /v1/flux-2-pro HTTP/1.1\r\nhost: {addr}\r\nx-key: {}\r\n\
         content-type: application/json\r\ncontent-length: 64\r\n\r\n",
        procs::KEY
    );
    let mut open = Vec::with_capacity(IN_FLIGHT);
    for i in 0..IN_FLIGHT {
        if i > 0 && i % BATCH == 0 {
            tokio::time::sleep(PAUSE).await;
        }
        let mut conn = TcpStream::connect(&addr).await.map_err(|e| format!("floor connect {i}: {e}"))?;
        conn.write_all(head.as_bytes()).await.map_err(|e| format!("floor write {i}: {e}"))?;
        open.push(conn);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = sim.proc.memory().ok_or_else(gone)?;
    drop(open);
    Ok((idle, busy))
}
