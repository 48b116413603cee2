//! The real binary as an operator runs it: traces reach an OTLP collector, and no secret (BFL key,
//! client or admin token, webhook secrets) ever appears in a log line or a response. Every loop
//! here is bounded; all traffic stays on loopback.

#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Every POST a receiver got: path, headers, body.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then the process's stderr once it has exited (bounded by the drain settings).
    fn stop(mut self) -> String {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
        let status = self.0.wait().expect("exits");
        assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
        let mut log = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            let _ = stderr.read_to_string(&mut log);
        }
        log
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn fluxgate(args: &[&str], env: &[(&str, String)]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FLUXGATE__") || key == "BFL_API_KEY" || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).env("FLUXGATE__SERVER__DRAIN_DELAY_MS", "0").stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    Running(cmd.spawn().expect("fluxgate starts"))
}

async fn ready(url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if reqwest::get(url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} was not ready within 20 s");
}

/// A receiver for OTLP exports and webhooks: every POST, with its path and body.
async fn receiver() -> (u16, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .fallback(post(|State(seen): State<Seen>, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            seen.lock().unwrap().push((uri.path().to_owned(), headers, body));
            StatusCode::OK
        }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

#[tokio::test]
async fn spans_reach_an_otlp_collector() {
    let (collector, seen) = receiver().await;
    let port = free_port();
    let demo = fluxgate(
        &["demo", "--time-scale", "0.02"],
        &[
            ("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("FLUXGATE__TELEMETRY__OTLP_ENDPOINT", format!("http://127.0.0.1:{collector}")),
            ("RUST_LOG", "info".into()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    ready(&format!("{base}/readyz")).await;
    let reply = reqwest::Client::new()
        .post(format!("{base}/v1/images/generations"))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "a kite", "response_format": "b64_json"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(reply.status(), 200);
    // Shutting down flushes the spans still queued.
    let log = tokio::task::spawn_blocking(move || demo.stop()).await.unwrap();
    let seen = seen.lock().unwrap();
    let traces: Vec<_> = seen.iter().filter(|(path, _, _)| path == "/v1/traces").collect();
    assert!(!traces.is_empty(), "no export reached the collector; log:\n{log}");
    assert!(traces.iter().all(|(_, h, _)| h["content-type"] == "application/x-protobuf"));
    let all: Vec<u8> = traces.iter().flat_map(|(_, _, b)| b.to_vec()).collect();
    for name in ["request", "job", "queue_wait", "submit", "poll", "delivery", "fluxgate"] {
        assert!(all.windows(name.len()).any(|w| w == name.as_bytes()), "span `{name}` was not exported");
    }
}

#[tokio::test]
async fn no_secret_appears_in_any_log_line_or_response() {
    const BFL_KEY: &str = "bfl-key-9d1e55aa17";
    const CLIENT: &str = "tok-client-4c0ffee8d2";
    const ADMIN: &str = "tok-admin-77ab12ef90";
    const UPSTREAM_SECRET: &str = "upstream-hook-secret-3f9c1d";
    const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let secrets =
        [BFL_KEY, CLIENT, ADMIN, UPSTREAM_SECRET, WEBHOOK_SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"];

    let (hooks, seen) = receiver().await;
    let sim_port = free_port();
    let sim = fluxgate(
        &[
            "simulate",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--time-scale",
            "0.02",
            "--keys",
            BFL_KEY,
        ],
        &[],
    );
    let sim_base = format!("http://127.0.0.1:{sim_port}");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fluxgate.toml");
    let digest = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    std::fs::write(&config, format!("[[clients]]\nid = \"acme\"\ntoken_sha256 = \"{}\"\n", digest(CLIENT)))
        .unwrap();
    let gateway = fluxgate(
        &["serve", "--config", config.to_str().unwrap()],
        &[
            ("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}")),
            ("FLUXGATE__SERVER__ADMIN_TOKEN_SHA256", digest(ADMIN)),
            ("FLUXGATE__UPSTREAM__BASE_URL", sim_base.clone()),
            ("FLUXGATE__UPSTREAM__KEYS", BFL_KEY.into()),
            ("FLUXGATE__UPSTREAM__ALLOWED_HOSTS", format!("127.0.0.1:{sim_port}")),
            ("FLUXGATE__UPSTREAM__ALLOW_HTTP", "true".into()),
            ("FLUXGATE__UPSTREAM__FIRST_POLL_SCALE", "0.02".into()),
            ("FLUXGATE__UPSTREAM__WEBHOOK_BASE_URL", base.clone()),
            ("FLUXGATE__UPSTREAM__WEBHOOK_SECRET", UPSTREAM_SECRET.into()),
            ("FLUXGATE__JOBS__WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            ("FLUXGATE__JOBS__WEBHOOK_ALLOWED_HOSTS", "127.0.0.1".into()),
            ("FLUXGATE__USAGE__PATH", dir.path().join("usage.jsonl").to_string_lossy().into_owned()),
            // Everything every crate says, to be sure nothing says a secret.
            ("RUST_LOG", "debug".into()),
        ],
    );
    ready(&format!("{sim_base}/sim/stats")).await;
    ready(&format!("{base}/readyz")).await;

    let http = reqwest::Client::new();
    let mut transcript = String::new();
    let record = |response: reqwest::Response| async move {
        let mut text = format!("{}\n", response.status());
        for (name, value) in response.headers() {
            text += &format!("{name}: {}\n", value.to_str().unwrap_or(""));
        }
        text + &response.text().await.unwrap_or_default()
    };
    let generate = |token: &str, body: Value| {
        http.post(format!("{base}/v1/images/generations")).bearer_auth(token).json(&body).send()
    };
    transcript +=
        &record(generate(CLIENT, json!({"model": "flux-2-klein-4b", "prompt": "a kite"})).await.unwrap())
            .await;
    transcript += &record(
        generate(CLIENT, json!({"model": "flux-2-klein-4b", "prompt": "b64", "response_format": "b64_json"}))
            .await
            .unwrap(),
    )
    .await;
    transcript += &record(
        generate(CLIENT, json!({"model": "flux-2-klein-4b", "prompt": "s", "stream": true})).await.unwrap(),
    )
    .await;
    transcript += &record(
        generate(CLIENT, json!({"model": "flux-2-klein-4b", "prompt": "x [moderate-request]"}))
            .await
            .unwrap(),
    )
    .await;
    transcript += &record(generate("tok-wrong", json!({"prompt": "x"})).await.unwrap()).await;
    transcript += &record(generate(CLIENT, json!({"prompt": "x", "size": "3x3"})).await.unwrap()).await;
    let accepted = http
        .post(format!("{base}/v1/async/images/generations"))
        .bearer_auth(CLIENT)
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "async", "webhook_url": format!("http://127.0.0.1:{hooks}/hook")}))
        .send()
        .await
        .unwrap();
    transcript += &record(accepted).await;
    let started = Instant::now();
    while seen.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, headers, body) in seen.lock().unwrap().iter() {
        transcript += &format!("{headers:?}\n{}", String::from_utf8_lossy(body));
    }
    transcript +=
        &record(http.get(format!("{base}/v1/usage")).bearer_auth(ADMIN).send().await.unwrap()).await;
    transcript += &record(http.get(format!("{base}/metrics")).bearer_auth(ADMIN).send().await.unwrap()).await;
    transcript +=
        &record(http.get(format!("{base}/v1/models")).bearer_auth(CLIENT).send().await.unwrap()).await;
    assert!(
        transcript.contains("acme") && transcript.contains("webhook-signature"),
        "the run did its work:\n{transcript:.2000}"
    );

    let log = tokio::task::spawn_blocking(move || gateway.stop()).await.unwrap();
    drop(sim);
    assert!(log.contains("usage: image billed"), "the log was captured:\n{log:.2000}");
    for secret in secrets {
        assert!(!log.contains(secret), "the log carries a secret ({secret}):\n{log}");
        assert!(!transcript.contains(secret), "a response carries a secret ({secret})");
    }
}
