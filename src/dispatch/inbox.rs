//! BFL webhooks in: each job that goes out with webhooks on gets an unguessable token, and BFL's
//! call to `{webhook_base_url}/v1/bfl/webhooks/{token}` wakes that job's follow loop at once with
//! the document BFL sent (classified exactly as a poll's answer, by the follow loop).
//!
//! Bounded: a token lives while its job follows its task, then is remembered as ended for
//! `ENDED_TTL` (at most `MAX_ENDED` of them), so a replayed webhook is a 200 no-op rather than a
//! 404 that BFL might retry. An unknown or long-ended token is a 404.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bfl::{PollReply, webhook};

/// With `upstream.webhook_base_url` set: where BFL calls back, with which secret, and how often
/// the task is still polled in case a webhook is lost.
#[derive(Debug, Clone)]
pub struct BflWebhookSettings {
    /// The gateway's public URL (no trailing slash).
    pub base_url: Url,
    /// Sent with every job; BFL sends it back (`upstream.webhook_secret`, else random per process).
    pub secret: SecretString,
    /// Poll interval of the fallback polling (after a first poll at twice the expected time).
    pub poll_interval: Duration,
}

/// Ended tokens remembered for replays: as long as BFL's result URLs live.
const ENDED_TTL: Duration = Duration::from_secs(600);
/// Most ended tokens remembered (the oldest are forgotten first).
const MAX_ENDED: usize = 10_000;
/// Webhook documents queued for one job before its follow loop reads them (more are dropped:
/// the loop needs only one terminal document).
const QUEUE: usize = 4;

/// How a webhook call was taken.
#[derive(Debug, PartialEq)]
pub enum Delivered {
    /// Handed to the job following the task.
    Accepted,
    /// The job already ended (or its queue is full): nothing to do, and nothing wrong.
    Replayed,
    /// An authentic call naming no job of this replica (never had, or ended too long ago).
    Unknown,
    /// BFL webhooks are off here: nothing can be checked.
    Off,
    /// Neither `X-Webhook-Secret` nor `X-BFL-Signature` proves the sender knows the secret.
    Unauthorized,
    /// Authentic but not a `ResultResponse` document.
    Unreadable,
}

#[derive(Debug)]
pub struct WebhookInbox {
    settings: Option<BflWebhookSettings>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    live: HashMap<String, mpsc::Sender<PollReply>>,
    ended: HashSet<String>,
    ended_order: VecDeque<(Instant, String)>,
}

/// One job's webhook: the URL and secret for its submit, and where BFL's documents arrive. The
/// token is retired when this is dropped (the job stopped following its task).
pub(super) struct Registration {
    pub url: String,
    pub rx: mpsc::Receiver<PollReply>,
    token: String,
    inbox: Arc<WebhookInbox>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inbox.retire(&self.token);
    }
}

impl WebhookInbox {
    pub(super) fn new(settings: Option<BflWebhookSettings>) -> WebhookInbox {
        WebhookInbox { settings, state: Mutex::new(State::default()) }
    }

    /// The secret every submit carries (`None` with webhooks off).
    pub(super) fn secret(&self) -> Option<&str> {
        self.settings.as_ref().map(|s| s.secret.expose_secret())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh token for one job, or `None` with webhooks off.
    pub(super) fn register(self: &Arc<Self>) -> Option<Registration> {
        let settings = self.settings.as_ref()?;
        // Two random v4 UUIDs: 244 random bits from the OS generator, not derived from the job id.
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let url = format!("{}/v1/bfl/webhooks/{token}", settings.base_url.as_str().trim_end_matches('/'));
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().live.insert(token.clone(), tx);
        Some(Registration { url, rx, token, inbox: self.clone() })
    }

    fn retire(&self, token: &str) {
        let now = Instant::now();
        let mut state = self.lock();
        state.live.remove(token);
        forget_ended(&mut state, now);
        if state.ended.len() >= MAX_ENDED
            && let Some((_, oldest)) = state.ended_order.pop_front()
        {
            state.ended.remove(&oldest);
        }
        state.ended.insert(token.to_owned());
        state.ended_order.push_back((now, token.to_owned()));
    }

    /// Takes one call from BFL: the secret first (so nothing about tokens leaks without it), then
    /// the token, then the document.
    pub fn deliver(&self, token: &str, headers: &HeaderMap, body: &[u8]) -> Delivered {
        let Some(settings) = &self.settings else { return Delivered::Off };
        if !webhook::authentic(&settings.secret, headers, body) {
            return Delivered::Unauthorized;
        }
        let mut state = self.lock();
        forget_ended(&mut state, Instant::now());
        let Some(tx) = state.live.get(token) else {
            return if state.ended.contains(token) { Delivered::Replayed } else { Delivered::Unknown };
        };
        let Some(document) = webhook::parse(body) else { return Delivered::Unreadable };
        match tx.try_send(document) {
            Ok(()) => Delivered::Accepted,
            Err(_) => Delivered::Replayed,
        }
    }

    /// Tokens of jobs following their task right now.
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }
}

fn forget_ended(state: &mut State, now: Instant) {
    while let Some((at, _)) = state.ended_order.front() {
        if now.saturating_duration_since(*at) < ENDED_TTL {
            break;
        }
        if let Some((_, token)) = state.ended_order.pop_front() {
            state.ended.remove(&token);
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn inbox() -> Arc<WebhookInbox> {
        Arc::new(WebhookInbox::new(Some(BflWebhookSettings {
            base_url: Url::parse("https://gw.example.com/").expect("url"),
            secret: SecretString::from("s3cret"),
            poll_interval: Duration::from_secs(5),
        })))
    }

    fn with_secret(secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(webhook::SECRET_HEADER, HeaderValue::from_str(secret).expect("ascii"));
        h
    }

    const READY: &[u8] = br#"{"id":"t","status":"Ready","result":{"sample":"https://x.bfl.ai/a.jpg"}}"#;

    #[tokio::test]
    async fn a_webhook_reaches_its_job_once_and_a_replay_or_unknown_token_does_nothing() {
        let inbox = inbox();
        let mut reg = inbox.register().expect("webhooks on");
        assert!(reg.url.starts_with("https://gw.example.com/v1/bfl/webhooks/"), "{}", reg.url);
        let token = reg.url.rsplit('/').next().expect("token").to_owned();
        assert!(token.len() >= 32);
        assert_eq!(inbox.deliver(&token, &with_secret("wrong"), READY), Delivered::Unauthorized);
        assert_eq!(inbox.deliver(&token, &HeaderMap::new(), READY), Delivered::Unauthorized);
        assert_eq!(inbox.deliver(&token, &with_secret("s3cret"), b"not json"), Delivered::Unreadable);
        assert_eq!(inbox.deliver(&token, &with_secret("s3cret"), READY), Delivered::Accepted);
        assert_eq!(reg.rx.recv().await.expect("a document").status, "Ready");
        assert_eq!(inbox.deliver("nope", &with_secret("s3cret"), READY), Delivered::Unknown);
        drop(reg);
        assert_eq!(inbox.live(), 0, "the token is retired with its job");
        assert_eq!(inbox.deliver(&token, &with_secret("s3cret"), READY), Delivered::Replayed);
    }

    #[tokio::test(start_paused = true)]
    async fn ended_tokens_are_forgotten_after_their_ttl() {
        let inbox = inbox();
        let reg = inbox.register().expect("webhooks on");
        let token = reg.url.rsplit('/').next().expect("token").to_owned();
        drop(reg);
        tokio::time::advance(ENDED_TTL + Duration::from_secs(1)).await;
        assert_eq!(inbox.deliver(&token, &with_secret("s3cret"), READY), Delivered::Unknown);
        assert!(inbox.lock().ended.is_empty());
    }

    #[test]
    fn with_webhooks_off_nothing_registers_and_every_call_is_refused() {
        let inbox = Arc::new(WebhookInbox::new(None));
        assert!(inbox.register().is_none());
        assert_eq!(inbox.deliver("t", &with_secret("s3cret"), READY), Delivered::Off);
    }
}
