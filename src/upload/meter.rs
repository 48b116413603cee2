//! The request body as multer sees it: at most one piece of at most 64 KiB per poll, and a
//! budget for bytes multer holds that never reach us as part data (headers, preamble).
//!
//! multer pulls from its stream until it is not ready and buffers everything it pulled, and it
//! looks for the end of part headers without a limit. Metering keeps its buffer to a few pieces
//! however fast the client sends and however long a header runs, and stops the body at the
//! per-request total.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::BodyDataStream;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

const PIECE: usize = 64 * 1024;
/// Bytes pulled but not (yet) delivered as part data. Part headers and boundaries of a well-formed
/// body come to a few KiB; the rest is the piece or two multer holds while looking for a boundary.
pub(super) const OVERHEAD_BUDGET: u64 = 1024 * 1024;

/// Why the metered stream failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum MeterError {
    #[error("the request body could not be read: {0}")]
    Body(#[source] axum::Error),
    #[error("multipart part headers or preamble too long")]
    Overrun,
    #[error("the request body is larger than {0} bytes")]
    TooLong(u64),
}

/// Counts the part bytes the reader has received; shared with the `Metered` stream.
#[derive(Clone, Debug, Default)]
pub(super) struct Delivered(Arc<AtomicU64>);

impl Delivered {
    pub(super) fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The request body, shared between multer's stream and whoever drains what multer left unread.
#[derive(Clone)]
pub(super) struct Source(Arc<Mutex<BodyDataStream>>);

impl Source {
    pub(super) fn new(body: BodyDataStream) -> Source {
        Source(Arc::new(Mutex::new(body)))
    }

    fn lock(&self) -> MutexGuard<'_, BodyDataStream> {
        // A stream is only ever polled under this lock; poisoning leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and discards what is left of the body, at most `max` bytes and for at most
    /// `within`. A request refused early still has its client sending: reading the rest lets the
    /// client finish and read the answer, instead of meeting a reset mid-upload.
    pub(super) async fn drain(&self, max: u64, within: Duration) {
        let mut seen = 0u64;
        let draining = async {
            while let Some(Ok(frame)) = std::future::poll_fn(|cx| self.lock().poll_next_unpin(cx)).await {
                seen += frame.len() as u64;
                if seen > max {
                    break;
                }
            }
        };
        let _in_time = tokio::time::timeout(within, draining).await.is_ok();
    }
}

pub(super) struct Metered {
    inner: Source,
    /// The rest of a frame larger than `PIECE`, handed out over the next polls.
    rest: Bytes,
    pulled: u64,
    /// Bytes the body may bring in all.
    max_total: u64,
    delivered: Delivered,
    /// A piece went out on the last poll; this one says "not ready" so multer works on it first.
    paused: bool,
    done: bool,
}

impl Metered {
    pub(super) fn new(inner: Source, delivered: Delivered, max_total: u64) -> Metered {
        Metered { inner, rest: Bytes::new(), pulled: 0, max_total, delivered, paused: false, done: false }
    }

    fn hand_out(&mut self) -> Poll<Option<Result<Bytes, MeterError>>> {
        let piece = self.rest.split_to(self.rest.len().min(PIECE));
        self.pulled += piece.len() as u64;
        self.paused = true;
        Poll::Ready(Some(Ok(piece)))
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, MeterError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.paused {
            this.paused = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let delivered = this.delivered.0.load(Ordering::Relaxed);
        if this.pulled.saturating_sub(delivered) > OVERHEAD_BUDGET {
            this.done = true;
            return Poll::Ready(Some(Err(MeterError::Overrun)));
        }
        if !this.rest.is_empty() {
            return this.hand_out();
        }
        loop {
            let polled = this.inner.lock().poll_next_unpin(cx);
            match polled {
                Poll::Ready(Some(Ok(frame))) if frame.is_empty() => continue,
                Poll::Ready(Some(Ok(frame))) => {
                    // Every byte pulled so far plus this frame: over the total, nothing of it is used.
                    if this.pulled + frame.len() as u64 > this.max_total {
                        this.done = true;
                        return Poll::Ready(Some(Err(MeterError::TooLong(this.max_total))));
                    }
                    this.rest = frame;
                    return this.hand_out();
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(MeterError::Body(e))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
