//! The sweep of a local image store: every so often, images older than `delivery.retention_secs`
//! are removed (a bounded number per sweep, see `ImageStore::sweep`). It runs in a task of its
//! own that stops when shutdown begins; a bucket is left to its own lifecycle rules.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Delivery;

/// How often the sweep runs: a twentieth of the retention, between a minute and an hour.
fn interval(retention: Duration) -> Duration {
    (retention / 20).clamp(Duration::from_secs(60), Duration::from_secs(3600))
}

/// The sweep task and its stop signal.
#[derive(Debug, Default)]
pub(super) struct Sweeper {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Delivery {
    /// Starts sweeping old images out of a local store (nothing to do for other stores).
    pub fn start_sweeping(&self) {
        let Some(store) = self.store.clone().filter(|s| s.sweeps()) else { return };
        let retention = self.settings.retention;
        let stop = self.sweeper.stop.clone();
        self.sweeper.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(interval(retention));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let swept = tokio::select! {
                    _ = stop.cancelled() => return,
                    swept = store.sweep(retention) => swept,
                };
                match swept {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(removed, "old re-hosted images removed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping old re-hosted images failed"),
                }
            }
        });
    }

    /// Shutdown: the sweep stops at its next step; `sweeping().wait()` says when it has.
    pub fn stop_sweeping(&self) {
        self.sweeper.stop.cancel();
        // Closed here too: with no sweep started, `wait` would otherwise never return.
        self.sweeper.tasks.close();
    }

    /// The sweep task, to wait for at shutdown.
    pub fn sweeping(&self) -> &TaskTracker {
        &self.sweeper.tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_run_between_a_minute_and_an_hour_apart() {
        assert_eq!(interval(Duration::from_secs(7 * 86_400)), Duration::from_secs(3600));
        assert_eq!(interval(Duration::from_secs(86_400)), Duration::from_secs(3600));
        assert_eq!(interval(Duration::from_secs(36_000)), Duration::from_secs(1800));
        assert_eq!(interval(Duration::from_secs(600)), Duration::from_secs(60));
    }
}
