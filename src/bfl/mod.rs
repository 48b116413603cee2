//! The upstream: BFL's wire types, the allow-list, one-exchange client calls, the translation of
//! a validated job into BFL's request body, and the classification of every BFL answer into a
//! typed `UpstreamError` or a `Status` (done here once; nothing else reads BFL status codes).

mod allow;
mod body;
mod client;
pub mod webhook;
mod wire;

pub use allow::AllowList;
pub use body::SubmitBody;
pub use client::{BflClient, Download};
pub use wire::{PollReply, Status, SubmitReply};

use std::time::Duration;

use reqwest::Url;

/// How the gateway talks to BFL: where, through which hosts, and with which timeouts.
#[derive(Debug, Clone)]
pub struct BflSettings {
    pub base_url: Url,
    pub allow: AllowList,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_idle_connections: usize,
}

/// Every way one exchange with BFL can fail, classified once. Messages are for logs, not clients.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// 400 or 422: BFL refused the request itself (FastAPI detail, and the field when it names one).
    #[error("BFL refused the request: {message}")]
    Invalid { message: String, field: Option<String> },
    /// 401 or 403: the key is missing, wrong or revoked.
    #[error("BFL refused the key")]
    KeyRefused,
    /// 402: the account behind the key is out of credits.
    #[error("BFL says the account is out of credits")]
    OutOfCredits,
    /// 404 on a submit: BFL does not serve this path.
    #[error("BFL does not serve this path")]
    NoSuchEndpoint,
    /// 429: too many active tasks on the key.
    #[error("BFL says the key is at capacity")]
    Busy { retry_after: Option<Duration> },
    /// 5xx that BFL itself sent (or a 503): it refused to take the request now; no task exists.
    #[error("BFL answered {status}")]
    Unavailable { status: u16, retry_after: Option<Duration> },
    /// Any other non-success status.
    #[error("BFL answered an unexpected {status}: {message}")]
    UnexpectedStatus { status: u16, message: String },
    /// The connection could not be made: nothing reached BFL, so a retry cannot pay twice.
    #[error("could not connect to BFL: {0}")]
    Connect(String),
    /// The exchange broke after the request may have been sent (reset, timeout, broken body):
    /// BFL may have acted on it.
    #[error("exchange with BFL broke off: {0}")]
    Lost(String),
    /// A success status whose body could not be read or parsed.
    #[error("unreadable reply from BFL: {0}")]
    Unreadable(String),
    /// The URL is not on the allow-list; nothing was sent.
    #[error("{0} is not on the upstream allow-list")]
    NotAllowed(String),
}

impl UpstreamError {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Invalid { .. } => "invalid",
            UpstreamError::KeyRefused => "key_refused",
            UpstreamError::OutOfCredits => "out_of_credits",
            UpstreamError::NoSuchEndpoint => "no_such_endpoint",
            UpstreamError::Busy { .. } => "busy",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::UnexpectedStatus { .. } => "unexpected_status",
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Lost(_) => "lost",
            UpstreamError::Unreadable(_) => "unreadable",
            UpstreamError::NotAllowed(_) => "not_allowed",
        }
    }

    /// True when BFL may have created (and will charge) a task for a submit that failed so.
    pub fn submit_may_have_run(&self) -> bool {
        match self {
            UpstreamError::Lost(_) | UpstreamError::Unreadable(_) => true,
            UpstreamError::Invalid { .. }
            | UpstreamError::KeyRefused
            | UpstreamError::OutOfCredits
            | UpstreamError::NoSuchEndpoint
            | UpstreamError::Busy { .. }
            | UpstreamError::Unavailable { .. }
            | UpstreamError::UnexpectedStatus { .. }
            | UpstreamError::Connect(_)
            | UpstreamError::NotAllowed(_) => false,
        }
    }

    fn from_transport(e: reqwest::Error) -> UpstreamError {
        // reqwest's text names the URL but never headers, so the key cannot leak through it.
        let connect = e.is_connect();
        let text = e.without_url().to_string();
        if connect { UpstreamError::Connect(text) } else { UpstreamError::Lost(text) }
    }

    /// A non-success status with BFL's detail, classified. A 5xx is BFL refusing only when BFL
    /// says so (its JSON `detail`) or it is a 503; a bare 502, 504 or 52x comes from a proxy in
    /// front of BFL, which may have passed the request on: the task may exist.
    fn from_status(
        status: u16,
        message: String,
        field: Option<String>,
        retry_after: Option<Duration>,
        readable: bool,
    ) -> Self {
        match status {
            500..=599 if !readable && status != 503 => {
                UpstreamError::Lost(format!("HTTP {status} without BFL's answer (from a proxy?)"))
            }
            400 | 422 => UpstreamError::Invalid { message, field },
            401 | 403 => UpstreamError::KeyRefused,
            402 => UpstreamError::OutOfCredits,
            404 => UpstreamError::NoSuchEndpoint,
            429 => UpstreamError::Busy { retry_after },
            500..=599 => UpstreamError::Unavailable { status, retry_after },
            _ => UpstreamError::UnexpectedStatus { status, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, readable: bool) -> UpstreamError {
        UpstreamError::from_status(status, "x".into(), None, None, readable)
    }

    #[test]
    fn only_a_5xx_from_bfl_itself_or_a_503_is_a_refusal_that_may_be_retried() {
        assert!(matches!(classify(500, true), UpstreamError::Unavailable { status: 500, .. }));
        assert!(matches!(classify(503, false), UpstreamError::Unavailable { status: 503, .. }));
        for status in [500, 502, 504, 520, 524] {
            let e = classify(status, false);
            assert!(e.submit_may_have_run(), "a bare {status} may have reached BFL: {e:?}");
        }
        assert!(!classify(429, false).submit_may_have_run());
        assert_eq!(classify(401, true), UpstreamError::KeyRefused);
    }
}
