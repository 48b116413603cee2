//! BFL webhooks in: with `upstream.webhook_base_url` set, BFL's call completes the job at once;
//! a lost webhook costs latency (polling finds the result), never the image; a call without the
//! secret changes nothing; a replay is a harmless 200; an unknown token is a 404.

use std::net::SocketAddr;

use bfl_sim::SimConfig;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_listening, wait_for};

const SECRET: &str = "bfl-webhook-test-secret";

/// A gateway whose webhooks reach it on its own loopback address, with extra overrides.
async fn spawn_webhooks(extra: Vec<(&'static str, config::Value)>) -> TestApp {
    spawn_listening(SimConfig { time_scale: 0.02, ..SimConfig::default() }, move |_, gateway: SocketAddr| {
        let mut overrides = vec![
            ("upstream.webhook_base_url", format!("http://{gateway}").into()),
            ("upstream.webhook_secret", SECRET.into()),
        ];
        overrides.extend(extra);
        overrides
    })
    .await
}

/// The fallback's first poll comes at twice the model's full expected time (6 s for flux-2-pro),
/// long after the simulator's sped-up task and its webhook.
fn slow_fallback() -> Vec<(&'static str, config::Value)> {
    vec![("upstream.first_poll_scale", 1.0.into()), ("upstream.webhook_poll_interval_ms", 5000.into())]
}

async fn post_webhook(app: &TestApp, url: &str, secret: Option<&str>, doc: &Value) -> (u16, Value) {
    let mut request = app.http.post(url).json(doc);
    if let Some(secret) = secret {
        request = request.header("X-Webhook-Secret", secret);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_simulators_webhook_completes_the_job_with_no_poll() {
    let app = spawn_webhooks(slow_fallback()).await;
    let reply = app.generate(json!({"model": "flux-2-pro", "prompt": "a lighthouse"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body["data"][0]["url"].as_str().is_some_and(|u| u.contains("/results/")));
    assert_eq!(app.sim.polls(), 0, "BFL's call completed the job; nothing was polled");
    assert_eq!(app.sim.webhooks_sent(), 1);
    let submitted = app.last_submit().body;
    let url = submitted["webhook_url"].as_str().expect("the submit named a webhook_url");
    assert!(url.starts_with(&format!("{}/v1/bfl/webhooks/", app.base)), "{url}");
    assert_eq!(submitted["webhook_secret"], SECRET);
    assert_eq!(app.state.dispatcher.bfl_webhooks().live(), 0, "the job's token is retired");
    app.assert_settles().await;
}

#[tokio::test]
async fn with_the_webhook_dropped_the_job_still_completes_by_polling() {
    let app = spawn_webhooks(vec![("upstream.webhook_poll_interval_ms", 50.into())]).await;
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "a fox [webhook:drop]"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.sim.webhooks_dropped(), 1);
    assert!(app.sim.polls() >= 1, "polling found the result");
    app.assert_settles().await;
}

#[tokio::test]
async fn a_webhook_without_the_secret_is_401_and_does_not_complete_the_job() {
    let app = spawn_webhooks(vec![("upstream.webhook_poll_interval_ms", 50.into())]).await;
    let gateway = app.base.clone();
    let http = app.http.clone();
    let request = tokio::spawn(async move {
        let body = json!({"model": "flux-2-klein-4b", "prompt": "a fox [webhook:drop] [slow:800]"});
        let response =
            http.post(format!("{gateway}/v1/images/generations")).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    });
    wait_for(|| !app.sim.received().is_empty()).await;
    let url = app.last_submit().body["webhook_url"].as_str().expect("a webhook_url").to_owned();
    let task = app.sim.task_list()[0]["id"].as_str().expect("the task").to_owned();
    let forged_sample = format!("http://127.0.0.1:{}/results/forged.jpeg", app.sim_port());
    let forged = json!({"id": task, "status": "Ready", "result": {"sample": forged_sample}});
    let (status, body) = post_webhook(&app, &url, Some("not-the-secret"), &forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_webhook_signature");
    let unsigned =
        app.http.post(&url).header("X-BFL-Signature", "sha256=00").json(&forged).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(post_webhook(&app, &url, None, &forged).await.0, 401);
    let (status, reply) = request.await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let image = reply["data"][0]["url"].as_str().expect("an image");
    assert_ne!(image, forged_sample, "the forged result was not taken");
    assert!(app.sim.polls() >= 1);
}

#[tokio::test]
async fn a_replayed_webhook_is_a_harmless_200_and_an_unknown_token_is_404_without_a_client_token() {
    let mut extra = slow_fallback();
    extra.push(("server.api_keys", vec!["sk-client".to_owned()].into()));
    let app = spawn_webhooks(extra).await;
    let reply = app
        .http
        .post(format!("{}/v1/images/generations", app.base))
        .bearer_auth("sk-client")
        .json(&json!({"model": "flux-2-pro", "prompt": "a lighthouse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let url = app.last_submit().body["webhook_url"].as_str().expect("a webhook_url").to_owned();
    let task = app.sim.task_list()[0]["id"].as_str().expect("the task").to_owned();
    let doc = json!({"id": task, "status": "Error", "details": {"replayed": true}});
    let (status, body) = post_webhook(&app, &url, Some(SECRET), &doc).await;
    assert_eq!(status, 200, "a replay after the job ended: {body}");
    assert_eq!(post_webhook(&app, &url, Some(SECRET), &doc).await.0, 200, "and again");
    let unknown = format!("{}/v1/bfl/webhooks/{}", app.base, "0".repeat(64));
    let (status, body) = post_webhook(&app, &unknown, Some(SECRET), &doc).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = post_webhook(&app, &unknown, Some("wrong"), &doc).await;
    assert_eq!(status, 401, "the secret is checked before the token");
    let huge = json!({"id": task, "status": "Ready", "pad": "x".repeat(100_000)});
    assert_eq!(post_webhook(&app, &url, Some(SECRET), &huge).await.0, 413, "the body is bounded");
    assert_eq!(app.sim.polls(), 0);
}
