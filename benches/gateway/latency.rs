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
/// The gateway's schedule for klein at FIRST_POLL_SCALE=1: first poll at the catalog's expected
/// 400 ms (src/catalog.rs), then every expected/4 = 100 ms (src/dispatch/schedule.rs).
const GATEWAY_LIKE: Schedule =
    Schedule { first: Duration::from_millis(400), every: Duration::from_millis(100) };

pub async fn run(report: &mut Report) -> Result<(), String> {
    let sim = procs::simulator(&SimOptions { name: "latency", time_scale: 1.0, task_cap: 100_000 })?;
    let cap = [("FLUXGATE__UPSTREAM__TASK_CAP", "100000")];
    let mut gw = procs::gateway("latency", &sim.base, &cap).await?;
    let http = client::http();
    // Warm both paths (connections, lazy statics) before measuring.
    for i in 0..3 {
        client::generate(&http, &gw.base, MODEL, &format!("warm {i} [slow:0]")).await?;
        client::direct(&http, &sim.base, MODEL, &format!("warm {i} [slow:0]"), FAST).await?;
    }
    for (concurrency, n) in RUNS {
        eprintln!("latency: {n} requests at concurrency {concurrency}…");
        let direct = |schedule: Schedule, tag: &'static str| {
            let (http, base) = (http.clone(), sim.base.clone());
            load::run(n, concurrency, move |i| {
                let (http, base) = (http.clone(), base.clone());
                async move { client::direct(&http, &base, MODEL, &format!("{tag} {i} {JOB}"), schedule).await }
            })
        };
        let fast = direct(FAST, "direct-fast").await;
        let alike = direct(GATEWAY_LIKE, "direct-alike").await;
        let (h, base) = (http.clone(), gw.base.clone());
        let gateway =
            load::run(n, concurrency, move |i| {
                let (http, base) = (h.clone(), base.clone());
                async move {
                    client::generate(&http, &base, MODEL, &format!("gateway {i} {JOB}")).await.map(|()| 0)
                }
            })
            .await;
        gw.proc.check_alive()?;
        let c = format!("c={concurrency}");
        for (label, base) in [("direct, 10 ms polls", &fast), ("direct, gateway's poll times", &alike)] {
            rows(report, &c, &gateway, label, base, std::ptr::eq(base, &alike));
        }
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
