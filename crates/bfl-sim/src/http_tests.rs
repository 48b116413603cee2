//! End-to-end tests of the simulator over HTTP: one real-socket round trip with reqwest, the rest
//! through the router in-process (with tokio's paused clock where time matters).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Faults, SimConfig, Simulator};

fn sim(cfg: SimConfig) -> (Arc<Simulator>, Router) {
    let s = Simulator::new(SimConfig { keys: vec!["k1".into(), "k2".into()], ..cfg });
    let app = s.router();
    (s, app)
}

/// Sends one request through the router: (status, content type, body bytes).
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri).header("host", "sim.test:9");
    if let Some(k) = key {
        req = req.header("x-key", k);
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    let resp = app.clone().oneshot(req.expect("request")).await.expect("infallible");
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.expect("body");
    (status, ct, bytes.to_vec())
}

async fn submit(app: &Router, model: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, b) = call(app, "POST", &format!("/v1/{model}"), Some("k1"), Some(body)).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn poll(app: &Router, id: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(app, "GET", &format!("/v1/get_result?id={id}"), Some("k1"), None).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn path_of(url: &str) -> &str {
    url.strip_prefix("http://sim.test:9").expect("URL built on the Host header")
}

#[tokio::test]
async fn a_job_runs_to_ready_over_a_real_socket_and_its_image_downloads() {
    let s = Simulator::new(SimConfig { keys: vec!["k1".into()], time_scale: 0.01, ..SimConfig::default() });
    let addr = s.spawn(([127, 0, 0, 1], 0).into()).await.expect("bind");
    let http = reqwest::Client::new();
    let body = json!({"prompt": "a fox", "width": 256, "height": 128, "output_format": "png", "seed": 9});
    let resp =
        http.post(format!("http://{addr}/v1/flux-2-pro")).header("x-key", "k1").json(&body).send().await;
    let sub: Value = resp.expect("submit").json().await.expect("json");
    let polling_url = sub["polling_url"].as_str().expect("polling_url").to_owned();
    assert!(polling_url.starts_with(&format!("http://{addr}/v1/get_result?id=")), "{polling_url}");
    assert_eq!(sub["output_mp"], json!(0.03));
    let mut last = Value::Null;
    for _ in 0..400 {
        last = http
            .get(&polling_url)
            .header("x-key", "k1")
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("json");
        if last["status"] != "Pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last["status"], "Ready", "{last}");
    assert_eq!(last["result"]["prompt"], "a fox, highly detailed, cinematic lighting");
    assert_eq!(last["result"]["seed"], 9);
    let sample = last["result"]["sample"].as_str().expect("sample URL");
    for _ in 0..2 {
        let img = http.get(sample).send().await.expect("download");
        assert_eq!(img.headers()["content-type"], "image/png");
        assert!(img.headers().get("access-control-allow-origin").is_none());
        let bytes = img.bytes().await.expect("bytes");
        let size = imagesize::blob_size(&bytes).expect("an image");
        assert_eq!((size.width, size.height), (256, 128));
    }
    let forged = sample.replace("sig=", "sig=00");
    assert_eq!(http.get(forged).send().await.expect("forged").status(), 403);
    assert_eq!((s.received().len(), s.polls() >= 1, s.active_tasks()), (1, true, 0));
}

#[tokio::test]
async fn auth_routing_and_validation_answer_like_bfl() {
    let (s, app) = sim(SimConfig::default());
    let ok = json!({"prompt": "x"});
    assert_eq!(call(&app, "POST", "/v1/flux-2-pro", None, Some(ok.clone())).await.0, 403);
    assert_eq!(call(&app, "POST", "/v1/flux-2-pro", Some("nope"), Some(ok.clone())).await.0, 403);
    let (st, _, b) = call(&app, "POST", "/v1/flux-3", Some("k1"), Some(ok.clone())).await;
    assert_eq!((st, b), (StatusCode::NOT_FOUND, br#"{"detail":"Not Found"}"#.to_vec()));
    let (st, v) = submit(&app, "flux-2-pro", json!({"width": 1000})).await;
    assert_eq!(st, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "prompt"]));
    assert_eq!(v["detail"][1]["loc"], json!(["body", "width"]));
    let (st, v) = submit(&app, "flux-pro-1.1-ultra", json!({"aspect_ratio": "1:5"})).await;
    assert_eq!(
        (st, v),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": "Aspect ratio must be between 21:9 and 9:21"}))
    );
    let (st, v) = submit(&app, "flux-2-klein-4b", json!({"prompt": "[submit:402] x"})).await;
    assert_eq!(st, 402);
    assert!(v["detail"].as_str().is_some_and(|d| d.starts_with("Insufficient credits")));
    assert_eq!(
        submit(&app, "flux-2-klein-4b", json!({"prompt": "[submit:422]"})).await.1["detail"][0]["loc"],
        json!(["body", "prompt"])
    );
    assert_eq!(
        poll(&app, "no-such-task").await,
        (StatusCode::NOT_FOUND, json!({"id": "no-such-task", "status": "Task not found"}))
    );
    assert_eq!(call(&app, "GET", "/v1/get_result", Some("k1"), None).await.0, 422);
    s.set_out_of_credits("k1", true);
    assert_eq!(submit(&app, "flux-dev", json!({})).await.0, 402);
    s.set_out_of_credits("k1", false);
    let (st, v) = submit(&app, "flux-dev", json!({})).await;
    assert_eq!(st, 200);
    s.revoke_key("k1");
    assert_eq!(poll(&app, v["id"].as_str().unwrap_or("")).await.0, 403);
    assert_eq!(s.submit_attempts(), 9);
    assert_eq!(s.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn caps_are_per_key_and_slots_free_when_tasks_finish() {
    let (s, app) = sim(SimConfig { task_cap: 2, kontext_max_cap: 1, ..SimConfig::default() });
    assert_eq!(submit(&app, "flux-kontext-max", json!({"prompt": "[slow:1000]"})).await.0, 200);
    assert_eq!(submit(&app, "flux-kontext-max", json!({"prompt": "x"})).await.0, 429);
    assert_eq!(submit(&app, "flux-2-pro", json!({"prompt": "[hang]"})).await.0, 200);
    let (st, v) = submit(&app, "flux-2-klein-4b", json!({"prompt": "x"})).await;
    assert_eq!(
        (st, v),
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"detail": "You have reached the maximum number of active tasks"})
        )
    );
    let (_, _, b) = call(&app, "POST", "/v1/flux-2-klein-4b", Some("k2"), Some(json!({"prompt": "x"}))).await;
    assert!(
        serde_json::from_slice::<Value>(&b).is_ok_and(|v| v["id"].is_string()),
        "another key has its own slots"
    );
    assert_eq!((s.active_tasks(), s.peak_active(), s.rejected_429()), (3, 3, 2));
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(s.active_tasks(), 1, "only the hung task remains");
    assert_eq!(submit(&app, "flux-2-klein-4b", json!({"prompt": "x"})).await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn progress_outcomes_and_poll_triggers_follow_the_prompt() {
    let (s, app) = sim(SimConfig { time_scale: 1.0, ..SimConfig::default() });
    let id_of = |v: Value| v["id"].as_str().unwrap_or("").to_owned();
    let max =
        id_of(submit(&app, "flux-2-max", json!({"prompt": "[slow:9000] x", "disable_pup": true})).await.1);
    let nf = id_of(submit(&app, "flux-dev", json!({"prompt": "[notfound:2] [status:Exploded]"})).await.1);
    let moderated = id_of(submit(&app, "flux-dev", json!({"prompt": "[moderate-content]"})).await.1);
    let err = id_of(submit(&app, "flux-dev", json!({"prompt": "[error]"})).await.1);
    let broken = id_of(submit(&app, "flux-dev", json!({"prompt": "[poll-status:500]"})).await.1);
    let (_, v) = poll(&app, &max).await;
    assert_eq!(
        (v["status"].as_str(), v["progress"].as_f64(), &v["result"]),
        (Some("Reasoning"), Some(0.0), &Value::Null)
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(poll(&app, &max).await.1["status"], "Pending");
    assert_eq!(poll(&app, &nf).await.0, 404);
    assert_eq!(poll(&app, &nf).await.0, 404);
    tokio::time::advance(Duration::from_secs(6)).await;
    let (_, v) = poll(&app, &max).await;
    assert_eq!(
        (v["status"].as_str(), v["result"]["prompt"].as_str()),
        (Some("Ready"), Some("[slow:9000] x"))
    );
    assert_eq!(poll(&app, &nf).await.1["status"], "Exploded");
    assert_eq!(poll(&app, &moderated).await.1["status"], "Content Moderated");
    let (_, v) = poll(&app, &err).await;
    assert_eq!((v["status"].as_str(), v["details"].is_object()), (Some("Error"), true));
    assert_eq!(poll(&app, &broken).await.0, 500);
    let info = s.task(&nf).expect("task");
    assert_eq!(
        (info.polls, info.status_when_done.as_str(), info.model_path.as_str()),
        (3, "Exploded", "/v1/flux-dev")
    );
    assert_eq!(s.received()[1].body["prompt"], "[notfound:2] [status:Exploded]");
}

#[tokio::test(start_paused = true)]
async fn result_urls_expire_and_cannot_be_forged() {
    let ttl = Duration::from_secs(600);
    let (_s, app) = sim(SimConfig { result_ttl: ttl, ..SimConfig::default() });
    let (_, v) =
        submit(&app, "flux-kontext-pro", json!({"prompt": "[slow:0]", "aspect_ratio": "16:9"})).await;
    let (_, v) = poll(&app, v["id"].as_str().unwrap_or("")).await;
    let sample = v["result"]["sample"].as_str().expect("ready at once").to_owned();
    let (st, ct, bytes) = call(&app, "GET", path_of(&sample), None, None).await;
    assert_eq!((st, ct.as_str()), (StatusCode::OK, "image/png"));
    let size = imagesize::blob_size(&bytes).expect("image");
    assert!(size.width > size.height && size.width.is_multiple_of(32));
    let other_ext = path_of(&sample).replace(".png?", ".jpeg?");
    assert_eq!(call(&app, "GET", &other_ext, None, None).await.0, 403);
    tokio::time::advance(ttl + Duration::from_secs(1)).await;
    let (st, ct, body) = call(&app, "GET", path_of(&sample), None, None).await;
    assert_eq!((st, ct.as_str()), (StatusCode::FORBIDDEN, "application/xml"));
    assert!(String::from_utf8_lossy(&body).contains("AuthenticationFailed"));
}

#[tokio::test]
async fn faults_are_injected_at_the_configured_rates() {
    let faults = Faults { submit_error_rate: 1.0, ..Faults::default() };
    let (s, app) = sim(SimConfig { faults, ..SimConfig::default() });
    let st = submit(&app, "flux-dev", json!({})).await.0;
    assert!(st == 500 || st == 503, "{st}");
    assert!(s.received().is_empty());
    s.set_faults(Faults::default());
    let (_, v) = submit(&app, "flux-dev", json!({"prompt": "[slow:0]"})).await;
    let id = v["id"].as_str().unwrap_or("").to_owned();
    s.set_faults(Faults { poll_garbage_rate: 1.0, ..Faults::default() });
    let (st, _, body) = call(&app, "GET", &format!("/v1/get_result?id={id}"), Some("k1"), None).await;
    assert_eq!(st, 200);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    s.set_faults(Faults { poll_hang_rate: 1.0, ..Faults::default() });
    let hung = tokio::time::timeout(Duration::from_millis(50), poll(&app, &id)).await;
    assert!(hung.is_err(), "a hung poll never answers");
    s.set_faults(Faults::default());
    assert_eq!(poll(&app, &id).await.1["status"], "Ready");
    assert_eq!(s.polls(), 3);
}

#[tokio::test]
async fn fuzzed_bodies_never_crash_the_simulator() {
    let (_s, app) = sim(SimConfig::default());
    let huge = json!({"prompt": "x", "width": 1e308, "height": -9_223_372_036_854_775_808i64, "seed": 18_446_744_073_709_551_615u64});
    let bodies = [
        huge,
        json!({"prompt": ["x"], "input_image": {"a": 1}, "safety_tolerance": "high", "aspect_ratio": 16}),
        json!({"prompt": "x", "input_image": "////", "input_image_8": "", "guidance": "nan"}),
        json!(null),
        json!("string body"),
    ];
    for model in ["flux-2-pro", "flux-2-flex", "flux-kontext-max", "flux-pro-1.1-ultra", "flux-pro"] {
        for b in &bodies {
            let st = submit(&app, model, b.clone()).await.0;
            assert!(st == 422 || st == 200, "{model} {b} -> {st}");
        }
    }
    assert_eq!(call(&app, "GET", "/results/%FF.png?exp=1&sig=zz", None, None).await.0, 404);
    assert_eq!(call(&app, "GET", "/results/a.png?exp=-1&sig=zz", None, None).await.0, 403);
}

#[tokio::test(start_paused = true)]
async fn finished_tasks_and_their_images_are_forgotten_once_the_result_url_expires() {
    let ttl = Duration::from_secs(60);
    let (s, app) = sim(SimConfig { result_ttl: ttl, ..SimConfig::default() });
    let (_, v) =
        submit(&app, "flux-2-pro", json!({"prompt": "[slow:1000]", "width": 64, "height": 64})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    tokio::time::advance(Duration::from_secs(1)).await;
    let (_, v) = poll(&app, &id).await;
    let sample = v["result"]["sample"].as_str().expect("ready").to_owned();
    assert_eq!(call(&app, "GET", path_of(&sample), None, None).await.0, 200);
    tokio::time::advance(ttl).await;
    assert_eq!(poll(&app, &id).await.1["status"], "Ready", "kept through the URL's last instant");
    // Just past the deadline the task is gone while the URL's millisecond has not yet passed: the
    // link answers as expired all the same.
    tokio::time::advance(Duration::from_micros(1)).await;
    assert_eq!(poll(&app, &id).await, (StatusCode::NOT_FOUND, json!({"id": id, "status": "Task not found"})));
    let (st, ct, body) = call(&app, "GET", path_of(&sample), None, None).await;
    assert_eq!((st, ct.as_str()), (StatusCode::FORBIDDEN, "application/xml"));
    assert!(String::from_utf8_lossy(&body).contains("Signed expiry time has passed"));
    assert!(s.task(&id).is_none());
    assert_eq!(s.task_list(), json!([]));
    assert_eq!((s.stats()["accepted"].as_u64(), s.received().len()), (Some(1), 1), "counters remain");
}

#[tokio::test(start_paused = true)]
async fn steady_traffic_keeps_only_the_tasks_of_the_last_result_ttl() {
    let ttl = Duration::from_secs(10);
    let (s, app) = sim(SimConfig { result_ttl: ttl, ..SimConfig::default() });
    let mut kept = Vec::new();
    for i in 0..100 {
        assert_eq!(
            submit(&app, "flux-2-klein-4b", json!({"prompt": format!("{i} [slow:500]")})).await.0,
            200
        );
        kept.push(s.task_list().as_array().map_or(0, Vec::len));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(kept.iter().all(|&n| n <= 11), "{kept:?}");
    assert_eq!(kept.last(), Some(&11));
    assert_eq!(s.stats()["accepted"], 100);
}

#[tokio::test(start_paused = true)]
async fn hung_tasks_hold_their_slot_until_their_bound_then_are_forgotten() {
    let hung_ttl = Duration::from_secs(2 * 3600);
    let cfg = SimConfig {
        task_cap: 1,
        result_ttl: Duration::from_secs(1),
        hung_task_ttl: hung_ttl,
        ..SimConfig::default()
    };
    let (s, app) = sim(cfg);
    let (_, v) = submit(&app, "flux-dev", json!({"prompt": "[hang]"})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    tokio::time::advance(hung_ttl - Duration::from_secs(1)).await;
    assert_eq!(poll(&app, &id).await.1["status"], "Pending", "an active task is never forgotten");
    assert_eq!(submit(&app, "flux-dev", json!({"prompt": "x"})).await.0, 429, "it still holds its slot");
    assert_eq!(s.active_tasks(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(poll(&app, &id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.active_tasks(), 0);
    assert_eq!(submit(&app, "flux-dev", json!({"prompt": "x"})).await.0, 200, "its slot is free again");
}

#[tokio::test]
async fn the_received_log_keeps_only_the_newest_submits() {
    let (s, app) = sim(SimConfig { received_capacity: 3, ..SimConfig::default() });
    for i in 0..5 {
        assert_eq!(submit(&app, "flux-dev", json!({"prompt": format!("p{i} [slow:0]")})).await.0, 200);
    }
    let prompts: Vec<_> = s.received().iter().map(|r| r.body["prompt"].clone()).collect();
    assert_eq!(prompts, vec![json!("p2 [slow:0]"), json!("p3 [slow:0]"), json!("p4 [slow:0]")]);
    let (none, app) = sim(SimConfig { received_capacity: 0, ..SimConfig::default() });
    assert_eq!(submit(&app, "flux-dev", json!({"prompt": "x"})).await.0, 200);
    assert!(none.received().is_empty());
}

/// A receiver on loopback that records each webhook's headers and body.
async fn webhook_receiver() -> (String, Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                record.lock().expect("not poisoned").push((headers, body.to_vec()));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn a_finished_task_calls_its_webhook_with_the_secret_and_a_signature_of_the_body() {
    let (url, seen) = webhook_receiver().await;
    let (s, app) = sim(SimConfig { time_scale: 0.001, ..SimConfig::default() });
    let body = json!({"prompt": "a cat", "webhook_url": url, "webhook_secret": "s3cret"});
    let (status, reply) = submit(&app, "flux-dev", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["webhook_url"], json!(url));
    assert!(reply.get("polling_url").is_none(), "BFL's AsyncWebhookResponse has no polling_url");
    let id = reply["id"].as_str().expect("id").to_owned();
    for _ in 0..400 {
        if s.webhooks_sent() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers["x-webhook-secret"], "s3cret");
    assert_eq!(
        headers["x-bfl-signature"].to_str().expect("ascii"),
        super::webhooks::signature("s3cret", body)
    );
    let doc: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(doc["id"], json!(id));
    assert_eq!(doc["status"], "Ready");
    assert!(doc["result"]["sample"].as_str().is_some());
    assert_eq!(poll(&app, &id).await.1["status"], "Ready", "the task can still be polled");
}

#[tokio::test]
async fn a_dropped_webhook_is_never_sent() {
    let (url, seen) = webhook_receiver().await;
    let (s, app) = sim(SimConfig { time_scale: 0.001, ..SimConfig::default() });
    let body = json!({"prompt": "a cat [webhook:drop]", "webhook_url": url, "webhook_secret": "x"});
    assert_eq!(submit(&app, "flux-dev", body).await.0, StatusCode::OK);
    for _ in 0..100 {
        if s.webhooks_dropped() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.webhooks_dropped(), 1);
    assert!(seen.lock().expect("not poisoned").is_empty());
}
