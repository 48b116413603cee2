//! The task table: every accepted job with its timing and outcome, plus per-key active-task
//! accounting for BFL's concurrency caps. A task is active from submit until its ready time,
//! whether or not anybody polls, which is how BFL counts.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::models::{Format, Model};

/// One accepted job.
#[derive(Debug)]
pub(super) struct Task {
    pub model: &'static Model,
    pub key: String,
    pub submitted: Instant,
    /// When the task turns terminal; `None` for `[hang]` (never).
    pub ready_at: Option<Instant>,
    /// Terminal status: `Ready` or whatever a trigger asked for.
    pub status: String,
    /// The prompt reported in `result.prompt` (rewritten when upsampling was on).
    pub prompt: String,
    pub seed: i64,
    pub size: (u32, u32),
    pub format: Format,
    /// `scheme://host:port` the task's URLs are built on.
    pub base: String,
    pub polls: u32,
    /// Polls still to be answered "Task not found" (`[notfound:N]`).
    pub notfound_left: u32,
    /// Forced HTTP status for every poll (`[poll-status:CODE]`).
    pub poll_status: Option<u16>,
    /// Status reported while running instead of Pending (`[interim:XYZ]`).
    pub interim: Option<String>,
    /// Encoded result image, made on first download and shared by later ones.
    pub image: Arc<OnceCell<Bytes>>,
}

/// Where a task stands at a given moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Phase {
    /// Still running: the status to report and progress in 0.0..1.0.
    Running {
        status: &'static str,
        progress: f64,
    },
    Done,
}

impl Task {
    pub(super) fn phase(&self, now: Instant) -> Phase {
        let elapsed = now.saturating_duration_since(self.submitted).as_secs_f64();
        let (total, done) = match self.ready_at {
            Some(r) => (r.saturating_duration_since(self.submitted).as_secs_f64(), now >= r),
            // A hung task creeps towards, but never reaches, the end of a nominal run.
            None => (self.model.secs, false),
        };
        if done {
            return Phase::Done;
        }
        let fraction = if total > 0.0 { (elapsed / total).clamp(0.0, 0.99) } else { 0.0 };
        let status = if self.model.reasons && fraction < 1.0 / 3.0 { "Reasoning" } else { "Pending" };
        Phase::Running { status, progress: (fraction * 100.0).round() / 100.0 }
    }
}

/// A slot held by an active task of one key.
#[derive(Debug)]
struct Slot {
    until: Option<Instant>,
    kontext_max: bool,
}

/// Tasks by id, and the slots each key holds.
#[derive(Debug, Default)]
pub(super) struct Table {
    tasks: HashMap<String, Task>,
    slots: HashMap<String, Vec<Slot>>,
    pub peak: usize,
}

/// Per-key limits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub all: usize,
    pub kontext_max: usize,
}

impl Table {
    /// Frees the slots of tasks that have finished by `now`.
    fn prune(&mut self, now: Instant) {
        self.slots.retain(|_, slots| {
            slots.retain(|s| s.until.is_none_or(|u| u > now));
            !slots.is_empty()
        });
    }

    pub(super) fn active(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.slots.values().map(Vec::len).sum()
    }

    /// Whether `key` may start one more task of this kind now.
    pub(super) fn has_room(&mut self, key: &str, kontext_max: bool, caps: Caps, now: Instant) -> bool {
        self.prune(now);
        let Some(slots) = self.slots.get(key) else {
            return caps.all > 0 && (!kontext_max || caps.kontext_max > 0);
        };
        let km = slots.iter().filter(|s| s.kontext_max).count();
        slots.len() < caps.all && (!kontext_max || km < caps.kontext_max)
    }

    /// Records an accepted task and takes its slot.
    pub(super) fn insert(&mut self, id: String, task: Task, kontext_max: bool, now: Instant) {
        let slot = Slot { until: task.ready_at, kontext_max };
        self.slots.entry(task.key.clone()).or_default().push(slot);
        self.tasks.insert(id, task);
        let active = self.active(now);
        self.peak = self.peak.max(active);
    }

    pub(super) fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(id)
    }

    /// Every task ever accepted, with its id, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Task)> {
        self.tasks.iter().map(|(id, t)| (id.as_str(), t))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::models::find;

    fn task(model: &str, key: &str, now: Instant, run: Option<Duration>) -> Task {
        Task {
            model: find(model).expect("known"),
            key: key.to_owned(),
            submitted: now,
            ready_at: run.map(|d| now + d),
            status: "Ready".to_owned(),
            prompt: String::new(),
            seed: 1,
            size: (64, 64),
            format: Format::Jpeg,
            base: String::new(),
            polls: 0,
            notfound_left: 0,
            poll_status: None,
            interim: None,
            image: Arc::default(),
        }
    }

    #[test]
    fn caps_count_active_tasks_per_key_and_free_them_on_time() {
        let now = Instant::now();
        let caps = Caps { all: 3, kontext_max: 1 };
        let mut t = Table::default();
        let secs = Some(Duration::from_secs(10));
        t.insert("a".into(), task("flux-kontext-max", "k", now, secs), true, now);
        assert!(!t.has_room("k", true, caps, now), "kontext-max cap reached");
        assert!(t.has_room("k", false, caps, now));
        t.insert("b".into(), task("flux-2-pro", "k", now, None), false, now);
        t.insert("c".into(), task("flux-2-pro", "k", now, Some(Duration::from_secs(20))), false, now);
        assert!(!t.has_room("k", false, caps, now));
        assert!(t.has_room("other", true, caps, now), "caps are per key");
        let later = now + Duration::from_secs(10);
        assert!(t.has_room("k", true, caps, later), "finished tasks free their slot");
        assert_eq!(t.active(later), 2);
        assert_eq!(t.active(now + Duration::from_secs(3600)), 1, "a hung task stays active");
        assert_eq!(t.peak, 3);
    }

    #[test]
    fn progress_rises_and_max_reasons_first() {
        let now = Instant::now();
        let t = task("flux-2-max", "k", now, Some(Duration::from_secs(9)));
        let at = |s| t.phase(now + Duration::from_secs(s));
        assert_eq!(at(0), Phase::Running { status: "Reasoning", progress: 0.0 });
        assert_eq!(at(6), Phase::Running { status: "Pending", progress: 0.67 });
        assert_eq!(at(9), Phase::Done);
        let hung = task("flux-dev", "k", now, None);
        assert!(matches!(hung.phase(now + Duration::from_secs(99_999)), Phase::Running { .. }));
    }
}
