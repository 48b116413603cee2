//! Tests of the upload module, with real PNG/JPEG/WebP files made by the `image` crate and
//! multipart bodies written out by hand.

mod check;
mod json;
mod multipart;
mod spool;

use std::io::Cursor;
use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use image::{ImageFormat, RgbImage};

use super::{AnyCount, EditUpload, UploadLimits, UploadSettings, Uploads, read_multipart};
use crate::error::ApiError;

pub(super) const BOUNDARY: &str = "----formdata-undici-095578107456";

/// Noise, so that PNG and WebP files do not compress to almost nothing.
fn pixels(width: u32, height: u32) -> RgbImage {
    let mut rng = fastrand::Rng::with_seed(u64::from(width) << 32 | u64::from(height));
    RgbImage::from_fn(width, height, |_, _| image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)]))
}

fn encode(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    pixels(width, height).write_to(&mut out, format).expect("encoding a test image");
    out.into_inner()
}

pub(super) fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Png)
}

pub(super) fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Jpeg)
}

pub(super) fn webp(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::WebP)
}

/// A PNG signature and IHDR claiming any size (the CRC is not checked, so it is left zero).
pub(super) fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    out
}

/// A JPEG with `segments` 64 KiB APP1 segments before its frame header, pushing SOF far in.
pub(super) fn jpeg_with_far_sof(width: u32, height: u32, segments: usize) -> Vec<u8> {
    let plain = jpeg(width, height);
    let mut out = plain[..2].to_vec();
    for _ in 0..segments {
        out.extend_from_slice(&[0xFF, 0xE1, 0xFF, 0xFF]);
        out.extend(std::iter::repeat_n(0x41, 0xFFFF - 2));
    }
    out.extend_from_slice(&plain[2..]);
    out
}

pub(super) fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A multipart body written out by hand, part by part.
#[derive(Default)]
pub(super) struct Form(Vec<u8>);

impl Form {
    pub(super) fn text(mut self, name: &str, value: &str) -> Form {
        self.raw_part(&format!("Content-Disposition: form-data; name=\"{name}\""), value.as_bytes());
        self
    }

    /// `filename` and `mime` are optional, as they are on the wire.
    pub(super) fn file(
        mut self,
        name: &str,
        filename: Option<&str>,
        mime: Option<&str>,
        bytes: &[u8],
    ) -> Form {
        let mut headers = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(filename) = filename {
            headers.push_str(&format!("; filename=\"{filename}\""));
        }
        if let Some(mime) = mime {
            headers.push_str(&format!("\r\nContent-Type: {mime}"));
        }
        self.raw_part(&headers, bytes);
        self
    }

    pub(super) fn image(self, name: &str, bytes: &[u8]) -> Form {
        self.file(name, Some("upload"), Some("application/octet-stream"), bytes)
    }

    pub(super) fn raw_part(&mut self, headers: &str, bytes: &[u8]) {
        self.0.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
        self.0.extend_from_slice(bytes);
        self.0.extend_from_slice(b"\r\n");
    }

    /// The body so far, without the closing boundary (for bodies that never finish).
    pub(super) fn unfinished(self) -> Vec<u8> {
        self.0
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.0
    }
}

/// The shared upload state around `limits`, spooling to `limits.spool_dir` or the system temp dir
/// (left as it is: tests run side by side).
pub(super) fn uploads(limits: &UploadLimits) -> Uploads {
    let dir = limits.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    Uploads::unprepared(UploadSettings::with_limits(limits.clone()), dir)
}

pub(super) async fn read(body: Vec<u8>, limits: &UploadLimits) -> Result<EditUpload, ApiError> {
    read_multipart(&content_type(), Body::from(body), &uploads(limits), &AnyCount).await
}

/// The body as a chunked upload: many small frames, boundaries falling anywhere.
pub(super) async fn read_chunked(
    body: Vec<u8>,
    size: usize,
    limits: &UploadLimits,
) -> Result<EditUpload, ApiError> {
    let frames: Vec<Result<Bytes, std::io::Error>> =
        body.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let body = Body::from_stream(futures_util::stream::iter(frames));
    read_multipart(&content_type(), body, &uploads(limits), &AnyCount).await
}

/// `first` arrives, then nothing ever again: a test finishing proves nothing more was awaited.
pub(super) async fn read_then_stall(first: Vec<u8>, limits: &UploadLimits) -> Result<EditUpload, ApiError> {
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(first))])
        .chain(futures_util::stream::pending());
    let content_type = content_type();
    let uploads = uploads(limits);
    let reading = read_multipart(&content_type, Body::from_stream(stream), &uploads, &AnyCount);
    tokio::time::timeout(std::time::Duration::from_secs(10), reading).await.expect("reading stalled")
}

pub(super) fn spooling(dir: &Path) -> UploadLimits {
    UploadLimits { memory_threshold: 16, spool_dir: Some(dir.to_owned()), ..UploadLimits::default() }
}

pub(super) fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("reading the spool dir").count()
}

/// (status, param, message) of an error, for assertions.
pub(super) fn parts(error: &ApiError) -> (u16, Option<String>, String) {
    let param = match error {
        ApiError::InvalidRequest { param, .. } | ApiError::PayloadTooLarge { param, .. } => param.clone(),
        _ => None,
    };
    (error.status().as_u16(), param, error.to_string())
}

#[track_caller]
pub(super) fn assert_refused(
    result: Result<EditUpload, ApiError>,
    status: u16,
    param: Option<&str>,
    words: &[&str],
) {
    let error = result.expect_err("expected the upload to be refused");
    let (got_status, got_param, message) = parts(&error);
    assert_eq!(got_status, status, "status of {message:?}");
    assert_eq!(got_param.as_deref(), param, "param of {message:?}");
    for word in words {
        assert!(message.contains(word), "{message:?} should mention {word:?}");
    }
}
