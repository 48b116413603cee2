//! `stream: true`: an event stream in OpenAI's image stream format, keep-alives while the job runs
//! (enough to pass a proxy that cuts idle connections), and errors as `error` events.

use std::time::Duration;

use base64::Engine;
use bfl_sim::SimConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{TestApp, spawn_app, spawn_with};
use crate::uploads::{BOUNDARY, file, multipart, png, text};

/// One server-sent event: its name (if any), its data, or a comment.
#[derive(Debug)]
enum Sse {
    Event { name: Option<String>, data: String },
    Comment(String),
}

fn parse(body: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut name, mut data, mut comments) = (None, Vec::new(), Vec::new());
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                comments.push(c.trim().to_owned());
            } else if let Some(n) = line.strip_prefix("event:") {
                name = Some(n.trim().to_owned());
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.trim_start().to_owned());
            }
        }
        out.extend(comments.into_iter().map(Sse::Comment));
        if !data.is_empty() {
            out.push(Sse::Event { name, data: data.join("\n") });
        }
    }
    out
}

async fn stream(app: &TestApp, url: &str, body: &Value) -> (u16, String, String) {
    let response = app.http.post(url).json(body).send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, kind, response.text().await.expect("the stream ends"))
}

fn completed(events: &[Sse], name: &str) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| match e {
            Sse::Event { name: Some(n), data } if n == name => {
                Some(serde_json::from_str(data).expect("json data"))
            }
            _ => None,
        })
        .collect()
}

fn decode(b64: &str) -> image::DynamicImage {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    image::load_from_memory(&bytes).expect("an image")
}

#[tokio::test]
async fn a_streamed_generation_sends_keepalives_then_the_completed_image_then_done() {
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![("delivery.keepalive_secs", 1.into())],
    )
    .await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "a kite [slow:1500]", "size": "512x384", "output_format": "png", "stream": true});
    let (status, kind, text) = stream(&app, &format!("{}/v1/images/generations", app.base), &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let events = parse(&text);
    assert!(
        events.iter().any(|e| matches!(e, Sse::Comment(c) if c.starts_with("keep-alive"))),
        "{text:.300}"
    );
    let done = completed(&events, "image_generation.completed");
    assert_eq!(done.len(), 1, "{text:.300}");
    let event = &done[0];
    assert_eq!(event["type"], "image_generation.completed");
    assert_eq!(event["output_format"], "png");
    assert_eq!(event["size"], "512x384");
    assert!(event["created_at"].as_u64().is_some());
    let image = decode(event["b64_json"].as_str().expect("b64_json"));
    assert_eq!((image.width(), image.height()), (512, 384));
    assert!(
        matches!(events.last(), Some(Sse::Event { name: None, data }) if data == "[DONE]"),
        "ends with [DONE]"
    );
    app.assert_settles().await;
}

#[tokio::test]
async fn a_streamed_moderation_is_an_error_event_with_the_codes_of_the_plain_reply() {
    let app = spawn_app().await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "x [moderate-content]", "stream": true});
    let (status, _, text) = stream(&app, &format!("{}/v1/images/generations", app.base), &body).await;
    assert_eq!(status, 200);
    let errors = completed(&parse(&text), "error");
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["type"], "error");
    assert_eq!(errors[0]["error"]["code"], "moderation_blocked");
    let plain = app.generate(json!({"model": "flux-2-klein-4b", "prompt": "x [moderate-content]"})).await;
    assert_eq!(plain.body["error"], errors[0]["error"], "the same error object as the plain reply");
}

#[tokio::test]
async fn validation_errors_are_plain_http_before_any_stream() {
    let app = spawn_app().await;
    let body = json!({"model": "flux-2-klein-4b", "prompt": "x", "size": "7x7", "stream": true});
    let reply = app.generate(body).await;
    assert_eq!((reply.status, reply.error_param()), (400, Some("size")));
    let partial = app.generate(json!({"prompt": "x", "stream": true, "partial_images": 4})).await;
    assert_eq!((partial.status, partial.error_param()), (400, Some("partial_images")));
}

#[tokio::test]
async fn a_streamed_multipart_edit_sends_an_image_edit_completed_event() {
    let app = spawn_app().await;
    let body = multipart(vec![
        text("model", "flux-2-klein-4b"),
        text("prompt", "make it blue"),
        text("stream", "true"),
        text("partial_images", "2"),
        file("image", png(96, 64)),
    ]);
    let response = app
        .http
        .post(format!("{}/v1/images/edits", app.base))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    let done = completed(&parse(&text), "image_edit.completed");
    assert_eq!(done.len(), 1, "{text:.300}");
    assert_eq!(done[0]["type"], "image_edit.completed");
    decode(done[0]["b64_json"].as_str().expect("b64"));
}

#[tokio::test]
async fn b64_json_is_the_default_when_configured() {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    let app = spawn_with(sim, vec![("delivery.default_response_format", "b64_json".into())]).await;
    let reply =
        app.generate(json!({"model": "flux-2-klein-4b", "prompt": "a kite", "size": "256x256"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let image = decode(reply.body["data"][0]["b64_json"].as_str().expect("b64_json without asking"));
    assert_eq!((image.width(), image.height()), (256, 256));
    let url =
        app.generate(json!({"model": "flux-2-klein-4b", "prompt": "a kite", "response_format": "url"})).await;
    assert!(url.body["data"][0]["url"].is_string(), "asking for url still gets one");
}

/// A proxy that cuts a connection after `idle` with no byte either way, as load balancers do.
async fn idle_cutting_proxy(target: String, idle: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        // Bounded: the test makes one connection.
        for _ in 0..4 {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&target).await else { return };
                let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
                loop {
                    let moved = tokio::time::timeout(idle, async {
                        tokio::select! {
                            n = client.read(&mut a) => match n { Ok(n) if n > 0 => server.write_all(&a[..n]).await.is_ok(), _ => false },
                            n = server.read(&mut b) => match n { Ok(n) if n > 0 => client.write_all(&b[..n]).await.is_ok(), _ => false },
                        }
                    })
                    .await;
                    if !matches!(moved, Ok(true)) {
                        return; // idle too long, or closed: both sides are dropped
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_stream_outlives_a_proxy_that_cuts_idle_connections() {
    let sim = SimConfig { time_scale: 0.02, ..SimConfig::default() };
    let app = spawn_with(sim, vec![("delivery.keepalive_secs", 1.into())]).await;
    let proxy =
        idle_cutting_proxy(app.base.trim_start_matches("http://").to_owned(), Duration::from_secs(2)).await;
    // Without keep-alives, the proxy cuts a plain request to a job this long.
    let plain = app
        .http
        .post(format!("{proxy}/v1/images/generations"))
        .json(&json!({"model": "flux-2-klein-4b", "prompt": "slow [slow:6000]"}))
        .send()
        .await;
    assert!(plain.is_err(), "the proxy cut the silent request");
    let body = json!({"model": "flux-2-klein-4b", "prompt": "slow [slow:6000]", "stream": true});
    let (status, _, text) = stream(&app, &format!("{proxy}/v1/images/generations"), &body).await;
    assert_eq!(status, 200);
    let events = parse(&text);
    assert_eq!(completed(&events, "image_generation.completed").len(), 1, "{text:.300}");
    let keepalives = events.iter().filter(|e| matches!(e, Sse::Comment(_))).count();
    assert!(keepalives >= 4, "keep-alives every second of a 6 s job: {keepalives}");
}
