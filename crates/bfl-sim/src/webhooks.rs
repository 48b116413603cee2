//! BFL's webhooks: once a task that was submitted with a `webhook_url` turns terminal, its
//! `ResultResponse` is POSTed there, with `X-Webhook-Secret` and an `X-BFL-Signature` HMAC when a
//! `webhook_secret` was given. One attempt each, bounded in time and in number at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::time::{Instant, sleep_until};

use super::replies;
use super::state::Simulator;
use super::tasks::Phase;

/// Where and how one task's webhook goes.
#[derive(Debug)]
pub(super) struct Webhook {
    pub task_id: String,
    pub url: String,
    pub secret: Option<String>,
    /// When to send: the task's ready time plus the delay.
    pub at: Instant,
}

impl Webhook {
    /// The webhook a submit body asks for, if any (`webhook_url` passed the schema as a string).
    pub(super) fn requested(
        body: &Value,
        task_id: &str,
        ready_at: Option<Instant>,
        delay: Duration,
    ) -> Option<Webhook> {
        let url = body.get("webhook_url").and_then(Value::as_str).filter(|u| !u.is_empty())?;
        let secret = body.get("webhook_secret").and_then(Value::as_str).filter(|s| !s.is_empty());
        // A task that never ends never calls back.
        let at = ready_at?.checked_add(delay)?;
        Some(Webhook {
            task_id: task_id.to_owned(),
            url: url.to_owned(),
            secret: secret.map(str::to_owned),
            at,
        })
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `X-BFL-Signature` value.
pub(super) fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Simulator {
    /// Schedules a task's webhook, unless dropped (a drop trigger or rate, or too many at once).
    pub(super) fn schedule_webhook(self: &Arc<Self>, webhook: Webhook, dropped: bool) {
        let permit = match self.webhook_slots.clone().try_acquire_owned() {
            Ok(permit) if !dropped => permit,
            Ok(_) | Err(_) => {
                self.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let sim = Arc::clone(self);
        self.webhook_tasks.spawn(async move {
            let _permit = permit;
            sleep_until(webhook.at).await;
            sim.send_webhook(webhook).await;
        });
    }

    async fn send_webhook(&self, webhook: Webhook) {
        let Some(body) = self.terminal_document(&webhook.task_id) else {
            self.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let body = body.to_string().into_bytes();
        let mut request = self
            .webhook_client
            .post(&webhook.url)
            .timeout(self.cfg.webhook_timeout)
            .header("content-type", "application/json");
        if let Some(secret) = &webhook.secret {
            request = request
                .header("X-Webhook-Secret", secret)
                .header("X-BFL-Signature", signature(secret, &body));
        }
        match request.body(body).send().await {
            Ok(r) if r.status().is_success() => self.webhooks_sent.fetch_add(1, Ordering::Relaxed),
            Ok(_) | Err(_) => self.webhooks_failed.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// The `ResultResponse` of a task that has turned terminal (any key), as a poll would see it.
    fn terminal_document(&self, id: &str) -> Option<Value> {
        let now = Instant::now();
        let mut st = self.lock();
        let task = st.table.get(id, now)?;
        if task.phase(now) != Phase::Done {
            return None;
        }
        let (result, details) = self.outcome(id, task);
        Some(replies::result_document(id, &task.status, result, Value::Null, details))
    }

    /// Webhooks answered with a 2xx.
    pub fn webhooks_sent(&self) -> usize {
        self.webhooks_sent.load(Ordering::Relaxed)
    }

    /// Webhooks never sent: dropped on purpose, or with too many already in flight.
    pub fn webhooks_dropped(&self) -> usize {
        self.webhooks_dropped.load(Ordering::Relaxed)
    }

    /// Webhooks sent and not answered with a 2xx (refused, unreachable, timed out).
    pub fn webhooks_failed(&self) -> usize {
        self.webhooks_failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_a_prefixed_hex_hmac_of_the_body() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a well-known value.
        assert_eq!(
            signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
