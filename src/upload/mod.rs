//! Edit uploads: multipart and JSON-form reference images, checked and held in bounded memory.
//!
//! `read_multipart` and `read_json` turn the body of `POST /v1/images/edits` into text `Fields`
//! plus `Reference`s. Every image is checked from its bytes (format, header dimensions, structure)
//! without decoding pixels; small ones stay in memory, larger ones are spooled to temporary files
//! that disappear with the last clone of their `CheckedImage`. Per-model rules (how many
//! references a model takes) are not applied here.

mod check;
mod intake;
mod json_form;
mod meter;
mod multipart;
mod store;
mod structure;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use json_form::read_json;
pub use multipart::read_multipart;
pub use store::CheckedImage;

use crate::error::ApiError;
use crate::openai::Fields;

/// Edit uploads as configured: the per-request limits and the JSON form's body cap.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub limits: UploadLimits,
    /// Largest JSON-form edit body.
    pub max_json_bytes: usize,
}

/// How much one edit request may bring; every limit is enforced while the body streams in.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Per reference; exceeding it is a 413 naming the reference, and reading stops there.
    pub max_file_bytes: u64,
    /// All multipart parts, text and files.
    pub max_parts: usize,
    /// References accepted at all; the per-model limit is applied later, by the caller.
    pub max_images: usize,
    /// Per text field (a 32K-token prompt fits easily). All text together may take twice this.
    pub max_text_bytes: usize,
    /// A file at or below this many bytes stays in memory; a larger one is spooled to disk.
    pub memory_threshold: usize,
    /// Where spooled files go; `None` is `std::env::temp_dir()`.
    pub spool_dir: Option<PathBuf>,
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits {
            max_file_bytes: 20 * 1024 * 1024,
            max_parts: 64,
            max_images: 16,
            max_text_bytes: 1024 * 1024,
            memory_threshold: 256 * 1024,
            spool_dir: None,
        }
    }
}

/// The body of an edit request: its text fields and its references in upload order.
#[derive(Debug, Clone, Default)]
pub struct EditUpload {
    pub fields: Fields,
    pub references: Vec<Reference>,
}

#[derive(Clone, Debug)]
pub enum Reference {
    /// An https URL handed to BFL as is (BFL fetches it; we never do).
    Url(String),
    /// Image bytes we hold and have checked.
    Image(CheckedImage),
}

/// The formats FLUX accepts as references, as detected from the bytes (never from a filename).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
}

impl ImageKind {
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Webp => "image/webp",
        }
    }
}

/// A 400 for the body as a whole (no single parameter is at fault).
fn body_error(message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest { message: message.into(), param: None, code: "invalid_body" }
}

fn too_many_images(param: &str, max: usize) -> ApiError {
    ApiError::invalid(param, format!("at most {max} reference images are accepted per request"))
}

fn mask_unsupported() -> ApiError {
    ApiError::invalid(
        "mask",
        "masked edits are not supported: FLUX edits follow the prompt and the reference images; omit `mask`",
    )
}
