//! `GET /metrics`: Prometheus text with the gateway's counters, histograms and gauges. (The
//! recorder is process-wide and these tests share a process: exact counts are checked by the CI's
//! run against a fresh `fluxgate demo`, parsed with `prometheus_client`.)

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn metrics_name_routes_by_pattern_and_count_upstream_work() {
    let app = spawn_app().await;
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "a kite"})).await;
    assert_eq!(reply.status, 200);
    let missing = app.get("/v1/async/jobs/job_nope").await;
    assert_eq!(missing.status, 404);
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.expect("answers");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let text = response.text().await.expect("text");
    for expected in [
        r#"fluxgate_http_requests_total{route="/v1/images/generations",status="200"}"#,
        r#"fluxgate_http_requests_total{route="/v1/async/jobs/{id}",status="404"}"#,
        r#"fluxgate_upstream_submits_total{outcome="accepted"}"#,
        r#"fluxgate_upstream_polls_total{outcome="ready"}"#,
        r#"fluxgate_job_duration_seconds_bucket{model="flux-2-klein-4b""#,
        r#"fluxgate_ready_lag_seconds_count{model="flux-2-klein-4b"}"#,
        "fluxgate_queue_wait_seconds_count",
        "fluxgate_jobs_in_flight",
        "fluxgate_queue_length",
        r#"fluxgate_slots_in_use{key="key-"#,
        r#"fluxgate_images_billed_total{model="flux-2-klein-4b",client="anonymous"}"#,
        r#"fluxgate_billed_usd_total{model="flux-2-klein-4b",client="anonymous"}"#,
        "fluxgate_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains("job_nope"), "paths never become labels");
    assert!(!text.contains(crate::helpers::SIM_KEY), "never a key");
}
