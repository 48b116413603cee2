//! `POST /v1/images/edits`: references arrive as `image` or `image[]` (multipart, also chunked) or
//! in the JSON form, and reach BFL as `input_image`, `input_image_2`, … in upload order.

use base64::Engine;
use bfl_sim::SimConfig;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app, spawn_with};
use crate::uploads::{Part, file, noisy_png, png, png_header_only, text};

/// Distinct sizes, so the order of references can be read back from their dimensions.
fn dims(i: u32) -> (u32, u32) {
    (64 + 16 * i, 80)
}

fn references(field: &'static str, count: u32) -> Vec<Part> {
    (0..count).map(|i| file(field, png(dims(i).0, dims(i).1))).collect()
}

async fn expect_references(app: &TestApp, reply: &crate::helpers::Reply, model: &str, count: u32) {
    assert_eq!(reply.status, 200, "{model} with {count}: {}", reply.body);
    let sent = app.last_submit();
    assert_eq!(sent.path, format!("/v1/{model}"));
    let expected: Vec<Option<(u32, u32)>> = (0..count).map(|i| Some(dims(i))).collect();
    assert_eq!(sent.input_dims, expected, "{model}: references in upload order");
    let body = sent.body.as_object().expect("object");
    for i in 0..count {
        let name = if i == 0 { "input_image".to_owned() } else { format!("input_image_{}", i + 1) };
        let value = body.get(&name).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{name} missing"));
        assert!(!value.starts_with("data:"), "raw base64, no data: prefix");
    }
    assert!(!body.contains_key(&format!("input_image_{}", count + 1)));
}

#[tokio::test]
async fn one_four_and_eight_references_reach_flux_2_pro_in_order_as_image_and_as_image_list() {
    let app = spawn_app().await;
    for (field, count) in [("image", 1), ("image[]", 1), ("image[]", 4), ("image", 4), ("image[]", 8)] {
        let mut parts = vec![text("model", "flux-2-pro")];
        // Text fields both before and after the files.
        parts.extend(references(field, count));
        parts.push(text("prompt", "the person from image 1 in the scene of image 2"));
        parts.push(text("n", "1"));
        let reply = app.edit(parts).await;
        expect_references(&app, &reply, "flux-2-pro", count).await;
        assert_eq!(app.last_submit().body["prompt"], "the person from image 1 in the scene of image 2");
    }
    app.assert_settles().await;
}

#[tokio::test]
async fn klein_takes_four_and_kontext_one_with_their_own_knobs() {
    let app = spawn_app().await;
    let mut klein = vec![text("model", "flux-2-klein-4b"), text("prompt", "merge"), text("seed", "7")];
    klein.extend(references("image[]", 4));
    let reply = app.edit(klein).await;
    expect_references(&app, &reply, "flux-2-klein-4b", 4).await;
    assert_eq!(app.last_submit().body["seed"], 7);
    let mut preview = vec![text("model", "flux-2-klein-9b-preview"), text("prompt", "merge")];
    preview.extend(references("image", 4));
    let reply = app.edit(preview).await;
    expect_references(&app, &reply, "flux-2-klein-9b-preview", 4).await;

    let mut kontext = vec![
        text("model", "flux-kontext-pro"),
        text("prompt", "make it night"),
        text("aspect_ratio", "16:9"),
        text("safety_tolerance", "4"),
        text("output_format", "png"),
    ];
    kontext.extend(references("image", 1));
    let reply = app.edit(kontext).await;
    expect_references(&app, &reply, "flux-kontext-pro", 1).await;
    let body = app.last_submit().body;
    assert_eq!((body["aspect_ratio"].as_str(), body["safety_tolerance"].as_u64()), (Some("16:9"), Some(4)));

    let mut flex =
        vec![text("model", "flux-2-flex"), text("prompt", "p"), text("steps", "20"), text("guidance", "4.5")];
    flex.extend(references("image[]", 2));
    let reply = app.edit(flex).await;
    expect_references(&app, &reply, "flux-2-flex", 2).await;
    assert_eq!(app.last_submit().body["steps"], 20);
}

#[tokio::test]
async fn a_chunked_upload_without_content_length_works() {
    let app = spawn_app().await;
    let mut parts = vec![text("model", "flux-2-pro"), text("prompt", "chunked")];
    parts.extend(references("image[]", 3));
    parts.push(file("image[]", noisy_png(400, 300)));
    let reply = app.edit_chunked(parts).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.last_submit().input_dims.len(), 4);
    assert_eq!(app.last_submit().input_dims[3], Some((400, 300)));
}

#[tokio::test]
async fn the_json_form_takes_data_urls_and_https_urls() {
    let app = spawn_app().await;
    let data_url =
        format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png(96, 80)));
    let reply = app
        .post_json(
            "/v1/images/edits",
            &json!({"model": "flux-2-pro", "prompt": "combine",
                    "images": [{"image_url": data_url}, {"image_url": "https://example.com/cat.png"}]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sent = app.last_submit();
    assert_eq!(sent.input_dims, vec![Some((96, 80)), None]);
    assert_eq!(sent.body["input_image_2"], "https://example.com/cat.png");
}

#[tokio::test]
async fn every_edit_rejection_is_an_openai_error_and_nothing_reaches_bfl() {
    let spool = tempfile::tempdir().expect("temp dir");
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![
            ("uploads.max_file_bytes", 300_000.into()),
            ("uploads.memory_threshold", 1024.into()),
            ("uploads.spool_dir", spool.path().to_string_lossy().into_owned().into()),
        ],
    )
    .await;
    let ok = |n: u32| references("image[]", n);
    let mut truncated = png(200, 200);
    truncated.truncate(truncated.len() - 20);
    let random: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let cases: Vec<(&str, &str, Vec<Part>, u16, &str)> = vec![
        ("nine on pro", "flux-2-pro", ok(9), 400, "image"),
        ("five on klein", "flux-2-klein-4b", ok(5), 400, "image"),
        ("two on kontext", "flux-kontext-pro", ok(2), 400, "image"),
        ("generation-only model", "flux-pro-1.1", ok(1), 400, "model"),
        ("32x32", "flux-2-pro", vec![file("image", png(32, 32))], 400, "image[0]"),
        (
            "3000x3000",
            "flux-2-pro",
            vec![file("image[]", png(64, 64)), file("image[]", png(3000, 3000))],
            400,
            "image[1]",
        ),
        (
            "100000x100000 header",
            "flux-2-pro",
            vec![file("image", png_header_only(100_000, 100_000))],
            400,
            "image[0]",
        ),
        ("random bytes", "flux-2-pro", vec![file("image", random)], 400, "image[0]"),
        ("truncated png", "flux-2-pro", vec![file("image", truncated)], 400, "image[0]"),
        ("over the size cap", "flux-2-pro", vec![file("image", noisy_png(400, 400))], 413, "image[0]"),
        ("no image", "flux-2-pro", vec![], 400, "image"),
        ("mask", "flux-2-pro", vec![file("image", png(64, 64)), file("mask", png(64, 64))], 400, "mask"),
    ];
    for (label, model, mut parts, status, param) in cases {
        parts.insert(0, text("model", model));
        parts.push(text("prompt", "edit"));
        let reply = app.edit(parts).await;
        assert_eq!(reply.status, status, "{label}: {}", reply.body);
        assert_eq!(reply.error_param(), Some(param), "{label}: {}", reply.body);
        assert_eq!(reply.error_type(), Some("invalid_request_error"), "{label}");
        assert_eq!(reply.header("x-should-retry"), Some("false"), "{label}");
    }
    let empty_prompt =
        app.edit(vec![text("model", "flux-2-pro"), text("prompt", " "), file("image", png(64, 64))]).await;
    assert_eq!((empty_prompt.status, empty_prompt.error_param()), (400, Some("prompt")));
    let file_id =
        app.post_json("/v1/images/edits", &json!({"prompt": "x", "images": [{"file_id": "file-1"}]})).await;
    assert_eq!(file_id.status, 400, "{}", file_id.body);
    assert_eq!(app.sim.submit_attempts(), 0, "nothing reached BFL");
    assert_eq!(std::fs::read_dir(spool.path()).expect("spool dir").count(), 0, "temporary files are gone");
}

#[tokio::test]
async fn spooled_references_are_deleted_once_the_request_is_over() {
    let spool = tempfile::tempdir().expect("temp dir");
    let app = spawn_with(
        SimConfig { time_scale: 0.02, ..SimConfig::default() },
        vec![
            ("uploads.memory_threshold", 1024.into()),
            ("uploads.spool_dir", spool.path().to_string_lossy().into_owned().into()),
        ],
    )
    .await;
    let mut parts = vec![text("model", "flux-2-pro"), text("prompt", "spool")];
    parts.extend((0..3).map(|_| file("image[]", noisy_png(300, 300))));
    let reply = app.edit(parts).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(app.last_submit().input_dims, vec![Some((300, 300)); 3]);
    app.assert_settles().await;
    assert_eq!(std::fs::read_dir(spool.path()).expect("spool dir").count(), 0);
}
