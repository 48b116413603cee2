//! Edit uploads: multipart and JSON-form reference images, checked and held in bounded memory.
//!
//! `read_multipart` and `read_json` turn the body of `POST /v1/images/edits` into text `Fields`
//! plus `Reference`s. Every image is checked from its bytes (format, header dimensions, structure)
//! without decoding pixels; small ones stay in memory, larger ones are spooled to temporary files
//! that disappear with the last clone of their `CheckedImage`. The caller's `RefRule` says how
//! many references a model takes; it is applied as the parts arrive, so a request with too many
//! never has more than the allowed number spooled. `Uploads` holds what all requests share: the
//! spool directory (created and cleared of leftovers at start-up) and the process-wide budgets.

mod budget;
mod check;
mod intake;
mod json_form;
mod meter;
mod multipart;
mod store;
mod structure;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use json_form::{read_json, read_json_body};
pub use multipart::read_multipart;
pub use store::CheckedImage;

use budget::Budget;
use store::Spool;

use crate::error::ApiError;
use crate::openai::Fields;

/// Edit uploads as configured: the per-request limits, the JSON form's body cap and the
/// process-wide budgets.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub limits: UploadLimits,
    /// Largest JSON-form edit body.
    pub max_json_bytes: usize,
    /// Largest edit request body of either form; a declared Content-Length above it is refused
    /// before any of the body is read.
    pub max_request_bytes: u64,
    /// Bytes spooled to disk at once, all requests together.
    pub max_spool_bytes: u64,
    /// JSON-form edit bodies held in memory at once, all requests together.
    pub max_json_inflight_bytes: u64,
}

impl UploadSettings {
    /// The defaults of `config/default.toml` around `limits`.
    pub fn with_limits(limits: UploadLimits) -> UploadSettings {
        UploadSettings {
            limits,
            max_json_bytes: 32 * 1024 * 1024,
            max_request_bytes: 128 * 1024 * 1024,
            max_spool_bytes: 1024 * 1024 * 1024,
            max_json_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How many references a model takes, as the caller knows it (this module knows no models).
pub trait RefRule: Sync {
    /// The most references any model takes: the bound while the request has named no model yet.
    fn most(&self) -> usize;
    /// The refusal `count` references to `model` (as sent) earn, or `Ok` when they are within the
    /// model's limit or `model` names no model (that error is the caller's, later).
    fn check(&self, model: &str, count: usize) -> Result<(), ApiError>;
}

/// No per-model rule: every count is fine (the per-request `max_images` still applies).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyCount;

impl RefRule for AnyCount {
    fn most(&self) -> usize {
        usize::MAX
    }

    fn check(&self, _model: &str, _count: usize) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Applies `rule` to `count` references, given the model named so far (`None`: none yet, and
/// perhaps never, which means the default model). `param` is `image` or `images`.
fn check_count(rule: &dyn RefRule, model: Option<&str>, count: usize, param: &str) -> Result<(), ApiError> {
    match model {
        Some(model) => rule.check(model, count),
        None if count > rule.most() => Err(ApiError::invalid(
            param,
            format!("no model takes more than {} reference images, got {count}", rule.most()),
        )),
        None => Ok(()),
    }
}

/// How long a client refused for a full spool is told to wait.
const SPOOL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What every edit request shares: the settings, the spool directory and the budgets.
#[derive(Debug)]
pub struct Uploads {
    pub settings: UploadSettings,
    spool: Spool,
    json: Budget,
}

impl Uploads {
    /// Creates the spool directory (`<temp>/fluxgate-spool` unless configured) and removes the
    /// reference files an earlier run left in it.
    pub fn start(settings: UploadSettings) -> io::Result<Uploads> {
        let dir =
            settings.limits.spool_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("fluxgate-spool"));
        let removed = store::prepare_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("spool directory {}: {e}", dir.display())))?;
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed leftover spool files");
        }
        Ok(Uploads::unprepared(settings, dir))
    }

    /// As `start`, without touching the directory (unit tests share the system temp dir).
    fn unprepared(settings: UploadSettings, dir: PathBuf) -> Uploads {
        let spool = Spool { dir, budget: Budget::new(settings.max_spool_bytes) };
        let json = Budget::new(settings.max_json_inflight_bytes);
        Uploads { settings, spool, json }
    }

    pub fn limits(&self) -> &UploadLimits {
        &self.settings.limits
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool.dir
    }

    /// Bytes spooled right now, all requests together.
    pub fn spooled_bytes(&self) -> u64 {
        self.spool.budget.used()
    }

    /// JSON-form body bytes held right now, all requests together.
    pub fn json_bytes_held(&self) -> u64 {
        self.json.used()
    }

    /// A request whose declared length is over `max_request_bytes` is refused before its body is read.
    pub fn check_declared_length(&self, content_length: Option<u64>) -> Result<(), ApiError> {
        match content_length {
            Some(len) if len > self.settings.max_request_bytes => {
                Err(request_too_large(self.settings.max_request_bytes))
            }
            _ => Ok(()),
        }
    }
}

fn request_too_large(max: u64) -> ApiError {
    ApiError::too_large(
        None,
        format!(
            "the edit request is larger than {max} bytes ({:.1} MiB), the limit per request; send fewer or smaller images",
            max as f64 / (1024.0 * 1024.0)
        ),
    )
}

/// The process-wide budget is spent for now: 503 with retry-after.
fn no_room(param: Option<String>, what: &str) -> ApiError {
    ApiError::Overloaded {
        message: format!(
            "the gateway is holding as many uploaded bytes as it may right now and has no room for {what}; retry in a few seconds"
        ),
        param,
        retry_after: SPOOL_RETRY_AFTER,
    }
}

/// How much one edit request may bring; every limit is enforced while the body streams in.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Per reference; exceeding it is a 413 naming the reference, and reading stops there.
    pub max_file_bytes: u64,
    /// All multipart parts, text and files.
    pub max_parts: usize,
    /// References accepted at all, whatever the model.
    pub max_images: usize,
    /// Per text field (a 32K-token prompt fits easily). All text together may take twice this.
    pub max_text_bytes: usize,
    /// A file at or below this many bytes stays in memory; a larger one is spooled to disk.
    pub memory_threshold: usize,
    /// Where spooled files go; `None` is a `fluxgate-spool` folder in the system temp directory.
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
