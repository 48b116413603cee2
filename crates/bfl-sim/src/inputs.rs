//! Reference images (`input_image`, `input_image_2` …) as BFL takes them: an http(s) URL, which the
//! simulator does not fetch, or raw base64 whose header must be a readable image.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard alphabet, padding optional: Python's `b64decode` is that forgiving too.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a reference image was refused (the message goes into a FastAPI `value_error`).
#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum InputError {
    #[error("Value error, expected a URL or raw base64 image data, not a data: URI")]
    DataUri,
    #[error("Value error, input image is neither a URL nor valid base64")]
    NotBase64,
    #[error("Value error, input image could not be identified as an image")]
    NotAnImage,
}

/// Dimensions of a base64 image, or `None` for a URL reference.
pub(super) fn dims(s: &str) -> Result<Option<(u32, u32)>, InputError> {
    let head = s.as_bytes().get(..8).unwrap_or(s.as_bytes()).to_ascii_lowercase();
    if head.starts_with(b"http://") || head.starts_with(b"https://") {
        return Ok(None);
    }
    if head.starts_with(b"data:") {
        return Err(InputError::DataUri);
    }
    let bytes = match LENIENT.decode(s) {
        Ok(b) => b,
        // Line-wrapped base64 (as some encoders emit) is fine for Python; strip and retry.
        Err(_) if s.bytes().any(|b| b.is_ascii_whitespace()) => {
            let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            LENIENT.decode(compact).map_err(|_| InputError::NotBase64)?
        }
        Err(_) => return Err(InputError::NotBase64),
    };
    let size = imagesize::blob_size(&bytes).map_err(|_| InputError::NotAnImage)?;
    let w = u32::try_from(size.width).map_err(|_| InputError::NotAnImage)?;
    let h = u32::try_from(size.height).map_err(|_| InputError::NotAnImage)?;
    if w == 0 || h == 0 {
        return Err(InputError::NotAnImage);
    }
    Ok(Some((w, h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_b64(w: u32, h: u32) -> String {
        let img = image::RgbImage::new(w, h);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).expect("png");
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    #[test]
    fn base64_images_report_their_size_and_urls_none() {
        assert_eq!(dims(&png_b64(70, 90)), Ok(Some((70, 90))));
        assert_eq!(dims(png_b64(70, 90).trim_end_matches('=')), Ok(Some((70, 90))));
        assert_eq!(dims("https://example.com/a.png"), Ok(None));
    }

    #[test]
    fn data_uris_garbage_and_non_images_are_refused() {
        let data = format!("data:image/png;base64,{}", png_b64(8, 8));
        assert_eq!(dims(&data), Err(InputError::DataUri));
        assert_eq!(dims("not base64 at all!"), Err(InputError::NotBase64));
        assert_eq!(dims("aGVsbG8gd29ybGQ="), Err(InputError::NotAnImage));
        assert_eq!(dims("é"), Err(InputError::NotBase64));
    }
}
