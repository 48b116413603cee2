//! The key goes only to allowed hosts: the `polling_url` BFL returns is followed exactly when its
//! host is allowed, and refused (without sending the key) when it is not.

use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::spawn_with;

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
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![
            ("upstream.allowed_hosts", vec!["127.0.0.1".to_owned()].into()),
            ("models.flux-2-klein-4b.deadline_secs", 1.into()),
        ],
    )
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
