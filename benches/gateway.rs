//! `cargo bench --bench gateway -- [latency] [lag] [memory] [edits] [schedule] [saturation] [replicas]`: the gateway and the BFL
//! simulator run as child processes of this bench, on loopback; every figure is printed next to a
//! baseline measured in the same run, with the ratio. See benches/README.md.

// Test and benchmark code drives servers from outside: plain spawns and sleeps are fine here.
#![allow(clippy::disallowed_methods)]
// A bench binary: its modules share `pub` helpers, and a failed setup may panic.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

#[path = "gateway/client.rs"]
mod client;
#[path = "gateway/edits.rs"]
mod edits;
#[path = "gateway/idle.rs"]
mod idle;
#[path = "gateway/lag.rs"]
mod lag;
#[path = "gateway/latency.rs"]
mod latency;
#[path = "gateway/load.rs"]
mod load;
#[path = "gateway/memory.rs"]
mod memory;
#[path = "gateway/procs.rs"]
mod procs;
#[path = "gateway/replicas.rs"]
mod replicas;
#[path = "gateway/report.rs"]
mod report;
#[path = "gateway/saturation.rs"]
mod saturation;
#[path = "gateway/schedule.rs"]
mod schedule;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use report::Report;

const SCENARIOS: [&str; 8] =
    ["latency", "lag", "memory", "idle", "edits", "schedule", "saturation", "replicas"];
/// `edits` waits for `/v1/images/edits`; name it to run it.
const DEFAULT: [&str; 4] = ["latency", "lag", "memory", "idle"];
/// A scenario that runs longer than this is stopped (its processes are killed with it).
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);
const RECOMMENDED_FDS: u64 = 65_536;

fn main() -> ExitCode {
    let mut chosen: Vec<&'static str> = Vec::new();
    // cargo passes `--bench`; any other flag is ignored too.
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        match SCENARIOS.iter().find(|s| **s == arg) {
            Some(s) if !chosen.contains(s) => chosen.push(s),
            Some(_) => {}
            None => {
                eprintln!("unknown scenario `{arg}`; choose from: {}", SCENARIOS.join(" "));
                return ExitCode::FAILURE;
            }
        }
    }
    if chosen.is_empty() {
        chosen = DEFAULT.to_vec();
    }
    let fds = procs::open_file_limit();
    match fds {
        Some(n) if n < RECOMMENDED_FDS => eprintln!(
            "warning: the open-file limit is {n}; the memory scenario holds ~20,000 sockets per process. \
             Run `ulimit -n {RECOMMENDED_FDS}` in this shell first."
        ),
        Some(_) => {}
        None => eprintln!("warning: cannot read the open-file limit from /proc/self/limits"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::default();
    report.note("bench", format!("gateway binary: {}", procs::gateway_bin()));
    let mut all_ran = true;
    for s in chosen {
        let needed = fds_needed(s);
        if let Some(n) = fds.filter(|n| *n < needed) {
            let why = format!("needs an open-file limit of at least {needed}, have {n}");
            report.note(s, format!("skipped: {why}; run `ulimit -n {RECOMMENDED_FDS}` first"));
            all_ran = false;
            continue;
        }
        let started = Instant::now();
        let outcome = rt.block_on(async { tokio::time::timeout(SCENARIO_LIMIT, run(s, &mut report)).await });
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(())) => report.note(s, format!("finished in {took:.1} s")),
            Ok(Err(e)) => {
                report.note(s, format!("FAILED after {took:.1} s: {e}"));
                all_ran = false;
            }
            Err(_) => {
                report.note(s, format!("STOPPED at the {} s limit", SCENARIO_LIMIT.as_secs()));
                all_ran = false;
            }
        }
    }
    // Requests still running (a stopped scenario) are abandoned; their processes are already gone.
    rt.shutdown_timeout(Duration::from_secs(2));
    report.print();
    if all_ran { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn run(scenario: &str, report: &mut Report) -> Result<(), String> {
    match scenario {
        "latency" => latency::run(report).await,
        "lag" => lag::run(report).await,
        "memory" => memory::run(report).await,
        "idle" => idle::run(report).await,
        "edits" => edits::run(report).await,
        "schedule" => schedule::run(report).await,
        "saturation" => saturation::run(report).await,
        "replicas" => replicas::run(report).await,
        other => Err(format!("no scenario `{other}`")),
    }
}

/// Sockets a scenario holds in one process at its peak, plus room for everything else.
fn fds_needed(scenario: &str) -> u64 {
    match scenario {
        "memory" => memory::IN_FLIGHT as u64 + 2_000,
        "idle" => idle::CONNECTIONS as u64 + 2_000,
        "latency" => 3_000,
        _ => 1_024,
    }
}
