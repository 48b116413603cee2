//! `latency`: what the gateway adds to a request. The same fixed-length job (`[slow:300]` on
//! flux-2-klein-4b) is run three ways: through the gateway; directly against the simulator
//! polling every 10 ms (the fastest honest client); and directly with the gateway's own poll
//! times, so the difference to the gateway is the gateway's overhead and nothing else.

use std::time::Duration;

use crate::client::{self, Schedule};
use crate::load::{self, Batch, percentile};
use crate::procs::{self, SimOptions};
use crate::report::{Fig, Report, Target};

const MODEL: &str = "flux-2-klein-4b";
/// Every job lasts exactly this long in the simulator, whoever asks.
const JOB: &str = "[slow:300]";
/// (concurrency, requests): sequential, then all at once.
const RUNS: [(usize, usize); 2] = [(1, 50), (1000, 1000)];
const FAST: Schedule = Schedule { first: Duration::from_millis(10), every: Duration::from_millis(10) };
/// The gateway's fixed schedule for klein at FIRST_POLL_SCALE=1: first poll at the catalog's
/// expected 400 ms (src/catalog.rs), then quick polls (src/dispatch/schedule/plan.rs). The gateway
/// here runs `poll_schedule = "fixed"`, so this baseline measures its overhead alone (the learning
/// schedule's timing is measured by the `schedule` scenario).
const GATEWAY_LIKE: Schedule =
    Schedule { first: Duration::from_millis(400), every: Duration::from_millis(100) };

pub async fn run(report: &mut Report) -> Result<(), String> {
    let sim = procs::simulator(&SimOptions { name: "latency", time_scale: 1.0, task_cap: 100_000 })?;
    let cap = [("FLUXGATE__UPSTREAM__TASK_CAP", "100000"), ("FLUXGATE__UPSTREAM__POLL_SCHEDULE", "fixed")];
    let mut gw = procs::gateway("latency", &sim.base, &cap).await?;
    let ways = Ways { http: client::http(), sim: sim.base.clone(), gateway: gw.base.clone() };
    for (concurrency, n) in RUNS {
        eprintln!("latency: {n} requests at concurrency {concurrency}, three ways…");
        let fast = ways.measure(Way::Fast, n, concurrency).await;
        let alike = ways.measure(Way::Alike, n, concurrency).await;
        let gateway = ways.measure(Way::Gateway, n, concurrency).await;
        gw.proc.check_alive()?;
        let c = format!("c={concurrency}");
        rows(report, &c, &gateway, "direct, 10 ms polls", &fast, false);
        rows(report, &c, &gateway, "direct, gateway's poll times", &alike, true);
        for (label, b) in
            [("gateway", &gateway), ("direct, 10 ms polls", &fast), ("direct, gateway's poll times", &alike)]
        {
            if let Some(e) = b.first_error() {
                report.note("latency", format!("{c} {label}: {} of {n} failed; first: {e}", b.errors()));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// Direct, polling every 10 ms.
    Fast,
    /// Direct, polling when the gateway would.
    Alike,
    Gateway,
}

struct Ways {
    http: reqwest::Client,
    sim: String,
    gateway: String,
}

impl Ways {
    /// A warm-up batch of instant jobs at the same concurrency (so every way starts with warm
    /// connection pools, the steady state of a busy gateway), then the measured batch.
    async fn measure(&self, way: Way, n: usize, concurrency: usize) -> Batch<u32> {
        self.batch(way, n.min(concurrency), concurrency, "warm", "[slow:0]").await;
        self.batch(way, n, concurrency, "timed", JOB).await
    }

    async fn batch(
        &self,
        way: Way,
        n: usize,
        concurrency: usize,
        tag: &'static str,
        job: &'static str,
    ) -> Batch<u32> {
        let (http, sim, gateway) = (self.http.clone(), self.sim.clone(), self.gateway.clone());
        load::run(n, concurrency, move |i| {
            let (http, sim, gateway) = (http.clone(), sim.clone(), gateway.clone());
            async move {
                let prompt = format!("latency {tag} {i} {job}");
                match way {
                    Way::Fast => client::direct(&http, &sim, MODEL, &prompt, FAST).await,
                    Way::Alike => client::direct(&http, &sim, MODEL, &prompt, GATEWAY_LIKE).await,
                    Way::Gateway => client::generate(&http, &gateway, MODEL, &prompt).await.map(|()| 0),
                }
            }
        })
        .await
    }
}

fn rows<A, B>(
    report: &mut Report,
    c: &str,
    gateway: &Batch<A>,
    label: &str,
    base: &Batch<B>,
    overhead: bool,
) {
    let (g, b) = (gateway.ok_durations(), base.ok_durations());
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        let (gp, bp) = (percentile(&g, p), percentile(&b, p));
        // Against a client with the gateway's own poll times, the difference is pure overhead.
        let target =
            (overhead && p == 50.0).then(|| Target::new("adds < 1 ms", gp < bp + Duration::from_millis(1)));
        report.add(
            "latency",
            format!("{c} {name} end-to-end"),
            Fig::ms(gp),
            label,
            Fig::ms(bp),
            target.flatten(),
        );
    }
    report.add(
        "latency",
        format!("{c} requests/s"),
        Fig::PerSec(gateway.per_second()),
        label,
        Fig::PerSec(base.per_second()),
        None,
    );
}
