//! Tests of per-endpoint validation against BFL's schemas.

use serde_json::{Value, json};

use super::*;
use crate::models::find;

fn check(model: &str, body: Value) -> Result<Job, Rejection> {
    let m = find(model).expect("known model");
    validate(m, body.as_object().expect("object body"))
}

fn locs(r: Result<Job, Rejection>) -> Vec<String> {
    match r {
        Err(Rejection::List(items)) => {
            items.iter().map(|e| e.loc.last().and_then(Value::as_str).unwrap_or("").to_owned()).collect()
        }
        other => panic!("expected a list-form 422, got {other:?}"),
    }
}

#[test]
fn flux2_requires_a_prompt_and_checks_sizes() {
    assert_eq!(locs(check("flux-2-pro", json!({}))), ["prompt"]);
    assert_eq!(locs(check("flux-2-pro", json!({"prompt": null}))), ["prompt"]);
    let bad = json!({"prompt": "x", "width": 1000, "height": 32, "safety_tolerance": 6});
    assert_eq!(locs(check("flux-2-pro", bad)), ["width", "height", "safety_tolerance"]);
    let over = json!({"prompt": "x", "width": 4096, "height": 2048});
    assert!(matches!(check("flux-2-max", over), Err(Rejection::List(_))));
    let ok = check("flux-2-max", json!({"prompt": "x", "width": 2048, "height": 2048, "seed": 5}));
    let job = ok.expect("valid");
    assert_eq!((job.size, job.seed, job.upsample), ((2048, 2048), Some(5), true));
}

#[test]
fn zero_or_null_sizes_mean_default_and_unknown_fields_are_ignored() {
    let job = check("flux-2-klein-4b", json!({"prompt": "x", "width": 0, "height": null, "bogus": [1]}));
    let job = job.expect("valid");
    assert_eq!(job.size, (1024, 1024));
    assert!(!job.upsample, "klein never upsamples");
    let job = check(
        "flux-2-klein-9b",
        json!({"prompt": "x", "prompt_upsampling": true, "disable_pup": "nonsense"}),
    );
    assert!(!job.expect("klein ignores both knobs").upsample);
}

#[test]
fn upsampling_follows_each_endpoints_knob_and_default() {
    let up = |m: &str, b: Value| check(m, b).expect("valid").upsample;
    assert!(!up("flux-2-pro", json!({"prompt": "x", "disable_pup": true})));
    assert!(up("flux-2-flex", json!({"prompt": "x"})));
    assert!(!up("flux-2-flex", json!({"prompt": "x", "prompt_upsampling": false})));
    assert!(!up("flux-kontext-pro", json!({"prompt": "x"})));
    assert!(up("flux-dev", json!({"prompt_upsampling": true})));
}

#[test]
fn legacy_sizes_steps_and_guidance_have_their_own_ranges() {
    let bad = json!({"width": 1000, "height": 1472, "steps": 0, "guidance": 5.5, "prompt": null});
    assert_eq!(locs(check("flux-dev", bad)), ["prompt", "width", "height", "steps", "guidance"]);
    let job = check("flux-pro", json!({})).expect("prompt is optional on legacy endpoints");
    assert_eq!((job.size, job.format), ((1024, 768), Format::Jpeg));
    assert_eq!(
        locs(check("flux-2-flex", json!({"prompt": "x", "guidance": 11, "steps": 51}))),
        ["steps", "guidance"]
    );
    // flux-pro-1.1 has no steps: a wild value is just an unknown field.
    assert!(check("flux-pro-1.1", json!({"steps": "many", "prompt": null})).is_ok());
}

#[test]
fn aspect_ratio_out_of_range_is_a_plain_string_detail() {
    let r = check("flux-kontext-pro", json!({"prompt": "x", "aspect_ratio": "22:9"}));
    assert_eq!(r, Err(Rejection::Plain(ASPECT_RANGE.to_owned())));
    assert_eq!(locs(check("flux-pro-1.1-ultra", json!({"aspect_ratio": "wide"}))), ["aspect_ratio"]);
    assert_eq!(locs(check("flux-pro-1.1-ultra", json!({"aspect_ratio": null}))), ["aspect_ratio"]);
    let job =
        check("flux-kontext-max", json!({"prompt": "x", "aspect_ratio": "21:9"})).expect("edge is allowed");
    assert!(job.size.0 > job.size.1);
    assert_eq!(job.format, Format::Png, "kontext's schema defaults to png");
}

#[test]
fn input_images_are_decoded_and_size_the_output() {
    let img = image::RgbImage::new(640, 480);
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Jpeg).expect("jpeg");
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, buf.into_inner());
    let body = json!({"prompt": "x", "input_image": b64, "input_image_3": "https://x.test/a.png"});
    let job = check("flux-2-pro", body).expect("valid");
    assert_eq!(job.input_dims, vec![Some((640, 480)), None]);
    assert_eq!(job.size, (640, 480));
    let kontext = check("flux-kontext-pro", json!({"prompt": "x", "input_image": b64})).expect("valid");
    assert!(kontext.size.0 > kontext.size.1, "follows the input's landscape ratio");
    assert_eq!(
        locs(check("flux-2-pro", json!({"prompt": "x", "input_image_2": "data:image/png;base64,AAAA"}))),
        ["input_image_2"]
    );
    assert_eq!(locs(check("flux-2-klein-4b", json!({"prompt": "x", "input_image": 5}))), ["input_image"]);
    // Klein only declares four references, so a fifth is an unknown field.
    assert!(check("flux-2-klein-4b", json!({"prompt": "x", "input_image_5": "%%%"})).is_ok());
}

#[test]
fn output_format_and_types_are_checked() {
    let r = check(
        "flux-2-pro",
        json!({"prompt": 5, "output_format": "gif", "seed": "abc", "safety_tolerance": null}),
    );
    assert_eq!(locs(r), ["prompt", "seed", "safety_tolerance", "output_format"]);
    let job =
        check("flux-2-pro", json!({"prompt": "x", "output_format": "webp", "seed": "7"})).expect("lax ints");
    assert_eq!((job.format, job.seed), (Format::Webp, Some(7)));
}
