//! `Batch`: the jobs of one request (one per image asked for), started together and watched
//! together. A synchronous reply, an event stream, an async job and an idempotency key all refer
//! to a batch; `Batches` (`registry`) finds one again by async id or by idempotency key.

mod idempotency;
mod registry;
mod shared;
pub mod stream;

pub use idempotency::{IdempotencyKey, fingerprint};
pub use registry::{BatchSettings, Batches, Claim};
pub use shared::SharedBatches;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::Instrument;

use crate::clients::{Caller, JobsHold};
use crate::delivery::{Delivered, Delivery, LinkOrigin, Wanted};
use crate::dispatch::{Dispatcher, JobHandle};
use crate::error::ApiError;
use crate::job::{ImageJob, OutputSize};
use crate::openai::ImageDatum;
use crate::records::{Finished, JobId, JobStatus};
use crate::usage::{Entry, Reservation, Usage, timestamp};

/// Which endpoint a batch came through: it names the stream's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Generation,
    Edit,
}

/// Where a batch stands, as an async job reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Every job still waits for a slot.
    Queued,
    /// Some job has gone to BFL; `progress` (0–1) is the mean of what BFL reported.
    Running { progress: Option<f64> },
    /// Every job has ended.
    Settled,
}

/// Where a batch comes from.
pub struct Origin {
    pub owner: Caller,
    /// The `x-request-id` of the request that started it, for usage events.
    pub request_id: Arc<str>,
    pub kind: Kind,
    /// The scheme and host it came in on: links to re-hosted images are built on it.
    pub link_base: Option<String>,
    /// Through an async endpoint: an async job.
    pub asynchronous: bool,
}

/// What a batch holds of its client's limits: room among its concurrent jobs until they end, and
/// a share of its budget until each image is billed (or counted as not delivered), at most
/// `BILLING_GRACE` past the jobs' end (a client that left before its delivery).
pub struct Holds {
    pub jobs: Option<JobsHold>,
    pub budget: Option<Reservation>,
}

/// How long past its jobs' end a batch's budget share waits for their images to be accounted.
const BILLING_GRACE: Duration = Duration::from_secs(30);

pub struct Batch {
    /// The async job's id (`job_…`); also the id of the first image's job record.
    pub id: JobId,
    pub owner: Caller,
    request_id: Arc<str>,
    link_base: Option<String>,
    /// Unix seconds; the `created` of every reply made from this batch, so replays are identical.
    pub created_at: u64,
    pub model: &'static str,
    pub kind: Kind,
    pub wanted: Wanted,
    /// The client asked for an event stream.
    pub stream: bool,
    /// An async job (as opposed to a synchronous request).
    asynchronous: bool,
    handles: Vec<JobHandle>,
    usage: Usage,
    /// Each image's price, and its size in megapixels when the request named one.
    price_usd: f64,
    megapixels: Option<f64>,
    /// Per image: billed, or counted as failed, already (each is accounted once, however many
    /// replies are made from the batch).
    accounted: Vec<AtomicBool>,
    /// Per image: a delivery that failed (or timed out) without ending it was counted.
    missed: Vec<AtomicBool>,
    /// Images accounted so far (billed, or counted as failed or not delivered; each once, by
    /// `counted`): the budget share waits for all of them.
    accounts: Arc<watch::Sender<usize>>,
    counted: Arc<[AtomicBool]>,
    /// Another replica runs the batch (its statuses come from the shared record): its failures
    /// are counted there.
    elsewhere: bool,
    /// Set once the batch is shared through Redis: its images are billed once across replicas.
    shared: OnceLock<Arc<SharedBatches>>,
}

/// What a batch is made of, whether it runs here or on another replica.
struct Assembly {
    id: JobId,
    owner: Caller,
    request_id: Arc<str>,
    link_base: Option<String>,
    created_at: u64,
    model: &'static str,
    kind: Kind,
    wanted: Wanted,
    stream: bool,
    asynchronous: bool,
    handles: Vec<JobHandle>,
    usage: Usage,
    price_usd: f64,
    megapixels: Option<f64>,
    elsewhere: bool,
    accounts: Arc<watch::Sender<usize>>,
}

/// The images of a batch ready to send, with their share of the b64 budget (kept until the reply
/// is serialised), and how many of the images asked for failed.
pub struct Images {
    pub data: Vec<ImageDatum>,
    pub failed: usize,
    pub budget: Vec<OwnedSemaphorePermit>,
}

impl Batch {
    /// Starts one job per image `job` asks for (all or none). `holds` are given back when every
    /// job has ended (the budget share once their images are accounted, see `Holds`).
    pub fn start(
        dispatcher: &Dispatcher,
        usage: &Usage,
        job: ImageJob,
        origin: Origin,
        holds: Holds,
    ) -> Result<Batch, ApiError> {
        let Origin { owner, request_id, kind, link_base, asynchronous } = origin;
        let (model, limit, price_usd) = (job.model.id, job.model.deadline, job.model.price_usd);
        let (response_format, output_format, stream) = (job.response_format, job.output_format, job.stream);
        let megapixels = match job.size {
            OutputSize::Dimensions { width, height } => Some(f64::from(width) * f64::from(height) / 1e6),
            OutputSize::Default | OutputSize::AspectRatio { .. } => None,
        };
        let handles = dispatcher.start_all(job.fan_out())?;
        let ends: Vec<_> = handles.iter().map(JobHandle::settled).collect();
        let (accounts, mut accounted) = watch::channel(0usize);
        let images = handles.len();
        dispatcher.tracker().spawn(async move {
            futures_util::future::join_all(ends).await;
            let Holds { jobs, budget } = holds;
            drop(jobs);
            if budget.is_some() {
                let _ = tokio::time::timeout(BILLING_GRACE, accounted.wait_for(|done| *done >= images)).await;
            }
            drop(budget);
        });
        let first = handles.first().ok_or_else(|| ApiError::internal("a request with no images"))?;
        let id = first.id().clone();
        let deadline =
            handles.iter().map(JobHandle::deadline).min().unwrap_or_else(tokio::time::Instant::now);
        let wanted = Wanted { response_format, output_format, deadline, limit };
        let created_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Batch::assemble(Assembly {
            id,
            owner,
            request_id,
            link_base,
            created_at,
            model,
            kind,
            wanted,
            stream,
            asynchronous,
            handles,
            usage: usage.clone(),
            price_usd,
            megapixels,
            elsewhere: false,
            accounts: Arc::new(accounts),
        }))
    }

    fn assemble(parts: Assembly) -> Batch {
        let Assembly {
            id,
            owner,
            request_id,
            link_base,
            created_at,
            model,
            kind,
            wanted,
            stream,
            asynchronous,
            handles,
            usage,
            price_usd,
            megapixels,
            elsewhere,
            accounts,
        } = parts;
        let accounted = handles.iter().map(|_| AtomicBool::new(false)).collect();
        let missed = handles.iter().map(|_| AtomicBool::new(false)).collect();
        let counted = handles.iter().map(|_| AtomicBool::new(false)).collect();
        Batch {
            id,
            owner,
            request_id,
            link_base,
            created_at,
            model,
            kind,
            wanted,
            stream,
            asynchronous,
            handles,
            usage,
            price_usd,
            megapixels,
            accounted,
            missed,
            accounts,
            counted,
            elsewhere,
            shared: OnceLock::new(),
        }
    }

    /// True when another replica runs the batch and this one follows its shared record.
    pub fn is_elsewhere(&self) -> bool {
        self.elsewhere
    }

    /// Images asked for.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    pub fn phase(&self) -> Phase {
        let statuses: Vec<JobStatus> = self.handles.iter().map(JobHandle::status).collect();
        if statuses.iter().all(JobStatus::is_terminal) {
            return Phase::Settled;
        }
        if statuses.iter().all(|s| matches!(s, JobStatus::Queued)) {
            return Phase::Queued;
        }
        let reported: Vec<f64> = statuses
            .iter()
            .filter_map(|s| match s {
                JobStatus::Running { progress } => *progress,
                JobStatus::Succeeded(_) | JobStatus::Failed(_) => Some(1.0),
                JobStatus::Queued | JobStatus::Submitted => None,
            })
            .collect();
        let progress = (reported.len() == statuses.len() && !reported.is_empty())
            .then(|| reported.iter().sum::<f64>() / reported.len() as f64);
        Phase::Running { progress }
    }

    /// True once some job of the batch may have reached BFL: a retry of this request must join it
    /// rather than start again (it could pay twice).
    pub fn reached_upstream(&self) -> bool {
        self.handles.iter().any(|h| h.status().reached_upstream())
    }

    /// True when some image of the batch was made.
    pub fn succeeded(&self) -> bool {
        self.handles.iter().any(|h| matches!(h.status(), JobStatus::Succeeded(_)))
    }

    /// Waits for every job to end, however long BFL takes (each job's life is bounded).
    pub async fn settled(&self) -> Vec<JobStatus> {
        futures_util::future::join_all(self.handles.iter().map(JobHandle::settled)).await
    }

    /// Each image's outcome, waiting until the batch's deadline (504 for the ones not done).
    pub async fn outcomes(&self) -> Vec<Result<Arc<Finished>, ApiError>> {
        futures_util::future::join_all(self.handles.iter().map(JobHandle::outcome)).await
    }

    /// Each image as the reply's `data` entry, in order, delivered as the client asked. When some
    /// fail the others are still delivered; when all fail, the first error is the answer.
    pub async fn images(&self, delivery: &Delivery) -> Result<Images, ApiError> {
        let images = (0..self.len()).map(|index| self.deliver(index, delivery, self.wanted));
        let (mut data, mut budget, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for image in futures_util::future::join_all(images).await {
            match image.map(Delivered::into_parts) {
                Ok((datum, held)) => {
                    data.push(datum);
                    budget.extend(held);
                }
                Err(e) => failures.push(e),
            }
        }
        let failed = failures.len();
        let Some(first) = failures.into_iter().next() else { return Ok(Images { data, failed, budget }) };
        if data.is_empty() {
            return Err(first);
        }
        tracing::warn!(job = %self.id, asked = self.len(), failed, first = %first, "some images of the request failed; replying with the rest");
        Ok(Images { data, failed, budget })
    }

    /// Image `index` as `wanted`, once it is ready (or its failure), accounted for usage.
    pub async fn deliver(
        &self,
        index: usize,
        delivery: &Delivery,
        wanted: Wanted,
    ) -> Result<Delivered, ApiError> {
        let handle =
            self.handles.get(index).ok_or_else(|| ApiError::internal("no such image in the batch"))?;
        let outcome = handle.outcome().await;
        let delivered = match &outcome {
            // Boxed: the delivery's state (a download, base64) exists only once the image is
            // ready, not for the whole wait of every request in flight.
            Ok(finished) => {
                Box::pin(
                    delivery
                        .datum(finished, wanted, &self.link_origin())
                        .instrument(tracing::info_span!("delivery", image = index)),
                )
                .await
            }
            Err(e) => Err(e.clone()),
        };
        match (&outcome, &delivered) {
            (Ok(finished), Ok(_)) => {
                let span = tracing::Span::current();
                span.record("task", finished.task_id.as_str());
                span.record("upstream_ms", finished.upstream.as_millis() as u64);
                self.bill(index, finished);
            }
            // Not delivered now, but the image exists: a retry with the key may still get it (and
            // is billed then). Counted as a failure once, and never for an image billed.
            (Ok(_), Err(e)) | (Err(e @ ApiError::DeadlineExceeded { .. }), _) => {
                if !self.accounted.get(index).is_some_and(|a| a.load(Ordering::SeqCst))
                    && self.missed.get(index).is_some_and(|m| !m.swap(true, Ordering::SeqCst))
                {
                    self.count_failure(e);
                    self.accounted_one(index);
                }
            }
            (Err(e), _) => {
                if self.first_accounting(index) {
                    self.count_failure(e);
                    self.accounted_one(index);
                }
            }
        }
        delivered
    }

    /// An async job has ended: its images are the client's (billed), its failures counted.
    pub fn account_settled(&self) {
        for (index, handle) in self.handles.iter().enumerate() {
            match handle.status() {
                JobStatus::Succeeded(finished) => self.bill(index, &finished),
                JobStatus::Failed(failure) => {
                    if self.first_accounting(index) {
                        self.count_failure(&ApiError::from(failure));
                        self.accounted_one(index);
                    }
                }
                JobStatus::Queued | JobStatus::Submitted | JobStatus::Running { .. } => {}
            }
        }
    }

    /// Where and when the batch's request came in, for links to its re-hosted images.
    fn link_origin(&self) -> LinkOrigin<'_> {
        LinkOrigin { base: self.link_base.as_deref(), anchor: self.created_at }
    }

    /// Image `index` is accounted for (the first time only): the budget share may go once all are.
    fn accounted_one(&self, index: usize) {
        account(&self.accounts, &self.counted, index);
    }

    fn first_accounting(&self, index: usize) -> bool {
        self.accounted.get(index).is_some_and(|done| !done.swap(true, Ordering::SeqCst))
    }

    fn bill(&self, index: usize, finished: &Finished) {
        if !self.first_accounting(index) {
            return;
        }
        let entry = Entry::Billed {
            at: timestamp(),
            client: self.owner.id().to_owned(),
            model: self.model.to_owned(),
            price_usd: self.price_usd,
            // BFL's credits are cents.
            upstream_cost_usd: finished.cost.map(|credits| credits / 100.0),
        };
        match self.shared.get() {
            Some(shared) => shared.clone().record_billing(self, index, entry, finished.task_id.clone()),
            None => {
                self.usage.record(entry, &self.request_id, Some(&finished.task_id), self.megapixels);
                self.accounted_one(index);
            }
        }
    }

    fn count_failure(&self, error: &ApiError) {
        if self.elsewhere {
            return;
        }
        let entry = Entry::Failed {
            at: timestamp(),
            client: self.owner.id().to_owned(),
            model: self.model.to_owned(),
            kind: error.code().unwrap_or("internal_error").to_owned(),
        };
        self.usage.record(entry, &self.request_id, None, None);
    }
}

/// Counts image `index` as accounted in `accounts`, once whatever happens to it later (an image
/// first missed, then billed through a retry, is one image).
fn account(accounts: &watch::Sender<usize>, counted: &[AtomicBool], index: usize) {
    if counted.get(index).is_some_and(|c| !c.swap(true, Ordering::SeqCst)) {
        accounts.send_modify(|done| *done += 1);
    }
}
