//! `Idempotency-Key`: a retry never submits twice; the same key with another request is a 422.

use bfl_sim::SimConfig;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_with};

async fn app(tokens: &[&str]) -> TestApp {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    let keys: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    spawn_with(sim, vec![("server.api_keys", keys.into())]).await
}

async fn generate(app: &TestApp, token: &str, key: &str, body: &Value) -> Reply {
    let response = app
        .http
        .post(format!("{}/v1/images/generations", app.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Reply { status, headers, body: response.json().await.expect("json") }
}

#[tokio::test]
async fn two_concurrent_requests_and_a_later_one_with_one_key_submit_once_and_get_the_same_reply() {
    let app = app(&["sk-a"]).await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "a lighthouse [slow:500]"});
    let (first, second) =
        tokio::join!(generate(&app, "sk-a", "key-1", &body), generate(&app, "sk-a", "key-1", &body));
    let later = generate(&app, "sk-a", "key-1", &body).await;
    for reply in [&first, &second, &later] {
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(first.body, second.body, "the concurrent retry joined the first");
    assert_eq!(first.body, later.body, "the later retry got the stored result");
    assert_eq!(app.sim.submit_attempts(), 1, "one submit at BFL");

    let other =
        generate(&app, "sk-a", "key-1", &json!({"model": "flux-2-klein-4b", "prompt": "a different one"}))
            .await;
    assert_eq!((other.status, other.error_code()), (422, Some("idempotency_key_reused")), "{}", other.body);
    assert_eq!(other.header("x-should-retry"), Some("false"));
    assert_eq!(app.sim.submit_attempts(), 1);
    app.assert_settles().await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_client_and_checked() {
    let app = app(&["sk-a", "sk-b"]).await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "a lighthouse"});
    let a = generate(&app, "sk-a", "shared", &body).await;
    let b = generate(&app, "sk-b", "shared", &body).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(a.body["data"], b.body["data"], "another client's key is another key");
    assert_eq!(app.sim.submit_attempts(), 2);
    let long = "k".repeat(256);
    let bad = generate(&app, "sk-a", &long, &body).await;
    assert_eq!((bad.status, bad.error_code()), (400, Some("invalid_idempotency_key")));
}

#[tokio::test]
async fn a_retried_async_request_gets_the_same_job() {
    let app = app(&["sk-a"]).await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "a lighthouse"});
    let post = || {
        app.http
            .post(format!("{}/v1/async/images/generations", app.base))
            .bearer_auth("sk-a")
            .header("idempotency-key", "async-1")
            .json(&body)
            .send()
    };
    let first: Value = post().await.expect("answers").json().await.expect("json");
    let second: Value = post().await.expect("answers").json().await.expect("json");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(app.sim.submit_attempts(), 1);
    app.assert_settles().await;
}

#[tokio::test]
async fn a_retry_after_a_504_waits_for_the_same_job_and_gets_its_image() {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    let app = spawn_with(sim, vec![("models.flux-2-klein-4b.deadline_secs", 1.into())]).await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "slow [slow:1800]"});
    let first = generate(&app, "", "late-1", &body).await;
    assert_eq!((first.status, first.header("x-should-retry")), (504, Some("false")), "{}", first.body);
    let retry = generate(&app, "", "late-1", &body).await;
    assert_eq!(retry.status, 200, "the retry waited for the running job: {}", retry.body);
    assert_eq!(app.sim.submit_attempts(), 1, "and nothing was submitted twice");
    app.assert_settles().await;
}
