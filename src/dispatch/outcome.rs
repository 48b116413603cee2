//! How upstream failures become client errors: the single conversion from `BflError` and
//! terminal BFL statuses into `ApiError`.

use std::time::Duration;

use crate::bfl::BflError;
use crate::error::ApiError;

/// A submit that failed for good (after the retries allowed).
pub fn submit_failed(e: BflError) -> ApiError {
    tracing::warn!(error = %e, "submit to BFL failed");
    match e {
        BflError::Rejected { status: 400 | 422, message, field, .. } => ApiError::InvalidRequest {
            message: format!("BFL rejected the request: {message}"),
            param: field.map(client_param),
            code: "invalid_value",
        },
        BflError::Rejected { status: 402, .. } => ApiError::Capacity {
            message: "the gateway's BFL account is out of credits".into(),
            retry_after: Duration::from_secs(60),
            retry_useful: false,
        },
        BflError::Rejected { status: 429, retry_after, .. } => ApiError::Capacity {
            message: "upstream capacity is exhausted; retry shortly".into(),
            retry_after: retry_after.unwrap_or(Duration::from_secs(5)),
            retry_useful: true,
        },
        BflError::Rejected { status: 401 | 403, .. } => {
            ApiError::Upstream("BFL refused the gateway's API key".into())
        }
        BflError::Rejected { status: 404, .. } => ApiError::Upstream("BFL does not serve this model".into()),
        BflError::Rejected { status, .. } => ApiError::Upstream(format!("BFL failed with HTTP {status}")),
        BflError::Connect(_) | BflError::Transport(_) => {
            ApiError::Upstream("BFL could not be reached".into())
        }
        BflError::Garbage(_) => ApiError::Upstream("BFL sent an unreadable reply".into()),
        BflError::NotAllowed(_) => ApiError::Upstream("the BFL endpoint is not on the allow-list".into()),
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

pub fn moderated(request: bool, safety_tolerance: u8) -> ApiError {
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

    #[test]
    fn a_bfl_422_on_width_is_a_400_on_size() {
        let e = submit_failed(BflError::Rejected {
            status: 422,
            message: "width: bad".into(),
            field: Some("width".into()),
            retry_after: None,
        });
        assert!(matches!(e, ApiError::InvalidRequest { param: Some(ref p), .. } if p == "size"));
    }

    #[test]
    fn a_bfl_403_is_our_fault_not_the_clients() {
        let e = submit_failed(BflError::Rejected {
            status: 403,
            message: String::new(),
            field: None,
            retry_after: None,
        });
        assert_eq!(e.status(), axum::http::StatusCode::BAD_GATEWAY);
    }
}
