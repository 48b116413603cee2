//! How long one kind of job takes, learned: the newest `WINDOW` observed durations (older ones
//! fall out, so a shift in BFL's speed is followed within a window), seeded by the catalog's
//! expected time until `PRIOR_UNTIL` have been seen. Fixed size: one small array per kind.

use std::time::Duration;

/// Observations kept: enough for stable low quantiles, few enough to follow a shift quickly.
pub(super) const WINDOW: usize = 32;
/// Until this many are seen, the catalog's figure counts as well (spread around it, below).
const PRIOR_UNTIL: u64 = 8;
/// Multiples of the expected time standing in for observations while there are few: wide enough
/// that the first polls of a model faster than its catalog figure still come early.
const PRIOR: [f64; 7] = [0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.6];

/// The newest observed durations of one kind of job, in microseconds.
#[derive(Debug, Clone)]
pub(super) struct Estimator {
    ring: [u32; WINDOW],
    /// Where the next observation goes.
    next: usize,
    /// Observations ever made (only `min(seen, WINDOW)` are kept).
    seen: u64,
}

/// Quantiles of the learned distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spread {
    /// p5: where the first poll goes.
    pub(super) low: Duration,
    pub(super) median: Duration,
    /// p95: the end of the dense polls.
    pub(super) high: Duration,
}

impl Estimator {
    pub(super) fn new() -> Estimator {
        Estimator { ring: [0; WINDOW], next: 0, seen: 0 }
    }

    pub(super) fn observe(&mut self, took: Duration) {
        self.ring[self.next] = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % WINDOW;
        self.seen = self.seen.saturating_add(1);
    }

    #[cfg(test)]
    pub(super) fn seen(&self) -> u64 {
        self.seen
    }

    /// The distribution's quantiles, with `expected` (the catalog's figure) standing in while
    /// fewer than `PRIOR_UNTIL` durations have been observed.
    pub(super) fn spread(&self, expected: Duration) -> Spread {
        let kept = usize::try_from(self.seen).unwrap_or(WINDOW).min(WINDOW);
        let mut samples: Vec<f64> = self.ring[..kept].iter().map(|&us| f64::from(us) / 1e6).collect();
        if self.seen < PRIOR_UNTIL {
            samples.extend(PRIOR.iter().map(|m| expected.as_secs_f64() * m));
        }
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| Duration::from_secs_f64(quantile(&samples, p).max(0.0));
        Spread { low: at(0.05), median: at(0.5), high: at(0.95) }
    }
}

/// Linear interpolation between the closest ranks of sorted, non-empty `samples`.
fn quantile(samples: &[f64], p: f64) -> f64 {
    let Some(last) = samples.len().checked_sub(1) else { return 0.0 };
    let rank = p * last as f64;
    let (below, above) = (rank.floor() as usize, (rank.ceil() as usize).min(last));
    samples[below] + (samples[above] - samples[below]) * (rank - rank.floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Uniform durations over `centre` ± 30 %, deterministic.
    fn draws(centre: Duration, n: usize, seed: u64) -> Vec<Duration> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| centre.mul_f64(0.7 + 0.6 * rng.f64())).collect()
    }

    fn close(got: Duration, want: Duration, within: f64) -> bool {
        (got.as_secs_f64() - want.as_secs_f64()).abs() <= want.as_secs_f64() * within
    }

    #[test]
    fn with_nothing_observed_the_catalog_figure_is_the_median() {
        let spread = Estimator::new().spread(ms(3000));
        assert_eq!(spread.median, ms(3000));
        assert!(spread.low < ms(2000) && spread.high > ms(4000), "{spread:?}");
    }

    #[test]
    fn a_few_dozen_observations_move_the_quantiles_to_the_true_distribution() {
        // The catalog says 3 s; the jobs take 6 s ± 30 % (p5 4.38 s, median 6 s, p95 7.62 s).
        let mut e = Estimator::new();
        for d in draws(ms(6000), 40, 7) {
            e.observe(d);
        }
        let s = e.spread(ms(3000));
        assert!(close(s.median, ms(6000), 0.10), "{s:?}");
        assert!(close(s.low, ms(4380), 0.10), "{s:?}");
        assert!(close(s.high, ms(7620), 0.10), "{s:?}");
    }

    #[test]
    fn a_shift_in_durations_is_followed_within_a_window() {
        let mut e = Estimator::new();
        for d in draws(ms(2000), 100, 1) {
            e.observe(d);
        }
        assert!(close(e.spread(ms(3000)).median, ms(2000), 0.10));
        for d in draws(ms(5000), WINDOW, 2) {
            e.observe(d);
        }
        let s = e.spread(ms(3000));
        assert!(close(s.median, ms(5000), 0.10), "{s:?}");
        assert!(s.low > ms(3000), "nothing of the old regime is left: {s:?}");
    }

    #[test]
    fn memory_stays_one_fixed_window_however_many_are_observed() {
        let before = std::mem::size_of::<Estimator>();
        let mut e = Estimator::new();
        for d in draws(ms(1000), 100_000, 3) {
            e.observe(d);
        }
        assert_eq!(std::mem::size_of_val(&e), before);
        assert!(before <= WINDOW * 4 + 32, "{before} bytes");
        assert_eq!(e.seen(), 100_000);
    }

    #[test]
    fn durations_beyond_an_hour_saturate_instead_of_wrapping() {
        let mut e = Estimator::new();
        for _ in 0..WINDOW {
            e.observe(Duration::from_secs(10 * 3600));
        }
        assert!(e.spread(ms(1000)).low > Duration::from_secs(3600));
    }
}
