//! Spooling: temp files live exactly as long as their images, and read back as base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::TryStreamExt;

use super::super::{CheckedImage, ImageKind, Reference, UploadLimits};
use super::*;

fn images(upload: EditUpload) -> Vec<CheckedImage> {
    upload
        .references
        .into_iter()
        .map(|r| match r {
            Reference::Image(image) => image,
            Reference::Url(url) => panic!("unexpected URL {url}"),
        })
        .collect()
}

async fn base64_of(image: &CheckedImage) -> (String, usize) {
    // The stream owns what it reads: it may outlive the image it came from.
    let stream = {
        let image = image.clone();
        image.base64_stream()
    };
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("reading back");
    let largest = chunks.iter().map(Bytes::len).max().unwrap_or(0);
    (chunks.iter().map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect(), largest)
}

#[tokio::test]
async fn spooled_files_live_as_long_as_the_last_clone() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let body = Form::default().image("image[]", &png(64, 64)).image("image[]", &jpeg(64, 64)).finish();
    let mut images = images(read(body, &spooling(dir.path())).await.expect("a valid form"));
    assert_eq!(files_in(dir.path()), 2);
    let second = images.pop().expect("two images");
    let path = second.spool_path().expect("spooled").to_owned();
    let clone = second.clone();
    drop(images);
    assert_eq!(files_in(dir.path()), 1, "the first image's file went with it");
    drop(second);
    assert!(path.exists(), "a clone still holds the file");
    drop(clone);
    assert!(!path.exists());
    assert_eq!(files_in(dir.path()), 0);
}

#[tokio::test]
async fn a_failure_midway_removes_every_file_already_spooled() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let limits = spooling(dir.path());
    let good = png(64, 64);
    let body = Form::default()
        .image("image[]", &good)
        .image("image[]", &good)
        .image("image[]", b"GIF89a....")
        .finish();
    assert_refused(read(body, &limits).await, 400, Some("image[2]"), &["reference 3"]);
    assert_eq!(files_in(dir.path()), 0);

    let truncated = &good[..good.len() - 20];
    let body = Form::default().image("image[]", &good).image("image[]", truncated).finish();
    assert_refused(read_chunked(body, 100, &limits).await, 400, Some("image[1]"), &["truncated"]);
    assert_eq!(files_in(dir.path()), 0);

    let capped = UploadLimits { max_file_bytes: 5000, ..spooling(dir.path()) };
    let body = Form::default().image("image", &good).finish();
    assert_refused(read_chunked(body, 1000, &capped).await, 413, Some("image[0]"), &["reference 1"]);
    assert_eq!(files_in(dir.path()), 0);
}

#[tokio::test]
async fn base64_streams_match_standard_base64_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Several 48 KiB blocks plus a remainder; 3 padding cases come from the three files.
    let files = [png(300, 200), jpeg(64, 65), webp(150, 90)];
    for limits in [UploadLimits::default(), spooling(dir.path())] {
        let body = files.iter().fold(Form::default(), |form, f| form.image("image[]", f)).finish();
        let spooled = limits.memory_threshold == 16;
        for (image, file) in images(read(body, &limits).await.expect("a valid form")).iter().zip(&files) {
            assert_eq!(image.spool_path().is_some(), spooled || file.len() > limits.memory_threshold);
            assert_eq!(image.len, file.len() as u64);
            let expected = STANDARD.encode(file);
            for _ in 0..2 {
                let (text, largest) = base64_of(image).await;
                assert_eq!(text, expected, "each call starts from the beginning");
                assert!(largest <= 64 * 1024, "chunks of at most 64 KiB, got {largest}");
            }
            assert_eq!(image.base64_len(), expected.len() as u64);
        }
    }
}

#[tokio::test]
async fn a_jpeg_whose_frame_header_is_far_in_is_measured_when_complete() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let far = jpeg_with_far_sof(100, 80, 3);
    let too_small = jpeg_with_far_sof(32, 32, 3);
    for limits in
        [UploadLimits { memory_threshold: 1 << 20, ..UploadLimits::default() }, spooling(dir.path())]
    {
        let body = Form::default().image("image", &far).finish();
        let image = images(read(body, &limits).await.expect("a valid form")).remove(0);
        assert_eq!((image.kind, image.width, image.height), (ImageKind::Jpeg, 100, 80));
        let body = Form::default().image("image", &too_small).finish();
        assert_refused(read(body, &limits).await, 400, Some("image[0]"), &["32x32"]);
    }
    assert_eq!(files_in(dir.path()), 0);
}

#[tokio::test]
async fn a_large_upload_streams_through_without_piling_up_in_the_parser() {
    // Frames always ready: a parser that pulled greedily would hold megabytes and trip the
    // overhead budget; pulled piece by piece, every byte goes straight to the spool file.
    let dir = tempfile::tempdir().expect("a temp dir");
    let big = png(1024, 1024);
    assert!(big.len() > 2 * 1024 * 1024, "fixture size");
    let limits = UploadLimits { spool_dir: Some(dir.path().to_owned()), ..UploadLimits::default() };
    for frame in [16 * 1024, big.len() + 1000] {
        let body = Form::default().text("prompt", "p").image("image", &big).finish();
        let image = images(read_chunked(body, frame, &limits).await.expect("a valid form")).remove(0);
        assert_eq!((image.width, image.height, image.len), (1024, 1024, big.len() as u64));
        assert!(image.spool_path().is_some());
    }
}

#[tokio::test]
async fn spooled_bytes_are_counted_while_written_and_given_back_with_the_files() {
    use super::super::{AnyCount, UploadSettings, Uploads};
    let dir = tempfile::tempdir().expect("a temp dir");
    let small = png(150, 150);
    let settings = UploadSettings {
        max_spool_bytes: small.len() as u64 + 1000,
        ..UploadSettings::with_limits(spooling(dir.path()))
    };
    let uploads = Uploads::unprepared(settings, dir.path().to_owned());
    let one = Form::default().image("image", &small).finish();
    let held = read_multipart(&content_type(), Body::from(one), &uploads, &AnyCount).await.expect("fits");
    assert_eq!(uploads.spooled_bytes(), small.len() as u64);
    let two = Form::default().image("image", &small).finish();
    let full = read_multipart(&content_type(), Body::from(two), &uploads, &AnyCount).await;
    let error = full.expect_err("no room for a second");
    assert_eq!(error.status().as_u16(), 503);
    assert_eq!(uploads.spooled_bytes(), small.len() as u64, "the refused file's bytes went back");
    drop(held);
    assert_eq!((uploads.spooled_bytes(), files_in(dir.path())), (0, 0));
}
