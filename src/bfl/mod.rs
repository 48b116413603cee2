//! The upstream: BFL's wire types, the allow-list, one-exchange client calls, and the translation
//! of a validated job into BFL's request body.

mod allow;
mod body;
mod client;
mod wire;

pub use allow::AllowList;
pub use body::SubmitBody;
pub use client::BflClient;
pub use wire::{PollReply, Status, SubmitReply};

use std::time::Duration;

/// What one exchange with BFL can go wrong with. Messages are for logs, not for clients.
#[derive(Debug, thiserror::Error)]
pub enum BflError {
    /// BFL answered with a non-success status.
    #[error("BFL answered {status}: {message}")]
    Rejected { status: u16, message: String, field: Option<String>, retry_after: Option<Duration> },
    /// The connection could not be made: nothing reached BFL, so a retry cannot pay twice.
    #[error("could not connect to BFL: {0}")]
    Connect(String),
    /// The exchange broke after the request may have been sent (reset, timeout, broken body).
    #[error("exchange with BFL failed: {0}")]
    Transport(String),
    /// BFL's reply could not be read.
    #[error("unreadable reply from BFL: {0}")]
    Garbage(String),
    /// The URL's host is not on the allow-list; nothing was sent.
    #[error("host {0} is not on the upstream allow-list")]
    NotAllowed(String),
}

impl BflError {
    fn from_transport(e: reqwest::Error) -> BflError {
        // reqwest's text names the URL but never headers, so the key cannot leak through it.
        let connect = e.is_connect();
        let text = e.without_url().to_string();
        if connect { BflError::Connect(text) } else { BflError::Transport(text) }
    }
}
