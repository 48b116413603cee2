//! `JobFailure`: every way a job can end without an image, and the one conversion of those (and
//! of every `UpstreamError`) into the client's `ApiError`. Matches here are exhaustive on purpose:
//! a new failure must be given a status before it compiles.
#![warn(clippy::wildcard_enum_match_arm)]

use std::time::Duration;

use crate::bfl::UpstreamError;
use crate::capacity::CapacityError;
use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobFailure {
    /// No upstream slot could be had; nothing was sent.
    #[error("no upstream slot: {0}")]
    Capacity(CapacityError),
    /// A slot would free too late for the model's deadline; nothing was sent.
    #[error("no upstream slot in time for the deadline")]
    TooLate,
    /// The job store is full; nothing was sent.
    #[error("the job store is full")]
    StoreFull,
    /// BFL refused the submit (or could not be reached) and created no task.
    #[error("submit refused: {0}")]
    Refused(UpstreamError),
    /// The submit's answer was lost: BFL may have created and charged the task.
    #[error("submit outcome unknown: {0}")]
    SubmitLost(UpstreamError),
    /// BFL's moderation stopped the prompt (`request`) or the image. Not billed.
    #[error("moderated")]
    Moderated { request: bool, safety_tolerance: u8 },
    /// BFL reported the task as failed (`Error`, `Failed`).
    #[error("BFL failed the task: {0}")]
    TaskFailed(String),
    /// BFL answered `Task not found` for longer than the grace period.
    #[error("BFL lost track of the task")]
    TaskLost,
    /// BFL took the task, but it cannot be followed or its result cannot be used.
    #[error("the task cannot be followed: {0}")]
    Unfollowable(&'static str),
    /// The finished image could not be downloaded.
    #[error("result download failed: {0}")]
    Download(UpstreamError),
    /// The model's deadline passed; `accepted` when BFL had taken the job.
    #[error("past the deadline of {} s", deadline.as_secs())]
    DeadlineExceeded { deadline: Duration, accepted: bool },
    /// The job ran on another replica and failed there; `message` is what that replica told its
    /// client (the shared record keeps no more of the failure than that).
    #[error("failed on another replica: {message}")]
    Elsewhere { message: String, reached_upstream: bool },
}

impl JobFailure {
    /// True when BFL may have taken (and charged) the job.
    pub fn reached_upstream(&self) -> bool {
        match self {
            JobFailure::Capacity(_)
            | JobFailure::TooLate
            | JobFailure::StoreFull
            | JobFailure::Refused(_) => false,
            JobFailure::SubmitLost(_)
            | JobFailure::Moderated { .. }
            | JobFailure::TaskFailed(_)
            | JobFailure::TaskLost
            | JobFailure::Unfollowable(_)
            | JobFailure::Download(_) => true,
            JobFailure::DeadlineExceeded { accepted, .. } => *accepted,
            JobFailure::Elsewhere { reached_upstream, .. } => *reached_upstream,
        }
    }
}

impl From<JobFailure> for ApiError {
    fn from(failure: JobFailure) -> ApiError {
        match failure {
            JobFailure::Capacity(e) => capacity(e),
            JobFailure::TooLate => ApiError::Capacity {
                message: "no upstream slot became free in time for this model's deadline; retry shortly"
                    .into(),
                retry_after: Duration::from_secs(5),
                retry_useful: true,
            },
            JobFailure::StoreFull => ApiError::Capacity {
                message: "the gateway is tracking as many jobs as it may; retry shortly".into(),
                retry_after: Duration::from_secs(5),
                retry_useful: true,
            },
            JobFailure::Refused(e) => refused(e),
            JobFailure::SubmitLost(_) => ApiError::UpstreamAfterSubmit(
                "the answer to the submit was lost: BFL may have run (and charged) the job; \
                 not retried, so it is not paid twice"
                    .into(),
            ),
            JobFailure::Moderated { request, safety_tolerance } => moderated(request, safety_tolerance),
            // BFL does not charge a failed task, so trying again is fair.
            JobFailure::TaskFailed(_) => ApiError::Upstream("BFL failed to generate the image".into()),
            JobFailure::TaskLost => ApiError::UpstreamAfterSubmit("BFL lost track of the task".into()),
            JobFailure::Unfollowable(what) => ApiError::UpstreamAfterSubmit(what.into()),
            JobFailure::Download(_) => {
                ApiError::UpstreamAfterSubmit("the finished image could not be fetched from BFL".into())
            }
            JobFailure::DeadlineExceeded { deadline, accepted } => {
                ApiError::DeadlineExceeded { deadline, accepted }
            }
            JobFailure::Elsewhere { message, reached_upstream: true } => {
                ApiError::UpstreamAfterSubmit(message)
            }
            JobFailure::Elsewhere { message, reached_upstream: false } => ApiError::Upstream(message),
        }
    }
}

fn capacity(e: CapacityError) -> ApiError {
    match e {
        CapacityError::QueueFull => ApiError::Capacity {
            message: "every upstream slot is busy and the queue is full; retry shortly".into(),
            retry_after: Duration::from_secs(2),
            retry_useful: true,
        },
        CapacityError::QueueTimeout(waited) => ApiError::Capacity {
            message: format!("no upstream slot became free within {} s; retry shortly", waited.as_secs()),
            retry_after: Duration::from_secs(5),
            retry_useful: true,
        },
        CapacityError::NoUsableKey => ApiError::Upstream("no usable BFL key: every key was refused".into()),
        // Another replica behind the load balancer can take it: the SDK's retry is welcome.
        CapacityError::ShuttingDown => ApiError::Capacity {
            message: "the gateway is shutting down; retry (another replica will take it)".into(),
            retry_after: Duration::from_secs(1),
            retry_useful: true,
        },
        CapacityError::OutOfCredits { retry_after } => ApiError::Capacity {
            message: "the gateway's BFL accounts are out of credits".into(),
            retry_after,
            retry_useful: false,
        },
    }
}

/// A submit BFL refused readably, or never received: it created no task.
fn refused(e: UpstreamError) -> ApiError {
    match e {
        UpstreamError::Invalid { message, field } => ApiError::InvalidRequest {
            message: format!("BFL rejected the request: {message}"),
            param: field.map(client_param),
            code: "invalid_value",
        },
        UpstreamError::OutOfCredits => ApiError::Capacity {
            message: "the gateway's BFL account is out of credits".into(),
            retry_after: Duration::from_secs(60),
            retry_useful: false,
        },
        UpstreamError::Busy { retry_after } => ApiError::Capacity {
            message: "upstream capacity is exhausted; retry shortly".into(),
            retry_after: retry_after.unwrap_or(Duration::from_secs(5)),
            retry_useful: true,
        },
        UpstreamError::KeyRefused => ApiError::Upstream("BFL refused the gateway's API key".into()),
        UpstreamError::NoSuchEndpoint => ApiError::Upstream("BFL does not serve this model".into()),
        UpstreamError::Unavailable { status, .. } | UpstreamError::UnexpectedStatus { status, .. } => {
            ApiError::Upstream(format!("BFL failed with HTTP {status}"))
        }
        UpstreamError::Connect(_) => ApiError::Upstream("BFL could not be reached".into()),
        UpstreamError::NotAllowed(_) => {
            ApiError::Upstream("the BFL endpoint is not on the allow-list".into())
        }
        // Classified as "may have run" and so never a refusal; kept safe should that change.
        UpstreamError::Lost(_) | UpstreamError::Unreadable(_) => ApiError::UpstreamAfterSubmit(
            "BFL's answer to the submit was lost; it may have run the job".into(),
        ),
    }
}

/// BFL's field names mapped back to the client's: the size knobs are `size` to an OpenAI client
/// and reference images are `image`.
fn client_param(field: String) -> String {
    match field.as_str() {
        "width" | "height" => "size".to_owned(),
        f if f.starts_with("input_image") => "image".to_owned(),
        _ => field,
    }
}

fn moderated(request: bool, safety_tolerance: u8) -> ApiError {
    let what = if request { "the request" } else { "the generated image" };
    ApiError::Moderated {
        message: format!(
            "BFL's moderation blocked {what}. Rephrase the prompt, or raise `safety_tolerance` \
             (0 strictest … 6 most permissive; this request used {safety_tolerance}). Not billed."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn status(failure: JobFailure) -> StatusCode {
        ApiError::from(failure).status()
    }

    #[test]
    fn a_bfl_422_on_width_is_a_400_on_size() {
        let e = ApiError::from(JobFailure::Refused(UpstreamError::Invalid {
            message: "width: bad".into(),
            field: Some("width".into()),
        }));
        assert!(matches!(e, ApiError::InvalidRequest { param: Some(ref p), .. } if p == "size"));
    }

    #[test]
    fn a_bfl_403_is_our_fault_not_the_clients() {
        assert_eq!(status(JobFailure::Refused(UpstreamError::KeyRefused)), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn a_lost_submit_is_a_502_that_reached_upstream() {
        let failure = JobFailure::SubmitLost(UpstreamError::Lost("reset".into()));
        assert!(failure.reached_upstream());
        let response = axum::response::IntoResponse::into_response(ApiError::from(failure));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()["x-should-retry"], "false");
    }
}
