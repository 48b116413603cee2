//! `lag`: how soon the gateway notices `Ready`, and what it costs in polls. At real-ish job
//! lengths (simulator time scale 1.0), 20 concurrent requests per model go through the gateway and
//! through two direct clients: one polling every 10 ms (lag near zero, many polls) and one polling
//! every 500 ms (the configured interval, fixed). Each request has a unique prompt, so its task in
//! `/sim/tasks` tells when it turned Ready and how often it was polled.

use std::time::Duration;

use serde_json::Value;

use crate::client::{self, Schedule};
use crate::load::{self, Batch, median_i64};
use crate::procs::{self, SimOptions};
use crate::report::{Fig, Report, Target};

const MODELS: [&str; 2] = ["flux-2-klein-4b", "flux-2-pro"];
const CONCURRENT: usize = 20;
const EVERY_10_MS: Schedule = Schedule { first: Duration::from_millis(10), every: Duration::from_millis(10) };
const EVERY_500_MS: Schedule =
    Schedule { first: Duration::from_millis(500), every: Duration::from_millis(500) };
const KLEIN_LAG_TARGET_MS: i64 = 150;

/// What one way of asking achieved for one model.
struct Summary {
    median_lag_ms: i64,
    mean_polls: f64,
    /// Jobs that took more polls than duration/0.5 s + 3.
    over_budget: usize,
    jobs: usize,
    median_duration_ms: i64,
}

pub async fn run(report: &mut Report) -> Result<(), String> {
    let sim = procs::simulator(&SimOptions { name: "lag", time_scale: 1.0, task_cap: 100_000 })?;
    let cap = [("FLUXGATE__UPSTREAM__TASK_CAP", "100000")];
    let mut gw = procs::gateway("lag", &sim.base, &cap).await?;
    let http = client::http();
    for model in MODELS {
        eprintln!("lag: {CONCURRENT} concurrent {model} requests, three ways…");
        let (h, base) = (http.clone(), gw.base.clone());
        let gateway = load::run(CONCURRENT, CONCURRENT, move |i| {
            let (http, base) = (h.clone(), base.clone());
            async move { client::generate(&http, &base, model, &tag(model, "gateway", i)).await.map(|()| 0) }
        })
        .await;
        let direct = |schedule: Schedule, way: &'static str| {
            let (h, base) = (http.clone(), sim.base.clone());
            load::run(CONCURRENT, CONCURRENT, move |i| {
                let (http, base) = (h.clone(), base.clone());
                async move { client::direct(&http, &base, model, &tag(model, way, i), schedule).await }
            })
        };
        let fast = direct(EVERY_10_MS, "fast").await;
        let fixed = direct(EVERY_500_MS, "fixed").await;
        gw.proc.check_alive()?;
        let tasks = client::sim_tasks(&http, &sim.base).await?;
        let short = model.trim_start_matches("flux-2-");
        let g = summarise(report, &tasks, model, "gateway", &gateway);
        let f = summarise(report, &tasks, model, "fast", &fast);
        let x = summarise(report, &tasks, model, "fixed", &fixed);
        let lag_target = |s: &Summary| {
            (model == "flux-2-klein-4b")
                .then(|| {
                    Target::new(format!("< {KLEIN_LAG_TARGET_MS} ms"), s.median_lag_ms < KLEIN_LAG_TARGET_MS)
                })
                .flatten()
        };
        let lag = |s: &Summary| Fig::Ms(s.median_lag_ms as f64);
        report.add(
            "lag",
            format!("{short} median lag after Ready"),
            lag(&g),
            "direct, 10 ms polls",
            lag(&f),
            lag_target(&g),
        );
        report.add(
            "lag",
            format!("{short} median lag after Ready"),
            lag(&g),
            "direct, fixed 500 ms polls",
            lag(&x),
            None,
        );
        let budget = Target::new(
            format!("≤ duration/0.5 s + 3 ({} of {} over)", g.over_budget, g.jobs),
            g.over_budget == 0 && g.jobs > 0,
        );
        report.add(
            "lag",
            format!("{short} polls per job"),
            Fig::Num(g.mean_polls),
            "direct, fixed 500 ms polls",
            Fig::Num(x.mean_polls),
            budget,
        );
        report.add(
            "lag",
            format!("{short} polls per job"),
            Fig::Num(g.mean_polls),
            "direct, 10 ms polls",
            Fig::Num(f.mean_polls),
            None,
        );
        report.note("lag", format!("{short}: median job {} ms in the simulator", g.median_duration_ms));
    }
    Ok(())
}

/// A prompt no other request of the run contains: `#lag/<model>/<way>/<i>#`.
fn tag(model: &str, way: &str, i: usize) -> String {
    format!("#lag/{model}/{way}/{i}#")
}

/// Matches each request to its task and reduces lag, polls and durations.
fn summarise<T>(report: &mut Report, tasks: &[Value], model: &str, way: &str, batch: &Batch<T>) -> Summary {
    let (mut lags, mut durations, mut polls, mut over) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (i, o) in batch.outcomes.iter().enumerate() {
        if o.result.is_err() {
            continue;
        }
        let t = tag(model, way, i);
        let Some(task) = tasks.iter().find(|v| v["prompt"].as_str().is_some_and(|p| p.contains(&t))) else {
            report.note("lag", format!("{t}: no task in /sim/tasks"));
            continue;
        };
        let (Some(ready), Some(submitted), Some(n)) =
            (task["ready_unix_ms"].as_i64(), task["submitted_unix_ms"].as_i64(), task["polls"].as_i64())
        else {
            continue;
        };
        let done = i64::try_from(o.done_unix_ms).unwrap_or(i64::MAX);
        lags.push(done - ready);
        durations.push(ready - submitted);
        polls.push(n);
        if n > (ready - submitted) / 500 + 3 {
            over += 1;
        }
    }
    if let Some(e) = batch.first_error() {
        report.note("lag", format!("{model} {way}: {} failed; first: {e}", batch.errors()));
    }
    let jobs = polls.len();
    Summary {
        median_lag_ms: median_i64(&mut lags),
        mean_polls: polls.iter().sum::<i64>() as f64 / jobs.max(1) as f64,
        over_budget: over,
        jobs,
        median_duration_ms: median_i64(&mut durations),
    }
}
