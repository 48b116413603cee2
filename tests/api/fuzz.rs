//! Random and hostile input never produces a panic or a 5xx: every answer is a 2xx or an
//! OpenAI-shaped 4xx.

use futures_util::future::join_all;
use serde_json::{Map, Value, json};

use crate::helpers::spawn_app;

const NAMES: &[&str] = &[
    "model",
    "prompt",
    "n",
    "size",
    "width",
    "height",
    "aspect_ratio",
    "seed",
    "steps",
    "guidance",
    "raw",
    "prompt_upsampling",
    "safety_tolerance",
    "output_format",
    "response_format",
    "background",
    "stream",
    "quality",
    "user",
    "images",
    "mask",
    "image",
];

fn random_value(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..12) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.i32(-5..3000)),
        4 => json!(rng.f64() * 20.0 - 5.0),
        5 => json!(["flux-2-pro", "flux-dev", "flux-kontext-max", "nope", ""][rng.usize(0..5)]),
        6 => json!(format!("{}x{}", rng.u32(0..5000), rng.u32(0..5000))),
        7 => json!(format!("{}:{}", rng.u32(0..40), rng.u32(0..40))),
        8 => json!((0..rng.usize(0..40)).map(|_| rng.char(..)).collect::<String>()),
        9 => json!([1, "a", null, {"image_url": "data:image/png;base64,AAAA"}]),
        10 => json!({"image_url": "http://x"}),
        _ => json!(["url", "b64_json", "png", "jpeg", "webp", "transparent", "16:9"][rng.usize(0..7)]),
    }
}

#[tokio::test]
async fn random_generation_and_json_edit_bodies_never_get_a_5xx() {
    let app = spawn_app().await;
    let mut rng = fastrand::Rng::with_seed(20261124);
    let mut bodies = Vec::new();
    for _ in 0..300 {
        let mut map = Map::new();
        for _ in 0..rng.usize(0..8) {
            map.insert(NAMES[rng.usize(..NAMES.len())].to_owned(), random_value(&mut rng));
        }
        if rng.u8(0..3) > 0 {
            map.insert("model".into(), json!("flux-2-klein-4b"));
        }
        bodies.push(Value::Object(map));
    }
    for chunk in bodies.chunks(50) {
        let replies = join_all(chunk.iter().map(|body| async {
            let path =
                if body.get("images").is_some() { "/v1/images/edits" } else { "/v1/images/generations" };
            (body.clone(), app.post_json(path, body).await)
        }))
        .await;
        for (body, reply) in replies {
            assert!(reply.status < 500, "{body} → {} {}", reply.status, reply.body);
            if reply.status >= 400 {
                assert!(reply.body["error"]["message"].is_string(), "{body} → {}", reply.body);
            }
        }
    }
}

#[tokio::test]
async fn hostile_multipart_bodies_are_client_errors() {
    let app = spawn_app().await;
    let url = format!("{}/v1/images/edits", app.base);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("multipart/form-data", b"--x\r\n\r\n".to_vec()),
        ("multipart/form-data; boundary=x", b"garbage".to_vec()),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n".to_vec(),
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n".to_vec(),
        ),
        (
            "multipart/form-data; boundary=x",
            [
                b"--x\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n".as_slice(),
                &[0xff, 0xfe],
                b"\r\n--x--\r\n",
            ]
            .concat(),
        ),
        ("text/plain", b"hello".to_vec()),
        ("application/json", b"[1,2]".to_vec()),
    ];
    for (kind, body) in cases {
        let response = app
            .http
            .post(&url)
            .header("content-type", kind)
            .body(body.clone())
            .send()
            .await
            .expect("answers");
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{kind} {:?} → {status}", String::from_utf8_lossy(&body));
        let json: Value = response.json().await.expect("an OpenAI error body");
        assert!(json["error"]["message"].is_string());
    }
    assert_eq!(app.sim.submit_attempts(), 0);
}
