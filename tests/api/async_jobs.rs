//! Async jobs: 202 at once, then `GET /v1/async/jobs/{id}` until the job is over; each client sees
//! only its own jobs.

use bfl_sim::SimConfig;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_with};
use crate::uploads::{BOUNDARY, file, multipart, png, text};

const TOKENS: [&str; 2] = ["sk-alice", "sk-bob"];

async fn app() -> TestApp {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    spawn_with(sim, vec![("server.api_keys", TOKENS.map(str::to_owned).to_vec().into())]).await
}

async fn send(app: &TestApp, request: reqwest::RequestBuilder) -> Reply {
    let _ = app;
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Reply { status, headers, body }
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Reply {
    send(app, app.http.post(format!("{}{path}", app.base)).bearer_auth(token).json(&body)).await
}

async fn job(app: &TestApp, token: &str, id: &str) -> Reply {
    send(app, app.http.get(format!("{}/v1/async/jobs/{id}", app.base)).bearer_auth(token)).await
}

/// Polls the job (bounded) until it is over.
async fn settled(app: &TestApp, token: &str, id: &str) -> Reply {
    for _ in 0..500 {
        let reply = job(app, token, id).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if matches!(reply.body["status"].as_str(), Some("succeeded" | "failed")) {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("job {id} did not settle");
}

#[tokio::test]
async fn an_async_job_answers_202_at_once_and_ends_with_the_data_of_the_sync_reply() {
    let app = app().await;
    let request = json!({"model": "flux-2-klein-4b", "prompt": "a kite [slow:400]", "size": "320x240"});
    let accepted = post(&app, TOKENS[0], "/v1/async/images/generations", request.clone()).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.body["object"], "image.job");
    assert!(matches!(accepted.body["status"].as_str(), Some("queued" | "running")), "{}", accepted.body);
    assert!(accepted.body["created_at"].as_u64().is_some());
    let id = accepted.body["id"].as_str().expect("an id").to_owned();

    let done = settled(&app, TOKENS[0], &id).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    let sync = post(&app, TOKENS[0], "/v1/images/generations", request).await;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&done.body["data"][0]), keys(&sync.body["data"][0]), "the same data entries");
    assert_eq!(done.body["output_format"], sync.body["output_format"]);
    let url = done.body["data"][0]["url"].as_str().expect("url");
    assert_eq!(app.fetch_image(url).await.1, 320);

    let other = job(&app, TOKENS[1], &id).await;
    assert_eq!(
        (other.status, other.error_code()),
        (404, Some("job_not_found")),
        "another client's job is unknown"
    );
    let unknown = job(&app, TOKENS[0], "job_0000").await;
    assert_eq!(unknown.status, 404);
    let anonymous = send(&app, app.http.get(format!("{}/v1/async/jobs/{id}", app.base))).await;
    assert_eq!(anonymous.status, 401);
    app.assert_settles().await;
}

#[tokio::test]
async fn a_failed_async_job_carries_the_openai_error_and_bad_requests_are_400_at_once() {
    let app = app().await;
    let accepted = post(
        &app,
        TOKENS[0],
        "/v1/async/images/generations",
        json!({"model": "flux-2-klein-4b", "prompt": "x [moderate-content]"}),
    )
    .await;
    assert_eq!(accepted.status, 202);
    let done = settled(&app, TOKENS[0], accepted.body["id"].as_str().expect("id")).await;
    assert_eq!(done.body["status"], "failed");
    assert_eq!(done.body["error"]["code"], "moderation_blocked", "{}", done.body);
    let invalid =
        post(&app, TOKENS[0], "/v1/async/images/generations", json!({"prompt": "x", "size": "3x3"})).await;
    assert_eq!((invalid.status, invalid.error_param()), (400, Some("size")));
    let streamed =
        post(&app, TOKENS[0], "/v1/async/images/generations", json!({"prompt": "x", "stream": true})).await;
    assert_eq!((streamed.status, streamed.error_param()), (400, Some("stream")));
}

#[tokio::test]
async fn an_async_edit_runs_to_its_end() {
    let app = app().await;
    let body = multipart(vec![
        text("model", "flux-2-klein-4b"),
        text("prompt", "make it red"),
        file("image", png(80, 64)),
    ]);
    let request = app
        .http
        .post(format!("{}/v1/async/images/edits", app.base))
        .bearer_auth(TOKENS[1])
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body);
    let accepted = send(&app, request).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let done = settled(&app, TOKENS[1], accepted.body["id"].as_str().expect("id")).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    assert_eq!(app.sim.received().len(), 1);
}
