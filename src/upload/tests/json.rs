//! The JSON form of edits: data: URLs checked like uploads, https URLs passed on, the rest refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::super::{AnyCount, EditUpload, ImageKind, Reference, UploadLimits, read_json};
use super::*;

async fn read_form(body: Value, limits: &UploadLimits) -> Result<EditUpload, ApiError> {
    let Value::Object(map) = body else { panic!("tests pass objects") };
    read_json(map, &uploads(limits), &AnyCount).await
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", STANDARD.encode(bytes))
}

#[tokio::test]
async fn data_and_https_urls_become_references_in_order() {
    let body = json!({
        "model": "flux-2-pro",
        "prompt": "make it blue",
        "n": 1,
        "images": [
            {"image_url": data_url("image/png", &jpeg(100, 80))},
            {"image_url": "https://example.com/cat.png"},
            {"image_url": {"url": data_url("image/webp", &webp(64, 64))}},
        ],
    });
    let upload = read_form(body, &UploadLimits::default()).await.expect("a valid form");
    assert_eq!(upload.fields.string("prompt"), Ok(Some("make it blue")));
    assert!(!upload.fields.contains("images"));
    match upload.references.as_slice() {
        [Reference::Image(first), Reference::Url(url), Reference::Image(third)] => {
            assert_eq!((first.kind, first.width, first.height), (ImageKind::Jpeg, 100, 80));
            assert_eq!(url, "https://example.com/cat.png");
            assert_eq!(third.kind, ImageKind::Webp);
        }
        other => panic!("unexpected references {other:?}"),
    }
}

#[tokio::test]
async fn no_images_is_not_this_module_s_error() {
    let upload =
        read_form(json!({"prompt": "p", "images": null}), &UploadLimits::default()).await.expect("fine");
    assert!(upload.references.is_empty());
    let upload = read_form(json!({"prompt": "p"}), &UploadLimits::default()).await.expect("fine");
    assert!(upload.references.is_empty());
}

#[tokio::test]
async fn http_urls_file_ids_and_masks_are_refused_by_name() {
    let limits = UploadLimits::default();
    let image = json!({"image_url": data_url("image/png", &png(64, 64))});
    let http = json!({"images": [image, {"image_url": "http://example.com/a.png"}]});
    assert_refused(
        read_form(http, &limits).await,
        400,
        Some("images[1]"),
        &["reference 2", "https or a data: URL"],
    );
    let file_id = json!({"images": [{"file_id": "file-abc"}]});
    assert_refused(
        read_form(file_id, &limits).await,
        400,
        Some("images[0]"),
        &["file ids are not supported"],
    );
    let mask = json!({"images": [image], "mask": {"image_url": "https://example.com/m.png"}});
    assert_refused(read_form(mask, &limits).await, 400, Some("mask"), &["not supported"]);
    assert!(read_form(json!({"mask": null}), &limits).await.is_ok(), "a null mask is absent");
    for bad in [json!({"images": "https://example.com/a.png"}), json!({"images": {"image_url": "x"}})] {
        assert_refused(read_form(bad, &limits).await, 400, Some("images"), &["array"]);
    }
    for bad in
        [json!(["x"]), json!([{"url": "https://example.com/a.png"}]), json!([{"image_url": "ftp://x/y"}])]
    {
        assert_refused(
            read_form(json!({"images": bad}), &limits).await,
            400,
            Some("images[0]"),
            &["reference 1"],
        );
    }
}

#[tokio::test]
async fn data_urls_are_checked_like_uploads() {
    let limits = UploadLimits::default();
    let small = json!({"images": [{"image_url": data_url("image/png", &png(32, 32))}]});
    assert_refused(read_form(small, &limits).await, 400, Some("images[0]"), &["reference 1", "32x32"]);
    let garbage = json!({"images": [{"image_url": "data:image/png;base64,!!!notbase64!!!"}]});
    assert_refused(read_form(garbage, &limits).await, 400, Some("images[0]"), &["base64"]);
    let plain = json!({"images": [{"image_url": "data:image/png,rawbytes"}]});
    assert_refused(read_form(plain, &limits).await, 400, Some("images[0]"), &["base64"]);
    let png = png(64, 64);
    let truncated = json!({"images": [{"image_url": data_url("image/png", &png[..png.len() - 20])}]});
    assert_refused(read_form(truncated, &limits).await, 400, Some("images[0]"), &["truncated"]);

    let capped = UploadLimits { max_file_bytes: 1000, ..UploadLimits::default() };
    let big = json!({"images": [{"image_url": data_url("image/png", &png)}]});
    assert_refused(read_form(big, &capped).await, 413, Some("images[0]"), &["reference 1"]);
    let too_many = UploadLimits { max_images: 1, ..UploadLimits::default() };
    let two = json!({"images": [{"image_url": "https://a.example/1.png"}, {"image_url": "https://a.example/2.png"}]});
    assert_refused(read_form(two, &too_many).await, 400, Some("images"), &["at most 1"]);
}

#[tokio::test]
async fn wrapped_or_unpadded_base64_decodes_and_large_images_spool() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let png = png(300, 200);
    let encoded = STANDARD.encode(&png);
    let wrapped: String = encoded
        .as_bytes()
        .chunks(76)
        .map(|l| format!("{}\r\n", std::str::from_utf8(l).unwrap_or("")))
        .collect();
    let unpadded = encoded.trim_end_matches('=').to_owned();
    for payload in [wrapped, unpadded] {
        let body = json!({"images": [{"image_url": format!("DATA:image/png;base64,{payload}")}]});
        let upload = read_form(body, &spooling(dir.path())).await.expect("a valid form");
        match upload.references.as_slice() {
            [Reference::Image(image)] => {
                assert_eq!((image.width, image.height, image.len), (300, 200, png.len() as u64));
                assert!(image.spool_path().is_some_and(|p| p.exists()));
            }
            other => panic!("unexpected references {other:?}"),
        }
    }
    assert_eq!(files_in(dir.path()), 0);
}
