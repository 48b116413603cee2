//! When to poll next: the first poll at the model's expected time, then quick polls around that
//! time (so a fast model's Ready is noticed within a fraction of a poll), then the configured
//! interval, stretching for jobs that run long.

use std::time::Duration;

const QUICK_FLOOR: Duration = Duration::from_millis(50);

/// Delay before the next poll, given how long the job has been running.
pub(super) fn next_poll(expected: Duration, elapsed: Duration, interval: Duration) -> Duration {
    // Three quick polls after the first cover the usual spread of run times around `expected`.
    if elapsed < expected * 5 / 3 {
        (expected / 3).max(QUICK_FLOOR).min(interval)
    } else if elapsed < Duration::from_secs(30) {
        interval
    } else {
        interval * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a job lasting `duration` would cost, and how late its Ready would be noticed.
    fn simulate(expected: Duration, duration: Duration, interval: Duration) -> (u32, Duration) {
        let mut t = expected;
        let mut polls = 1;
        while t < duration {
            t += next_poll(expected, t, interval);
            polls += 1;
        }
        (polls, t.saturating_sub(duration))
    }

    #[test]
    fn polls_stay_within_the_budget_of_duration_over_half_a_second_plus_three() {
        let interval = Duration::from_millis(500);
        for (expected_ms, duration_ms) in
            [(400, 300), (400, 600), (400, 2_000), (3_000, 4_000), (3_000, 20_000), (9_000, 170_000)]
        {
            let (polls, _) =
                simulate(Duration::from_millis(expected_ms), Duration::from_millis(duration_ms), interval);
            let budget = duration_ms / 500 + 3;
            assert!(
                u64::from(polls) <= budget,
                "expected {expected_ms} ms, duration {duration_ms} ms: {polls} polls > {budget}"
            );
        }
    }

    #[test]
    fn a_klein_job_is_noticed_within_150_ms() {
        let (_, lag) =
            simulate(Duration::from_millis(400), Duration::from_millis(600), Duration::from_millis(500));
        assert!(lag <= Duration::from_millis(150), "lag {lag:?}");
    }
}
