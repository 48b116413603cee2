//! `/v1/models`, probes, request ids, unknown routes and client authentication.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_with};

#[tokio::test]
async fn the_model_list_has_all_thirteen_models_in_openai_shape() {
    let app = spawn_app().await;
    let reply = app.get("/v1/models").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["object"], "list");
    let data = reply.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 13);
    assert!(data.iter().any(|m| m["id"] == "flux-2-klein-9b-preview"));
    for m in data {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "black-forest-labs");
        assert!(m["created"].as_u64().is_some());
    }
    let one = app.get("/v1/models/flux-kontext-max").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["id"], "flux-kontext-max");
    let missing = app.get("/v1/models/flux-0").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), Some("model_not_found"));
}

#[tokio::test]
async fn probes_answer_and_every_response_carries_a_request_id() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    let unknown = app.get("/v2/nothing").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_type(), Some("invalid_request_error"));
    assert!(unknown.header("x-request-id").is_some_and(|id| id.starts_with("req_")));
}

#[tokio::test]
async fn a_sane_caller_request_id_is_kept_and_an_insane_one_replaced() {
    let app = spawn_app().await;
    let kept = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("ok");
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
    let replaced = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .expect("ok");
    assert_ne!(replaced.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn configured_client_tokens_are_required_on_the_api_but_not_on_probes() {
    let app = spawn_with(
        bfl_sim::SimConfig { time_scale: 0.02, ..Default::default() },
        vec![("server.api_keys", vec!["sk-good".to_owned(), "sk-other".to_owned()].into())],
    )
    .await;
    let url = format!("{}/v1/images/generations", app.base);
    let body = json!({"model": "flux-2-klein-4b", "prompt": "x"});
    let none = app.http.post(&url).json(&body).send().await.expect("answers");
    assert_eq!(none.status(), 401);
    let wrong = app.http.post(&url).bearer_auth("sk-bad").json(&body).send().await.expect("answers");
    assert_eq!(wrong.status(), 401);
    let good = app.http.post(&url).bearer_auth("sk-other").json(&body).send().await.expect("answers");
    assert_eq!(good.status(), 200);
    let lowercase_scheme = app
        .http
        .post(&url)
        .header("authorization", "bearer sk-good")
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert_eq!(lowercase_scheme.status(), 200, "the auth scheme is case-insensitive");
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.sim.submit_attempts(), 2);
}
