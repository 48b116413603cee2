//! Every generation rule of PRODUCT.md section 2: a violating request gets an OpenAI error naming
//! the parameter, and nothing reaches BFL.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn violations() -> Vec<(Value, u16, &'static str)> {
    let long_prompt: String = (0..80_000u32).map(|i| char::from(b'!' + (i * 7919 % 90) as u8)).collect();
    vec![
        (json!({"model": "flux-2-pro"}), 400, "prompt"),
        (json!({"model": "flux-2-pro", "prompt": "   "}), 400, "prompt"),
        (json!({"model": "flux-2-pro", "prompt": 12}), 400, "prompt"),
        (json!({"model": "flux-2-pro", "prompt": long_prompt}), 400, "prompt"),
        (json!({"model": "flux-2-pro", "prompt": "x", "size": "1000x1000"}), 400, "size"),
        (json!({"model": "flux-2-pro", "prompt": "x", "size": "3840x2160"}), 400, "size"),
        (json!({"model": "flux-2-pro", "prompt": "x", "size": "32x32"}), 400, "size"),
        (json!({"model": "flux-2-pro", "prompt": "x", "size": "big"}), 400, "size"),
        (
            json!({"model": "flux-2-pro", "prompt": "x", "size": "1024x1024", "width": 512, "height": 512}),
            400,
            "size",
        ),
        (json!({"model": "flux-2-pro", "prompt": "x", "width": 1000, "height": 1008}), 400, "width"),
        (json!({"model": "flux-2-pro", "prompt": "x", "width": 1024}), 400, "height"),
        (json!({"model": "flux-dev", "prompt": "x", "size": "1024x1000"}), 400, "size"),
        (json!({"model": "flux-pro-1.1", "prompt": "x", "size": "2048x2048"}), 400, "size"),
        (json!({"model": "flux-pro-1.1", "prompt": "x", "size": "128x128"}), 400, "size"),
        (json!({"model": "flux-kontext-pro", "prompt": "x", "size": "3000x1000"}), 400, "size"),
        (json!({"model": "flux-kontext-pro", "prompt": "x", "aspect_ratio": "1:3"}), 400, "aspect_ratio"),
        (json!({"model": "flux-kontext-pro", "prompt": "x", "aspect_ratio": "wide"}), 400, "aspect_ratio"),
        (
            json!({"model": "flux-kontext-pro", "prompt": "x", "aspect_ratio": "16:9", "size": "1024x1024"}),
            400,
            "aspect_ratio",
        ),
        (json!({"model": "flux-2-pro", "prompt": "x", "aspect_ratio": "16:9"}), 400, "aspect_ratio"),
        (json!({"model": "flux-2-pro", "prompt": "x", "n": 11}), 400, "n"),
        (json!({"model": "flux-2-pro", "prompt": "x", "n": 0}), 400, "n"),
        (json!({"model": "flux-2-pro", "prompt": "x", "response_format": "png"}), 400, "response_format"),
        (json!({"model": "flux-2-pro", "prompt": "x", "output_format": "gif"}), 400, "output_format"),
        (json!({"model": "flux-2-pro", "prompt": "x", "safety_tolerance": 7}), 400, "safety_tolerance"),
        (json!({"model": "flux-2-pro", "prompt": "x", "safety_tolerance": -1}), 400, "safety_tolerance"),
        (json!({"model": "flux-2-pro", "prompt": "x", "seed": "lucky"}), 400, "seed"),
        (json!({"model": "flux-2-pro", "prompt": "x", "steps": 20}), 400, "steps"),
        (json!({"model": "flux-2-pro", "prompt": "x", "guidance": 3}), 400, "guidance"),
        (json!({"model": "flux-2-pro", "prompt": "x", "raw": true}), 400, "raw"),
        (json!({"model": "flux-2-flex", "prompt": "x", "steps": 51}), 400, "steps"),
        (json!({"model": "flux-2-flex", "prompt": "x", "guidance": 10.5}), 400, "guidance"),
        (json!({"model": "flux-dev", "prompt": "x", "guidance": 6}), 400, "guidance"),
        (json!({"model": "flux-kontext-max", "prompt": "x", "raw": false}), 400, "raw"),
        (
            json!({"model": "flux-2-pro", "prompt": "x", "prompt_upsampling": "sometimes"}),
            400,
            "prompt_upsampling",
        ),
        (json!({"model": "flux-2-pro", "prompt": "x", "background": "transparent"}), 400, "background"),
        (json!({"model": "flux-2-pro", "prompt": "x", "stream": "yes"}), 400, "stream"),
        (json!({"model": "flux-9-imaginary", "prompt": "x"}), 404, "model"),
    ]
}

#[tokio::test]
async fn every_violation_is_an_openai_error_naming_the_parameter_and_nothing_is_submitted() {
    let app = spawn_app().await;
    for (body, status, param) in violations() {
        let shown = body.to_string().chars().take(120).collect::<String>();
        let reply = app.generate(body).await;
        assert_eq!(reply.status, status, "{shown}: {}", reply.body);
        assert_eq!(reply.error_param(), Some(param), "{shown}: {}", reply.body);
        assert_eq!(reply.error_type(), Some("invalid_request_error"), "{shown}");
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{shown}");
        assert_eq!(reply.header("x-should-retry"), Some("false"), "{shown}");
        assert!(reply.header("x-request-id").is_some(), "{shown}");
    }
    assert_eq!(app.sim.submit_attempts(), 0, "nothing may reach BFL");
}

#[tokio::test]
async fn an_unknown_model_is_a_404_with_code_model_not_found() {
    let app = spawn_app().await;
    let reply = app.generate(json!({"model": "dall-e-3", "prompt": "x"})).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), Some("model_not_found"));
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_client_errors() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/images/generations", app.base))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let huge = json!({"prompt": "x".repeat(2 * 1024 * 1024)});
    let reply = app.generate(huge).await;
    assert_eq!(reply.status, 413, "{}", reply.body);

    let not_object = app.post_json("/v1/images/generations", &json!(["prompt"])).await;
    assert_eq!(not_object.status, 400);
    assert_eq!(app.sim.submit_attempts(), 0);
}

#[tokio::test]
async fn klein_silently_ignores_prompt_upsampling_and_safety_six_is_clamped_to_five() {
    let app = spawn_app().await;
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "x", "prompt_upsampling": true, "safety_tolerance": 6}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = app.last_submit().body;
    assert!(body.get("prompt_upsampling").is_none() && body.get("disable_pup").is_none());
    assert_eq!(body["safety_tolerance"], 5);
}
