//! `n > 1` (one upstream job and slot per image, answered in order) and model aliases.

use std::collections::HashSet;

use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_with};

#[tokio::test]
async fn n_four_gives_four_distinct_images_from_four_jobs_with_consecutive_seeds() {
    let app = spawn_app().await;
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "a kite [slow:300]", "n": 4, "seed": 40}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data = reply.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 4);
    let urls: HashSet<&str> = data.iter().filter_map(|d| d["url"].as_str()).collect();
    assert_eq!(urls.len(), 4, "four distinct images");
    assert_eq!(reply.header("x-fluxgate-images-failed"), Some("0"));
    let mut seeds: Vec<i64> = app.sim.received().iter().filter_map(|r| r.body["seed"].as_i64()).collect();
    seeds.sort_unstable();
    assert_eq!(seeds, vec![40, 41, 42, 43], "one submit per image, seed, seed+1, …");
    assert_eq!(app.sim.peak_active(), 4, "each image had its own slot, all at once");
    app.assert_settles().await;
}

#[tokio::test]
async fn one_failing_image_of_four_gives_the_other_three_and_says_so() {
    let app = spawn_app().await;
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "a kite [error-seed:11]", "n": 4, "seed": 10}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(reply.header("x-fluxgate-images-failed"), Some("1"));
    let all_fail = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x [error]", "n": 2})).await;
    assert_eq!(all_fail.status, 502, "every image failed: the first error is the answer");
    app.assert_settles().await;
}

#[tokio::test]
async fn an_alias_reaches_its_model_and_n_above_the_limit_is_a_400() {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    let app = spawn_with(
        sim,
        vec![("jobs.max_n", 3.into()), ("models.aliases.dall-e-3", "flux-2-klein-4b".into())],
    )
    .await;
    let reply = app.generate(json!({"model": "dall-e-3", "prompt": "a lighthouse"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.last_submit().path, "/v1/flux-2-klein-4b", "the alias reached its model");
    let too_many = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x", "n": 4})).await;
    assert_eq!((too_many.status, too_many.error_param()), (400, Some("n")));
}
