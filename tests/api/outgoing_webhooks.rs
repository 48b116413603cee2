//! Outgoing webhooks: signed as Standard Webhooks says, retried with the same id until the
//! receiver accepts, and never sent to a target the rules refuse.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fluxgate::config::{Settings, Sources};
use fluxgate::webhooks::{WebhookSender, check_target};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio_util::task::TaskTracker;

use crate::helpers::wait_for;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

/// A receiver on 127.0.0.1 that answers 500 to the first `failures` requests, then 204.
async fn receiver(failures: usize) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut seen = record.lock().unwrap();
                seen.push(Seen {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body,
                });
                if seen.len() <= failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn settings(extra: Vec<(&'static str, config::Value)>) -> Settings {
    let mut overrides: Vec<(&str, config::Value)> = vec![
        ("jobs.webhook_secret", SECRET.into()),
        ("jobs.webhook_allowed_hosts", vec!["127.0.0.1".to_owned()].into()),
        ("jobs.webhook_retry_base_ms", 10.into()),
    ];
    overrides.extend(extra);
    Settings::load(Sources { overrides, ..Sources::default() }).expect("valid settings")
}

/// The Standard Webhooks check, computed here independently of the gateway's signer.
fn verifies(seen: &Seen) -> bool {
    let key = STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", seen.id, seen.timestamp).as_bytes());
    mac.update(&seen.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    seen.signature.split(' ').any(|s| s == expected)
}

#[tokio::test]
async fn a_webhook_is_retried_with_the_same_id_until_the_receiver_accepts_and_every_attempt_verifies() {
    let (addr, seen) = receiver(2).await;
    let settings = settings(Vec::new());
    let tracker = TaskTracker::new();
    let sender = WebhookSender::new(settings.webhooks.clone(), tracker.clone()).unwrap();
    let url = check_target(&format!("http://{addr}/hook"), &settings.webhooks).expect("an allowed host");
    let body = json!({"id": "job_1", "object": "image.job", "status": "succeeded"});
    assert!(sender.send("evt_1".to_owned(), url, body.clone()));
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.expect("delivery ends");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two failures, then the accepted attempt");
    assert!(seen.iter().all(|s| s.id == "evt_1"), "the same webhook-id each time");
    for attempt in &seen {
        assert!(verifies(attempt), "signature verifies: {attempt:?}");
        assert!(attempt.timestamp.parse::<u64>().is_ok());
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&attempt.body).unwrap(), body);
    }
    assert_eq!(sender.pending(), 0);
}

#[tokio::test]
async fn a_webhook_stops_after_its_last_attempt() {
    let (addr, seen) = receiver(usize::MAX).await;
    let settings = settings(vec![("jobs.webhook_max_attempts", 2.into())]);
    let tracker = TaskTracker::new();
    let sender = WebhookSender::new(settings.webhooks.clone(), tracker.clone()).unwrap();
    let url = check_target(&format!("http://{addr}/hook"), &settings.webhooks).unwrap();
    assert!(sender.send("evt_2".to_owned(), url, json!({})));
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.expect("delivery ends");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn shutdown_stops_retries_but_not_the_attempt_in_flight() {
    let (addr, seen) = receiver(usize::MAX).await;
    let settings = settings(vec![("jobs.webhook_retry_base_ms", 60_000.into())]);
    let tracker = TaskTracker::new();
    let sender = WebhookSender::new(settings.webhooks.clone(), tracker.clone()).unwrap();
    let url = check_target(&format!("http://{addr}/hook"), &settings.webhooks).unwrap();
    assert!(sender.send("evt_3".to_owned(), url.clone(), json!({})));
    wait_for(|| seen.lock().unwrap().len() == 1).await;
    sender.stop_retrying();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("the retry wait is cut short");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(!sender.send("evt_4".to_owned(), url, json!({})), "nothing new starts after shutdown");
}

#[tokio::test]
async fn a_target_off_the_rules_is_a_400_naming_webhook_url() {
    let settings = settings(Vec::new());
    for url in
        ["http://example.com/hook", "https://localhost/hook", "https://10.0.0.1/hook", "https://[::1]/"]
    {
        let err = check_target(url, &settings.webhooks).expect_err(url);
        let response = axum::response::IntoResponse::into_response(err);
        assert_eq!(response.status(), 400, "{url}");
    }
    let unconfigured = Settings::load(Sources::default()).unwrap();
    let err = check_target("https://example.com/hook", &unconfigured.webhooks).expect_err("no secret");
    assert!(err.to_string().contains("jobs.webhook_secret"), "{err}");
}

#[tokio::test]
async fn an_async_job_with_a_webhook_url_posts_its_job_object_once_when_it_ends() {
    let (addr, seen) = receiver(1).await;
    let sim = bfl_sim::SimConfig { time_scale: 0.02, ..bfl_sim::SimConfig::default() };
    let app = crate::helpers::spawn_with(
        sim,
        vec![
            ("jobs.webhook_secret", SECRET.into()),
            ("jobs.webhook_allowed_hosts", vec!["127.0.0.1".to_owned()].into()),
            ("jobs.webhook_retry_base_ms", 10.into()),
        ],
    )
    .await;
    let body =
        json!({"model": "flux-2-klein-4b", "prompt": "a kite", "webhook_url": format!("http://{addr}/hook")});
    let accepted = app.post_json("/v1/async/images/generations", &body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.body["id"].as_str().expect("id").to_owned();
    wait_for(|| seen.lock().unwrap().len() >= 2).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed attempt, then one accepted");
    assert_eq!(seen[0].id, format!("evt_{id}"));
    assert_eq!(seen[0].id, seen[1].id, "a retry keeps the webhook id");
    let object: serde_json::Value = serde_json::from_slice(&seen[1].body).expect("json");
    assert_eq!((object["id"].as_str(), object["status"].as_str()), (Some(id.as_str()), Some("succeeded")));
    assert!(object["data"][0]["url"].is_string(), "{object}");
    let refused = app
        .post_json(
            "/v1/async/images/generations",
            &json!({"prompt": "x", "webhook_url": "http://10.0.0.1/hook"}),
        )
        .await;
    assert_eq!((refused.status, refused.error_param()), (400, Some("webhook_url")));
}
