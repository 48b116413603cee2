//! The bench's HTTP side: one image request through the gateway, the same job done directly
//! against the simulator (submit, then poll on a chosen schedule), and the simulator's
//! test-tooling endpoints `/sim/stats` and `/sim/tasks`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::procs::KEY;

/// Longest any single request of the bench may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// A client that never goes through a proxy and keeps every connection it opened.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .expect("an HTTP client builds")
}

/// `POST /v1/images/generations` for a 1024×1024 URL result; Ok when the reply carries a URL.
pub async fn generate(
    http: &reqwest::Client,
    gateway: &str,
    model: &str,
    prompt: &str,
) -> Result<(), String> {
    let body = json!({"model": model, "prompt": prompt, "size": "1024x1024", "response_format": "url"});
    let resp = http
        .post(format!("{gateway}/v1/images/generations"))
        .json(&body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("gateway: {e}"))?;
    let status = resp.status();
    let reply: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() && reply["data"][0]["url"].is_string() {
        Ok(())
    } else {
        Err(format!("gateway answered {status}: {}", excerpt(&reply)))
    }
}

/// When a direct client polls: `first` after the submit reply, then every `every`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub first: Duration,
    pub every: Duration,
}

/// The job the gateway would run, done by hand against the simulator: submit the same body the
/// gateway sends for a 1024×1024 JPEG, poll until `Ready`. Returns the number of polls.
pub async fn direct(
    http: &reqwest::Client,
    sim: &str,
    model: &str,
    prompt: &str,
    schedule: Schedule,
) -> Result<u32, String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let body = json!({"prompt": prompt, "width": 1024, "height": 1024, "output_format": "jpeg"});
    let resp = http
        .post(format!("{sim}/v1/{model}"))
        .header("x-key", KEY)
        .json(&body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("submit: {e}"))?;
    let status = resp.status();
    let reply: Value = resp.json().await.unwrap_or(Value::Null);
    let Some(url) = reply["polling_url"].as_str().filter(|_| status.is_success()) else {
        return Err(format!("submit answered {status}: {}", excerpt(&reply)));
    };
    tokio::time::sleep(schedule.first).await;
    let mut polls = 0;
    while Instant::now() < deadline {
        polls += 1;
        let resp = http
            .get(url)
            .header("x-key", KEY)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("poll: {e}"))?;
        let code = resp.status();
        let reply: Value = resp.json().await.unwrap_or(Value::Null);
        match reply["status"].as_str() {
            Some("Ready") => return Ok(polls),
            Some("Pending" | "Reasoning" | "Generating" | "Task not found") => {}
            _ => return Err(format!("poll answered {code}: {}", excerpt(&reply))),
        }
        tokio::time::sleep(schedule.every).await;
    }
    Err(format!("no Ready within {REQUEST_TIMEOUT:?}"))
}

/// `GET /sim/stats`.
pub async fn sim_stats(http: &reqwest::Client, sim: &str) -> Result<Value, String> {
    let resp = http.get(format!("{sim}/sim/stats")).timeout(Duration::from_secs(10)).send().await;
    resp.map_err(|e| e.to_string())?.json().await.map_err(|e| format!("/sim/stats: {e}"))
}

/// `GET /sim/tasks`.
pub async fn sim_tasks(http: &reqwest::Client, sim: &str) -> Result<Vec<Value>, String> {
    let resp = http.get(format!("{sim}/sim/tasks")).timeout(Duration::from_secs(30)).send().await;
    resp.map_err(|e| e.to_string())?.json().await.map_err(|e| format!("/sim/tasks: {e}"))
}

/// Wall-clock now in unix milliseconds (comparable with the simulator's, same machine).
pub fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The start of a JSON reply, for error messages.
pub fn excerpt(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}
