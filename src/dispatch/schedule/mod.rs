//! When to poll: the one home of the poll schedule. Per model and size band it learns how long
//! jobs take (submit to Ready) from the jobs it follows, in a bounded window seeded by the
//! catalog's expected time (`estimator`), and plans each job's polls from that (`plan`): the
//! first at the recent p5, dense ones up to the p95 within the budget of `duration / interval + 3`
//! polls per job, sparse ones after; BFL's progress, when it reports one, predicts the end.
//! `upstream.poll_schedule = "fixed"` keeps the schedule of old (first poll at the catalog's
//! expected time, quick polls around it, then the interval), for comparison.
//!
//! One `Schedule` per process, shared by every job: its lock is held only to copy a band's
//! quantiles when a job starts and to add a duration when one ends, never across an await.

mod estimator;
mod plan;

pub(super) use plan::Plan;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::catalog::Model;
use crate::job::OutputSize;
use crate::telemetry::metrics;

use estimator::{Estimator, Spread};

/// Which poll schedule the dispatcher follows (`upstream.poll_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollSchedule {
    /// Learned from observed durations (the default).
    #[default]
    Learning,
    /// The catalog's expected time, then the interval: the schedule before learning.
    Fixed,
}

impl PollSchedule {
    /// `learning` or `fixed`.
    pub fn parse(s: &str) -> Option<PollSchedule> {
        match s {
            "learning" => Some(PollSchedule::Learning),
            "fixed" => Some(PollSchedule::Fixed),
            _ => None,
        }
    }
}

/// Output sizes that take noticeably different times upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SizeBand {
    /// Up to 1.25 MP, and BFL's default size or an aspect ratio (about 1 MP).
    Small,
    /// Up to 2.5 MP.
    Medium,
    /// Larger (FLUX.2 goes up to 4 MP).
    Large,
}

impl SizeBand {
    fn of(size: OutputSize) -> SizeBand {
        let pixels = match size {
            OutputSize::Dimensions { width, height } => u64::from(width) * u64::from(height),
            OutputSize::Default | OutputSize::AspectRatio { .. } => 1 << 20,
        };
        match pixels {
            0..=1_310_720 => SizeBand::Small,
            1_310_721..=2_621_440 => SizeBand::Medium,
            _ => SizeBand::Large,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SizeBand::Small => "1mp",
            SizeBand::Medium => "2mp",
            SizeBand::Large => "4mp",
        }
    }
}

/// What is learned separately: a catalog model (a `'static` id, so there are as many as the
/// catalog has rows) in one size band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(in crate::dispatch) struct Band {
    model: &'static str,
    size: SizeBand,
}

/// What the schedule knows of one band.
struct Learned {
    estimator: Estimator,
    /// The estimator's quantiles as of its last observation (what new jobs plan with).
    spread: Spread,
}

pub(super) struct Schedule {
    mode: PollSchedule,
    interval: Duration,
    /// Scales the catalog's expected times (tests run a sped-up simulator).
    scale: f64,
    learned: Mutex<HashMap<Band, Learned>>,
}

impl Schedule {
    pub(super) fn new(mode: PollSchedule, interval: Duration, scale: f64) -> Schedule {
        Schedule { mode, interval, scale, learned: Mutex::new(HashMap::new()) }
    }

    /// The polls of a job of `model` and `size` about to be followed.
    pub(super) fn plan(&self, model: &Model, size: OutputSize) -> (Band, Plan) {
        let band = Band { model: model.id, size: SizeBand::of(size) };
        let expected = model.expected.mul_f64(self.scale);
        let known = self.lock().get(&band).map(|l| l.spread);
        let spread = known.unwrap_or_else(|| Estimator::new().spread(expected));
        (band, Plan::new(self.mode, expected, spread, self.interval))
    }

    /// A job of `band` turned Ready after (about) `took`.
    pub(super) fn observe(&self, band: Band, plan: &Plan, took: Duration) {
        let spread = {
            let mut learned = self.lock();
            let entry = learned
                .entry(band)
                .or_insert_with(|| Learned { estimator: Estimator::new(), spread: plan.spread });
            entry.estimator.observe(took);
            entry.spread = entry.estimator.spread(plan.expected);
            entry.spread
        };
        let label = band.size.label();
        metrics::learned_duration(band.model, label, "0.05", spread.low);
        metrics::learned_duration(band.model, label, "0.5", spread.median);
        metrics::learned_duration(band.model, label, "0.95", spread.high);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Band, Learned>> {
        // The map is whole after any panic (each update is one insert or one assignment).
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn bands(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::catalog::Catalog;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn model(id: &str) -> Model {
        Catalog::new(&HashMap::new()).expect("defaults are valid").get(id).expect("in the catalog").clone()
    }

    /// What following `jobs` jobs of `model` cost, after `warm_up` more that are not counted.
    struct Run {
        lags: Vec<Duration>,
        over_budget: usize,
        polls: u32,
    }

    /// Jobs one after another, durations uniform over `centre` ± 30 %, no progress reported.
    fn run(schedule: &Schedule, model: &Model, centre: Duration, warm_up: usize, jobs: usize) -> Run {
        let mut rng = fastrand::Rng::with_seed(centre.as_millis() as u64);
        let mut out = Run { lags: Vec::new(), over_budget: 0, polls: 0 };
        for i in 0..warm_up + jobs {
            let duration = centre.mul_f64(0.7 + 0.6 * rng.f64());
            let (band, mut plan) = schedule.plan(model, OutputSize::Default);
            let mut t = plan.first();
            loop {
                plan.sent(t);
                if t >= duration {
                    break;
                }
                t = plan.next(t + ms(2), None);
            }
            schedule.observe(band, &plan, plan.took_when_polled_ready());
            if i >= warm_up {
                out.lags.push(t - duration);
                out.polls += plan.polls();
                if u128::from(plan.polls()) > duration.as_millis() / 500 + 3 {
                    out.over_budget += 1;
                }
            }
        }
        out.lags.sort();
        out
    }

    fn quantile(sorted: &[Duration], p: f64) -> Duration {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    #[test]
    fn after_thirty_jobs_ready_is_seen_within_150_ms_median_and_400_ms_p90_whatever_the_catalog_says() {
        for id in ["flux-2-pro", "flux-2-klein-4b"] {
            let model = model(id);
            for factor in [0.5, 1.0, 2.0] {
                let schedule = Schedule::new(PollSchedule::Learning, ms(500), 1.0);
                let centre = model.expected.mul_f64(factor);
                let r = run(&schedule, &model, centre, 30, 200);
                let (median, p90) = (quantile(&r.lags, 0.5), quantile(&r.lags, 0.9));
                assert!(
                    median <= ms(150) && p90 <= ms(400),
                    "{id} × {factor}: median {median:?}, p90 {p90:?}"
                );
                assert_eq!(r.over_budget, 0, "{id} × {factor}");
            }
        }
    }

    #[test]
    fn the_fixed_schedule_is_late_for_jobs_faster_than_the_catalog_says() {
        let model = model("flux-2-pro");
        let schedule = Schedule::new(PollSchedule::Fixed, ms(500), 1.0);
        let r = run(&schedule, &model, model.expected / 2, 30, 100);
        assert!(quantile(&r.lags, 0.5) > ms(1_000));
    }

    #[test]
    fn each_model_and_size_band_learns_on_its_own_and_the_bands_are_bounded() {
        let catalog = Catalog::new(&HashMap::new()).expect("defaults are valid");
        let schedule = Schedule::new(PollSchedule::Learning, ms(500), 1.0);
        let big = OutputSize::Dimensions { width: 2048, height: 2048 };
        let pro = model("flux-2-pro");
        for _ in 0..40 {
            let (band, plan) = schedule.plan(&pro, big);
            schedule.observe(band, &plan, ms(9_000));
        }
        assert!(schedule.plan(&pro, big).1.first() > ms(8_000));
        let fresh = Schedule::new(PollSchedule::Learning, ms(500), 1.0);
        let untouched = fresh.plan(&pro, OutputSize::Default).1.first();
        assert_eq!(
            schedule.plan(&pro, OutputSize::Default).1.first(),
            untouched,
            "the 1 MP band is untouched"
        );
        for m in catalog.iter() {
            for side in [256, 1024, 1440, 2048] {
                for _ in 0..100 {
                    let (band, plan) = schedule.plan(m, OutputSize::Dimensions { width: side, height: side });
                    schedule.observe(band, &plan, ms(1_000));
                }
            }
        }
        assert!(schedule.bands() <= catalog.iter().count() * 3, "{} bands", schedule.bands());
    }

    #[test]
    fn first_poll_scale_scales_the_catalog_figure_the_schedule_starts_from() {
        let pro = model("flux-2-pro");
        let scaled = Schedule::new(PollSchedule::Learning, ms(20), 0.02).plan(&pro, OutputSize::Default).1;
        let real = Schedule::new(PollSchedule::Learning, ms(500), 1.0).plan(&pro, OutputSize::Default).1;
        assert_eq!(scaled.first(), real.first().mul_f64(0.02));
        assert!(real.first() < pro.expected, "a model faster than its catalog figure is polled early");
    }
}
