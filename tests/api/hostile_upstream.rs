//! Upstreams the simulator cannot imitate: a body that trickles forever and a connection reset.
//! No request outlives its model's deadline by more than a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bfl_sim::SimConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::spawn_with;

/// A TCP server on loopback that either trickles (`slow`) or drops every connection after reading
/// the request; it counts the connections it accepted.
async fn fake_upstream(slow: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                if slow {
                    // Headers, then a body that never completes.
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{").await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                // Dropping the socket resets or closes the connection mid-exchange.
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

/// `127.0.0.1:PORT` of `http://127.0.0.1:PORT`: the allow-list entry for a fake upstream.
fn host_of(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_trickling_upstream_body_ends_at_the_deadline() {
    let (base, _) = fake_upstream(true).await;
    let app = spawn_with(
        SimConfig::default(),
        vec![
            ("upstream.allowed_hosts", vec![host_of(&base)].into()),
            ("upstream.base_url", base.into()),
            ("models.flux-2-klein-4b.deadline_secs", 1.into()),
            ("upstream.request_timeout_ms", 3000.into()),
        ],
    )
    .await;
    let started = Instant::now();
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The submit had gone out, so BFL may have the job: no retry, and the slot stays taken
    // until the exchange itself gives up.
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    assert_eq!(app.state.dispatcher.slots_in_use(), 1);
    app.assert_settles().await;
}

#[tokio::test]
async fn a_reset_during_submit_is_a_502_that_is_not_retried_and_keeps_its_slot() {
    let (base, accepted) = fake_upstream(false).await;
    let app = spawn_with(
        SimConfig::default(),
        vec![("upstream.allowed_hosts", vec![host_of(&base)].into()), ("upstream.base_url", base.into())],
    )
    .await;
    let started = Instant::now();
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The request had gone out: BFL may have taken it, so a retry could pay twice.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    assert!(
        reply.body["error"]["message"].as_str().is_some_and(|m| m.contains("may have run")),
        "{}",
        reply.body
    );
    // A task BFL may be running keeps its slot until the model's deadline.
    assert_eq!(app.state.dispatcher.slots_in_use(), 1);
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_reaches_bfl_once_and_tells_the_client_not_to_retry() {
    for how in ["hang", "reset", "garbage"] {
        let app = spawn_with(
            SimConfig { time_scale: 0.02, ..SimConfig::default() },
            vec![("upstream.request_timeout_ms", 500.into())],
        )
        .await;
        let reply = app
            .generate(json!({"model": "flux-2-klein-4b", "prompt": format!("x [after-submit:{how}]")}))
            .await;
        assert_eq!(reply.status, 502, "{how}: {}", reply.body);
        assert_eq!(reply.header("x-should-retry"), Some("false"), "{how}");
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| m.contains("may have run")), "{how}");
        assert_eq!(app.sim.submit_attempts(), 1, "{how}: the submit was not re-sent");
        // BFL may be running the task: its slot stays taken.
        assert_eq!(app.state.dispatcher.slots_in_use(), 1, "{how}");
    }
}
