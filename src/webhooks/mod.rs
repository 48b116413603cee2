//! Outgoing webhooks: one signed POST per event to a URL a client gave, retried with backoff.
//! Signing follows the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>`), so a receiver verifies with any Standard
//! Webhooks library and the secret `jobs.webhook_secret`.
//!
//! Targets are checked when a request names them (`check_target`) and again at every connection
//! (the resolver refuses names that resolve to private addresses); no redirect is followed.
//! Every resource has a bound: `max_pending` deliveries at once (more are dropped with a
//! warning), `attempt_timeout` per attempt, `max_attempts` attempts. On shutdown
//! (`stop_retrying`) an attempt in flight finishes, but no delivery waits for another retry.

mod resolve;
mod sign;
mod target;

pub use sign::WebhookSecret;
pub use target::{MAX_URL_LEN, check_target};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::{Url, redirect};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::retry::backoff;

use resolve::GuardedResolver;

/// How outgoing webhooks are signed, where they may go and how hard delivery is tried.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `jobs.webhook_secret`; without it no `webhook_url` is accepted.
    pub secret: Option<WebhookSecret>,
    /// Hosts (lowercase names or IP literals, any port) that may be reached even when private,
    /// and over http.
    pub allowed_hosts: Vec<String>,
    /// First retry delay; doubles each attempt (with jitter).
    pub retry_base: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Deliveries pending at once (sending or waiting to retry); more are dropped.
    pub max_pending: usize,
    /// Timeout of one attempt, connecting included.
    pub attempt_timeout: Duration,
}

impl WebhookSettings {
    /// True when `host` (as `target::host_text` spells it) is in `allowed_hosts`.
    fn allows_host(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|h| h == host)
    }

    #[cfg(test)]
    fn for_tests(allowed: &[&str]) -> WebhookSettings {
        WebhookSettings {
            secret: WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok(),
            allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect(),
            retry_base: Duration::from_millis(10),
            max_attempts: 3,
            max_pending: 10,
            attempt_timeout: Duration::from_secs(1),
        }
    }
}

/// Sends webhooks in the background, on the tracker it was given (so shutdown waits for them).
#[derive(Clone, Debug)]
pub struct WebhookSender {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    settings: WebhookSettings,
    tracker: TaskTracker,
    pending: Arc<Semaphore>,
    stop: CancellationToken,
}

impl WebhookSender {
    pub fn new(settings: WebhookSettings, tracker: TaskTracker) -> Result<WebhookSender, reqwest::Error> {
        let resolver = GuardedResolver { allowed_hosts: settings.allowed_hosts.clone().into() };
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .redirect(redirect::Policy::none())
            .timeout(settings.attempt_timeout)
            .connect_timeout(settings.attempt_timeout)
            .pool_max_idle_per_host(4)
            .user_agent(concat!("fluxgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let pending = Arc::new(Semaphore::new(settings.max_pending));
        let stop = CancellationToken::new();
        Ok(WebhookSender { inner: Arc::new(Inner { client, settings, tracker, pending, stop }) })
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.inner.settings
    }

    /// Starts delivering `body` to `url` (a URL `check_target` accepted) as event `event_id` (the
    /// `webhook-id`, the same on every attempt: receivers deduplicate on it). Returns false, with
    /// a warning logged, when it cannot: no secret configured, shutdown begun, or `max_pending`
    /// deliveries already pending.
    pub fn send(&self, event_id: String, url: Url, body: serde_json::Value) -> bool {
        let inner = &self.inner;
        let host = url.host_str().unwrap_or("?").to_owned();
        let Some(secret) = inner.settings.secret.clone() else {
            tracing::warn!(%host, event = %event_id, "webhook not sent: jobs.webhook_secret is not set");
            return false;
        };
        if inner.stop.is_cancelled() {
            tracing::warn!(%host, event = %event_id, "webhook not sent: shutting down");
            return false;
        }
        let Ok(permit) = inner.pending.clone().try_acquire_owned() else {
            tracing::warn!(%host, event = %event_id, max_pending = inner.settings.max_pending, "webhook dropped: too many deliveries pending");
            return false;
        };
        let body = Bytes::from(body.to_string());
        let delivery = Delivery { inner: inner.clone(), secret, event_id, url, host, body, _permit: permit };
        inner.tracker.spawn(delivery.run());
        true
    }

    /// Shutdown: attempts in flight finish, no delivery waits for another retry, no new one starts.
    pub fn stop_retrying(&self) {
        self.inner.stop.cancel();
    }

    /// Deliveries pending right now (sending, or waiting to retry).
    pub fn pending(&self) -> usize {
        self.inner.settings.max_pending - self.inner.pending.available_permits()
    }
}

/// One event on its way to one URL.
struct Delivery {
    inner: Arc<Inner>,
    secret: WebhookSecret,
    event_id: String,
    url: Url,
    /// For logs: the URL's path and query may carry the receiver's own tokens.
    host: String,
    body: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl Delivery {
    async fn run(self) {
        let settings = &self.inner.settings;
        let (host, event) = (&self.host, &self.event_id);
        if let Some(reason) = target::refusal(&self.url, settings) {
            tracing::warn!(%host, %event, reason, "webhook not sent: the URL is not allowed");
            return;
        }
        for attempt in 1..=settings.max_attempts {
            if attempt > 1 {
                let pause = backoff(settings.retry_base, attempt - 2, None);
                tokio::select! {
                    biased;
                    () = self.inner.stop.cancelled() => {
                        tracing::warn!(%host, %event, attempt, "webhook abandoned: shutting down before its retry");
                        return;
                    }
                    () = tokio::time::sleep(pause) => {}
                }
            }
            match self.attempt().await {
                Ok(status) if status.is_success() => {
                    tracing::info!(%host, %event, attempt, status = status.as_u16(), "webhook delivered");
                    return;
                }
                Ok(status) => {
                    tracing::warn!(%host, %event, attempt, status = status.as_u16(), "webhook attempt refused")
                }
                Err(e) => tracing::warn!(%host, %event, attempt, error = %e, "webhook attempt failed"),
            }
        }
        tracing::error!(%host, %event, attempts = settings.max_attempts, "webhook given up after its last attempt");
    }

    /// One signed POST; a fresh timestamp and signature each time, as the specification asks.
    async fn attempt(&self) -> Result<reqwest::StatusCode, String> {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let signature = self.secret.sign(&self.event_id, timestamp, &self.body);
        let response = self
            .inner
            .client
            .post(self.url.clone())
            .header("webhook-id", &self.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone())
            .send()
            .await
            // The error's text would name the URL, whose path may carry the receiver's token.
            .map_err(|e| error_chain(&e.without_url()))?;
        Ok(response.status())
    }
}

/// An error with its causes (a refused address says why only in its source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
