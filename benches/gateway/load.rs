//! Running many requests at once and summarising their timings.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::client::unix_ms;

/// One finished request.
pub struct Outcome<T> {
    pub elapsed: Duration,
    /// When the client had the whole reply, unix ms.
    pub done_unix_ms: u64,
    pub result: Result<T, String>,
}

/// Every request of a batch, in start order, and how long the batch took.
pub struct Batch<T> {
    pub outcomes: Vec<Outcome<T>>,
    pub wall: Duration,
}

impl<T> Batch<T> {
    /// Durations of the successful requests, sorted.
    pub fn ok_durations(&self) -> Vec<Duration> {
        let mut d: Vec<_> = self.outcomes.iter().filter(|o| o.result.is_ok()).map(|o| o.elapsed).collect();
        d.sort();
        d
    }

    pub fn errors(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_err()).count()
    }

    /// The first error, for the report.
    pub fn first_error(&self) -> Option<&str> {
        self.outcomes.iter().find_map(|o| o.result.as_ref().err().map(String::as_str))
    }

    /// Successful requests per second of wall time.
    pub fn per_second(&self) -> f64 {
        let ok = self.outcomes.len() - self.errors();
        ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs `job(0..n)`, at most `concurrency` at a time, each on its own tokio task (so the client
/// uses every core and one slow reply does not delay the clock of another).
pub async fn run<T, F, Fut>(n: usize, concurrency: usize, job: F) -> Batch<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(permit) = Arc::clone(&gate).acquire_owned().await else { break };
        let fut = job(i);
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = fut.await;
            let outcome = Outcome { elapsed: t.elapsed(), done_unix_ms: unix_ms(), result };
            drop(permit);
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(n);
    for h in handles {
        outcomes.push(h.await.unwrap_or_else(|e| Outcome {
            elapsed: Duration::ZERO,
            done_unix_ms: unix_ms(),
            result: Err(format!("request task failed: {e}")),
        }));
    }
    Batch { outcomes, wall: started.elapsed() }
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of signed values; zero when empty.
pub fn median_i64(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}
