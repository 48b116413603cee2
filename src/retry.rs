//! The one home of retry timing: exponential backoff with full jitter, honouring `retry-after`
//! (submits to BFL, outgoing webhook deliveries).

use std::time::Duration;

/// Delay before retry number `attempt` (0-based): `base · 2^attempt`, jittered to 50–100 %, or what
/// the upstream asked for when it said so (capped, so one header cannot stall a job).
pub fn backoff(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(asked) = retry_after {
        return asked.min(Duration::from_secs(10));
    }
    let full = base.saturating_mul(1u32 << attempt.min(10));
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds() {
        let base = Duration::from_millis(100);
        for attempt in 0..4 {
            let d = backoff(base, attempt, None);
            let full = base * (1 << attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 0, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(backoff(base, 0, Some(Duration::from_secs(999))), Duration::from_secs(10));
    }
}
