//! Graceful shutdown: nothing in flight is lost.

use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn shutdown_finishes_in_flight_jobs_and_refuses_new_connections() {
    let mut app = spawn_app().await;
    let url = format!("{}/v1/images/generations", app.base);
    let http = app.http.clone();
    let in_flight = tokio::spawn(async move {
        http.post(url).json(&json!({"model": "flux-2-klein-4b", "prompt": "late [slow:500]"})).send().await
    });
    for _ in 0..500 {
        if app.sim.active_tasks() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
