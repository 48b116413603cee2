//! The key goes only to allowed hosts: the `polling_url` BFL returns is followed exactly when its
//! host is allowed, and refused (without sending the key) when it is not.

use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::{spawn_configured, spawn_with};
use crate::scripted::{self, Scripted, Seen, scripted};

fn sim_base(app: &crate::helpers::TestApp) -> String {
    let port = app.sim_port();
    format!("http://localhost:{port}")
}

#[tokio::test]
async fn a_polling_url_on_another_allowed_host_is_polled_as_given() {
    let app = spawn_with(SimConfig { time_scale: 0.02, ..SimConfig::default() }, Vec::new()).await;
    app.sim.set_public_base(Some(sim_base(&app)));
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body["data"][0]["url"].as_str().is_some_and(|u| u.starts_with("http://localhost:")));
    assert!(app.sim.polls() >= 1);
}

#[tokio::test]
async fn a_polling_url_off_the_allow_list_fails_the_job_without_sending_the_key_and_keeps_the_slot() {
    let app = spawn_configured(SimConfig { time_scale: 0.02, ..SimConfig::default() }, |sim| {
        vec![
            ("upstream.allowed_hosts", vec![format!("127.0.0.1:{}", sim.port())].into()),
            ("models.flux-2-klein-4b.deadline_secs", 1.into()),
        ]
    })
    .await;
    app.sim.set_public_base(Some(sim_base(&app)));
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.header("x-should-retry"), Some("false"), "BFL took the job: a retry would pay twice");
    assert_eq!(app.sim.polls(), 0, "nothing was sent to the unlisted host");
    // BFL still runs the task, so its slot stays taken until the deadline has passed.
    assert_eq!(app.state.dispatcher.slots_in_use(), 1);
    app.assert_settles().await;
}

/// A recorder: answers every request like a finished poll and records whether a key arrived.
async fn recorder() -> Scripted {
    scripted::finishing_with(|own| format!("{own}/image"), b"img".to_vec()).await
}

#[tokio::test]
async fn no_key_reaches_another_port_of_an_allowed_host() {
    let elsewhere = recorder().await;
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("models.flux-2-klein-4b.deadline_secs", 1.into())],
    )
    .await;
    // 127.0.0.1 is allowed, but only at the simulator's port.
    app.sim.set_public_base(Some(elsewhere.base.clone()));
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(elsewhere.seen().is_empty(), "nothing reached the other port: {:?}", elsewhere.seen());
    app.assert_settles().await;
}

#[tokio::test]
async fn a_submit_is_not_redirected_even_to_an_allowed_origin() {
    let target = recorder().await;
    let to = format!("{}/v1/flux-2-klein-4b", target.base);
    let upstream = scripted(move |_, _, _| scripted::redirect(&to)).await;
    let app = spawn_with(
        SimConfig::default(),
        vec![
            ("upstream.base_url", upstream.base.clone().into()),
            ("upstream.allowed_hosts", vec![upstream.host.clone(), target.host.clone()].into()),
        ],
    )
    .await;
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        upstream.seen().iter().any(|s| s.method == "POST" && s.x_key),
        "the submit itself went to the base URL with the key"
    );
    assert!(target.seen().is_empty(), "the redirect was not followed: {:?}", target.seen());
}

#[tokio::test]
async fn a_poll_is_not_redirected_even_to_an_allowed_origin() {
    let target = recorder().await;
    let to = format!("{}/poll?id=t1", target.base);
    let upstream = scripted(move |method, _, own| match method {
        "POST" => scripted::json(json!({"id": "t1", "polling_url": format!("{own}/poll?id=t1")})),
        _ => scripted::redirect(&to),
    })
    .await;
    let app = spawn_with(
        SimConfig::default(),
        vec![
            ("upstream.base_url", upstream.base.clone().into()),
            ("upstream.allowed_hosts", vec![upstream.host.clone(), target.host.clone()].into()),
            ("models.flux-2-klein-4b.deadline_secs", 1.into()),
        ],
    )
    .await;
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    // A redirected poll is a failed poll: the job runs into its deadline instead.
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(upstream.seen().iter().any(|s| s.path.starts_with("/poll") && s.x_key), "{:?}", upstream.seen());
    assert!(target.seen().is_empty(), "the redirect was not followed: {:?}", target.seen());
}

/// A BFL-like upstream whose result URL (`/moved`, on itself) redirects to `to`.
async fn result_redirecting_to(to: String) -> Scripted {
    scripted(move |method, path, own| match (method, path) {
        ("POST", _) => scripted::json(json!({"id": "t1", "polling_url": format!("{own}/poll?id=t1")})),
        ("GET", "/moved") => scripted::redirect(&to),
        _ => scripted::json(
            json!({"id": "t1", "status": "Ready", "result": {"sample": format!("{own}/moved")}}),
        ),
    })
    .await
}

async fn b64_generation_through(upstream: &Scripted, also_allowed: &Scripted) -> crate::helpers::Reply {
    let app = spawn_with(
        SimConfig::default(),
        vec![
            ("upstream.base_url", upstream.base.clone().into()),
            ("upstream.allowed_hosts", vec![upstream.host.clone(), also_allowed.host.clone()].into()),
        ],
    )
    .await;
    app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x", "response_format": "b64_json"})).await
}

#[tokio::test]
async fn a_result_download_follows_a_redirect_within_the_allow_list_without_the_key() {
    let image = b"\x89PNG not really, but bytes".to_vec();
    let allowed = scripted::finishing_with(|own| format!("{own}/image"), image.clone()).await;
    let upstream = result_redirecting_to(format!("{}/image", allowed.base)).await;
    let reply = b64_generation_through(&upstream, &allowed).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let b64 = reply.body["data"][0]["b64_json"].as_str().expect("b64_json");
    assert_eq!(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(), image);
    let fetched: Vec<Seen> = allowed.seen().into_iter().filter(|s| s.path == "/image").collect();
    assert_eq!(fetched.len(), 1, "the redirect within the list was followed");
    assert!(!fetched[0].x_key, "a download never carries the key");
}

#[tokio::test]
async fn a_result_download_does_not_follow_a_redirect_off_the_allow_list() {
    let unlisted = recorder().await;
    let listed = recorder().await;
    let upstream = result_redirecting_to(format!("{}/image", unlisted.base)).await;
    let reply = b64_generation_through(&upstream, &listed).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(unlisted.seen().is_empty(), "{:?}", unlisted.seen());
}
