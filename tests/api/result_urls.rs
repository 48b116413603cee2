//! A result URL must be https (or http with allow_http) on an allowed origin, whatever the
//! response_format: anything else BFL (or an impostor) hands back is a 502, never passed on.

use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::{Reply, spawn_with};
use crate::scripted;

/// A generation through an upstream whose finished task's sample is `sample`.
async fn generation_with_sample(sample: &'static str, response_format: &str) -> Reply {
    let upstream = scripted::finishing_with(move |_| sample.to_owned(), Vec::new()).await;
    let app = spawn_with(
        SimConfig::default(),
        vec![
            ("upstream.base_url", upstream.base.clone().into()),
            ("upstream.allowed_hosts", vec![upstream.host.clone()].into()),
        ],
    )
    .await;
    app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x", "response_format": response_format})).await
}

#[tokio::test]
async fn a_javascript_sample_is_a_502_and_not_handed_to_the_client() {
    for format in ["url", "b64_json"] {
        let reply = generation_with_sample("javascript:alert(1)", format).await;
        assert_eq!(reply.status, 502, "{format}: {}", reply.body);
        assert!(!reply.body.to_string().contains("javascript:"), "{}", reply.body);
    }
}

#[tokio::test]
async fn a_file_sample_is_a_502_and_not_handed_to_the_client() {
    for format in ["url", "b64_json"] {
        let reply = generation_with_sample("file:///etc/passwd", format).await;
        assert_eq!(reply.status, 502, "{format}: {}", reply.body);
        assert!(!reply.body.to_string().contains("/etc/passwd"), "{}", reply.body);
    }
}

#[tokio::test]
async fn a_sample_on_an_allowed_host_but_another_port_is_a_502() {
    let reply = generation_with_sample("http://127.0.0.1:9/image.png", "url").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
}
