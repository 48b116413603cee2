//! Client keys and their limits, and usage: who may call, how much, and what it cost.

use std::collections::HashMap;

use bfl_sim::SimConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Reply, TestApp, spawn_with};

const ADMIN: &str = "admin-secret";

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A `[[clients]]` entry as a configuration value.
fn client(id: &str, token: &str, extra: &[(&str, config::Value)]) -> config::Value {
    let mut table: HashMap<String, config::Value> = HashMap::new();
    table.insert("id".into(), id.into());
    table.insert("token_sha256".into(), digest(token).into());
    for (k, v) in extra {
        table.insert((*k).to_owned(), v.clone());
    }
    table.into()
}

async fn app(clients: Vec<config::Value>, extra: Vec<(&'static str, config::Value)>) -> TestApp {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    let mut overrides: Vec<(&'static str, config::Value)> = vec![
        ("server.auth", "keys".into()),
        ("clients", clients.into()),
        ("server.admin_token_sha256", digest(ADMIN).into()),
    ];
    overrides.extend(extra);
    spawn_with(sim, overrides).await
}

async fn call(app: &TestApp, token: Option<&str>, body: Value) -> Reply {
    let mut request = app.http.post(format!("{}/v1/images/generations", app.base)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Reply { status, headers, body: response.json().await.unwrap_or(Value::Null) }
}

async fn usage(app: &TestApp, token: Option<&str>) -> Reply {
    let mut request = app.http.get(format!("{}/v1/usage", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Reply { status, headers, body: response.json().await.unwrap_or(Value::Null) }
}

#[tokio::test]
async fn tokens_and_model_lists_are_enforced() {
    let limited = client("limited", "tok-limited", &[("models", vec!["flux-dev".to_owned()].into())]);
    let app = app(vec![client("open", "tok-open", &[]), limited], Vec::new()).await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "a kite"});
    assert_eq!(call(&app, None, body.clone()).await.status, 401);
    let wrong = call(&app, Some("tok-nope"), body.clone()).await;
    assert_eq!((wrong.status, wrong.error_code()), (401, Some("invalid_api_key")));
    assert_eq!(call(&app, Some("tok-open"), body.clone()).await.status, 200);
    let refused = call(&app, Some("tok-limited"), body).await;
    assert_eq!((refused.status, refused.error_code()), (403, Some("model_not_allowed")), "{}", refused.body);
    assert_eq!(
        call(&app, Some("tok-limited"), json!({"model": "flux-dev", "prompt": "x"})).await.status,
        200
    );
    assert_eq!(app.sim.submit_attempts(), 2, "the refused model never reached BFL");
}

#[tokio::test]
async fn rate_concurrency_and_budget_limits_are_429s_with_their_codes() {
    let rate = client("rate", "tok-rate", &[("requests_per_minute", 2.into())]);
    let busy = client("busy", "tok-busy", &[("max_concurrent_jobs", 1.into())]);
    let thrifty =
        client("thrifty", "tok-thrifty", &[("budget_usd", 0.05.into()), ("budget_period", "day".into())]);
    let app = app(vec![rate, busy, thrifty], Vec::new()).await;
    let body = json!({"model": "flux-dev", "prompt": "a kite"});

    for _ in 0..2 {
        assert_eq!(call(&app, Some("tok-rate"), body.clone()).await.status, 200);
    }
    let over = call(&app, Some("tok-rate"), body.clone()).await;
    assert_eq!((over.status, over.error_code()), (429, Some("rate_limit_exceeded")));
    assert!(over.header("retry-after").is_some());

    let slow = json!({"model": "flux-dev", "prompt": "slow [slow:800]"});
    let (first, second) = tokio::join!(call(&app, Some("tok-busy"), slow.clone()), async {
        crate::helpers::wait_for(|| app.sim.submit_attempts() >= 3).await;
        call(&app, Some("tok-busy"), body.clone()).await
    });
    assert_eq!(first.status, 200);
    assert_eq!(
        (second.status, second.error_code()),
        (429, Some("concurrency_limit_exceeded")),
        "{}",
        second.body
    );
    app.assert_settles().await;
    assert_eq!(call(&app, Some("tok-busy"), body.clone()).await.status, 200, "the slot came back");

    // flux-dev costs $0.02: two fit in $0.05, a third would not.
    for _ in 0..2 {
        assert_eq!(call(&app, Some("tok-thrifty"), body.clone()).await.status, 200);
    }
    let broke = call(&app, Some("tok-thrifty"), body.clone()).await;
    assert_eq!((broke.status, broke.error_code()), (429, Some("budget_exceeded")), "{}", broke.body);
    assert_eq!(broke.header("x-should-retry"), Some("false"));
    let n_two = call(&app, Some("tok-thrifty"), json!({"model": "flux-dev", "prompt": "x", "n": 2})).await;
    assert_eq!(n_two.status, 429, "a request is priced for all its images");
}

#[tokio::test]
async fn usage_counts_exactly_the_delivered_images_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let journal = dir.path().join("usage.jsonl").to_string_lossy().into_owned();
    let extra = || -> Vec<(&'static str, config::Value)> {
        vec![("usage.path", journal.clone().into()), ("models.flux-dev.deadline_secs", 1.into())]
    };
    let clients = || vec![client("acme", "tok-acme", &[]), client("other", "tok-other", &[])];
    let app = app(clients(), extra()).await;
    let ok = json!({"model": "flux-dev", "prompt": "a kite"});
    for _ in 0..3 {
        assert_eq!(call(&app, Some("tok-acme"), ok.clone()).await.status, 200);
    }
    assert_eq!(
        call(&app, Some("tok-acme"), json!({"model": "flux-dev", "prompt": "x", "n": 2})).await.status,
        200
    );
    assert_eq!(
        call(&app, Some("tok-acme"), json!({"model": "flux-dev", "prompt": "x", "size": "3x3"})).await.status,
        400
    );
    assert_eq!(
        call(&app, Some("tok-acme"), json!({"model": "flux-dev", "prompt": "x [moderate-content]"}))
            .await
            .status,
        403
    );
    assert_eq!(
        call(&app, Some("tok-acme"), json!({"model": "flux-dev", "prompt": "x [error]"})).await.status,
        502
    );
    assert_eq!(
        call(&app, Some("tok-acme"), json!({"model": "flux-dev", "prompt": "x [slow:3000]"})).await.status,
        504
    );
    assert_eq!(
        call(&app, Some("tok-other"), json!({"model": "flux-2-klein-4b", "prompt": "x"})).await.status,
        200
    );

    assert_eq!(usage(&app, None).await.status, 401);
    assert_eq!(usage(&app, Some("tok-acme")).await.status, 401, "a client token is not the admin token");
    let report = usage(&app, Some(ADMIN)).await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.body["object"], "list");
    let rows = report.body["data"].as_array().expect("rows").clone();
    let acme =
        rows.iter().find(|r| r["client_id"] == "acme" && r["model"] == "flux-dev").expect("acme's row");
    assert_eq!(acme["images"], 5, "3 + n=2 delivered images: {acme}");
    assert!((acme["price_usd"].as_f64().expect("price") - 0.10).abs() < 1e-9, "{acme}");
    assert_eq!(acme["failures"]["moderation_blocked"], 1, "{acme}");
    assert_eq!(acme["failures"]["upstream_error"], 1, "{acme}");
    assert_eq!(acme["failures"]["upstream_timeout"], 1, "{acme}");
    assert!(acme["failures"].get("invalid_value").is_none(), "a 400 reaches no model: {acme}");
    let other = rows.iter().find(|r| r["client_id"] == "other").expect("other's row");
    assert_eq!((other["model"].as_str(), other["images"].as_u64()), (Some("flux-2-klein-4b"), Some(1)));
    let future = app
        .http
        .get(format!("{}/v1/usage?since=4102444800", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("answers");
    assert_eq!(future.json::<Value>().await.expect("json")["data"], json!([]), "since filters");
    app.assert_settles().await;
    drop(app);

    let restarted = self::app(clients(), extra()).await;
    let again = usage(&restarted, Some(ADMIN)).await;
    assert_eq!(again.body["data"], report.body["data"], "usage survives a restart");
}
