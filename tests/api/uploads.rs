//! Building edit requests by hand: real images of chosen sizes and multipart bodies.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

/// A real image of `width`×`height` in `format`, with a little texture so it is not trivial.
pub fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 239) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    image_bytes(width, height, ImageFormat::Png)
}

/// A PNG whose pixels are noise, so it does not compress: about 3 bytes per pixel.
pub fn noisy_png(width: u32, height: u32) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(9);
    let img = RgbImage::from_fn(width, height, |_, _| image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).expect("encodes");
    out.into_inner()
}

/// Just a PNG signature and an IHDR chunk claiming `width`×`height`.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(b"IHDR");
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 2, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0, 0, 0]); // CRC, not checked by anyone reading headers
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    bytes
}

pub enum Part {
    Text(&'static str, String),
    /// (field name, filename, content type, bytes)
    File(&'static str, &'static str, &'static str, Vec<u8>),
}

pub fn text(name: &'static str, value: &str) -> Part {
    Part::Text(name, value.to_owned())
}

/// A file part with a misleading filename and type: the gateway must look at the bytes.
pub fn file(name: &'static str, bytes: Vec<u8>) -> Part {
    Part::File(name, "upload.bin", "application/octet-stream", bytes)
}

pub const BOUNDARY: &str = "----fluxgate-test-boundary-7MA4YWxkTrZu0gW";

pub fn multipart(parts: Vec<Part>) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(value.as_bytes());
            }
            Part::File(name, filename, kind, bytes) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {kind}\r\n\r\n")
                        .as_bytes(),
                );
                body.extend_from_slice(&bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}
