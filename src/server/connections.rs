//! The accept loop and every connection's watchdog. A client cannot hold a connection (and its
//! file descriptor and buffers) for long without sending a request:
//! - at most `server.max_connections` are open; beyond that new ones wait in the kernel's backlog;
//! - a connection must complete its first request's headers within `server.header_timeout_ms`
//!   of opening, and a later request's headers within that long of its first byte;
//! - a keep-alive connection with no request in progress and nothing sent is closed after
//!   `server.idle_timeout_ms`, and so is one whose response has not moved for that long (a
//!   client that stops reading).
//!
//! While draining, connections with no request in progress are closed at once (a half-sent request
//! included); the others finish their requests and close.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::state::ServerSettings;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// No new connections; idle ones close, the rest finish their requests.
    Draining,
    /// Every connection closes now.
    Closed,
}

/// The accept loop's handle: its phase, and the connections it started.
pub(super) struct Connections {
    phase: watch::Sender<Phase>,
    tracker: TaskTracker,
    open: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    header: Duration,
    idle: Duration,
}

impl Connections {
    pub(super) fn start(listener: TcpListener, app: Router, settings: &ServerSettings) -> Connections {
        let (phase, watching) = watch::channel(Phase::Serving);
        let tracker = TaskTracker::new();
        let open = Arc::new(AtomicUsize::new(0));
        let limits = Limits { header: settings.header_timeout, idle: settings.idle_timeout };
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        let accepting = accept_loop(listener, app, limits, slots, watching, tracker.clone(), open.clone());
        tracker.spawn(accepting);
        Connections { phase, tracker, open }
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Resolves once the accept loop and every connection have ended (after `Draining`).
    pub(super) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    slots: Arc<Semaphore>,
    mut phase: watch::Receiver<Phase>,
    tracker: TaskTracker,
    open: Arc<AtomicUsize>,
) {
    loop {
        // A slot first: at the cap, connections wait in the backlog instead of being accepted.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = stopping(&mut phase) => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping(&mut phase) => return,
        };
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::SeqCst);
        let (app, phase, open) = (app.clone(), phase.clone(), open.clone());
        tracker.spawn(async move {
            serve_connection(stream, app, limits, phase).await;
            open.fetch_sub(1, Ordering::SeqCst);
            drop(slot);
        });
    }
}

/// Resolves once the server stops accepting (or is gone).
async fn stopping(phase: &mut watch::Receiver<Phase>) {
    // Only the event matters; the borrowed value must not be held across an await.
    let _stopped: bool = phase.wait_for(|p| *p != Phase::Serving).await.is_ok();
}

/// What the watchdog knows about one connection.
struct Activity {
    opened: Instant,
    /// Requests in progress: a handler running, or its response body still going out.
    active: usize,
    /// Response bodies going out, and when bytes were last written: a client that stops reading
    /// must not hold the connection forever.
    sending: usize,
    last_write: Instant,
    /// Requests started so far.
    started: u64,
    /// When the connection last became idle (or opened).
    idle_since: Instant,
    /// The first byte read since then, if any: a request's head is arriving.
    first_byte: Option<Instant>,
}

struct Watch {
    activity: Mutex<Activity>,
    changed: Notify,
    /// Set once a byte has been read since the last idle point (checked without the lock).
    reading: AtomicBool,
    /// The connection opened with the HTTP/2 preface. HTTP/2 clients send frames (pings, window
    /// updates) between requests, so bytes read do not start a header timer there.
    h2: AtomicBool,
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, Activity> {
        // Plain counters and instants: a poisoned lock still holds usable values.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bytes_read(&self, first_bytes: &[u8]) {
        if first_bytes.starts_with(b"PRI * HTTP/2.0") {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.h2.load(Ordering::Relaxed) {
            return;
        }
        if !self.reading.swap(true, Ordering::Relaxed) {
            let mut a = self.lock();
            if a.first_byte.is_none() {
                a.first_byte = Some(Instant::now());
            }
            drop(a);
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>, version: hyper::Version) -> RequestGuard {
        // The preface check can miss a preface split over reads; the request's version cannot.
        if version == hyper::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        let mut a = self.lock();
        a.active += 1;
        a.started += 1;
        RequestGuard(self.clone())
    }

    /// True while a handler runs or a response body is going out.
    fn in_progress(&self) -> bool {
        self.lock().active > 0
    }

    fn wrote(&self) {
        let mut a = self.lock();
        if a.sending > 0 {
            a.last_write = Instant::now();
        }
    }

    fn start_sending(&self) {
        let mut a = self.lock();
        if a.sending == 0 {
            a.last_write = Instant::now();
        }
        a.sending += 1;
        drop(a);
        self.changed.notify_one();
    }

    /// When the connection must close unless something happens first; `None` while a handler runs.
    fn deadline(&self, limits: Limits) -> Option<Instant> {
        let a = self.lock();
        if a.sending > 0 {
            return Some(a.last_write + limits.idle);
        }
        if a.active > 0 {
            return None;
        }
        Some(match (a.started, a.first_byte) {
            _ if self.h2.load(Ordering::Relaxed) && a.started > 0 => a.idle_since + limits.idle,
            (0, _) => a.opened + limits.header,
            (_, Some(first)) => first + limits.header,
            (_, None) => a.idle_since + limits.idle,
        })
    }
}

/// One request in progress on a connection; ending it makes the connection idle again.
struct RequestGuard(Arc<Watch>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut a = self.0.lock();
        a.active = a.active.saturating_sub(1);
        if a.active == 0 {
            a.idle_since = Instant::now();
            a.first_byte = None;
            self.0.reading.store(false, Ordering::Relaxed);
        }
        drop(a);
        self.0.changed.notify_one();
    }
}

async fn serve_connection(stream: TcpStream, app: Router, limits: Limits, mut phase: watch::Receiver<Phase>) {
    let now = Instant::now();
    let watch = Arc::new(Watch {
        activity: Mutex::new(Activity {
            opened: now,
            active: 0,
            sending: 0,
            last_write: now,
            started: 0,
            idle_since: now,
            first_byte: None,
        }),
        changed: Notify::new(),
        reading: AtomicBool::new(false),
        h2: AtomicBool::new(false),
    });
    let io = TokioIo::new(Watched { inner: stream, watch: watch.clone(), first_read: true });
    let requests = watch.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = requests.begin(req.version());
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await.unwrap_or_else(|never| match never {});
            // The request stays in progress until its body has gone out (or the body is dropped).
            let response = response.map(|inner| Body::new(Guarded { inner, guard, sending: false }));
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer also runs while a keep-alive connection idles between requests,
    // which would make the idle timeout the header timeout: the watchdog below keeps both.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        // While draining, requests in progress finish and hyper closes the connection after them.
        let deadline = if draining { None } else { watch.deadline(limits) };
        tokio::select! {
            _ = conn.as_mut() => return,
            () = watch.changed.notified() => {}
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                // Re-read: a request may have begun since the deadline was computed.
                if watch.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
            changed = phase.changed() => match (changed, *phase.borrow()) {
                (Ok(()), Phase::Serving) => {}
                (Ok(()), Phase::Draining) if !draining => {
                    if !watch.in_progress() {
                        // Idle, or a request only half-sent: nothing to finish.
                        return;
                    }
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                (Ok(()), Phase::Draining) => {}
                (Ok(()), Phase::Closed) | (Err(_), _) => return,
            },
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// A response body that keeps its request in progress until it is over, and tells the watchdog
/// when it starts going out.
struct Guarded {
    inner: Body,
    guard: RequestGuard,
    sending: bool,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.sending {
            let mut a = self.guard.0.lock();
            a.sending = a.sending.saturating_sub(1);
        }
    }
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if !self.sending {
            self.sending = true;
            self.guard.0.start_sending();
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting reads for the watchdog.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
    /// The next read is the connection's first (it tells HTTP/2's preface apart).
    first_read: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let first = if self.first_read {
                self.first_read = false;
                &buf.filled()[before..]
            } else {
                &[]
            };
            self.watch.bytes_read(first);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.wrote();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
