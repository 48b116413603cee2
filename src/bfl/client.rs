//! One HTTP exchange with BFL at a time: submit, poll, download. No retries or loops live here
//! (the dispatcher owns them); every URL is checked against the allow-list before the key goes out.
//! Requests that carry the key follow no redirect at all; downloads (no key) follow redirects
//! only within the allow-list.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{StatusCode, Url, header::RETRY_AFTER, redirect};
use secrecy::{ExposeSecret, SecretString};

use super::body::SubmitBody;
use super::wire::{ErrorBody, PollReply, SubmitReply};
use super::{AllowList, BflSettings, UpstreamError};

#[derive(Debug, Clone)]
pub struct BflClient {
    /// Submits and polls: they carry the key, so they follow no redirect (reqwest would resend a
    /// custom header such as `x-key` to the redirect target).
    keyed: reqwest::Client,
    /// Result downloads: no key, redirects only within the allow-list.
    downloads: reqwest::Client,
    base: Url,
    allow: AllowList,
}

impl BflClient {
    pub fn new(settings: &BflSettings) -> Result<BflClient, reqwest::Error> {
        let allow = settings.allow.clone();
        let redirect_allow = allow.clone();
        // A redirect must not carry a download off the allow-list.
        let within_list = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 || !redirect_allow.permits(attempt.url()) {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let keyed = http_client(settings, redirect::Policy::none())?;
        let downloads = http_client(settings, within_list)?;
        Ok(BflClient { keyed, downloads, base: settings.base_url.clone(), allow })
    }

    /// The URL a model path is submitted to.
    pub fn submit_url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{}", self.base.path().trim_end_matches('/'), path));
        url
    }

    /// Where a task is polled when the submit's answer named no `polling_url` (BFL's
    /// `GET /v1/get_result?id=`, on the configured base).
    pub fn result_url(&self, task_id: &str) -> Url {
        let mut url = self.submit_url("/v1/get_result");
        url.query_pairs_mut().append_pair("id", task_id);
        url
    }

    /// POSTs a job.
    pub async fn submit(
        &self,
        key: &SecretString,
        path: &str,
        body: &SubmitBody,
    ) -> Result<SubmitReply, UpstreamError> {
        let url = self.submit_url(path);
        self.check(&url)?;
        let response = self
            .keyed
            .post(url)
            .header("x-key", key.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // Known up front even when the images stream, so BFL sees a plain sized body.
            .header(reqwest::header::CONTENT_LENGTH, body.content_length())
            .body(body.to_reqwest())
            .send()
            .await
            .map_err(UpstreamError::from_transport)?;
        if !response.status().is_success() {
            return Err(rejection(response).await);
        }
        // The task exists from here on: a body that breaks off is unreadable, not lost in transit.
        let bytes = read_capped(response, MAX_REPLY_BYTES)
            .await
            .map_err(|e| UpstreamError::Unreadable(format!("submit reply: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Unreadable(format!("submit reply: {e}")))
    }

    /// GETs a `polling_url` exactly as BFL returned it. A 404 whose body is a poll reply (`Task
    /// not found`) is a reply, not an error.
    pub async fn poll(
        &self,
        key: &SecretString,
        polling_url: &Url,
        timeout: Duration,
    ) -> Result<PollReply, UpstreamError> {
        self.check(polling_url)?;
        let response = self
            .keyed
            .get(polling_url.clone())
            .timeout(timeout)
            .header("x-key", key.expose_secret())
            .send()
            .await
            .map_err(UpstreamError::from_transport)?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            let bytes = read_capped(response, MAX_REPLY_BYTES).await?;
            return match serde_json::from_slice::<PollReply>(&bytes) {
                Ok(reply) if status.is_success() || reply.status == "Task not found" => Ok(reply),
                Ok(_) => Err(UpstreamError::NoSuchEndpoint),
                Err(e) => Err(UpstreamError::Unreadable(format!("poll reply: {e}"))),
            };
        }
        Err(rejection(response).await)
    }

    /// Starts downloading a result image (no key is sent): the answer's head, its body unread,
    /// so the caller can size the body before holding it.
    pub async fn open_download(&self, url: &Url) -> Result<Download, UpstreamError> {
        self.check(url)?;
        let response = self.downloads.get(url.clone()).send().await.map_err(UpstreamError::from_transport)?;
        if !response.status().is_success() {
            return Err(rejection(response).await);
        }
        Ok(Download { response })
    }

    /// True when `url` may receive the key (or be downloaded from).
    pub fn allows(&self, url: &Url) -> bool {
        self.allow.permits(url)
    }

    fn check(&self, url: &Url) -> Result<(), UpstreamError> {
        if self.allow.permits(url) {
            Ok(())
        } else {
            Err(UpstreamError::NotAllowed(url.host_str().unwrap_or("?").to_owned()))
        }
    }
}

fn http_client(
    settings: &BflSettings,
    redirects: redirect::Policy,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .redirect(redirects)
        .pool_idle_timeout(Duration::from_secs(30))
        // Thousands of jobs polling at once would otherwise leave as many idle sockets, each
        // with its buffers, behind every burst.
        .pool_max_idle_per_host(settings.max_idle_connections)
        .user_agent(concat!("fluxgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A result download whose body is not read yet.
#[derive(Debug)]
pub struct Download {
    response: reqwest::Response,
}

impl Download {
    /// The body's length as the upstream announced it, if it did.
    pub fn announced_len(&self) -> Option<u64> {
        self.response.content_length()
    }

    /// The body, refusing more than `max_bytes`.
    pub async fn read(self, max_bytes: usize) -> Result<Bytes, UpstreamError> {
        read_capped(self.response, max_bytes).await
    }
}

/// Largest JSON reply (submit, poll, error) read from BFL; real ones are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The body of `response`, refusing more than `max_bytes` (an upstream cannot fill our memory).
async fn read_capped(response: reqwest::Response, max_bytes: usize) -> Result<Bytes, UpstreamError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(UpstreamError::from_transport)?;
        if body.len() + chunk.len() > max_bytes {
            return Err(UpstreamError::Unreadable(format!("reply larger than {max_bytes} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Classifies a non-success reply, reading BFL's (FastAPI) detail when there is one.
async fn rejection(response: reqwest::Response) -> UpstreamError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    // A huge or broken error body just loses its detail.
    let bytes = read_capped(response, MAX_REPLY_BYTES).await.unwrap_or_default();
    let (message, field, readable) = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) if body.detail.is_some() => {
            let (message, field) = body.describe();
            (message, field, true)
        }
        Ok(_) | Err(_) => (format!("HTTP {status}"), None, false),
    };
    UpstreamError::from_status(status, message, field, retry_after, readable)
}
