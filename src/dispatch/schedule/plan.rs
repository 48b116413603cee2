//! One job's polls: when each goes out, from what the schedule learned (or today's fixed
//! figures), what the last poll said of progress, and the budget of `duration / interval + 3`
//! polls per job. The budget is kept whatever the job's real duration turns out to be: the
//! k-th poll never goes out before `(k − 2) × interval`, so the poll that finds a job Ready is at
//! most the `floor(duration / interval) + 3`-th.

use std::time::Duration;

use super::PollSchedule;
use super::estimator::Spread;

/// Closest two polls of one job go out, so a narrow window is not polled in a burst.
const QUICK_FLOOR: Duration = Duration::from_millis(25);
/// The fixed schedule's floor (kept as it was).
const FIXED_QUICK_FLOOR: Duration = Duration::from_millis(50);
/// Past this, a job is far beyond anything expected: polls halve their rate.
const LONG_RUN: Duration = Duration::from_secs(30);
/// Progress readings trusted to predict the end: below, the task may still be queued; above,
/// BFL's rounding says little.
const PROGRESS_TRUSTED: std::ops::RangeInclusive<f64> = 0.05..=0.95;
/// A prediction from progress is checked again at least this many intervals later.
const PREDICTION_HORIZON: u32 = 4;
/// A Ready seen by the first poll says only that the job took at most that long; it is counted
/// as this share of it, so the first poll drifts earlier until it sometimes finds the job running.
const CENSORED: f64 = 0.8;

/// The polls of one job: what is known of its kind, and of its own polls so far.
#[derive(Debug, Clone)]
pub(in crate::dispatch) struct Plan {
    pub(super) mode: PollSchedule,
    /// The catalog's expected time (scaled by `first_poll_scale`).
    pub(super) expected: Duration,
    pub(super) spread: Spread,
    pub(super) interval: Duration,
    /// Polls sent so far.
    sent: u32,
    /// When (since the submit) the last poll went out, and the one before it.
    last: Duration,
    before_last: Duration,
    /// The end that progress predicted when the last poll was scheduled.
    predicted: Option<Duration>,
}

impl Plan {
    pub(super) fn new(mode: PollSchedule, expected: Duration, spread: Spread, interval: Duration) -> Plan {
        Plan {
            mode,
            expected,
            spread,
            interval,
            sent: 0,
            last: Duration::ZERO,
            before_last: Duration::ZERO,
            predicted: None,
        }
    }

    /// When (since the submit) the first poll goes out.
    pub(in crate::dispatch) fn first(&self) -> Duration {
        match self.mode {
            PollSchedule::Fixed => self.expected,
            PollSchedule::Learning => self.spread.low,
        }
    }

    /// A poll went out `at` (since the submit).
    pub(in crate::dispatch) fn sent(&mut self, at: Duration) {
        self.before_last = self.last;
        self.last = at;
        self.sent = self.sent.saturating_add(1);
    }

    #[cfg(test)]
    pub(in crate::dispatch) fn polls(&self) -> u32 {
        self.sent
    }

    /// When (since the submit) the next poll goes out: `now` is the time since the submit, and
    /// `progress` what the last poll reported (0.0–1.0).
    pub(in crate::dispatch) fn next(&mut self, now: Duration, progress: Option<f64>) -> Duration {
        if self.mode == PollSchedule::Fixed {
            return now + fixed_next(self.expected, now, self.interval);
        }
        self.predicted = self.predict(progress);
        let wanted = match self.predicted {
            Some(end) => end.min(self.last + self.interval * PREDICTION_HORIZON),
            None => self.last + self.gap(),
        };
        // The budget: poll k+1 not before (k − 1) intervals, so poll k+2 stays affordable.
        let affordable = self.interval * self.sent.saturating_sub(1);
        wanted.max(self.last + QUICK_FLOOR.min(self.interval)).max(affordable).max(now)
    }

    /// Until the next poll: the polls the budget affords up to the learned p95 spread evenly
    /// over what is left of it; past it, gaps that grow with the overrun up to the interval
    /// (doubled for very long runs), so a job just past a narrow window is still seen soon.
    fn gap(&self) -> Duration {
        let high = self.spread.high;
        if self.last < high {
            // Polls whose turn in the budget has come by `high`: k ≤ high / interval + 2.
            let affordable = (high.as_secs_f64() / self.interval.as_secs_f64()).floor() as u32 + 2;
            let left = affordable.saturating_sub(self.sent);
            if left > 0 {
                return (high - self.last) / left;
            }
        }
        if self.last >= LONG_RUN {
            return self.interval * 2;
        }
        let width = high.saturating_sub(self.spread.low);
        let overrun = self.last.saturating_sub(high);
        (overrun + width / 4 + QUICK_FLOOR * 2).min(self.interval)
    }

    /// The end progress points at, if it says anything: linear from the submit.
    fn predict(&self, progress: Option<f64>) -> Option<Duration> {
        let p = progress.filter(|p| PROGRESS_TRUSTED.contains(p))?;
        let end = self.last.mul_f64(1.0 / p);
        // BFL rounds progress to hundredths: aim just past the end it implies.
        Some(end + end / 100).filter(|end| *end > self.last)
    }

    /// How long the job took, for the estimator, when a poll found it Ready: somewhere after
    /// the poll before (which saw it running).
    pub(in crate::dispatch) fn took_when_polled_ready(&self) -> Duration {
        match self.predicted {
            _ if self.sent <= 1 => self.last.mul_f64(CENSORED),
            Some(end) if (self.before_last..=self.last).contains(&end) => end,
            _ => (self.before_last + self.last) / 2,
        }
    }
}

/// Today's fixed schedule: the first poll at the model's expected time, then quick polls around
/// it (three cover the usual spread), then the configured interval, stretching for long jobs.
fn fixed_next(expected: Duration, elapsed: Duration, interval: Duration) -> Duration {
    if elapsed < expected * 5 / 3 {
        (expected / 3).max(FIXED_QUICK_FLOOR).min(interval)
    } else if elapsed < LONG_RUN {
        interval
    } else {
        interval * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const INTERVAL: Duration = Duration::from_millis(500);

    /// How the job reports progress to the polls.
    #[derive(Clone, Copy)]
    enum Progress {
        None,
        /// Linear from the submit, rounded to hundredths as BFL does.
        Linear,
        /// Says the job is half as far along as it is (a model whose progress lies).
        Pessimistic,
        /// Twice as far along as it is.
        Optimistic,
    }

    /// Follows a job lasting `duration` with `plan`: polls sent, and how late Ready was seen.
    fn follow(mut plan: Plan, duration: Duration, progress: Progress) -> (u32, Duration) {
        let mut t = plan.first();
        loop {
            plan.sent(t);
            if t >= duration {
                return (plan.polls(), t - duration);
            }
            let fraction = t.as_secs_f64() / duration.as_secs_f64();
            let reported = match progress {
                Progress::None => None,
                Progress::Linear => Some((fraction * 100.0).round() / 100.0),
                Progress::Pessimistic => Some((fraction * 50.0).round() / 100.0),
                Progress::Optimistic => Some((fraction * 200.0).round().min(99.0) / 100.0),
            };
            // The answer comes back a little after the poll went out.
            let next = plan.next(t + ms(2), reported);
            assert!(next > t, "the schedule must move forward: {next:?} after {t:?}");
            t = next;
        }
    }

    fn spread(low: u64, median: u64, high: u64) -> Spread {
        Spread { low: ms(low), median: ms(median), high: ms(high) }
    }

    #[test]
    fn polls_stay_within_the_budget_whatever_the_job_really_takes() {
        let spreads = [
            spread(140, 200, 260),
            spread(280, 400, 520),
            spread(1_050, 1_500, 1_950),
            spread(2_100, 3_000, 3_900),
            spread(4_200, 6_000, 7_800),
            spread(100, 3_000, 60_000),
            spread(0, 0, 0),
        ];
        let durations = [
            1, 30, 120, 199, 260, 499, 500, 501, 999, 1_000, 1_700, 2_500, 4_000, 7_900, 12_000, 31_000,
            170_000, 600_000,
        ];
        for s in spreads {
            for d in durations {
                for progress in
                    [Progress::None, Progress::Linear, Progress::Pessimistic, Progress::Optimistic]
                {
                    let plan = Plan::new(PollSchedule::Learning, ms(3_000), s, INTERVAL);
                    let (polls, _) = follow(plan, ms(d), progress);
                    let budget = d / 500 + 3;
                    assert!(u64::from(polls) <= budget, "{s:?}, {d} ms: {polls} polls > {budget}");
                }
            }
        }
    }

    #[test]
    fn the_fixed_schedule_stays_within_the_budget_too() {
        for (expected, d) in
            [(400, 300), (400, 600), (400, 2_000), (3_000, 4_000), (3_000, 20_000), (9_000, 170_000)]
        {
            let plan = Plan::new(PollSchedule::Fixed, ms(expected), spread(0, 0, 0), INTERVAL);
            let (polls, _) = follow(plan, ms(d), Progress::None);
            assert!(
                u64::from(polls) <= d / 500 + 3,
                "expected {expected} ms, duration {d} ms: {polls} polls"
            );
        }
    }

    #[test]
    fn the_fixed_schedule_first_polls_at_the_expected_time() {
        let plan = Plan::new(PollSchedule::Fixed, ms(3_000), spread(1_000, 1_500, 2_000), INTERVAL);
        assert_eq!(plan.first(), ms(3_000));
        let learning = Plan::new(PollSchedule::Learning, ms(3_000), spread(1_000, 1_500, 2_000), INTERVAL);
        assert_eq!(learning.first(), ms(1_000));
    }

    #[test]
    fn linear_progress_finds_the_end_within_a_few_hundredths() {
        let plan = Plan::new(PollSchedule::Learning, ms(3_000), spread(2_000, 3_000, 4_000), INTERVAL);
        let (_, lag) = follow(plan, ms(5_000), Progress::Linear);
        assert!(lag <= ms(150), "lag {lag:?}");
    }

    #[test]
    fn a_job_just_past_a_narrow_learned_window_is_seen_soon_not_an_interval_later() {
        let plan = Plan::new(PollSchedule::Learning, ms(3_000), spread(2_000, 2_010, 2_020), INTERVAL);
        let (_, lag) = follow(plan, ms(2_030), Progress::None);
        assert!(lag <= ms(100), "lag {lag:?}");
    }

    #[test]
    fn a_ready_at_the_first_poll_counts_as_shorter_so_the_first_poll_moves_earlier() {
        let mut plan = Plan::new(PollSchedule::Learning, ms(3_000), spread(1_000, 1_500, 2_000), INTERVAL);
        plan.sent(ms(1_000));
        assert!(plan.took_when_polled_ready() < ms(1_000));
        plan.next(ms(1_002), None);
        plan.sent(ms(1_250));
        assert_eq!(plan.took_when_polled_ready(), ms(1_125));
    }
}
