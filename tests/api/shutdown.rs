//! Graceful shutdown: nothing in flight is lost.

use std::time::Duration;

use serde_json::json;

use bfl_sim::SimConfig;

use crate::helpers::{spawn_app, spawn_with, wait_for};

#[tokio::test]
async fn shutdown_finishes_in_flight_jobs_and_refuses_new_connections() {
    let mut app = spawn_app().await;
    let url = format!("{}/v1/images/generations", app.base);
    let http = app.http.clone();
    let in_flight = tokio::spawn(async move {
        http.post(url).json(&json!({"model": "flux-2-klein-4b", "prompt": "late [slow:500]"})).send().await
    });
    wait_for(|| app.sim.active_tasks() == 1).await;
    assert_eq!(app.sim.active_tasks(), 1, "the job is running upstream");
    app.shutdown().await;
    let response = in_flight.await.expect("task").expect("the in-flight request was answered");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(body["data"][0]["url"].is_string());
    assert_eq!(app.state.dispatcher.slots_in_use(), 0);
    assert!(app.state.is_draining());
    let after = reqwest::Client::new().get(format!("{}/healthz", app.base)).send().await;
    assert!(after.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn readiness_fails_first_while_requests_are_still_served_during_the_drain_delay() {
    let mut app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("server.drain_delay_ms", 1500.into())],
    )
    .await;
    assert_eq!(app.get("/readyz").await.status, 200);
    app.begin_shutdown();
    let mut not_ready = false;
    for _ in 0..200 {
        if app.get("/readyz").await.status == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(not_ready, "/readyz turned 503");
    assert_eq!(app.get("/healthz").await.status, 200, "still alive");
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "one more"})).await;
    assert_eq!(reply.status, 200, "requests are still served while draining: {}", reply.body);
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_refuses_jobs_still_waiting_for_a_slot_and_finishes_the_submitted_one() {
    let mut app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("upstream.task_cap", 1.into())],
    )
    .await;
    let stopper = app.stopper();
    let running = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "running [slow:800]"}));
    let queued = async {
        wait_for(|| app.state.dispatcher.slots_in_use() == 1).await;
        app.generate(json!({"model": "flux-2-klein-4b", "prompt": "queued"})).await
    };
    let stop = async {
        wait_for(|| app.state.dispatcher.queued() == 1).await;
        stopper.stop();
    };
    let (running, queued, ()) = tokio::join!(running, queued, stop);
    assert_eq!(running.status, 200, "{}", running.body);
    assert_eq!(queued.status, 429, "{}", queued.body);
    assert_eq!(queued.header("x-should-retry"), Some("true"));
    assert_eq!(app.sim.submit_attempts(), 1, "the queued job never reached BFL");
    app.shutdown().await;
}
