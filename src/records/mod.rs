//! Job records: every image job has a `JobId` and a status others can watch (queued, submitted,
//! running with progress, succeeded with where the image is, failed with why). Records live in a
//! `JobStore`; `MemoryJobStore` keeps them in this process, evicting finished jobs after a TTL and
//! never holding more than a set number. A finished job also says where the image is kept when
//! the gateway re-hosts it (`ImageName`).

mod failure;
mod memory;
mod stored;

pub use failure::JobFailure;
pub use memory::MemoryJobStore;
pub use stored::{ImageName, StoredFormat};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;

/// How long finished jobs are kept, and how many records at most.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub result_ttl: Duration,
    pub max_records: usize,
}

/// A job's id: `job_` and 32 hex digits, unguessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(Arc<str>);

impl JobId {
    pub fn new() -> JobId {
        JobId(Arc::from(format!("job_{}", uuid::Uuid::new_v4().simple())))
    }

    /// An id as `new` makes them (`job_` and 32 lowercase hex digits), read back from elsewhere.
    pub fn parse(text: &str) -> Option<JobId> {
        let hex = text.strip_prefix("job_")?;
        let ok = hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| JobId(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Looked up by the id a client sends.
impl std::borrow::Borrow<str> for JobId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> JobId {
        JobId::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a finished image is, and what BFL said about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub sample: Url,
    /// BFL's upsampled prompt, when it differs from the client's.
    pub revised_prompt: Option<String>,
    /// BFL's task id.
    pub task_id: String,
    /// BFL's price of the task in credits, when its submit reply said.
    pub cost: Option<f64>,
    /// From the submit to the poll (or webhook) that saw it Ready.
    pub upstream: Duration,
    /// The image's name in the gateway's own store, once re-hosted there (`delivery.store`).
    pub stored: Option<ImageName>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    /// Waiting for an upstream slot; nothing has been sent.
    Queued,
    /// The submit has gone out: BFL may have the task from here on.
    Submitted,
    /// BFL accepted the task and it runs; `progress` (0–1) when BFL reports one.
    Running {
        progress: Option<f64>,
    },
    Succeeded(Arc<Finished>),
    Failed(JobFailure),
}

impl JobStatus {
    pub fn is_terminal(&self) -> bool {
        match self {
            JobStatus::Succeeded(_) | JobStatus::Failed(_) => true,
            JobStatus::Queued | JobStatus::Submitted | JobStatus::Running { .. } => false,
        }
    }

    /// True once BFL may have taken the job, so a retry could pay twice.
    pub fn reached_upstream(&self) -> bool {
        match self {
            JobStatus::Queued => false,
            JobStatus::Submitted | JobStatus::Running { .. } | JobStatus::Succeeded(_) => true,
            JobStatus::Failed(failure) => failure.reached_upstream(),
        }
    }
}

/// One job as the store keeps it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub model: &'static str,
    /// Unix seconds.
    pub created_at: u64,
    pub status: JobStatus,
}

impl JobRecord {
    pub fn new(id: JobId, model: &'static str) -> JobRecord {
        let created_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        JobRecord { id, model, created_at, status: JobStatus::Queued }
    }
}

/// The store refused a new record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("the job store holds {0} unfinished jobs, its limit")]
    Full(usize),
}

/// Where job records live. In-process for one replica; a shared store can replace it.
pub trait JobStore: Send + Sync + 'static {
    /// Adds a new record (evicting expired finished ones first, then the oldest finished).
    fn insert(&self, record: JobRecord) -> Result<(), StoreError>;
    /// Records a job's new status; a finished status starts its TTL.
    fn update(&self, id: &JobId, status: JobStatus);
    /// Forgets a job that never reached BFL and has nobody waiting for it.
    fn remove(&self, id: &JobId);
    fn get(&self, id: &JobId) -> Option<JobRecord>;
    /// Records held now, finished or not.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
