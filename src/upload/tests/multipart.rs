//! Multipart bodies as the SDKs (and less careful clients) send them.

use axum::body::Body;

use super::super::{AnyCount, ImageKind, Reference, UploadLimits, read_multipart};
use super::*;

fn kinds_and_sizes(upload: &EditUpload) -> Vec<(ImageKind, u32, u32)> {
    upload
        .references
        .iter()
        .map(|r| match r {
            Reference::Image(image) => (image.kind, image.width, image.height),
            Reference::Url(url) => panic!("unexpected URL {url}"),
        })
        .collect()
}

fn mixed_form() -> Vec<u8> {
    Form::default()
        .text("model", "flux-2-pro")
        .image("image[]", &png(64, 64))
        .text("prompt", "a cat in a hat")
        .image("image", &jpeg(100, 80))
        .text("n", "1")
        .text("metadata[user]", "x")
        .image("image[]", &webp(80, 100))
        .finish()
}

#[tokio::test]
async fn image_and_image_brackets_keep_upload_order_among_text_fields() {
    let upload = read(mixed_form(), &UploadLimits::default()).await.expect("a valid form");
    assert_eq!(
        kinds_and_sizes(&upload),
        [(ImageKind::Png, 64, 64), (ImageKind::Jpeg, 100, 80), (ImageKind::Webp, 80, 100)]
    );
    assert_eq!(upload.fields.string("prompt"), Ok(Some("a cat in a hat")));
    assert_eq!(upload.fields.string("model"), Ok(Some("flux-2-pro")));
    assert_eq!(upload.fields.integer("n"), Ok(Some(1)));
    assert_eq!(upload.fields.string("metadata[user]"), Ok(Some("x")), "nested names stay literal");
}

#[tokio::test]
async fn a_chunked_upload_with_boundaries_split_across_frames_reads_the_same() {
    let whole = read(mixed_form(), &UploadLimits::default()).await.expect("a valid form");
    for size in [1, 7, 1000, 70_000] {
        let chunked = read_chunked(mixed_form(), size, &UploadLimits::default()).await.expect("a valid form");
        assert_eq!(kinds_and_sizes(&chunked), kinds_and_sizes(&whole), "frames of {size}");
        assert_eq!(chunked.fields.string("prompt"), Ok(Some("a cat in a hat")), "frames of {size}");
    }
}

#[tokio::test]
async fn the_format_comes_from_the_bytes_not_the_filename_or_content_type() {
    let body = Form::default()
        .file("image[]", Some("a.png"), Some("image/png"), &jpeg(64, 64))
        .file("image[]", Some("upload"), Some("application/octet-stream"), &webp(64, 64))
        .file("image", None, None, &png(64, 64))
        .finish();
    let upload = read(body, &UploadLimits::default()).await.expect("a valid form");
    let kinds: Vec<_> = kinds_and_sizes(&upload).into_iter().map(|(kind, ..)| kind).collect();
    assert_eq!(kinds, [ImageKind::Jpeg, ImageKind::Webp, ImageKind::Png]);
}

#[tokio::test]
async fn sides_under_64_pixels_are_refused_naming_the_reference() {
    let small = Form::default().image("image", &png(32, 32)).finish();
    assert_refused(
        read(small, &UploadLimits::default()).await,
        400,
        Some("image[0]"),
        &["reference 1", "32x32"],
    );
    let second = Form::default().image("image[]", &png(64, 64)).image("image[]", &jpeg(63, 63)).finish();
    assert_refused(
        read(second, &UploadLimits::default()).await,
        400,
        Some("image[1]"),
        &["reference 2", "63x63"],
    );
}

#[tokio::test]
async fn a_header_claiming_too_many_pixels_is_refused_before_the_rest_arrives() {
    let mut head = png_header(100_000, 100_000);
    head.extend_from_slice(b"\x00\x10\x00\x00IDAT");
    head.extend_from_slice(&[0x55; 2000]);
    let mut form = Form::default().text("prompt", "p");
    form.raw_part("Content-Disposition: form-data; name=\"image\"; filename=\"big.png\"", &head);
    let mut body = form.unfinished();
    body.truncate(body.len() - 2); // the part goes on: no CRLF, no boundary
    let result = read_then_stall(body, &UploadLimits::default()).await;
    assert_refused(result, 400, Some("image[0]"), &["reference 1", "100000x100000", "4194304 pixels"]);
}

#[tokio::test]
async fn bytes_that_are_no_image_are_refused() {
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(5000).collect();
    let body = Form::default().image("image", &noise).finish();
    assert_refused(
        read(body, &UploadLimits::default()).await,
        400,
        Some("image[0]"),
        &["not a PNG, JPEG or WebP"],
    );
}

#[tokio::test]
async fn truncated_files_are_refused() {
    let png = png(64, 64);
    let body = Form::default().image("image", &png[..png.len() - 20]).finish();
    assert_refused(read(body, &UploadLimits::default()).await, 400, Some("image[0]"), &["truncated", "IEND"]);
    let jpeg = jpeg(64, 64);
    let body = Form::default().image("image[]", &png).image("image[]", &jpeg[..jpeg.len() - 2]).finish();
    assert_refused(
        read(body, &UploadLimits::default()).await,
        400,
        Some("image[1]"),
        &["reference 2", "EOI"],
    );
}

#[tokio::test]
async fn empty_file_parts_are_refused() {
    let body = Form::default().image("image", b"").finish();
    assert_refused(
        read(body, &UploadLimits::default()).await,
        400,
        Some("image[0]"),
        &["reference 1 is empty"],
    );
}

#[tokio::test]
async fn a_file_over_the_cap_is_a_413_naming_it_and_reading_stops_there() {
    let limits = UploadLimits { max_file_bytes: 20_000, ..UploadLimits::default() };
    let small = png(64, 64);
    let big = png(100, 100);
    assert!(small.len() < 20_000 && big.len() > 20_000, "fixture sizes");
    let body = Form::default().image("image[]", &small).image("image[]", &big).unfinished();
    let result = read_then_stall(body[..body.len() - 2].to_vec(), &limits).await;
    assert_refused(result, 413, Some("image[1]"), &["reference 2", "image[1]", "20000 bytes"]);
}

#[tokio::test]
async fn a_mask_is_refused_even_an_empty_one() {
    let body = Form::default().image("image", &png(64, 64)).image("mask", &png(64, 64)).finish();
    assert_refused(read(body, &UploadLimits::default()).await, 400, Some("mask"), &["not supported"]);
    let body = Form::default().text("mask", "x").finish();
    assert_refused(read(body, &UploadLimits::default()).await, 400, Some("mask"), &["not supported"]);
    let body = Form::default().image("image", &png(64, 64)).image("mask", b"").finish();
    assert_refused(read(body, &UploadLimits::default()).await, 400, Some("mask"), &["not supported"]);
}

#[tokio::test]
async fn an_unknown_file_field_is_named() {
    let body = Form::default().image("file", &png(64, 64)).finish();
    assert_refused(read(body, &UploadLimits::default()).await, 400, Some("file"), &["`file`", "image[]"]);
}

#[tokio::test]
async fn too_many_images_or_parts_are_refused() {
    let limits = UploadLimits { max_images: 2, max_parts: 4, ..UploadLimits::default() };
    let image = png(64, 64);
    let body =
        Form::default().image("image[]", &image).image("image[]", &image).image("image[]", &image).finish();
    assert_refused(read(body, &limits).await, 400, Some("image"), &["at most 2"]);
    let body = (0..5).fold(Form::default(), |form, i| form.text(&format!("f{i}"), "v")).finish();
    assert_refused(read(body, &limits).await, 400, None, &["more than 4 parts"]);
}

#[tokio::test]
async fn text_fields_are_capped_and_must_be_utf8() {
    let limits = UploadLimits { max_text_bytes: 100, ..UploadLimits::default() };
    let body = Form::default().text("prompt", &"a".repeat(101)).finish();
    assert_refused(read(body, &limits).await, 413, Some("prompt"), &["`prompt`", "100 bytes"]);
    let body = (0..3).fold(Form::default(), |form, i| form.text(&format!("f{i}"), &"a".repeat(90))).finish();
    assert_refused(read(body, &limits).await, 413, None, &["text fields together", "200 bytes"]);
    let mut form = Form::default();
    form.raw_part("Content-Disposition: form-data; name=\"prompt\"", b"caf\xe9");
    assert_refused(read(form.finish(), &limits).await, 400, Some("prompt"), &["UTF-8"]);
}

#[tokio::test]
async fn bad_content_types_and_malformed_bodies_are_400s() {
    let limits = UploadLimits::default();
    for content_type in ["multipart/form-data", "application/json", ""] {
        let result =
            read_multipart(content_type, Body::from(mixed_form()), &uploads(&limits), &AnyCount).await;
        assert_refused(result, 400, None, &["boundary"]);
    }
    let unfinished = Form::default().text("prompt", "p").unfinished();
    assert_refused(read(unfinished, &limits).await, 400, None, &["malformed"]);
    assert_refused(read(b"no multipart here at all".to_vec(), &limits).await, 400, None, &["malformed"]);
    let mut nameless = Form::default();
    nameless.raw_part("Content-Disposition: form-data", b"x");
    assert_refused(read(nameless.finish(), &limits).await, 400, None, &["no name"]);
}

#[tokio::test]
async fn part_headers_that_never_end_are_cut_off() {
    let mut start =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"prompt\"\r\nX-Pad: ").into_bytes();
    start.extend(std::iter::repeat_n(b'a', 4096));
    let frames = std::iter::once(start).chain(std::iter::repeat_n(vec![b'a'; 64 * 1024], 64));
    let stream = futures_util::stream::iter(frames.map(|f| Ok::<_, std::io::Error>(Bytes::from(f))));
    let uploads = uploads(&UploadLimits::default());
    let result = read_multipart(&content_type(), Body::from_stream(stream), &uploads, &AnyCount).await;
    assert_refused(result, 400, None, &["too long"]);
}

#[test]
fn reading_is_a_send_future() {
    fn send<T: Send>(_: T) {}
    let uploads = uploads(&UploadLimits::default());
    send(read_multipart("", Body::empty(), &uploads, &AnyCount));
    send(super::super::read_json(Default::default(), &uploads, &AnyCount));
    send(super::super::read_json_body(Body::empty(), None, &uploads, &AnyCount));
}
