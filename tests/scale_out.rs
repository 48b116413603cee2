//! Replicas sharing one BFL key through a real Redis: two `fluxgate serve` processes, one
//! `fluxgate simulate` (one key, 24 slots) and a `redis-server` started here on a free loopback
//! port. Every wait is bounded; all traffic stays on loopback.
//!
//! `redis-server` must be on the PATH (`.ci/run` installs Debian's package when it is missing);
//! without it these tests fail under CI (`CI=true`) and are skipped with a message otherwise.

#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluxgate::capacity::{KeyId, shared_count};
use serde_json::{Value, json};

const KEY: &str = "bfl-key-shared";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn redis_server(port: u16) -> Option<Running> {
    let found = Command::new("redis-server").arg("--version").output().is_ok();
    if !found {
        assert!(std::env::var("CI").is_err(), "redis-server is not installed (CI must install it)");
        eprintln!("skipped: redis-server is not installed");
        return None;
    }
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    Some(Running(child))
}

fn fluxgate(args: &[&str], env: &[(&str, String)]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FLUXGATE__") || key == "BFL_API_KEY" {
            cmd.env_remove(key);
        }
    }
    let level = std::env::var("FLUXGATE_TEST_LOGS").unwrap_or_else(|_| "warn".into());
    cmd.args(args).env("RUST_LOG", level).stdin(Stdio::null()).stdout(Stdio::null());
    // FLUXGATE_TEST_LOGS=1 shows what the processes log.
    if std::env::var("FLUXGATE_TEST_LOGS").is_err() {
        cmd.stderr(Stdio::null());
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    Running(cmd.spawn().expect("fluxgate starts"))
}

/// A replica of the gateway against the simulator, sharing slots through Redis; `extra`
/// settings come last (and so win).
fn replica(
    port: u16,
    sim_port: u16,
    redis_port: u16,
    config: Option<&str>,
    extra: Vec<(&str, String)>,
) -> Running {
    let mut args = vec!["serve"];
    args.extend(config.map(|c| ["--config", c]).into_iter().flatten());
    let mut env = vec![
        ("FLUXGATE__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("FLUXGATE__SERVER__AUTH", if config.is_some() { "keys" } else { "none" }.into()),
        ("FLUXGATE__SERVER__DRAIN_DELAY_MS", "0".into()),
        ("FLUXGATE__USAGE__PATH", String::new()),
        ("FLUXGATE__UPSTREAM__BASE_URL", format!("http://127.0.0.1:{sim_port}")),
        ("FLUXGATE__UPSTREAM__KEYS", KEY.into()),
        ("FLUXGATE__UPSTREAM__KEY_NAMES", "shared".into()),
        ("FLUXGATE__UPSTREAM__ALLOWED_HOSTS", format!("127.0.0.1:{sim_port}")),
        ("FLUXGATE__UPSTREAM__ALLOW_HTTP", "true".into()),
        ("FLUXGATE__UPSTREAM__FIRST_POLL_SCALE", "0.05".into()),
        ("FLUXGATE__UPSTREAM__POLL_INTERVAL_MS", "50".into()),
        ("FLUXGATE__COORDINATION__BACKEND", "redis".into()),
        ("FLUXGATE__COORDINATION__REDIS_URL", format!("redis://127.0.0.1:{redis_port}")),
        ("FLUXGATE__COORDINATION__LEASE_SECS", "2".into()),
        ("FLUXGATE__COORDINATION__DEGRADED_SHARE", "0.5".into()),
    ];
    env.extend(extra);
    fluxgate(&args, &env)
}

async fn wait_ready(url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} was not ready within 20 s");
}

struct Cluster {
    _redis: Running,
    _sim: Running,
    replicas: Vec<(String, Option<Running>)>,
    sim: String,
    redis_url: String,
    redis_port: u16,
}

async fn cluster() -> Option<Cluster> {
    cluster_with(None).await
}

async fn cluster_with(config: Option<&str>) -> Option<Cluster> {
    cluster_custom(config, |_, _| Vec::new()).await
}

/// Two replicas; `extra(i, bases)` adds settings to replica `i`, knowing both replicas' URLs.
async fn cluster_custom(
    config: Option<&str>,
    extra: impl Fn(usize, &[String]) -> Vec<(&'static str, String)>,
) -> Option<Cluster> {
    let redis_port = free_port();
    let redis = redis_server(redis_port)?;
    let sim_port = free_port();
    let sim = fluxgate(
        &["simulate", "--listen", &format!("127.0.0.1:{sim_port}"), "--time-scale", "0.05", "--keys", KEY],
        &[],
    );
    let sim_base = format!("http://127.0.0.1:{sim_port}");
    wait_ready(&format!("{sim_base}/sim/stats")).await;
    let ports = [free_port(), free_port()];
    let bases: Vec<String> = ports.iter().map(|port| format!("http://127.0.0.1:{port}")).collect();
    let mut replicas = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let running = replica(port, sim_port, redis_port, config, extra(i, &bases));
        replicas.push((bases[i].clone(), Some(running)));
    }
    for (base, _) in &replicas {
        wait_ready(&format!("{base}/readyz")).await;
    }
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    Some(Cluster { _redis: redis, _sim: sim, replicas, sim: sim_base, redis_url, redis_port })
}

impl Cluster {
    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/sim/stats", self.sim)).await.unwrap().json().await.unwrap()
    }

    async fn shared_slots(&self) -> usize {
        shared_count(&self.redis_url, &KeyId::named("shared")).await.expect("Redis answers")
    }
}

async fn generate(http: &reqwest::Client, base: &str, prompt: &str) -> u16 {
    let Ok(response) = http
        .post(format!("{base}/v1/images/generations"))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": prompt}))
        .send()
        .await
    else {
        return 0;
    };
    let status = response.status().as_u16();
    if status != 200 {
        eprintln!("{status}: {}", response.text().await.unwrap_or_default());
    }
    status
}

#[tokio::test]
async fn two_replicas_share_one_keys_24_slots_and_a_dead_replicas_slots_come_back() {
    let Some(mut cluster) = cluster().await else { return };
    let http = reqwest::Client::new();
    // 100 jobs of 400 ms, spread over both replicas at once: 24 slots between them.
    let requests = (0..100).map(|i| {
        let base = cluster.replicas[i % 2].0.clone();
        let http = http.clone();
        async move { generate(&http, &base, &format!("job {i} [slow:400]")).await }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "every request succeeds: {statuses:?}");
    let stats = cluster.stats().await;
    assert!(stats["peak_active"].as_u64().unwrap() <= 24, "BFL never saw more than 24 tasks: {stats}");
    assert_eq!(stats["rejected_429"], 0, "BFL never answered 429: {stats}");
    assert!(stats["peak_active"].as_u64().unwrap() > 12, "both replicas used the key together: {stats}");

    // One replica dies holding slots (long jobs); the other finishes its own, and the dead
    // one's slots come back once their leases (2 s) run out.
    let (first, second) = (cluster.replicas[0].0.clone(), cluster.replicas[1].0.clone());
    let long: Vec<_> = (0..6)
        .map(|i| {
            let (http, base) = (http.clone(), first.clone());
            tokio::spawn(async move { generate(&http, &base, &format!("long {i} [slow:30000]")).await })
        })
        .collect();
    let started = Instant::now();
    while cluster.shared_slots().await < 6 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.shared_slots().await, 6, "the long jobs hold six shared slots");
    if let Some(mut dead) = cluster.replicas[0].1.take() {
        dead.0.kill().expect("kill -9");
        let _ = dead.0.wait();
    }
    for task in long {
        let _ = task.await;
    }
    let survivor = generate(&http, &second, "after the death").await;
    assert_eq!(survivor, 200, "the other replica goes on");
    let started = Instant::now();
    while cluster.shared_slots().await > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.shared_slots().await, 0, "the dead replica's leases expired");
}

#[tokio::test]
async fn without_redis_a_replica_serves_on_its_share_says_so_and_returns_to_shared_counting() {
    let Some(mut cluster) = cluster().await else { return };
    let http = reqwest::Client::new();
    let base = cluster.replicas[1].0.clone();
    assert_eq!(generate(&http, &base, "before").await, 200);
    // Redis goes away.
    drop(std::mem::replace(&mut cluster._redis, Running(Command::new("true").spawn().unwrap())));
    let statuses = futures_util::future::join_all((0..4).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move { generate(&http, &base, &format!("degraded {i} [slow:300]")).await }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "requests keep succeeding: {statuses:?}");
    // Idempotency keys are this replica's own meanwhile: a retry here still joins its job.
    let keyed = || {
        http.post(format!("{base}/v1/images/generations"))
            .header("Idempotency-Key", "while-degraded")
            .json(&json!({"model": "flux-2-klein-4b", "prompt": "keyed while degraded"}))
            .send()
    };
    let first: Value = keyed().await.unwrap().json().await.unwrap();
    let again: Value = keyed().await.unwrap().json().await.unwrap();
    assert!(first["data"][0]["url"].is_string(), "{first}");
    assert_eq!(first["data"], again["data"], "the retry joined the first job");
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("degraded"), "readiness says it is degraded");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("fluxgate_coordination_degraded 1"), "and so do the metrics");

    // Redis comes back on the same port while a job runs: its slot moves into Redis.
    let running = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { generate(&http, &base, "across the return [slow:4000]").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster._redis = redis_server(cluster.redis_port).expect("redis-server again");
    let started = Instant::now();
    loop {
        let text = reqwest::get(format!("{base}/readyz")).await.unwrap().text().await.unwrap();
        if text == "ready" || started.elapsed() > Duration::from_secs(10) {
            assert_eq!(text, "ready", "back to shared accounting");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let active = cluster.stats().await["active"].as_u64().unwrap() as usize;
    assert_eq!(cluster.shared_slots().await, active, "Redis counts what BFL runs");
    assert_eq!(running.await.unwrap(), 200);
    let started = Instant::now();
    while cluster.shared_slots().await > 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.shared_slots().await, 0, "nothing leaked");
}

#[tokio::test]
async fn a_clients_requests_per_minute_hold_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clients.toml");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"tok-ten"));
    std::fs::write(
        &config,
        format!("[[clients]]\nid = \"ten\"\ntoken_sha256 = \"{digest}\"\nrequests_per_minute = 10\n"),
    )
    .unwrap();
    let Some(cluster) = cluster_with(config.to_str()).await else { return };
    let http = reqwest::Client::new();
    let mut ok = 0;
    for i in 0..24 {
        let base = &cluster.replicas[i % 2].0;
        let status = http
            .post(format!("{base}/v1/images/generations"))
            .bearer_auth("tok-ten")
            .json(&json!({"model": "flux-2-klein-4b", "prompt": format!("r{i}")}))
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 10, "ten requests in the minute, across both replicas");
}

#[tokio::test]
async fn usage_on_any_replica_answers_for_the_cluster() {
    let Some(cluster) = cluster().await else { return };
    let http = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(generate(&http, &cluster.replicas[i % 2].0, &format!("u{i}")).await, 200);
    }
    let images = |body: &Value| -> u64 {
        body["data"].as_array().into_iter().flatten().filter_map(|r| r["images"].as_u64()).sum()
    };
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for (base, _) in &cluster.replicas {
            let body: Value =
                http.get(format!("{base}/v1/usage")).send().await.unwrap().json().await.unwrap();
            seen.push(images(&body));
        }
        if seen == [5, 5] || started.elapsed() > Duration::from_secs(5) {
            assert_eq!(seen, [5, 5], "each replica reports the five images of both");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The simulator's count of accepted submits.
async fn accepted(cluster: &Cluster) -> u64 {
    cluster.stats().await["accepted"].as_u64().unwrap()
}

#[tokio::test]
async fn async_jobs_and_idempotency_keys_belong_to_the_cluster_not_a_replica() {
    let Some(cluster) = cluster().await else { return };
    let http = reqwest::Client::new();
    let (one, two) = (cluster.replicas[0].0.clone(), cluster.replicas[1].0.clone());

    // An async job made on one replica is read on the other, running and then done.
    let job: Value = http
        .post(format!("{one}/v1/async/images/generations"))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "async [slow:600]"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().expect("a job id").to_owned();
    let started = Instant::now();
    let done = loop {
        let seen: Value =
            http.get(format!("{two}/v1/async/jobs/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(seen["id"], id.as_str(), "the other replica knows the job: {seen}");
        if seen["status"] == "succeeded" || started.elapsed() > Duration::from_secs(10) {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["data"][0]["url"].as_str().is_some_and(|u| u.contains("/results/")), "{done}");
    let unknown = http.get(format!("{two}/v1/async/jobs/job_{}", "0".repeat(32))).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // A keyed request runs on one replica; its retry on the other joins it: one submit, one bill.
    let before = accepted(&cluster).await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "keyed [slow:1500]"});
    let first = {
        let (http, one, body) = (http.clone(), one.clone(), body.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{one}/v1/images/generations"))
                .header("Idempotency-Key", "k-1")
                .json(&body);
            r.send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    let started = Instant::now();
    while accepted(&cluster).await == before && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retry = |base: String| {
        let (http, body) = (http.clone(), body.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/images/generations"))
                .header("Idempotency-Key", "k-1")
                .json(&body);
            let response = r.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, joined) = retry(two.clone()).await;
    let first = first.await.unwrap();
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["data"][0]["url"], first["data"][0]["url"], "the same image: {joined} {first}");
    assert_eq!(joined["created"], first["created"]);
    let (status, again) = retry(two.clone()).await;
    assert_eq!((status, &again["data"]), (200, &first["data"]), "and again once it is over");
    assert_eq!(accepted(&cluster).await, before + 1, "one submit for the three requests");
    let reused = http
        .post(format!("{two}/v1/images/generations"))
        .header("Idempotency-Key", "k-1")
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "another request"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422, "the key with another request is refused on any replica");

    // A keyed request BFL refuses is over before BFL took it (its record says so at once): a
    // retry on the other replica is refused the same way, at once, not after the deadline (it
    // tries again, or, when it arrives before the record's last write, reads that write).
    let refused = json!({"model": "flux-2-klein-4b", "prompt": "refused [submit:400]"});
    let send = |base: &str| {
        http.post(format!("{base}/v1/images/generations"))
            .header("Idempotency-Key", "k-2")
            .json(&refused)
            .send()
    };
    assert_eq!(send(&one).await.unwrap().status(), 400);
    let attempts = cluster.stats().await["submit_attempts"].as_u64().unwrap();
    let started = Instant::now();
    assert_eq!(send(&two).await.unwrap().status(), 400);
    assert!(started.elapsed() < Duration::from_secs(10), "not a wait for the deadline");
    let now = cluster.stats().await["submit_attempts"].as_u64().unwrap();
    assert!(now <= attempts + 1, "at most one more submit: {attempts} then {now}");

    // Billed once each: the async image and the keyed one, whichever replica delivered them.
    let started = Instant::now();
    loop {
        let usage: Value = http.get(format!("{one}/v1/usage")).send().await.unwrap().json().await.unwrap();
        let images: u64 =
            usage["data"].as_array().into_iter().flatten().filter_map(|r| r["images"].as_u64()).sum();
        if images == 2 || started.elapsed() > Duration::from_secs(5) {
            assert_eq!(images, 2, "{usage}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_bfl_webhook_that_reaches_another_replica_completes_the_job() {
    // Replica 0's jobs name replica 1 as their webhook address (a load balancer could send BFL's
    // call to either); its polling fallback starts long after the simulated task ends.
    let Some(cluster) = cluster_custom(None, |i, bases| {
        let mut extra = vec![
            ("FLUXGATE__UPSTREAM__WEBHOOK_SECRET", "cluster-webhook-secret".to_owned()),
            ("FLUXGATE__UPSTREAM__WEBHOOK_BASE_URL", bases[1].clone()),
        ];
        if i == 0 {
            extra.extend([
                ("FLUXGATE__UPSTREAM__FIRST_POLL_SCALE", "1.0".to_owned()),
                ("FLUXGATE__UPSTREAM__WEBHOOK_POLL_INTERVAL_MS", "5000".to_owned()),
                ("FLUXGATE__UPSTREAM__POLL_SCHEDULE", "fixed".to_owned()),
            ]);
        }
        extra
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let status = generate(&http, &cluster.replicas[0].0, "called back elsewhere").await;
    assert_eq!(status, 200);
    let stats = cluster.stats().await;
    assert_eq!(stats["webhooks_sent"], 1, "{stats}");
    assert_eq!(stats["polls"], 0, "the webhook, passed on by the other replica, ended the job: {stats}");
}

#[tokio::test]
async fn a_clients_concurrent_jobs_and_budget_hold_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clients.toml");
    let digest = |token: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token));
    std::fs::write(
        &config,
        format!(
            "[server]\nadmin_token_sha256 = \"{}\"\n\n[[clients]]\nid = \"two-at-once\"\ntoken_sha256 = \"{}\"\nmax_concurrent_jobs = 2\n\n\
             [[clients]]\nid = \"three-cents\"\ntoken_sha256 = \"{}\"\nbudget_usd = 0.03\nbudget_period = \"day\"\n",
            digest(b"tok-admin"),
            digest(b"tok-two"),
            digest(b"tok-budget"),
        ),
    )
    .unwrap();
    let Some(cluster) = cluster_with(config.to_str()).await else { return };
    let http = reqwest::Client::new();
    let post = |i: usize, token: &'static str, prompt: String| {
        let (http, base) = (http.clone(), cluster.replicas[i % 2].0.clone());
        async move {
            let response = http
                .post(format!("{base}/v1/images/generations"))
                .bearer_auth(token)
                .json(&json!({"model": "flux-2-klein-4b", "prompt": prompt}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    let codes = |outcomes: &[(u16, String)], code: &str| outcomes.iter().filter(|(_, c)| c == code).count();

    // Six at once over both replicas, two allowed at a time in the cluster.
    let outcomes =
        futures_util::future::join_all((0..6).map(|i| post(i, "tok-two", format!("c{i} [slow:1500]")))).await;
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 2, "two concurrent jobs across both replicas: {outcomes:?}");
    assert_eq!(codes(&outcomes, "concurrency_limit_exceeded"), 4, "{outcomes:?}");

    // Five at once with a budget for three images ($0.01 each): the holds of requests in flight
    // are the cluster's.
    let outcomes =
        futures_util::future::join_all((0..5).map(|i| post(i, "tok-budget", format!("b{i} [slow:800]"))))
            .await;
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 3, "three images in the budget across both replicas: {outcomes:?}");
    assert_eq!(codes(&outcomes, "budget_exceeded"), 2, "{outcomes:?}");
    // Once billed, what was spent is the cluster's too: no replica takes a fourth.
    let started = Instant::now();
    loop {
        let usage = http.get(format!("{}/v1/usage", cluster.replicas[0].0)).bearer_auth("tok-admin");
        let usage: Value = usage.send().await.unwrap().json().await.unwrap();
        let billed: u64 = usage["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["client_id"] == "three-cents")
            .filter_map(|r| r["images"].as_u64())
            .sum();
        if billed == 3 || started.elapsed() > Duration::from_secs(5) {
            assert_eq!(billed, 3, "{usage}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..2 {
        assert_eq!(post(i, "tok-budget", format!("after {i}")).await.1, "budget_exceeded");
    }
}
