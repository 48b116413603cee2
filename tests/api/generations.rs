//! Every catalog model end to end: the exact BFL path and body, and a URL serving the image.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// (model, extra request fields, exact body BFL must receive, expected image size or ratio).
fn cases() -> Vec<(&'static str, Value, Value, (u32, u32))> {
    vec![
        (
            "flux-2-max",
            json!({"size": "1024x768", "seed": 7, "safety_tolerance": 6}),
            json!({"width": 1024, "height": 768, "seed": 7, "safety_tolerance": 5, "output_format": "jpeg"}),
            (1024, 768),
        ),
        (
            "flux-2-pro",
            json!({"size": "1280x720", "prompt_upsampling": false, "output_format": "png"}),
            json!({"width": 1280, "height": 720, "disable_pup": true, "safety_tolerance": 2, "output_format": "png"}),
            (1280, 720),
        ),
        (
            "flux-2-pro-preview",
            json!({"width": 512, "height": 512, "output_format": "webp"}),
            json!({"width": 512, "height": 512, "safety_tolerance": 2, "output_format": "webp"}),
            (512, 512),
        ),
        (
            "flux-2-flex",
            json!({"size": "768x1024", "steps": 30, "guidance": 7.5, "prompt_upsampling": true}),
            json!({"width": 768, "height": 1024, "steps": 30, "guidance": 7.5, "prompt_upsampling": true,
                   "safety_tolerance": 2, "output_format": "jpeg"}),
            (768, 1024),
        ),
        (
            "flux-2-klein-9b",
            json!({"size": "1024x1024", "prompt_upsampling": true}),
            json!({"width": 1024, "height": 1024, "safety_tolerance": 2, "output_format": "jpeg"}),
            (1024, 1024),
        ),
        (
            "flux-2-klein-9b-preview",
            json!({"size": "512x768", "prompt_upsampling": false, "safety_tolerance": 6}),
            json!({"width": 512, "height": 768, "safety_tolerance": 5, "output_format": "jpeg"}),
            (512, 768),
        ),
        (
            "flux-2-klein-4b",
            json!({"safety_tolerance": 0}),
            json!({"safety_tolerance": 0, "output_format": "jpeg"}),
            (1024, 1024),
        ),
        (
            "flux-kontext-max",
            json!({"size": "1920x1080", "prompt_upsampling": true}),
            json!({"aspect_ratio": "16:9", "prompt_upsampling": true, "safety_tolerance": 2, "output_format": "jpeg"}),
            (16, 9),
        ),
        (
            "flux-kontext-pro",
            json!({"aspect_ratio": "3:4", "safety_tolerance": 6}),
            json!({"aspect_ratio": "3:4", "safety_tolerance": 6, "output_format": "jpeg"}),
            (3, 4),
        ),
        (
            "flux-pro-1.1-ultra",
            json!({"size": "2048x1024", "raw": true, "seed": 42}),
            json!({"aspect_ratio": "2:1", "raw": true, "seed": 42, "safety_tolerance": 2, "output_format": "jpeg"}),
            (2, 1),
        ),
        (
            "flux-pro-1.1",
            json!({"size": "1440x256", "prompt_upsampling": false}),
            json!({"width": 1440, "height": 256, "prompt_upsampling": false, "safety_tolerance": 2, "output_format": "jpeg"}),
            (1440, 256),
        ),
        (
            "flux-pro",
            json!({"size": "1024x768", "steps": 40, "guidance": 2.5}),
            json!({"width": 1024, "height": 768, "steps": 40, "guidance": 2.5, "safety_tolerance": 2, "output_format": "jpeg"}),
            (1024, 768),
        ),
        (
            "flux-dev",
            json!({"size": "256x1440", "steps": 28, "guidance": 3.0, "output_format": "png"}),
            json!({"width": 256, "height": 1440, "steps": 28, "guidance": 3.0, "safety_tolerance": 2, "output_format": "png"}),
            (256, 1440),
        ),
    ]
}

#[tokio::test]
async fn every_model_sends_the_exact_bfl_body_and_returns_a_working_image_url() {
    let app = spawn_app().await;
    for (model, extra, expected, (w, h)) in cases() {
        let mut request = json!({"model": model, "prompt": "a lighthouse at dusk"});
        merge(&mut request, &extra);
        let reply = app.generate(request).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.body);
        assert!(reply.body["created"].as_u64().is_some(), "{model}: created");

        let sent = app.last_submit();
        assert_eq!(sent.path, format!("/v1/{model}"), "{model}: path");
        assert_eq!(sent.key, crate::helpers::SIM_KEY);
        let mut expected_body = json!({"prompt": "a lighthouse at dusk"});
        merge(&mut expected_body, &expected);
        assert_eq!(sent.body, expected_body, "{model}: body sent to BFL");

        let url =
            reply.body["data"][0]["url"].as_str().unwrap_or_else(|| panic!("{model}: url in {}", reply.body));
        let (kind, width, height) = app.fetch_image(url).await;
        let format = expected["output_format"].as_str().expect("every case names a format");
        assert_eq!(kind, format!("image/{format}"), "{model}: content type");
        if expected.get("aspect_ratio").is_some() {
            // Aspect-ratio models pick their own pixel count; the ratio must hold.
            let ratio = f64::from(width) / f64::from(height);
            let want = f64::from(w) / f64::from(h);
            assert!((ratio - want).abs() / want < 0.03, "{model}: {width}x{height} is not {w}:{h}");
        } else {
            assert_eq!((width, height), (w, h), "{model}: image size");
        }
    }
}

#[tokio::test]
async fn b64_json_returns_the_image_bytes_inline() {
    let app = spawn_app().await;
    let reply = app
        .generate(json!({"model": "flux-2-klein-4b", "prompt": "a fox", "size": "256x256",
                         "response_format": "b64_json", "output_format": "png"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let datum = &reply.body["data"][0];
    assert!(datum.get("url").is_none());
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(datum["b64_json"].as_str().expect("b64_json"))
        .expect("valid base64");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let size = imagesize::blob_size(&bytes).expect("an image");
    assert_eq!((size.width, size.height), (256, 256));
}

#[tokio::test]
async fn an_upsampled_prompt_comes_back_as_revised_prompt_and_an_untouched_one_does_not() {
    let app = spawn_app().await;
    let upsampled =
        app.generate(json!({"model": "flux-dev", "prompt": "a cat", "prompt_upsampling": true})).await;
    assert_eq!(upsampled.status, 200, "{}", upsampled.body);
    let revised = upsampled.body["data"][0]["revised_prompt"].as_str().expect("revised_prompt");
    assert_ne!(revised, "a cat");
    assert!(revised.contains("a cat"));

    let plain = app.generate(json!({"model": "flux-dev", "prompt": "a cat"})).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(plain.body["data"][0].get("revised_prompt").is_none(), "{}", plain.body);
}

#[tokio::test]
async fn structured_json_prompts_with_hex_colours_pass_through_untouched() {
    let app = spawn_app().await;
    let prompt = r##"{"scene": "poster", "palette": ["#02eb3c", "#ff0088"], "text": "SALE"}"##;
    let reply = app.generate(json!({"model": "flux-2-klein-4b", "prompt": prompt})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.last_submit().body["prompt"], prompt);
}

#[tokio::test]
async fn openai_only_fields_and_nulls_are_accepted_and_not_forwarded() {
    let app = spawn_app().await;
    let reply = app
        .generate(json!({"model": "flux-2-klein-9b", "prompt": "a boat", "quality": "hd", "style": "vivid",
                         "user": "u1", "moderation": "low", "background": "opaque", "n": 1, "seed": null,
                         "size": null, "response_format": null, "some_future_field": {"x": 1}}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        app.last_submit().body,
        json!({"prompt": "a boat", "safety_tolerance": 2, "output_format": "jpeg"})
    );
}

#[tokio::test]
async fn a_request_without_a_model_uses_the_configured_default() {
    let app = spawn_app().await;
    let reply = app.generate(json!({"prompt": "a tree"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.last_submit().path, "/v1/flux-2-pro");
}

fn merge(into: &mut Value, extra: &Value) {
    if let (Some(into), Some(extra)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            into.insert(k.clone(), v.clone());
        }
    }
}
