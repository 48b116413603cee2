//! `replicas`: what sharing through Redis costs and gives. One simulator (one key, 24 slots,
//! time scale 1.0) serves, in turn, the baseline, **one replica** with the in-process ledger, and
//! **two replicas** sharing one `redis-server` (slots, limits, jobs), both fed by the same client:
//!
//! - added latency: 50 sequential `flux-2-klein-4b` jobs of exactly 300 ms (`[slow:300]`),
//!   alternating between the two replicas; p50 and p99 against the one replica's;
//! - throughput: 240 jobs of 500 ms sent at once (216 queue for the 24 slots), spread over both
//!   replicas; jobs per second against the one replica's. The key's slots are the bottleneck
//!   either way, so the target is parity (the physical limit is 24 / 0.5 s = 48 jobs/s), and
//!   the simulator must never see more than 24 tasks nor answer 429.

use std::time::Duration;

use crate::client;
use crate::load::{self, percentile};
use crate::procs::{self, Gateway, SimOptions};
use crate::report::{Fig, Report, Target};

const MODEL: &str = "flux-2-klein-4b";
const SLOTS: usize = 24;
const SEQUENTIAL: usize = 50;
const BURST: usize = 240;
const BURST_MS: u64 = 500;

pub async fn run(report: &mut Report) -> Result<(), String> {
    let redis = procs::redis("replicas-redis")?;
    let sim = procs::simulator(&SimOptions { name: "replicas", time_scale: 1.0, task_cap: SLOTS })?;
    let one = vec![procs::gateway("replicas-one", &sim.base, &[]).await?];
    let (one_seq, one_burst) = measure(report, "one replica", &one).await?;
    drop(one);
    let shared = [
        ("FLUXGATE__COORDINATION__BACKEND", "redis"),
        ("FLUXGATE__COORDINATION__REDIS_URL", redis.url.as_str()),
    ];
    let two = vec![
        procs::gateway("replicas-two-a", &sim.base, &shared).await?,
        procs::gateway("replicas-two-b", &sim.base, &shared).await?,
    ];
    let (two_seq, two_burst) = measure(report, "two replicas", &two).await?;
    let mut redis = redis;
    redis.proc.check_alive()?;
    let stats = client::sim_stats(&client::http(), &sim.base).await?;
    let peak = stats["peak_active"].as_u64().unwrap_or(u64::MAX);
    let rejected = stats["rejected_429"].as_u64().unwrap_or(u64::MAX);
    report.note("replicas", format!("simulator over both runs: {}", client::excerpt(&stats)));

    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let (two, one) = (percentile(&two_seq, p), percentile(&one_seq, p));
        let added = two.as_secs_f64() * 1000.0 - one.as_secs_f64() * 1000.0;
        let target = (label == "p50")
            .then(|| Target::new(format!("adds < 5 ms ({added:+.1} ms)"), added < 5.0))
            .flatten();
        report.add(
            "replicas",
            format!("{SEQUENTIAL} sequential 300 ms jobs, {label}: two replicas + Redis"),
            Fig::ms(two),
            "one replica, in-process",
            Fig::ms(one),
            target,
        );
    }
    let ratio = two_burst / one_burst.max(1e-9);
    report.add(
        "replicas",
        format!("{BURST} jobs of {BURST_MS} ms at once, {SLOTS} slots: jobs/s, two replicas + Redis"),
        Fig::PerSec(two_burst),
        "one replica, in-process",
        Fig::PerSec(one_burst),
        Target::new(
            format!("≥ 0.9 × one replica, ≤ {SLOTS} tasks at BFL, no 429 (peak {peak}, {rejected} × 429)"),
            ratio >= 0.9 && peak <= SLOTS as u64 && rejected == 0,
        ),
    );
    Ok(())
}

/// Sequential latencies (sorted) and burst throughput through `gateways`, requests spread over them.
async fn measure(
    report: &mut Report,
    way: &'static str,
    gateways: &[Gateway],
) -> Result<(Vec<Duration>, f64), String> {
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    let http = client::http();
    // Warm-up: the client's connection pools, and the schedule's first estimates.
    let warm = spread(&http, &bases, SLOTS, SLOTS, format!("{way}/warm"), 300).await;
    eprintln!("replicas: {way}: {SEQUENTIAL} sequential jobs, then {BURST} at once…");
    let sequential = spread(&http, &bases, SEQUENTIAL, 1, format!("{way}/seq"), 300).await;
    let burst = spread(&http, &bases, BURST, BURST, format!("{way}/burst"), BURST_MS).await;
    for (what, batch) in [("warm-up", &warm), ("sequential", &sequential), ("burst", &burst)] {
        if let Some(e) = batch.first_error() {
            report.note("replicas", format!("{way}, {what}: {} failed; first: {e}", batch.errors()));
        }
    }
    Ok((sequential.ok_durations(), burst.per_second()))
}

/// `n` generations of `job_ms`, `concurrency` at a time, request `i` to gateway `i % len`.
async fn spread(
    http: &reqwest::Client,
    bases: &[String],
    n: usize,
    concurrency: usize,
    tag: String,
    job_ms: u64,
) -> load::Batch<()> {
    let (http, bases) = (http.clone(), bases.to_vec());
    load::run(n, concurrency, move |i| {
        let (http, base) = (http.clone(), bases[i % bases.len()].clone());
        let prompt = format!("#replicas/{tag}/{i}# [slow:{job_ms}]");
        async move { client::generate(&http, &base, MODEL, &prompt).await }
    })
    .await
}
