//! `b64_json` replies within `upstream.max_b64_inflight_bytes`: the images still decode to what
//! was asked; requests past the budget wait for room; an image larger than the whole budget is
//! refused with a clear error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::{Reply, TestApp, spawn_configured, spawn_with};
use crate::scripted::{self, Scripted};

fn decoded(reply: &Reply) -> Vec<u8> {
    let b64 = reply.body["data"][0]["b64_json"].as_str().expect("b64_json");
    STANDARD.decode(b64).expect("valid base64")
}

async fn through(upstream: &Scripted, budget: usize) -> TestApp {
    spawn_with(
        SimConfig::default(),
        vec![
            ("upstream.base_url", upstream.base.clone().into()),
            ("upstream.allowed_hosts", vec![upstream.host.clone()].into()),
            ("upstream.max_b64_inflight_bytes", (budget as i64).into()),
        ],
    )
    .await
}

fn b64_request() -> serde_json::Value {
    json!({"model": "flux-2-klein-4b", "prompt": "x", "response_format": "b64_json"})
}

#[tokio::test]
async fn b64_json_decodes_to_the_requested_size_under_a_small_budget() {
    let app = spawn_configured(SimConfig { time_scale: 0.02, ..SimConfig::default() }, |_| {
        vec![("upstream.max_b64_inflight_bytes", (4 * 1024 * 1024).into())]
    })
    .await;
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "x", "size": "512x384",
                         "response_format": "b64_json", "output_format": "png"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let size = imagesize::blob_size(&decoded(&reply)).expect("an image");
    assert_eq!((size.width, size.height), (512, 384));
}

#[tokio::test]
async fn concurrent_b64_requests_past_the_budget_wait_for_room_and_all_succeed() {
    // Each image is 100 KiB; the budget holds one at a time.
    let image: Vec<u8> = (0..100 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let upstream = scripted::finishing_with(|own| format!("{own}/image"), image.clone()).await;
    let app = through(&upstream, 150 * 1024).await;
    let replies = futures_util::future::join_all((0..6).map(|_| app.generate(b64_request()))).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(decoded(reply), image);
    }
    app.assert_settles().await;
}

#[tokio::test]
async fn an_image_larger_than_the_whole_budget_is_refused_clearly() {
    let image = vec![7u8; 200 * 1024];
    let upstream = scripted::finishing_with(|own| format!("{own}/image"), image).await;
    let app = through(&upstream, 150 * 1024).await;
    let reply = app.generate(b64_request()).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), Some("result_not_deliverable"));
    assert_eq!(reply.header("x-should-retry"), Some("false"), "BFL charged: a retry would pay twice");
    let message = reply.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("max_b64_inflight_bytes") && message.contains("response_format=url"),
        "{message}"
    );
    // The same job with response_format=url is delivered.
    let url = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(url.status, 200, "{}", url.body);
}
