//! Prompt triggers: bracketed words in a prompt that make the simulator misbehave on purpose,
//! so tests can reach every branch of BFL's protocol. Unrecognised brackets are plain prompt text.

use std::time::Duration;

/// Everything the prompt asked for; the default is an ordinary, successful job.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Triggers {
    /// Terminal status other than `Ready` (`[moderate-request]`, `[moderate-content]`, `[error]`,
    /// `[status:XYZ]`); the first one in the prompt wins.
    pub status: Option<String>,
    /// `[slow:MS]`: exact job duration, not scaled by `time_scale`.
    pub slow: Option<Duration>,
    /// `[hang]`: the job never finishes.
    pub hang: bool,
    /// `[submit:CODE]`: the submit answers this HTTP status and creates no task.
    pub submit: Option<u16>,
    /// `[notfound:N]`: the first N polls answer 404 "Task not found".
    pub notfound: u32,
    /// `[poll-status:CODE]`: every poll answers this HTTP status.
    pub poll_status: Option<u16>,
    /// `[interim:XYZ]`: polls report status `XYZ` (instead of Pending) while the job runs, as BFL
    /// does with the intermediate statuses it keeps adding.
    pub interim: Option<String>,
    /// `[no-progress]`: polls report `progress: null` while the job runs.
    pub no_progress: bool,
    /// `[after-submit:hang|reset|garbage]`: the task is created (and counts, as BFL would bill it),
    /// but the submit's answer never arrives, breaks off mid-body, or is not JSON.
    pub after_submit: Option<AfterSubmit>,
    /// `[error-seed:N]`: the task whose seed is N ends with status `Error` (one of a fan-out).
    pub error_seed: Option<i64>,
    /// `[webhook:drop]`: the task's webhook is never sent (polling must find the result).
    pub webhook_drop: bool,
    /// `[webhook-delay:MS]`: the task's webhook goes out MS milliseconds after it turns terminal.
    pub webhook_delay: Option<Duration>,
}

/// How a submit's answer is lost after BFL has created the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterSubmit {
    /// No answer at all (the client times out).
    Hang,
    /// A 200 whose body breaks off: the connection is cut mid-reply.
    Reset,
    /// A 200 whose body is not JSON.
    Garbage,
}

pub(super) const REQUEST_MODERATED: &str = "Request Moderated";
pub(super) const CONTENT_MODERATED: &str = "Content Moderated";
pub(super) const ERROR: &str = "Error";

impl Triggers {
    pub(super) fn parse(prompt: &str) -> Triggers {
        let mut t = Triggers::default();
        let mut rest = prompt;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            let Some(close) = after.find(']') else { break };
            t.apply(&after[..close]);
            rest = &after[close + 1..];
        }
        t
    }

    fn apply(&mut self, token: &str) {
        let (name, arg) = match token.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (token, None),
        };
        match (name, arg) {
            ("moderate-request", None) => self.set_status(REQUEST_MODERATED),
            ("moderate-content", None) => self.set_status(CONTENT_MODERATED),
            ("error", None) => self.set_status(ERROR),
            ("status", Some(s)) if !s.is_empty() => self.set_status(s),
            ("slow", Some(ms)) => {
                if let Ok(ms) = ms.trim().parse::<u64>() {
                    self.slow.get_or_insert(Duration::from_millis(ms));
                }
            }
            ("hang", None) => self.hang = true,
            ("no-progress", None) => self.no_progress = true,
            ("webhook", Some("drop")) => self.webhook_drop = true,
            ("webhook-delay", Some(ms)) => {
                if let Ok(ms) = ms.trim().parse::<u64>() {
                    self.webhook_delay.get_or_insert(Duration::from_millis(ms));
                }
            }
            ("error-seed", Some(n)) if self.error_seed.is_none() => self.error_seed = n.trim().parse().ok(),
            ("after-submit", Some(how)) if self.after_submit.is_none() => {
                self.after_submit = match how {
                    "hang" => Some(AfterSubmit::Hang),
                    "reset" => Some(AfterSubmit::Reset),
                    "garbage" => Some(AfterSubmit::Garbage),
                    _ => None,
                };
            }
            ("interim", Some(s)) if !s.is_empty() && self.interim.is_none() => {
                self.interim = Some(s.to_owned())
            }
            ("submit", Some(code)) if self.submit.is_none() => self.submit = error_code(code),
            ("notfound", Some(n)) => {
                if let Ok(n) = n.trim().parse::<u64>() {
                    self.notfound = u32::try_from(n).unwrap_or(u32::MAX);
                }
            }
            ("poll-status", Some(code)) if self.poll_status.is_none() => {
                self.poll_status = error_code(code);
            }
            _ => {}
        }
    }

    fn set_status(&mut self, s: &str) {
        if self.status.is_none() {
            self.status = Some(s.to_owned());
        }
    }
}

/// Only error statuses make sense as forced answers; anything else is ignored as prompt text.
fn error_code(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|c| (400..=599).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_prompt_has_no_triggers_even_with_brackets() {
        assert_eq!(Triggers::parse("a [cat] on a [mat"), Triggers::default());
        assert_eq!(Triggers::parse("[submit:200] [slow:x] [status:]"), Triggers::default());
    }

    #[test]
    fn every_trigger_is_recognised() {
        let t = Triggers::parse(
            "x [slow:250][hang] [notfound:3] [poll-status:503] [submit:429] [interim:Uploading] [no-progress]",
        );
        assert_eq!(t.interim.as_deref(), Some("Uploading"));
        assert!(t.no_progress);
        assert_eq!(Triggers::parse("[after-submit:reset]").after_submit, Some(AfterSubmit::Reset));
        assert_eq!(Triggers::parse("[after-submit:nope]").after_submit, None);
        assert_eq!(Triggers::parse("[error-seed:12]").error_seed, Some(12));
        assert!(Triggers::parse("[webhook:drop]").webhook_drop);
        assert!(!Triggers::parse("[webhook:keep]").webhook_drop);
        assert_eq!(Triggers::parse("[webhook-delay:40]").webhook_delay, Some(Duration::from_millis(40)));
        assert_eq!(t.slow, Some(Duration::from_millis(250)));
        assert!(t.hang);
        assert_eq!(t.notfound, 3);
        assert_eq!(t.poll_status, Some(503));
        assert_eq!(t.submit, Some(429));
        assert_eq!(t.status, None);
    }

    #[test]
    fn the_first_status_trigger_wins() {
        let t = Triggers::parse("[moderate-content] [error] [status:Exploded]");
        assert_eq!(t.status.as_deref(), Some(CONTENT_MODERATED));
        assert_eq!(Triggers::parse("[status:Exploded]").status.as_deref(), Some("Exploded"));
        assert_eq!(Triggers::parse("[moderate-request]").status.as_deref(), Some(REQUEST_MODERATED));
        assert_eq!(Triggers::parse("[notfound:99999999999]").notfound, u32::MAX);
    }
}
