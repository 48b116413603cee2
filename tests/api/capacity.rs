//! Upstream capacity: slots per key, the kontext-max sub-cap, the FIFO queue, key health, and
//! slots held until BFL's task is over even when the client has gone.

use std::time::Duration;

use bfl_sim::{Faults, SimConfig};
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{TestApp, spawn_with, wait_for};

fn fast_sim() -> SimConfig {
    SimConfig { time_scale: 0.02, ..SimConfig::default() }
}

async fn two_key_app(sim: SimConfig) -> TestApp {
    spawn_with(sim, vec![("upstream.keys", vec!["k1".to_owned(), "k2".to_owned()].into())]).await
}

async fn burst(app: &TestApp, model: &str, count: usize, prompt: &str) -> Vec<u16> {
    let requests = (0..count).map(|i| async move {
        app.generate(json!({"model": model, "prompt": format!("{prompt} #{i}")})).await.status
    });
    join_all(requests).await
}

#[tokio::test]
async fn sixty_kontext_max_jobs_on_two_keys_all_succeed_without_a_single_upstream_429() {
    let app = two_key_app(fast_sim()).await;
    let statuses = burst(&app, "flux-kontext-max", 60, "a poster [slow:150]").await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.sim.rejected_429(), 0);
    assert!(app.sim.peak_active() <= 12, "peak {}", app.sim.peak_active());
    assert!(app.sim.peak_active() >= 7, "both keys were used: peak {}", app.sim.peak_active());
    app.assert_settles().await;
}

#[tokio::test]
async fn a_hundred_flux_2_pro_jobs_on_two_keys_run_at_most_48_at_once() {
    let app = two_key_app(fast_sim()).await;
    let statuses = burst(&app, "flux-2-pro", 100, "a city [slow:150]").await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.sim.rejected_429(), 0);
    assert!(app.sim.peak_active() <= 48, "peak {}", app.sim.peak_active());
    assert!(app.sim.peak_active() > 24, "the second key carried work: peak {}", app.sim.peak_active());
    app.assert_settles().await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let app =
        spawn_with(fast_sim(), vec![("upstream.task_cap", 1.into()), ("upstream.queue_max", 1.into())]).await;
    let running = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "one [slow:400]"}));
    let queued = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "two [slow:10]"}));
    let refused = async {
        // Both others are in place once the slot is taken and one request waits.
        wait_for(|| app.state.dispatcher.slots_in_use() == 1 && app.state.dispatcher.queued() == 1).await;
        app.generate(json!({"model": "flux-2-klein-4b", "prompt": "three"})).await
    };
    let (running, queued, refused) = tokio::join!(running, queued, refused);
    assert_eq!(running.status, 200);
    assert_eq!(queued.status, 200);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.error_type(), Some("rate_limit_error"));
    assert_eq!(app.sim.submit_attempts(), 2);
    app.assert_settles().await;
}

#[tokio::test]
async fn thirty_percent_submit_and_poll_failures_still_give_95_percent_success() {
    let sim = SimConfig {
        faults: Faults { submit_error_rate: 0.3, poll_error_rate: 0.3, ..Faults::default() },
        seed: 42,
        ..fast_sim()
    };
    let app = two_key_app(sim).await;
    let statuses = burst(&app, "flux-2-klein-4b", 100, "faults").await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 95, "{ok}/100 succeeded: {statuses:?}");
    app.assert_settles().await;
}

#[tokio::test]
async fn a_revoked_key_is_dropped_and_its_jobs_move_to_another_key() {
    let sim = SimConfig { keys: vec!["k2".to_owned()], ..fast_sim() };
    let app = two_key_app(sim).await;
    let statuses = burst(&app, "flux-2-klein-4b", 10, "moving").await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(app.sim.received().iter().all(|r| r.key == "k2"));
    // The bad key was tried, refused, and then left alone: at most one refusal per job that
    // was already on its way to it.
    assert!(app.sim.submit_attempts() <= 10 + 10, "{}", app.sim.submit_attempts());
    let before = app.sim.submit_attempts();
    let later = burst(&app, "flux-2-klein-4b", 5, "later").await;
    assert!(later.iter().all(|s| *s == 200));
    assert_eq!(app.sim.submit_attempts(), before + 5, "the revoked key is not tried again");
    app.assert_settles().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_job_leaves_the_slot_held_until_bfl_ends_the_task() {
    let app = spawn_with(fast_sim(), Vec::new()).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(150)).build().expect("client");
    let sent = impatient
        .post(format!("{}/v1/images/generations", app.base))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "slow [slow:700]"}))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up first");
    let mut saw_task = false;
    for _ in 0..300 {
        let (sim_active, slots) = (app.sim.active_tasks(), app.state.dispatcher.slots_in_use());
        assert!(slots >= sim_active, "slot freed early: {slots} slots, {sim_active} BFL tasks");
        saw_task |= sim_active == 1;
        if saw_task && sim_active == 0 && slots == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_task, "the task ran upstream");
    app.assert_settles().await;
    let task = app.sim.received();
    assert_eq!(task.len(), 1);
}

#[tokio::test]
async fn a_queued_request_whose_client_has_gone_leaves_the_queue_and_is_never_submitted() {
    let app = spawn_with(fast_sim(), vec![("upstream.task_cap", 1.into())]).await;
    let holder = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "holder [slow:600]"}));
    let quitter = async {
        wait_for(|| app.state.dispatcher.slots_in_use() == 1).await;
        let impatient =
            reqwest::Client::builder().timeout(Duration::from_millis(150)).build().expect("client");
        let sent = impatient
            .post(format!("{}/v1/images/generations", app.base))
            .json(&json!({"model": "flux-2-klein-4b", "prompt": "quitter"}))
            .send()
            .await;
        assert!(sent.is_err());
        wait_for(|| app.state.dispatcher.queued() == 0).await;
        app.state.dispatcher.queued()
    };
    let (holder, queued_after) = tokio::join!(holder, quitter);
    assert_eq!(holder.status, 200);
    assert_eq!(queued_after, 0, "the gone client's request left the queue");
    app.assert_settles().await;
    assert_eq!(app.sim.submit_attempts(), 1, "the abandoned request was never submitted");
}

#[tokio::test]
async fn no_request_outlives_its_deadline_when_polls_hang() {
    let sim = SimConfig { faults: Faults { poll_hang_rate: 1.0, ..Faults::default() }, ..fast_sim() };
    let app = spawn_with(sim, vec![("models.flux-2-klein-4b.deadline_secs", 1.into())]).await;
    let started = std::time::Instant::now();
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x"})).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_slot_that_cannot_free_in_time_for_the_deadline_is_a_429_not_a_504() {
    let app = spawn_with(
        fast_sim(),
        vec![("upstream.task_cap", 1.into()), ("models.flux-2-klein-4b.deadline_secs", 1.into())],
    )
    .await;
    let holder = app.generate(json!({"model": "flux-2-pro", "prompt": "holder [slow:2500]"}));
    let waiter = async {
        wait_for(|| app.state.dispatcher.slots_in_use() == 1).await;
        app.generate(json!({"model": "flux-2-klein-4b", "prompt": "waiter"})).await
    };
    let (holder, waiter) = tokio::join!(holder, waiter);
    assert_eq!(holder.status, 200);
    assert_eq!(waiter.status, 429, "{}", waiter.body);
    assert!(waiter.header("retry-after").is_some());
    assert_eq!(app.sim.submit_attempts(), 1, "the waiter was never submitted");
    app.assert_settles().await;
}

#[tokio::test]
async fn jobs_past_their_deadline_keep_their_slots_until_bfl_ends_them_so_the_next_burst_draws_no_429() {
    let app = spawn_with(fast_sim(), vec![("models.flux-2-klein-4b.deadline_secs", 1.into())]).await;
    let late = burst(&app, "flux-2-klein-4b", 24, "long [slow:2200]").await;
    assert!(late.iter().all(|s| *s == 504), "{late:?}");
    // Every task still runs upstream, and every one still holds its slot.
    assert_eq!(app.sim.active_tasks(), 24);
    assert_eq!(app.state.dispatcher.slots_in_use(), 24);
    let watch = async {
        for _ in 0..400 {
            let (sim_active, slots) = (app.sim.active_tasks(), app.state.dispatcher.slots_in_use());
            assert!(slots >= sim_active, "slot freed early: {slots} slots, {sim_active} BFL tasks");
            if sim_active == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (next, ()) = tokio::join!(burst(&app, "flux-2-pro", 24, "next [slow:100]"), watch);
    assert!(next.iter().all(|s| *s == 200), "{next:?}");
    assert_eq!(app.sim.rejected_429(), 0, "no submit met a full key");
    assert!(app.sim.peak_active() <= 24, "peak {}", app.sim.peak_active());
    app.assert_settles().await;
}
