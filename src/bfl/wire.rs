//! BFL's reply shapes, read leniently: fields we do not use are ignored, unknown statuses kept.

use serde::Deserialize;
use serde_json::Value;

/// Answer to a submit: where to poll. A submit that carried a `webhook_url` is answered without
/// a `polling_url` (BFL's `AsyncWebhookResponse`); its task is polled at `/v1/get_result?id=`.
#[derive(Debug, Clone, Deserialize)]
pub struct SubmitReply {
    pub id: String,
    #[serde(default)]
    pub polling_url: Option<String>,
    #[serde(default)]
    pub cost: Option<f64>,
}

/// Answer to a poll, and the body of a BFL webhook (the same `ResultResponse` document).
#[derive(Debug, Clone, Deserialize)]
pub struct PollReply {
    /// The task's id (checked against the task a webhook claims to be about).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub details: Option<Value>,
    /// 0–1 (or 0–100 on some endpoints) while the task runs, when BFL reports it.
    #[serde(default)]
    pub progress: Option<f64>,
}

/// What a poll says about the task.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Pending, Queued, Reasoning, Generating, Uploading: keep polling.
    Running {
        progress: Option<f64>,
    },
    Ready {
        sample: String,
        prompt: Option<String>,
    },
    RequestModerated,
    ContentModerated,
    TaskNotFound,
    /// `Error` or `Failed`: BFL gave up on the task.
    Failed(String),
    /// A status BFL added after this was written. Not a known terminal one, so the task is
    /// still running until its deadline: failing it now could lose an image BFL then charges.
    Unrecognized(String),
}

impl Status {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Status::Running { .. } => "running",
            Status::Ready { .. } => "ready",
            Status::RequestModerated | Status::ContentModerated => "moderated",
            Status::TaskNotFound => "not_found",
            Status::Failed(_) => "failed",
            Status::Unrecognized(_) => "unrecognized",
        }
    }
}

impl PollReply {
    pub fn status(&self) -> Status {
        match self.status.as_str() {
            "Pending" | "Queued" | "Reasoning" | "Generating" | "Uploading" => {
                Status::Running { progress: self.progress.filter(|p| p.is_finite()) }
            }
            "Ready" => {
                let result = self.result.as_ref();
                match result.and_then(|r| r.get("sample")).and_then(Value::as_str) {
                    Some(sample) => Status::Ready {
                        sample: sample.to_owned(),
                        prompt: result
                            .and_then(|r| r.get("prompt"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    },
                    None => Status::Failed("Ready without result.sample".to_owned()),
                }
            }
            "Request Moderated" => Status::RequestModerated,
            "Content Moderated" => Status::ContentModerated,
            "Task not found" => Status::TaskNotFound,
            "Error" | "Failed" => Status::Failed(
                self.details.as_ref().map(|d| d.to_string()).unwrap_or_else(|| "no details".to_owned()),
            ),
            other => Status::Unrecognized(other.to_owned()),
        }
    }
}

/// FastAPI validation error: `detail` is a string or a list of `{loc, msg, type}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub detail: Option<Value>,
}

impl ErrorBody {
    /// A readable message and, for list-shaped details, the last named field of the first `loc`.
    pub(super) fn describe(&self) -> (String, Option<String>) {
        match &self.detail {
            Some(Value::String(s)) => (s.clone(), None),
            Some(Value::Array(items)) => {
                let first = items.first();
                let field = first
                    .and_then(|i| i.get("loc"))
                    .and_then(Value::as_array)
                    .and_then(|loc| loc.iter().rev().find_map(Value::as_str))
                    .filter(|f| *f != "body")
                    .map(str::to_owned);
                let msgs: Vec<String> = items
                    .iter()
                    .filter_map(|i| {
                        let msg = i.get("msg").and_then(Value::as_str)?;
                        let loc = i.get("loc").and_then(Value::as_array).map(|loc| {
                            loc.iter()
                                .filter_map(Value::as_str)
                                .filter(|s| *s != "body")
                                .collect::<Vec<_>>()
                                .join(".")
                        });
                        Some(match loc {
                            Some(l) if !l.is_empty() => format!("{l}: {msg}"),
                            _ => msg.to_owned(),
                        })
                    })
                    .collect();
                (if msgs.is_empty() { "invalid request".to_owned() } else { msgs.join("; ") }, field)
            }
            Some(other) => (other.to_string(), None),
            None => ("no detail".to_owned(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_detail_names_the_field_and_joins_messages() {
        let body: ErrorBody = serde_json::from_value(json!({"detail": [
            {"loc": ["body", "width"], "msg": "must be a multiple of 16", "type": "value_error"},
            {"loc": ["body", "height"], "msg": "too small", "type": "value_error"}
        ]}))
        .expect("valid");
        let (msg, field) = body.describe();
        assert_eq!(field.as_deref(), Some("width"));
        assert_eq!(msg, "width: must be a multiple of 16; height: too small");
    }

    #[test]
    fn a_string_detail_is_the_message() {
        let body: ErrorBody = serde_json::from_value(json!({"detail": "bad ratio"})).expect("valid");
        assert_eq!(body.describe(), ("bad ratio".to_owned(), None));
    }

    #[test]
    fn unknown_statuses_are_kept_and_ready_needs_a_sample() {
        let reply: PollReply = serde_json::from_value(json!({"status": "Exploded"})).expect("valid");
        assert_eq!(reply.status(), Status::Unrecognized("Exploded".into()));
        let reply: PollReply =
            serde_json::from_value(json!({"status": "Ready", "result": {}})).expect("valid");
        assert!(matches!(reply.status(), Status::Failed(_)));
        let reply: PollReply = serde_json::from_value(json!({"status": "Failed"})).expect("valid");
        assert!(matches!(reply.status(), Status::Failed(_)));
        let reply: PollReply =
            serde_json::from_value(json!({"status": "Uploading", "progress": 0.5})).expect("valid");
        assert_eq!(reply.status(), Status::Running { progress: Some(0.5) });
    }
}
