//! `saturation`: does a slot go back to work as soon as its job is Ready? One key with BFL's 24
//! slots (simulator and gateway both capped at 24), 200 `flux-pro-1.1` jobs of exactly 2 s
//! (`[slow:2000]`; the catalog says 3 s) sent at once, so 176 wait in the gateway's queue. The
//! physical limit is jobs × duration / slots = 16.7 s. The learning gateway runs first, then the
//! fixed schedule of old (the baseline), each with a fresh simulator.

use std::time::Duration;

use crate::client;
use crate::load;
use crate::procs::{self, SimOptions};
use crate::report::{Fig, Report, Target};

const MODEL: &str = "flux-pro-1.1";
const JOBS: usize = 200;
const SLOTS: usize = 24;
const JOB_MS: u64 = 2000;
/// Within 10 % of the limit.
const TOLERANCE: f64 = 1.10;

pub async fn run(report: &mut Report) -> Result<(), String> {
    let limit = Duration::from_millis(JOB_MS * JOBS as u64 / SLOTS as u64);
    let learning = wall(report, "learning", &[]).await?;
    let fixed = wall(report, "fixed", &[("FLUXGATE__UPSTREAM__POLL_SCHEDULE", "fixed")]).await?;
    let ratio = learning.as_secs_f64() / limit.as_secs_f64();
    report.add(
        "saturation",
        format!("{JOBS} jobs of 2 s, one key, {SLOTS} slots: wall time"),
        Fig::ms(learning),
        "fixed schedule (before)",
        Fig::ms(fixed),
        Target::new(
            format!("≤ 1.1 × the limit {:.1} s ({ratio:.2}×)", limit.as_secs_f64()),
            ratio <= TOLERANCE,
        ),
    );
    report.add(
        "saturation",
        "wall time / limit",
        Fig::Num(ratio),
        "fixed schedule (before)",
        Fig::Num(fixed.as_secs_f64() / limit.as_secs_f64()),
        None,
    );
    Ok(())
}

/// Wall time of the whole burst through a fresh gateway with `extra` settings.
async fn wall(report: &mut Report, way: &'static str, extra: &[(&str, &str)]) -> Result<Duration, String> {
    let name = if way == "fixed" { "saturation-fixed" } else { "saturation-learning" };
    let sim = procs::simulator(&SimOptions { name, time_scale: 1.0, task_cap: SLOTS })?;
    let mut gw = procs::gateway(name, &sim.base, extra).await?;
    let http = client::http();
    eprintln!("saturation: {JOBS} jobs of {JOB_MS} ms at once through the {way} schedule…");
    let base = gw.base.clone();
    let batch = load::run(JOBS, JOBS, move |i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let prompt = format!("#saturation/{way}/{i}# [slow:{JOB_MS}]");
            client::generate(&http, &base, MODEL, &prompt).await
        }
    })
    .await;
    gw.proc.check_alive()?;
    if let Some(e) = batch.first_error() {
        report.note("saturation", format!("{way}: {} failed; first: {e}", batch.errors()));
    }
    let peak = client::sim_stats(&client::http(), &sim.base).await?;
    report.note("saturation", format!("{way}: simulator stats {}", client::excerpt(&peak)));
    Ok(batch.wall)
}
