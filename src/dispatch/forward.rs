//! BFL webhooks across replicas (`[coordination] backend = "redis"`): a webhook that reaches a
//! replica which does not follow its task is published on the Redis channel
//! `fluxgate:bfl-webhooks`; every replica listens, checks it again as if BFL had called it (the
//! webhook secret is the cluster's) and hands it to its own inbox, where the one that follows the
//! task takes it. Readiness waits until this replica has subscribed (or found Redis down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::WebhookInbox;
use crate::bfl::webhook::{SECRET_HEADER, SIGNATURE_HEADER};
use crate::coordination::{REDIS_TIMEOUT, Redis};

const WEBHOOKS: &str = "fluxgate:bfl-webhooks";

pub struct WebhookForwarder {
    redis: Arc<Redis>,
    stop: CancellationToken,
    /// The first subscription to the channel was tried (readiness waits for it).
    tried: AtomicBool,
}

impl WebhookForwarder {
    /// Starts listening for webhooks other replicas pass on (to `inbox`), on a task of its own
    /// that ends with `stop`.
    pub fn start(redis: Arc<Redis>, inbox: Arc<WebhookInbox>) -> Arc<WebhookForwarder> {
        let forwarder = Arc::new(WebhookForwarder {
            redis,
            stop: CancellationToken::new(),
            tried: AtomicBool::new(false),
        });
        let listener = TaskTracker::new();
        listener.spawn(forwarder.clone().listen(inbox));
        listener.close();
        forwarder
    }

    /// True once this replica has tried to subscribe (it has, unless Redis does not answer):
    /// until then it is not ready, so no job of its own can miss a webhook.
    pub fn started(&self) -> bool {
        self.tried.load(Ordering::SeqCst)
    }

    /// Stops listening (at the very end of shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Passes a BFL webhook this replica has no job for to every replica; true when some other
    /// replica listens (this one's own subscription is one of the listeners counted).
    pub async fn forward(&self, token: &str, headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let message = Forwarded {
            token: token.to_owned(),
            secret: header(SECRET_HEADER),
            signature: header(SIGNATURE_HEADER),
            body: STANDARD.encode(body),
        };
        let Ok(message) = serde_json::to_string(&message) else { return false };
        let listeners = self.redis.query::<u64>(redis::cmd("PUBLISH").arg(WEBHOOKS).arg(message)).await;
        listeners.is_ok_and(|n| n > 1)
    }

    async fn listen(self: Arc<Self>, inbox: Arc<WebhookInbox>) {
        loop {
            let subscribed = async {
                let subscribe = async {
                    let mut pubsub = self.redis.client().get_async_pubsub().await?;
                    pubsub.subscribe(WEBHOOKS).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let pubsub = tokio::time::timeout(REDIS_TIMEOUT * 4, subscribe).await;
                self.tried.store(true, Ordering::SeqCst);
                let Ok(pubsub) = pubsub else { return Ok(()) };
                let mut pubsub = pubsub?;
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    let Ok(forwarded) = serde_json::from_str::<Forwarded>(&payload) else { continue };
                    forwarded.deliver(&inbox);
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                ended = subscribed => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "the webhook channel dropped; subscribing again");
                    }
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// A BFL webhook as one replica passes it to the others: what authenticates it, and its body.
#[derive(Serialize, Deserialize)]
struct Forwarded {
    token: String,
    secret: Option<String>,
    signature: Option<String>,
    body: String,
}

impl Forwarded {
    /// Checked again here as if BFL had called this replica (the secret is the cluster's).
    fn deliver(self, inbox: &WebhookInbox) {
        let Ok(body) = STANDARD.decode(&self.body) else { return };
        let mut headers = HeaderMap::new();
        for (name, value) in [(SECRET_HEADER, self.secret), (SIGNATURE_HEADER, self.signature)] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        let outcome = inbox.deliver(&self.token, &headers, &body);
        tracing::debug!(?outcome, "a BFL webhook passed on by another replica");
    }
}
