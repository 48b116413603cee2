//! The task table: accepted jobs with their timing and outcome, plus per-key active-task
//! accounting for BFL's concurrency caps. A task is active from submit until its ready time,
//! whether or not anybody polls, which is how BFL counts.
//!
//! Tasks are forgotten (with their cached image) once nobody can use them any more: a finished
//! task once its signed result URL has expired (`result_ttl` after it turned terminal), a hung one
//! `hung_task_ttl` after submit, when it also gives its slot back. Min-heaps of eviction
//! deadlines and slot end times are swept by every accessor, so forgetting costs O(log n) per
//! task, paid by the traffic that follows, and needs no background thread.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

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
    /// Progress reported as null while running (`[no-progress]`).
    pub no_progress: bool,
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
    /// When the slot frees: the ready time, or for a hung task its eviction time.
    until: Option<Instant>,
    kontext_max: bool,
}

/// How long tasks are kept.
#[derive(Clone, Copy, Debug)]
pub(super) struct Retention {
    /// After a task turns terminal (the validity of its result URL).
    pub result_ttl: Duration,
    /// After a task that never finishes was submitted.
    pub hung_ttl: Duration,
}

/// Tasks by id, the slots each key holds, and when each task is forgotten and each slot freed.
#[derive(Debug)]
pub(super) struct Table {
    tasks: HashMap<String, Task>,
    /// Held slots by key; a key with none has no entry.
    slots: HashMap<String, Vec<Slot>>,
    /// Eviction deadlines with task ids, earliest first; one per task that has a deadline.
    expiry: BinaryHeap<Reverse<(Instant, String)>>,
    /// Slot end times with their key, earliest first; one per held slot that ends.
    slot_ends: BinaryHeap<Reverse<(Instant, String)>>,
    /// Held slots that never end (only when an end lies beyond what an `Instant` can hold).
    endless_slots: usize,
    retention: Retention,
    pub peak: usize,
}

/// Per-key limits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    pub all: usize,
    pub kontext_max: usize,
}

impl Table {
    pub(super) fn new(retention: Retention) -> Table {
        Table {
            tasks: HashMap::new(),
            slots: HashMap::new(),
            expiry: BinaryHeap::new(),
            slot_ends: BinaryHeap::new(),
            endless_slots: 0,
            retention,
            peak: 0,
        }
    }

    /// When `task` is forgotten: its result URL's expiry, or for a hung task `hung_ttl` after
    /// submit. `None` only when that lies beyond what an `Instant` can hold (kept for good).
    fn evict_at(&self, task: &Task) -> Option<Instant> {
        match task.ready_at {
            Some(ready) => ready.checked_add(self.retention.result_ttl),
            None => task.submitted.checked_add(self.retention.hung_ttl),
        }
    }

    /// Forgets the tasks whose deadline passed before `now`, and frees the slots of tasks that
    /// have finished (or were forgotten) by `now`. O(1) when nothing is due; each task costs
    /// O(log n + task_cap) once.
    fn sweep(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.expiry.peek() {
            if *at >= now {
                break;
            }
            if let Some(Reverse((_, id))) = self.expiry.pop() {
                self.tasks.remove(&id);
            }
        }
        while let Some(Reverse((until, _))) = self.slot_ends.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((_, key))) = self.slot_ends.pop() else { break };
            if let Some(slots) = self.slots.get_mut(&key) {
                slots.retain(|s| s.until.is_none_or(|u| u > now));
                if slots.is_empty() {
                    self.slots.remove(&key);
                }
            }
        }
    }

    pub(super) fn active(&mut self, now: Instant) -> usize {
        self.sweep(now);
        self.slot_ends.len() + self.endless_slots
    }

    /// Whether `key` may start one more task of this kind now.
    pub(super) fn has_room(&mut self, key: &str, kontext_max: bool, caps: Caps, now: Instant) -> bool {
        self.sweep(now);
        let Some(slots) = self.slots.get(key) else {
            return caps.all > 0 && (!kontext_max || caps.kontext_max > 0);
        };
        let km = slots.iter().filter(|s| s.kontext_max).count();
        slots.len() < caps.all && (!kontext_max || km < caps.kontext_max)
    }

    /// Records an accepted task and takes its slot.
    pub(super) fn insert(&mut self, id: String, task: Task, kontext_max: bool, now: Instant) {
        let evict_at = self.evict_at(&task);
        // A hung task holds its slot until it is forgotten; a finishing one until it is ready.
        let until = if task.ready_at.is_some() { task.ready_at } else { evict_at };
        self.slots.entry(task.key.clone()).or_default().push(Slot { until, kontext_max });
        match until {
            Some(u) => self.slot_ends.push(Reverse((u, task.key.clone()))),
            None => self.endless_slots += 1,
        }
        if let Some(at) = evict_at {
            self.expiry.push(Reverse((at, id.clone())));
        }
        self.tasks.insert(id, task);
        let active = self.active(now);
        self.peak = self.peak.max(active);
    }

    pub(super) fn get(&mut self, id: &str, now: Instant) -> Option<&Task> {
        self.sweep(now);
        self.tasks.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &str, now: Instant) -> Option<&mut Task> {
        self.sweep(now);
        self.tasks.get_mut(id)
    }

    /// Every task still kept at `now`, with its id, in no particular order.
    pub(super) fn iter(&mut self, now: Instant) -> impl Iterator<Item = (&str, &Task)> {
        self.sweep(now);
        self.tasks.iter().map(|(id, t)| (id.as_str(), t))
    }

    /// Tasks kept at `now`.
    #[cfg(test)]
    pub(super) fn len(&mut self, now: Instant) -> usize {
        self.sweep(now);
        self.tasks.len()
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
            no_progress: false,
            image: Arc::default(),
        }
    }

    const TTL: Duration = Duration::from_secs(60);
    const HUNG_TTL: Duration = Duration::from_secs(3 * 3600);

    fn table() -> Table {
        Table::new(Retention { result_ttl: TTL, hung_ttl: HUNG_TTL })
    }

    #[test]
    fn finished_tasks_are_forgotten_once_their_url_expires() {
        let now = Instant::now();
        let mut t = table();
        let secs = |s| Some(Duration::from_secs(s));
        t.insert("quick".into(), task("flux-dev", "k", now, secs(1)), false, now);
        t.insert("slow".into(), task("flux-dev", "k", now, secs(30)), false, now);
        t.insert("later".into(), task("flux-dev", "k", now + Duration::from_secs(5), secs(1)), false, now);
        let image = t.get("quick", now).map(|x| Arc::downgrade(&x.image)).expect("kept");
        let at = |s| now + Duration::from_secs(s);
        assert_eq!(t.len(at(61)), 3, "kept through the URL's last instant");
        assert!(t.get("quick", at(61)).is_some());
        assert!(t.get("quick", at(62)).is_none(), "gone once the URL has expired");
        assert!(image.upgrade().is_none(), "and its image cache with it");
        assert_eq!(t.len(at(62)), 2);
        assert!(t.get("later", at(67)).is_none());
        assert!(t.get_mut("slow", at(90)).is_some());
        assert_eq!(t.iter(at(91)).count(), 0);
        assert_eq!(t.expiry.len(), 0, "the deadline heap empties with the table");
        assert!(t.slots.is_empty() && t.slot_ends.is_empty(), "and no key keeps an entry");
    }

    #[test]
    fn running_tasks_are_kept_while_they_hold_a_slot_and_hung_ones_until_their_bound() {
        let now = Instant::now();
        let caps = Caps { all: 2, kontext_max: 1 };
        let mut t = table();
        t.insert("hung".into(), task("flux-dev", "k", now, None), false, now);
        t.insert("long".into(), task("flux-dev", "k", now, Some(HUNG_TTL * 2)), false, now);
        let before = now + HUNG_TTL;
        assert_eq!(t.active(before), 1, "the hung slot frees at its bound");
        assert!(t.get("hung", before).is_some());
        let after = before + Duration::from_millis(1);
        assert!(t.get("hung", after).is_none(), "then the hung task is forgotten");
        assert!(t.has_room("k", false, caps, after));
        for hours in [3, 4, 5] {
            let at = now + Duration::from_secs(hours * 3600);
            assert!(t.get("long", at).is_some(), "a task still running is kept");
            assert!(!matches!(t.get("long", at).map(|x| x.phase(at)), Some(Phase::Done)));
        }
        assert_eq!(t.active(now + HUNG_TTL * 2 - Duration::from_secs(1)), 1);
        assert!(t.get("long", now + HUNG_TTL * 2 + TTL).is_some());
        assert_eq!(t.len(now + HUNG_TTL * 2 + TTL + Duration::from_millis(1)), 0);
    }

    #[test]
    fn caps_count_active_tasks_per_key_and_free_them_on_time() {
        let now = Instant::now();
        let caps = Caps { all: 3, kontext_max: 1 };
        let mut t = table();
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
