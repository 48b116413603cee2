//! `MemoryJobStore`: job records in this process, bounded in count, finished ones evicted after
//! their TTL (and the oldest finished first when the bound is reached).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use super::{JobId, JobRecord, JobStatus, JobStore, StoreError, StoreSettings};

struct State {
    records: HashMap<JobId, JobRecord>,
    /// Finished jobs in the order they finished, with when.
    finished: VecDeque<(Instant, JobId)>,
}

pub struct MemoryJobStore {
    settings: StoreSettings,
    state: Mutex<State>,
}

impl MemoryJobStore {
    pub fn new(settings: StoreSettings) -> MemoryJobStore {
        MemoryJobStore {
            settings,
            state: Mutex::new(State { records: HashMap::new(), finished: VecDeque::new() }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation keeps map and queue consistent step by step; a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Drops finished records older than `ttl`, and more of the oldest finished while `over` holds.
    fn evict(&mut self, ttl: std::time::Duration, mut over: impl FnMut(usize) -> bool) {
        let now = Instant::now();
        while let Some((at, id)) = self.finished.front() {
            if now.duration_since(*at) < ttl && !over(self.records.len()) {
                break;
            }
            // A record re-finished later has a newer entry; only the one it matches goes.
            let current = self.records.get(id).is_some_and(|r| r.status.is_terminal());
            if current {
                self.records.remove(id);
            }
            self.finished.pop_front();
        }
    }
}

impl JobStore for MemoryJobStore {
    fn insert(&self, record: JobRecord) -> Result<(), StoreError> {
        let max = self.settings.max_records;
        let mut state = self.lock();
        state.evict(self.settings.result_ttl, |len| len >= max);
        if state.records.len() >= max {
            return Err(StoreError::Full(state.records.len()));
        }
        state.records.insert(record.id.clone(), record);
        Ok(())
    }

    fn update(&self, id: &JobId, status: JobStatus) {
        let mut state = self.lock();
        let terminal = status.is_terminal();
        let Some(record) = state.records.get_mut(id) else { return };
        let was_terminal = record.status.is_terminal();
        record.status = status;
        if terminal && !was_terminal {
            state.finished.push_back((Instant::now(), id.clone()));
        }
        state.evict(self.settings.result_ttl, |_| false);
    }

    fn remove(&self, id: &JobId) {
        self.lock().records.remove(id);
    }

    fn get(&self, id: &JobId) -> Option<JobRecord> {
        let mut state = self.lock();
        state.evict(self.settings.result_ttl, |_| false);
        state.records.get(id).cloned()
    }

    fn len(&self) -> usize {
        self.lock().records.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::records::JobFailure;

    fn store(ttl_secs: u64, max: usize) -> MemoryJobStore {
        MemoryJobStore::new(StoreSettings { result_ttl: Duration::from_secs(ttl_secs), max_records: max })
    }

    fn add(store: &MemoryJobStore) -> JobId {
        let id = JobId::new();
        store.insert(JobRecord::new(id.clone(), "flux-2-pro")).expect("room");
        id
    }

    fn finish(store: &MemoryJobStore, id: &JobId) {
        store.update(id, JobStatus::Failed(JobFailure::TaskLost));
    }

    #[tokio::test(start_paused = true)]
    async fn finished_jobs_are_evicted_after_their_ttl_and_running_ones_are_kept() {
        let store = store(60, 100);
        let (running, done) = (add(&store), add(&store));
        store.update(&running, JobStatus::Running { progress: Some(0.5) });
        finish(&store, &done);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.get(&done).is_some(), "kept within its TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.get(&done).is_none(), "gone after its TTL");
        assert_eq!(store.get(&running).map(|r| r.status), Some(JobStatus::Running { progress: Some(0.5) }));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_stays_bounded_evicting_the_oldest_finished_then_refusing() {
        let store = store(3600, 3);
        let ids: Vec<JobId> = (0..3).map(|_| add(&store)).collect();
        finish(&store, &ids[1]);
        finish(&store, &ids[0]);
        let fourth = add(&store);
        assert_eq!(store.len(), 3);
        assert!(store.get(&ids[1]).is_none(), "the oldest finished made room");
        assert!(store.get(&ids[0]).is_some() && store.get(&ids[2]).is_some());
        let fifth = add(&store);
        assert!(store.get(&ids[0]).is_none());
        assert_eq!(
            store.insert(JobRecord::new(JobId::new(), "flux-2-pro")),
            Err(StoreError::Full(3)),
            "three unfinished jobs fill it"
        );
        for id in [&ids[2], &fourth, &fifth] {
            assert!(store.get(id).is_some());
        }
    }
}
