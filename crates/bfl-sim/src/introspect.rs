//! Test tooling that BFL does not have: counters and the task list as JSON, so a benchmark in
//! another process can see what the simulator saw (`GET /sim/stats`, `GET /sim/tasks`). No `x-key`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::state::Simulator;

pub(super) async fn stats(State(sim): State<Arc<Simulator>>) -> Json<Value> {
    Json(sim.stats())
}

pub(super) async fn tasks(State(sim): State<Arc<Simulator>>) -> Json<Value> {
    Json(sim.task_list())
}

impl Simulator {
    /// `{"active", "peak_active", "rejected_429", "polls", "submit_attempts", "accepted",
    /// "webhooks_sent", "webhooks_dropped", "webhooks_failed"}`.
    pub fn stats(&self) -> Value {
        let accepted = self.lock().seq;
        json!({
            "active": self.active_tasks(),
            "peak_active": self.peak_active(),
            "rejected_429": self.rejected_429(),
            "polls": self.polls(),
            "submit_attempts": self.submit_attempts(),
            "accepted": accepted,
            "webhooks_sent": self.webhooks_sent(),
            "webhooks_dropped": self.webhooks_dropped(),
            "webhooks_failed": self.webhooks_failed(),
        })
    }

    /// Every task still kept, in submit order: id, model path, recorded prompt, unix-ms submit and ready
    /// times (`null` for a task that never finishes), polls so far and its terminal status.
    pub fn task_list(&self) -> Value {
        let mut st = self.lock();
        let mut tasks: Vec<_> = st.table.iter(Instant::now()).collect();
        tasks.sort_by_key(|(_, t)| t.submitted);
        let list = tasks
            .into_iter()
            .map(|(id, t)| {
                json!({
                    "id": id,
                    "model_path": format!("/v1/{}", t.model.path),
                    "prompt": t.prompt,
                    "submitted_unix_ms": self.unix_ms(t.submitted),
                    "ready_unix_ms": t.ready_at.map(|r| self.unix_ms(r)),
                    "polls": t.polls,
                    "status_when_done": if t.ready_at.is_some() { t.status.as_str() } else { "Pending" },
                })
            })
            .collect();
        Value::Array(list)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::SimConfig;

    async fn get(app: &axum::Router, uri: &str) -> Value {
        let req = Request::get(uri).body(Body::empty()).expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), 200, "{uri} needs no x-key");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    async fn submit(app: &axum::Router, model: &str, prompt: &str) -> Value {
        let req = Request::post(format!("/v1/{model}"))
            .header("host", "sim.test:9")
            .header("x-key", "k")
            .header("content-type", "application/json")
            .body(Body::from(json!({ "prompt": prompt }).to_string()))
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    fn now_ms() -> u64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(0)
    }

    #[tokio::test]
    async fn stats_and_tasks_report_what_the_simulator_saw_in_unix_milliseconds() {
        let sim = Simulator::new(SimConfig { task_cap: 2, ..SimConfig::default() });
        let app = sim.router();
        let before = now_ms();
        let slow = submit(&app, "flux-2-klein-4b", "a [slow:5000]").await;
        submit(&app, "flux-2-pro", "b [hang] [error]").await;
        submit(&app, "flux-dev", "refused").await;
        let stats = get(&app, "/sim/stats").await;
        let expected = json!({
            "active": 2, "peak_active": 2, "rejected_429": 1, "polls": 0, "submit_attempts": 3, "accepted": 2,
            "webhooks_sent": 0, "webhooks_dropped": 0, "webhooks_failed": 0
        });
        assert_eq!(stats, expected);
        let tasks = get(&app, "/sim/tasks").await;
        let tasks = tasks.as_array().expect("a list");
        assert_eq!(tasks.len(), 2);
        let a = &tasks[0];
        assert_eq!(
            (&a["id"], &a["model_path"], &a["prompt"], &a["polls"], &a["status_when_done"]),
            (&slow["id"], &json!("/v1/flux-2-klein-4b"), &json!("a [slow:5000]"), &json!(0), &json!("Ready"))
        );
        let submitted = a["submitted_unix_ms"].as_u64().expect("ms");
        assert!(
            submitted >= before.saturating_sub(5) && submitted <= now_ms() + 5,
            "{submitted} vs {before}"
        );
        assert_eq!(a["ready_unix_ms"].as_u64(), Some(submitted + 5000));
        let hung = &tasks[1];
        assert_eq!((&hung["ready_unix_ms"], &hung["status_when_done"]), (&Value::Null, &json!("Pending")));
    }

    #[tokio::test(start_paused = true)]
    async fn task_polls_and_ready_tasks_show_up_in_the_listings() {
        let sim = Simulator::new(SimConfig::default());
        let app = sim.router();
        let id = submit(&app, "flux-2-klein-4b", "[slow:100]").await["id"].as_str().expect("id").to_owned();
        tokio::time::advance(Duration::from_millis(150)).await;
        let req = Request::get(format!("/v1/get_result?id={id}")).header("x-key", "k").body(Body::empty());
        let resp = app.clone().oneshot(req.expect("request")).await.expect("infallible");
        assert_eq!(resp.status(), 200);
        let stats = get(&app, "/sim/stats").await;
        assert_eq!(
            (&stats["active"], &stats["polls"], &stats["accepted"]),
            (&json!(0), &json!(1), &json!(1))
        );
        assert_eq!(get(&app, "/sim/tasks").await[0]["polls"], 1);
    }

    #[tokio::test]
    async fn a_public_base_set_after_start_moves_later_urls_only() {
        let sim = Simulator::new(SimConfig::default());
        let app = sim.router();
        let first = submit(&app, "flux-2-klein-4b", "x").await;
        assert!(first["polling_url"].as_str().is_some_and(|u| u.starts_with("http://sim.test:9/v1/")));
        sim.set_public_base(Some("http://localhost:4321/".into()));
        let moved = submit(&app, "flux-2-klein-4b", "[slow:0]").await;
        let id = moved["id"].as_str().expect("id");
        assert_eq!(moved["polling_url"], format!("http://localhost:4321/v1/get_result?id={id}"));
        let req = Request::get(format!("/v1/get_result?id={id}")).header("x-key", "k").body(Body::empty());
        let resp = app.clone().oneshot(req.expect("request")).await.expect("infallible");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        let poll: Value = serde_json::from_slice(&bytes).expect("json");
        let sample = poll["result"]["sample"].as_str().expect("ready");
        assert!(sample.starts_with(&format!("http://localhost:4321/results/{id}.")), "{sample}");
        sim.set_public_base(None);
        let back = submit(&app, "flux-2-klein-4b", "x").await;
        assert!(back["polling_url"].as_str().is_some_and(|u| u.starts_with("http://sim.test:9/")));
    }

    #[tokio::test]
    async fn unrecorded_bodies_drop_reference_image_data() {
        let sim = Simulator::new(SimConfig { record_bodies: false, ..SimConfig::default() });
        let app = sim.router();
        let img = image::RgbImage::new(8, 8);
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).expect("png");
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png.into_inner());
        let req = Request::post("/v1/flux-2-pro")
            .header("x-key", "k")
            .header("content-type", "application/json")
            .body(Body::from(json!({"prompt": "p", "input_image": b64}).to_string()))
            .expect("request");
        assert_eq!(app.clone().oneshot(req).await.expect("infallible").status(), 200);
        let got = sim.received();
        assert_eq!(got[0].body, json!({"prompt": "p", "input_image": b64.len()}));
        assert_eq!(got[0].input_dims, vec![Some((8, 8))]);
    }
}
