//! `schedule`: how soon the gateway notices `Ready` when jobs run faster or slower than the
//! catalog says. The simulator (its own process) runs `flux-2-pro` jobs (catalog: 3 s) whose
//! durations the bench draws uniformly over half, once and twice the catalog figure ± 30 % (each
//! prompt carries `[slow:MS]`). Per case, three fresh gateways run side by side against it: the
//! learning schedule (the default) with BFL's progress, the learning schedule with tasks that
//! report none (`[no-progress]`: only the learned durations place the polls), and the fixed
//! schedule of old (`poll_schedule = "fixed"`), the baseline. Each sends 30 warm-up jobs, then 40 measured ones, 10 at a time. Ready-to-reply lag
//! is the client's reply time minus the task's `ready_unix_ms` in `/sim/tasks`.

use std::time::Duration;

use serde_json::Value;

use crate::client;
use crate::load::{self, Batch, percentile};
use crate::procs::{self, SimOptions};
use crate::report::{Fig, Report, Target};

const MODEL: &str = "flux-2-pro";
const CATALOG_MS: f64 = 3000.0;
const FACTORS: [f64; 3] = [0.5, 1.0, 2.0];
const SPREAD: f64 = 0.3;
const WARM_UP: usize = 30;
const MEASURED: usize = 40;
const CONCURRENT: usize = 10;
const MEDIAN_TARGET_MS: f64 = 150.0;
const P90_TARGET_MS: f64 = 400.0;
/// The learning gateway whose simulator tasks report no progress (`[no-progress]`).
const NO_PROGRESS: &str = "learning-no-progress";

/// What one gateway achieved in one case, over the measured jobs.
struct Summary {
    lags: Vec<Duration>,
    mean_polls: f64,
    over_budget: usize,
}

pub async fn run(report: &mut Report) -> Result<(), String> {
    let sim = procs::simulator(&SimOptions { name: "schedule", time_scale: 1.0, task_cap: 100_000 })?;
    let http = client::http();
    for factor in FACTORS {
        let cap = ("FLUXGATE__UPSTREAM__TASK_CAP", "100000");
        let mut learning = procs::gateway("schedule-learning", &sim.base, &[cap]).await?;
        let mut blind = procs::gateway("schedule-learning-no-progress", &sim.base, &[cap]).await?;
        let fixed_env = [cap, ("FLUXGATE__UPSTREAM__POLL_SCHEDULE", "fixed")];
        let mut fixed = procs::gateway("schedule-fixed", &sim.base, &fixed_env).await?;
        eprintln!(
            "schedule: {MODEL} jobs of {factor} × the catalog's 3 s ± 30 %, three gateways side by side…"
        );
        let durations = draw(factor, WARM_UP + MEASURED);
        let go = |base: String, way: &'static str| {
            let (http, durations) = (http.clone(), durations.clone());
            // Without progress, only the learned durations can place the polls.
            let extra = if way == NO_PROGRESS { " [no-progress]" } else { "" };
            load::run(WARM_UP + MEASURED, CONCURRENT, move |i| {
                let (http, base) = (http.clone(), base.clone());
                let prompt = format!("{} [slow:{}]{extra}", tag(factor, way, i), durations[i]);
                async move { client::generate(&http, &base, MODEL, &prompt).await }
            })
        };
        let (l, b, f) = tokio::join!(
            go(learning.base.clone(), "learning"),
            go(blind.base.clone(), NO_PROGRESS),
            go(fixed.base.clone(), "fixed")
        );
        learning.proc.check_alive()?;
        blind.proc.check_alive()?;
        fixed.proc.check_alive()?;
        let tasks = client::sim_tasks(&http, &sim.base).await?;
        let f = summarise(report, &tasks, factor, "fixed", &f);
        for (way, batch) in [("learning", &l), (NO_PROGRESS, &b)] {
            let l = summarise(report, &tasks, factor, way, batch);
            let case = if way == NO_PROGRESS {
                format!("pro ×{factor} ±30%, no progress")
            } else {
                format!("pro ×{factor} ±30%")
            };
            add_rows(report, &case, &l, &f);
        }
    }
    Ok(())
}

/// Lag and polls of the learning schedule `l` next to the fixed one `f`.
fn add_rows(report: &mut Report, case: &str, l: &Summary, f: &Summary) {
    let (lm, lp) = (percentile(&l.lags, 50.0), percentile(&l.lags, 90.0));
    let (fm, fp) = (percentile(&f.lags, 50.0), percentile(&f.lags, 90.0));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let fixed_label = "fixed schedule (before)";
    report.add(
        "schedule",
        format!("{case}: median lag Ready→reply"),
        Fig::ms(lm),
        fixed_label,
        Fig::ms(fm),
        Target::new(format!("≤ {MEDIAN_TARGET_MS} ms"), ms(lm) <= MEDIAN_TARGET_MS && !l.lags.is_empty()),
    );
    report.add(
        "schedule",
        format!("{case}: p90 lag Ready→reply"),
        Fig::ms(lp),
        fixed_label,
        Fig::ms(fp),
        Target::new(format!("≤ {P90_TARGET_MS} ms"), ms(lp) <= P90_TARGET_MS && !l.lags.is_empty()),
    );
    report.add(
        "schedule",
        format!("{case}: polls per job"),
        Fig::Num(l.mean_polls),
        fixed_label,
        Fig::Num(f.mean_polls),
        Target::new(
            format!(
                "≤ duration/0.5 s + 3 ({} of {} over; fixed: {})",
                l.over_budget,
                l.lags.len(),
                f.over_budget
            ),
            l.over_budget == 0 && !l.lags.is_empty(),
        ),
    );
}

/// Durations in ms, uniform over `factor` × the catalog figure ± 30 %, the same for both ways.
fn draw(factor: f64, n: usize) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed((factor * 1000.0) as u64);
    (0..n).map(|_| (CATALOG_MS * factor * (1.0 - SPREAD + 2.0 * SPREAD * rng.f64())).round() as u64).collect()
}

/// A prompt no other request of the run contains.
fn tag(factor: f64, way: &str, i: usize) -> String {
    format!("#schedule/{factor}/{way}/{i}#")
}

/// Matches each measured request to its task: lag, polls, budget.
fn summarise<T>(report: &mut Report, tasks: &[Value], factor: f64, way: &str, batch: &Batch<T>) -> Summary {
    let (mut lags, mut polls, mut over) = (Vec::new(), Vec::new(), 0);
    for (i, o) in batch.outcomes.iter().enumerate().skip(WARM_UP) {
        if o.result.is_err() {
            continue;
        }
        let t = tag(factor, way, i);
        let Some(task) = tasks.iter().find(|v| v["prompt"].as_str().is_some_and(|p| p.contains(&t))) else {
            report.note("schedule", format!("{t}: no task in /sim/tasks"));
            continue;
        };
        let (Some(ready), Some(submitted), Some(n)) =
            (task["ready_unix_ms"].as_u64(), task["submitted_unix_ms"].as_u64(), task["polls"].as_u64())
        else {
            continue;
        };
        lags.push(Duration::from_millis(o.done_unix_ms.saturating_sub(ready)));
        polls.push(n);
        if n > (ready - submitted) / 500 + 3 {
            over += 1;
        }
    }
    if let Some(e) = batch.first_error() {
        report.note("schedule", format!("×{factor} {way}: {} failed; first: {e}", batch.errors()));
    }
    lags.sort();
    let mean_polls = polls.iter().sum::<u64>() as f64 / polls.len().max(1) as f64;
    Summary { lags, mean_polls, over_budget: over }
}
