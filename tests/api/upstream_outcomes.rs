//! Each BFL outcome maps to the status of PRODUCT.md section 4. Outcomes are steered with the
//! simulator's prompt triggers.

use std::time::{Duration, Instant};

use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::{Reply, TestApp, spawn_app, spawn_with};

async fn generate(app: &TestApp, prompt: &str) -> Reply {
    app.generate(json!({"model": "flux-2-klein-4b", "prompt": prompt})).await
}

#[tokio::test]
async fn moderation_of_request_or_content_is_a_403_moderation_blocked_that_suggests_safety_tolerance() {
    let app = spawn_app().await;
    for trigger in ["[moderate-request]", "[moderate-content]"] {
        let reply = generate(&app, &format!("a scene {trigger}")).await;
        assert_eq!(reply.status, 403, "{trigger}: {}", reply.body);
        assert_eq!(reply.error_code(), Some("moderation_blocked"));
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| m.contains("safety_tolerance")));
        assert_eq!(reply.header("x-should-retry"), Some("false"));
    }
}

#[tokio::test]
async fn a_task_error_or_failure_is_a_502() {
    let app = spawn_app().await;
    for trigger in ["[error]", "[status:Failed]"] {
        let reply = generate(&app, &format!("x {trigger}")).await;
        assert_eq!(reply.status, 502, "{trigger}: {}", reply.body);
        assert_eq!(reply.error_type(), Some("upstream_error"));
    }
}

#[tokio::test]
async fn an_unknown_intermediate_status_keeps_the_job_polling_and_a_later_ready_succeeds() {
    let app = spawn_app().await;
    let reply = generate(&app, "x [interim:Uploading-v2] [slow:400]").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let polls = app.sim.polls();
    assert!(polls >= 2, "polled through the unknown status: {polls} polls");
    app.assert_settles().await;
}

#[tokio::test]
async fn an_unknown_status_that_never_changes_runs_into_the_deadline_not_a_502() {
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("models.flux-2-klein-4b.deadline_secs", 1.into())],
    )
    .await;
    let reply = generate(&app, "x [status:Exploded]").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.header("x-should-retry"), Some("false"));
}

#[tokio::test]
async fn task_not_found_right_after_submit_is_tolerated() {
    let app = spawn_app().await;
    let reply = generate(&app, "x [notfound:3]").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn submit_refusals_map_to_the_documented_statuses() {
    let cases = [
        ("[submit:402]", 429, None),
        ("[submit:403]", 502, None),
        ("[submit:404]", 502, None),
        ("[submit:422]", 400, Some("prompt")),
        ("[submit:400]", 400, None),
        ("[submit:429]", 429, None),
    ];
    for (trigger, status, param) in cases {
        // A fresh gateway each time: a refusal also changes the health of the only key.
        let app = spawn_app().await;
        let reply = generate(&app, &format!("x {trigger}")).await;
        assert_eq!(reply.status, status, "{trigger}: {}", reply.body);
        if let Some(param) = param {
            assert_eq!(reply.error_param(), Some(param), "{trigger}");
        }
        if status == 429 {
            assert!(reply.header("retry-after").is_some(), "{trigger}: retry-after");
        }
        // None of these is retried on the one key there is.
        assert_eq!(app.sim.submit_attempts(), 1, "{trigger}");
    }
}

#[tokio::test]
async fn a_5xx_on_submit_is_retried_then_reported_as_502() {
    let app = spawn_app().await;
    let reply = generate(&app, "x [submit:503]").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    // One attempt plus the two configured retries.
    assert_eq!(app.sim.submit_attempts(), 3);
}

#[tokio::test]
async fn transient_submit_and_poll_faults_are_survived() {
    let sim = SimConfig {
        time_scale: 0.02,
        faults: bfl_sim::Faults {
            submit_error_rate: 0.3,
            poll_error_rate: 0.2,
            poll_garbage_rate: 0.1,
            poll_hang_rate: 0.0,
        },
        seed: 7,
        ..SimConfig::default()
    };
    let app = spawn_with(sim, vec![("upstream.submit_retries", 6.into())]).await;
    let mut ok = 0;
    for i in 0..10 {
        let reply = generate(&app, &format!("fault run {i}")).await;
        if reply.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 10);
}

#[tokio::test]
async fn a_task_that_never_finishes_is_a_504_at_the_models_deadline_and_not_to_be_retried() {
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("models.flux-2-klein-4b.deadline_secs", 1.into())],
    )
    .await;
    let started = Instant::now();
    let reply = generate(&app, "x [hang]").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    assert!(started.elapsed() < Duration::from_secs(2), "answered {:?} after the start", started.elapsed());
}

#[tokio::test]
async fn polls_that_keep_failing_end_at_the_deadline_too() {
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("models.flux-2-klein-4b.deadline_secs", 1.into())],
    )
    .await;
    let reply = generate(&app, "x [poll-status:500]").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
}
