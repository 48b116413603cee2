//! Batches replicas share through Redis (`[coordination] backend = "redis"`), so that any replica
//! answers `GET /v1/async/jobs/{id}` and a retry with an `Idempotency-Key` that lands on another
//! replica joins the first request's job instead of paying for a second one.
//!
//! - `fluxgate:batch:<id>`: the record of an async or keyed batch (who owns it, what was asked,
//!   each image's status; a finished image as BFL's URL, task id and re-hosted name, a failure as
//!   the message its client got), written by the replica that runs it whenever a status changes.
//!   It lives the model's deadline plus the retention while the batch runs (a dead replica's
//!   record goes by itself), then `jobs.result_ttl_secs` (an async job), or as long as its key
//!   if that is longer (a request with an `Idempotency-Key`).
//! - `fluxgate:idem:<sha256 of client and key>`: `{fingerprint, id}` for `jobs.idempotency_ttl_secs`,
//!   taken with `SET NX` before the batch starts, so two replicas cannot both start one.
//! - `fluxgate:billed:<id>:<image>`: set by whichever replica bills an image first; an image
//!   delivered by two replicas is billed once.
//!
//! Another replica's batch is followed here as an ordinary `Batch` whose statuses come from its
//! record (read every `FOLLOW_EVERY`), so replies, streams and job objects are made the same way.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::task::TaskTracker;

use super::{Assembly, Batch, Batches, Claim, IdempotencyKey, Kind, Phase};
use crate::bfl::UpstreamError;
use crate::catalog::Catalog;
use crate::clients::Caller;
use crate::coordination::{Redis, RedisError};
use crate::delivery::Wanted;
use crate::dispatch::JobHandle;
use crate::error::ApiError;
use crate::job::{OutputFormat, ResponseFormat};
use crate::records::{Finished, ImageName, JobFailure, JobId, JobStatus};
use crate::usage::{Entry, Usage};

/// How often a replica reads the record of a batch another replica runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// Status changes closer together than this are written as one.
const COALESCE: Duration = Duration::from_millis(100);
/// How long a request waits for another replica to finish starting the batch its key names.
const STARTING_WAIT: Duration = Duration::from_secs(3);
/// A key taken this long ago that still names no batch was never started (its replica stopped
/// or lost Redis in between); it is not started again either.
const NEVER_STARTED_MS: i64 = 30_000;

fn record_key(id: &str) -> String {
    format!("fluxgate:batch:{id}")
}

fn billed_key(id: &JobId, index: usize) -> String {
    format!("fluxgate:billed:{id}:{index}")
}

/// Where a client's idempotency key is kept: hashed, so no key a client chose reaches Redis's
/// key space as is.
fn key_entry(owner: &Caller, key: &IdempotencyKey) -> String {
    let mut hash = Sha256::new();
    for part in [owner.id(), key.as_str()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    format!("fluxgate:idem:{}", hex::encode(hash.finalize()))
}

/// An idempotency key as Redis keeps it: the request's fingerprint, and its batch once started.
#[derive(Serialize, Deserialize)]
struct KeyEntry {
    fingerprint: String,
    id: Option<String>,
}

/// Deletes the key only if it still holds what was read (another replica may have taken it anew).
const DELETE_IF_SAME: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A batch as Redis keeps it.
#[derive(Serialize, Deserialize)]
pub(super) struct Record {
    owner: String,
    model: String,
    edit: bool,
    created_at: u64,
    request_id: String,
    link_base: Option<String>,
    b64_json: bool,
    output_format: String,
    limit_ms: u64,
    stream: bool,
    /// An async job (`GET /v1/async/jobs/{id}` shows it), not only a keyed request.
    #[serde(default)]
    asynchronous: bool,
    /// Each image's price, and its size when the request named one (for usage events).
    price_usd: f64,
    megapixels: Option<f64>,
    images: Vec<(String, Stored)>,
}

/// One image's status as Redis keeps it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Stored {
    Queued,
    Submitted,
    Running {
        progress: Option<f64>,
    },
    Succeeded {
        sample: String,
        revised_prompt: Option<String>,
        task_id: String,
        cost: Option<f64>,
        upstream_ms: u64,
        stored: Option<String>,
    },
    Failed {
        message: String,
        reached_upstream: bool,
        /// Kept as they are, so another replica answers with the same code.
        moderated: Option<(bool, u8)>,
        deadline_ms: Option<u64>,
        /// BFL refused the request as invalid: its message and field.
        #[serde(default)]
        invalid: Option<(String, Option<String>)>,
    },
}

impl From<&JobStatus> for Stored {
    fn from(status: &JobStatus) -> Stored {
        match status {
            JobStatus::Queued => Stored::Queued,
            JobStatus::Submitted => Stored::Submitted,
            JobStatus::Running { progress } => Stored::Running { progress: *progress },
            JobStatus::Succeeded(finished) => Stored::Succeeded {
                sample: finished.sample.to_string(),
                revised_prompt: finished.revised_prompt.clone(),
                task_id: finished.task_id.clone(),
                cost: finished.cost,
                upstream_ms: finished.upstream.as_millis() as u64,
                stored: finished.stored.as_ref().map(|name| name.as_str().to_owned()),
            },
            JobStatus::Failed(failure) => Stored::Failed {
                message: ApiError::from(failure.clone()).to_string(),
                reached_upstream: failure.reached_upstream(),
                moderated: match failure {
                    JobFailure::Moderated { request, safety_tolerance } => {
                        Some((*request, *safety_tolerance))
                    }
                    _ => None,
                },
                deadline_ms: match failure {
                    JobFailure::DeadlineExceeded { deadline, .. } => Some(deadline.as_millis() as u64),
                    _ => None,
                },
                invalid: match failure {
                    JobFailure::Refused(UpstreamError::Invalid { message, field }) => {
                        Some((message.clone(), field.clone()))
                    }
                    _ => None,
                },
            },
        }
    }
}

impl Stored {
    fn status(self) -> JobStatus {
        match self {
            Stored::Queued => JobStatus::Queued,
            Stored::Submitted => JobStatus::Submitted,
            Stored::Running { progress } => JobStatus::Running { progress },
            Stored::Succeeded { sample, revised_prompt, task_id, cost, upstream_ms, stored } => {
                match Url::parse(&sample) {
                    Ok(sample) => JobStatus::Succeeded(Arc::new(Finished {
                        sample,
                        revised_prompt,
                        task_id,
                        cost,
                        upstream: Duration::from_millis(upstream_ms),
                        stored: stored.as_deref().and_then(ImageName::parse),
                    })),
                    Err(_) => JobStatus::Failed(JobFailure::Elsewhere {
                        message: "the image's record is unreadable".into(),
                        reached_upstream: true,
                    }),
                }
            }
            Stored::Failed { message, reached_upstream, moderated, deadline_ms, invalid } => {
                JobStatus::Failed(match (moderated, deadline_ms, invalid) {
                    (Some((request, safety_tolerance)), _, _) => {
                        JobFailure::Moderated { request, safety_tolerance }
                    }
                    (None, Some(ms), _) => JobFailure::DeadlineExceeded {
                        deadline: Duration::from_millis(ms),
                        accepted: reached_upstream,
                    },
                    (None, None, Some((message, field))) => {
                        JobFailure::Refused(UpstreamError::Invalid { message, field })
                    }
                    (None, None, None) => JobFailure::Elsewhere { message, reached_upstream },
                })
            }
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Stored::Succeeded { .. } | Stored::Failed { .. })
    }

    fn reached_upstream(&self) -> bool {
        match self {
            Stored::Queued => false,
            Stored::Submitted | Stored::Running { .. } | Stored::Succeeded { .. } => true,
            Stored::Failed { reached_upstream, .. } => *reached_upstream,
        }
    }
}

impl Record {
    fn of(batch: &Batch) -> Record {
        Record {
            owner: batch.owner.id().to_owned(),
            model: batch.model.to_owned(),
            edit: batch.kind == Kind::Edit,
            created_at: batch.created_at,
            request_id: batch.request_id.to_string(),
            link_base: batch.link_base.clone(),
            b64_json: batch.wanted.response_format == ResponseFormat::B64Json,
            output_format: batch.wanted.output_format.as_str().to_owned(),
            limit_ms: batch.wanted.limit.as_millis() as u64,
            stream: batch.stream,
            asynchronous: batch.asynchronous,
            price_usd: batch.price_usd,
            megapixels: batch.megapixels,
            images: batch.handles.iter().map(|h| (h.id().to_string(), Stored::from(&h.status()))).collect(),
        }
    }

    fn settled(&self) -> bool {
        self.images.iter().all(|(_, s)| s.is_terminal())
    }

    fn reached_upstream(&self) -> bool {
        self.images.iter().any(|(_, s)| s.reached_upstream())
    }
}

/// What replicas share of batches; see the module's notes.
#[derive(Clone)]
pub struct SharedBatches {
    redis: Arc<Redis>,
    usage: Usage,
    /// How long an async job's record is kept once settled (`jobs.result_ttl_secs`).
    result_ttl: Duration,
    /// How long a keyed batch's record, and an image's billed mark, are kept once settled.
    keep: Duration,
    idempotency_ttl: Duration,
    tracker: TaskTracker,
    /// True while the slot ledger finds Redis unreachable: keys are then claimed locally.
    degraded: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl SharedBatches {
    /// Records, billing marks and followed batches are written and read on `tracker` (the
    /// jobs'), so shutdown gives them the jobs' grace.
    pub fn new(
        redis: Arc<Redis>,
        usage: Usage,
        result_ttl: Duration,
        idempotency_ttl: Duration,
        tracker: TaskTracker,
        degraded: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Arc<SharedBatches> {
        Arc::new(SharedBatches {
            redis,
            usage,
            result_ttl,
            keep: result_ttl.max(idempotency_ttl),
            idempotency_ttl,
            tracker,
            degraded,
        })
    }

    /// Writes `batch`'s record (before it returns, so the batch can be named to the client at
    /// once), then at each change of its images' statuses until it settles; it is kept
    /// `jobs.result_ttl_secs` after (with a key: as long as its key, if longer). `key`: the
    /// Redis entry of its `Idempotency-Key` and what it should hold, written (`SET XX`) after
    /// the first record that reaches Redis, so the key never names a batch without a record.
    /// Once per batch; its images are billed once across replicas from then on.
    pub async fn publish(self: &Arc<Self>, batch: &Arc<Batch>, key: Option<(String, String)>) {
        if batch.shared.set(self.clone()).is_err() {
            return;
        }
        let keep = if key.is_some() { self.keep } else { self.result_ttl };
        let mut key = key;
        let mut watches: Vec<_> = batch.handles.iter().map(JobHandle::subscribe).collect();
        let (mut settled, written) = self.write_now(batch, &mut watches, keep, 3).await;
        if written {
            self.name_key(&mut key, &batch.id).await;
        }
        let (this, batch) = (self.clone(), batch.clone());
        self.tracker.spawn(async move {
            while !settled {
                // Images still running can change; the ones over (or whose job is gone) cannot.
                let changes = watches
                    .iter_mut()
                    .filter(|w| !w.borrow().is_terminal() && w.has_changed().is_ok())
                    .map(|w| Box::pin(w.changed()))
                    .collect::<Vec<_>>();
                if changes.is_empty() {
                    // Nothing more can change: what the last write missed is written now.
                    drop(changes);
                    let (_, written) = this.write_now(&batch, &mut watches, keep, 3).await;
                    if written {
                        this.name_key(&mut key, &batch.id).await;
                    }
                    return;
                }
                let _ = futures_util::future::select_all(changes).await;
                // Progress is coalesced; the end is written at once (a retry may come right away).
                if batch.phase() != Phase::Settled {
                    sleep(COALESCE).await;
                }
                // The settled record is the one that matters most: tried a few times.
                let written;
                (settled, written) = this.write_now(&batch, &mut watches, keep, 3).await;
                if written {
                    this.name_key(&mut key, &batch.id).await;
                }
            }
        });
    }

    /// Makes the key (if any is still unnamed) name its batch, now that the record is in Redis.
    async fn name_key(&self, key: &mut Option<(String, String)>, id: &JobId) {
        let Some((entry, named)) = key.as_ref() else { return };
        let mut set = redis::cmd("SET");
        set.arg(entry).arg(named).arg("XX").arg("KEEPTTL");
        match self.redis.query::<Option<String>>(&set).await {
            Ok(_) => *key = None,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "the Idempotency-Key could not name its job in Redis yet");
            }
        }
    }

    /// Writes the batch's record as it is now (up to `attempts` times): whether it is settled,
    /// and whether it was written.
    async fn write_now(
        &self,
        batch: &Batch,
        watches: &mut [watch::Receiver<JobStatus>],
        keep: Duration,
        attempts: usize,
    ) -> (bool, bool) {
        for watch in watches.iter_mut() {
            watch.borrow_and_update();
        }
        let settled = batch.phase() == Phase::Settled;
        let ttl = if settled { keep } else { batch.wanted.limit + keep };
        let record = Record::of(batch);
        for attempt in 1..=attempts {
            match self.write(&batch.id, &record, ttl).await {
                Ok(()) => return (settled, true),
                Err(e) => {
                    tracing::warn!(job = %batch.id, error = %e, "the shared record of a job was not written");
                    if attempt < attempts {
                        sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        (settled, false)
    }

    async fn write(&self, id: &JobId, record: &Record, ttl: Duration) -> Result<(), RedisError> {
        let json = serde_json::to_string(record).map_err(|e| RedisError(e.to_string()))?;
        let mut command = redis::cmd("SET");
        command.arg(record_key(id.as_str())).arg(json).arg("PX").arg(ttl.as_millis() as u64);
        self.redis.query::<()>(&command).await
    }

    async fn record(&self, id: &str) -> Result<Option<Record>, RedisError> {
        let json: Option<String> = self.redis.query(redis::cmd("GET").arg(record_key(id))).await?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// `owner`'s async job `id` as another replica last wrote it; `None` when unknown or not theirs.
    pub async fn job(
        self: &Arc<Self>,
        owner: &Caller,
        id: &str,
        catalog: &Catalog,
    ) -> Result<Option<Batch>, ApiError> {
        if JobId::parse(id).is_none() {
            return Ok(None);
        }
        let record = self.record(id).await.map_err(unavailable)?;
        let Some(record) = record.filter(|r| r.asynchronous && r.owner == owner.id()) else {
            return Ok(None);
        };
        let (batch, _) = self.follow(id, record, owner, catalog)?;
        Ok(Some(batch))
    }

    /// A batch that another replica runs, as a `Batch` whose statuses are `record`'s; the
    /// senders that move them on are returned.
    fn follow(
        self: &Arc<Self>,
        id: &str,
        record: Record,
        owner: &Caller,
        catalog: &Catalog,
    ) -> Result<(Batch, Vec<watch::Sender<JobStatus>>), ApiError> {
        let model = catalog.get(&record.model).map(|m| m.id).ok_or_else(|| {
            ApiError::internal(format!("a shared job names the model `{}`, unknown here", record.model))
        })?;
        let limit = Duration::from_millis(record.limit_ms);
        let (mut handles, mut senders) = (Vec::new(), Vec::new());
        for (image, stored) in record.images {
            let image = JobId::parse(&image)
                .ok_or_else(|| ApiError::internal("a shared job's image id is unreadable"))?;
            let (tx, rx) = watch::channel(stored.status());
            handles.push(JobHandle::watching(image, rx, limit));
            senders.push(tx);
        }
        let id = JobId::parse(id).ok_or_else(|| ApiError::internal("a shared job's id is unreadable"))?;
        let output_format = [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp]
            .into_iter()
            .find(|f| f.as_str() == record.output_format)
            .unwrap_or(OutputFormat::Jpeg);
        let response_format = if record.b64_json { ResponseFormat::B64Json } else { ResponseFormat::Url };
        let wanted = Wanted { response_format, output_format, deadline: Instant::now() + limit, limit };
        let kind = if record.edit { Kind::Edit } else { Kind::Generation };
        let batch = Batch::assemble(Assembly {
            id,
            owner: owner.clone(),
            request_id: Arc::from(record.request_id),
            link_base: record.link_base,
            created_at: record.created_at,
            model,
            kind,
            wanted,
            stream: record.stream,
            asynchronous: record.asynchronous,
            handles,
            usage: self.usage.clone(),
            price_usd: record.price_usd,
            megapixels: record.megapixels,
            elsewhere: true,
            accounts: Arc::new(watch::channel(0).0),
        });
        let _ = batch.shared.set(self.clone());
        Ok((batch, senders))
    }

    /// Moves `senders` on from the record of batch `id` until its images settle, nobody is
    /// watching any more, or the model's deadline (and a margin) has passed.
    fn feed(&self, id: JobId, senders: Vec<watch::Sender<JobStatus>>, limit: Duration) {
        let redis = self.clone();
        let until = Instant::now() + limit + Duration::from_secs(30);
        self.tracker.spawn(async move {
            while Instant::now() < until && senders.iter().any(|s| !s.is_closed()) {
                sleep(FOLLOW_EVERY).await;
                let record = match redis.record(id.as_str()).await {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::debug!(job = %id, error = %e, "the shared record could not be read; trying again");
                        continue;
                    }
                };
                let Some(record) = record else {
                    let gone = JobFailure::Elsewhere {
                        message: "the replica running this job stopped recording it".into(),
                        reached_upstream: true,
                    };
                    for sender in &senders {
                        sender.send_if_modified(|s| {
                            let open = !s.is_terminal();
                            if open {
                                *s = JobStatus::Failed(gone.clone());
                            }
                            open
                        });
                    }
                    return;
                };
                for (sender, (_, stored)) in senders.iter().zip(record.images) {
                    let status = stored.status();
                    sender.send_if_modified(|s| {
                        let changed = !s.is_terminal() && *s != status;
                        if changed {
                            *s = status;
                        }
                        changed
                    });
                }
                if senders.iter().all(|s| s.borrow().is_terminal()) {
                    return;
                }
            }
        });
    }

    /// The batch a retry with this key joins, here or on another replica, if there is one to
    /// join (waiting for one another replica is starting); the same key with another request is
    /// a 422. `None` when Redis does not answer (`claim` decides then).
    pub async fn existing(
        self: &Arc<Self>,
        local: &Batches,
        owner: &Caller,
        key: &IdempotencyKey,
        fingerprint: [u8; 32],
        catalog: &Catalog,
    ) -> Result<Option<Arc<Batch>>, ApiError> {
        if let Some(batch) = local.joined(owner, key, fingerprint)? {
            return Ok(Some(batch));
        }
        let (entry, print) = (key_entry(owner, key), hex::encode(fingerprint));
        let waiting_since = Instant::now();
        loop {
            match self.find(&entry, &print, owner, catalog).await {
                Ok(Found::Batch(batch)) => return Ok(Some(batch)),
                Ok(Found::Nothing | Found::Restart(_)) | Err(Refusal::Redis(_)) => return Ok(None),
                Ok(Found::Starting) => still_starting(waiting_since).await?,
                Err(Refusal::Api(e)) => return Err(e),
            }
        }
    }

    /// Serves a request with an idempotency key across replicas: a key this replica remembers is
    /// joined here; otherwise the first replica to take the key in Redis starts the batch (with
    /// `start`), and a retry elsewhere follows it. While the slot ledger finds Redis unreachable,
    /// keys are this replica's alone (a retry that reaches another replica then may start again);
    /// when Redis merely fails this once, the request is refused (503, nothing submitted).
    pub async fn claim(
        self: &Arc<Self>,
        local: &Batches,
        owner: &Caller,
        key: &IdempotencyKey,
        fingerprint: [u8; 32],
        catalog: &Catalog,
        start: impl FnOnce() -> Result<Batch, ApiError>,
    ) -> Result<Claim, ApiError> {
        if let Some(batch) = local.joined(owner, key, fingerprint)? {
            return Ok(Claim::Joined(batch));
        }
        let (entry, print) = (key_entry(owner, key), hex::encode(fingerprint));
        let waiting_since = Instant::now();
        loop {
            let taken = KeyEntry { fingerprint: print.clone(), id: None };
            let taken = serde_json::to_string(&taken).map_err(|e| ApiError::internal(e.to_string()))?;
            let mut set = redis::cmd("SET");
            set.arg(&entry).arg(taken).arg("NX").arg("PX").arg(self.idempotency_ttl.as_millis() as u64);
            match self.redis.query::<Option<String>>(&set).await {
                Err(e) if (self.degraded)() => {
                    tracing::warn!(error = %e, "Redis does not answer: this Idempotency-Key is known to this replica only");
                    return local.claim(owner, key, fingerprint, start);
                }
                Err(e) => return Err(unavailable(e)),
                Ok(Some(_)) => return self.start_keyed(local, owner, key, fingerprint, &entry, start).await,
                Ok(None) => {}
            }
            match self.find(&entry, &print, owner, catalog).await {
                Ok(Found::Batch(batch)) => return Ok(Claim::Joined(batch)),
                Ok(Found::Nothing) => {}
                Ok(Found::Restart(seen)) => {
                    let script = redis::Script::new(DELETE_IF_SAME);
                    let mut delete = script.prepare_invoke();
                    delete.key(&entry).arg(seen);
                    self.redis.invoke::<i64>(&delete).await.map_err(unavailable)?;
                }
                Ok(Found::Starting) => still_starting(waiting_since).await?,
                Err(Refusal::Api(e)) => return Err(e),
                Err(Refusal::Redis(e)) => return Err(unavailable(e)),
            }
            // Each turn of this loop follows another replica's move; a few are plenty.
            if waiting_since.elapsed() > STARTING_WAIT {
                return Err(starting_too_long());
            }
        }
    }

    /// What the key `entry` names in Redis now.
    async fn find(
        self: &Arc<Self>,
        entry: &str,
        print: &str,
        owner: &Caller,
        catalog: &Catalog,
    ) -> Result<Found, Refusal> {
        let seen: Option<String> =
            self.redis.query(redis::cmd("GET").arg(entry)).await.map_err(Refusal::Redis)?;
        let Some(raw) = seen else { return Ok(Found::Nothing) };
        let Ok(seen) = serde_json::from_str::<KeyEntry>(&raw) else {
            return Err(Refusal::Api(not_started_again("is unreadable")));
        };
        if seen.fingerprint != print {
            return Err(Refusal::Api(ApiError::IdempotencyKeyReused));
        }
        let Some(id) = seen.id else {
            // Another replica is starting it this very moment, or stopped while it did. Its age
            // is read from the key's TTL (Redis's clock), not from replicas' clocks.
            let left: i64 = self.redis.query(redis::cmd("PTTL").arg(entry)).await.map_err(Refusal::Redis)?;
            let age = (self.idempotency_ttl.as_millis() as i64).saturating_sub(left.max(0));
            if left >= 0 && age > NEVER_STARTED_MS {
                return Err(Refusal::Api(not_started_again("names a job that never finished starting")));
            }
            return Ok(Found::Starting);
        };
        let Some(record) = self.record(&id).await.map_err(Refusal::Redis)? else {
            // The key names a batch whose record was never written (Redis failed the first
            // replica): it may have reached BFL, so it is not started again.
            return Err(Refusal::Api(not_started_again("names a job no replica can find")));
        };
        // Over before BFL saw it (refused for capacity, say): a retry may try again.
        if record.settled() && !record.reached_upstream() {
            return Ok(Found::Restart(raw));
        }
        tracing::info!(job = %id, "a retry with the same Idempotency-Key follows the job another replica runs");
        let limit = Duration::from_millis(record.limit_ms);
        let (batch, senders) = self.follow(&id, record, owner, catalog).map_err(Refusal::Api)?;
        self.feed(batch.id.clone(), senders, limit);
        Ok(Found::Batch(Arc::new(batch)))
    }

    /// The key is this replica's: the batch starts here, and the key names it once its record is
    /// written (or is given up when it could not start).
    async fn start_keyed(
        self: &Arc<Self>,
        local: &Batches,
        owner: &Caller,
        key: &IdempotencyKey,
        fingerprint: [u8; 32],
        entry: &str,
        start: impl FnOnce() -> Result<Batch, ApiError>,
    ) -> Result<Claim, ApiError> {
        let claim = local.claim(owner, key, fingerprint, start);
        let Ok(claim) = claim else {
            let _: Result<(), _> = self.redis.query(redis::cmd("DEL").arg(entry)).await;
            return claim;
        };
        let batch = claim.batch();
        let named = KeyEntry { fingerprint: hex::encode(fingerprint), id: Some(batch.id.to_string()) };
        let named = serde_json::to_string(&named).map_err(|e| ApiError::internal(e.to_string()))?;
        self.publish(batch, Some((entry.to_owned(), named))).await;
        Ok(claim)
    }

    /// True when image `index` of batch `id` was not billed by any replica yet (it is marked
    /// now). When Redis does not answer, the replica running the batch bills (`owner`), a
    /// replica following it does not: an image is never billed twice.
    pub(super) async fn first_bill(&self, id: &JobId, index: usize, owner: bool) -> bool {
        let mut set = redis::cmd("SET");
        set.arg(billed_key(id, index)).arg(1).arg("NX").arg("PX").arg(self.keep.as_millis() as u64);
        match self.redis.query::<Option<String>>(&set).await {
            Ok(done) => done.is_some(),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, owner, "an image billed only if this replica runs its job (Redis does not answer)");
                owner
            }
        }
    }

    /// Bills image `index` of `batch` (`entry`, BFL's `task_id`) unless a replica already has.
    pub(super) fn record_billing(
        self: Arc<Self>,
        batch: &Batch,
        index: usize,
        entry: Entry,
        task_id: String,
    ) {
        let (id, request_id, megapixels) = (batch.id.clone(), batch.request_id.clone(), batch.megapixels);
        let (owner, accounts, counted) = (!batch.elsewhere, batch.accounts.clone(), batch.counted.clone());
        let tracker = self.tracker.clone();
        tracker.spawn(async move {
            if self.first_bill(&id, index, owner).await {
                self.usage.record(entry, &request_id, Some(&task_id), megapixels);
            }
            super::account(&accounts, &counted, index);
        });
    }
}

/// What an idempotency key names in Redis.
enum Found {
    Nothing,
    /// Another replica took the key and is starting its batch.
    Starting,
    /// The batch to join, followed from its record.
    Batch(Arc<Batch>),
    /// Its batch ended without reaching BFL: the key (whose entry is this) may be used afresh.
    Restart(String),
}

enum Refusal {
    Api(ApiError),
    Redis(RedisError),
}

/// Waits a moment for another replica to start the batch a key names, or 503 once it has taken
/// `STARTING_WAIT`.
async fn still_starting(since: Instant) -> Result<(), ApiError> {
    if since.elapsed() > STARTING_WAIT {
        return Err(starting_too_long());
    }
    sleep(Duration::from_millis(50)).await;
    Ok(())
}

fn starting_too_long() -> ApiError {
    ApiError::Overloaded {
        message: "a request with this Idempotency-Key is still being started; retry shortly".into(),
        param: None,
        retry_after: Duration::from_secs(1),
    }
}

/// A key whose first request may have reached BFL but whose job cannot be followed: refused,
/// never started again.
fn not_started_again(why: &str) -> ApiError {
    ApiError::Unavailable {
        message: format!("this Idempotency-Key {why}; it is not started again, so it cannot be paid twice"),
        retry_after: None,
    }
}

fn unavailable(e: RedisError) -> ApiError {
    ApiError::Overloaded {
        message: format!("the replicas' shared job store does not answer ({e}); retry shortly"),
        param: None,
        retry_after: Duration::from_secs(1),
    }
}
