//! Checks a reference image as its bytes arrive, without decoding pixels: the format from magic
//! bytes, the dimensions from the header (imagesize) as soon as it is in, and structural
//! completeness (see `structure`).

use std::io::ErrorKind;
use std::path::Path;

use super::ImageKind;
use super::structure::{Walk, detect};

pub(super) const MIN_SIDE: u64 = 64;
pub(super) const MAX_PIXELS: u64 = 4_194_304;
/// Leading bytes kept to read the dimensions from. A JPEG whose SOF marker lies further in (big
/// EXIF or ICC segments) is measured once complete, from memory or from its spooled file.
const HEAD_CAP: usize = 128 * 1024;

/// Why a reference is refused; `describe` completes the sentence "reference N …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    Empty,
    NotImage,
    TooSmall { width: u64, height: u64 },
    TooManyPixels { width: u64, height: u64 },
    Unreadable,
    Incomplete(&'static str),
}

impl Problem {
    pub(super) fn describe(&self) -> String {
        match self {
            Problem::Empty => "is empty".into(),
            Problem::NotImage => "is not a PNG, JPEG or WebP image".into(),
            Problem::TooSmall { width, height } => {
                format!("is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
            }
            Problem::TooManyPixels { width, height } => format!(
                "is {width}x{height} ({} pixels); at most {MAX_PIXELS} pixels (4 MP) are accepted",
                width.saturating_mul(*height)
            ),
            Problem::Unreadable => "is corrupt: its dimensions cannot be read from its header".into(),
            Problem::Incomplete(why) => format!("is truncated or corrupt: {why}"),
        }
    }
}

/// Dimensions within the rules, or the problem with them.
pub(super) fn judge(width: u64, height: u64) -> Result<(u32, u32), Problem> {
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(Problem::TooManyPixels { width, height });
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(Problem::TooSmall { width, height });
    }
    // Both fit: each side is at most MAX_PIXELS / MIN_SIDE here.
    Ok((width as u32, height as u32))
}

/// Dimensions from the header at hand: `Ok(None)` when more bytes are needed.
pub(super) fn measure(bytes: &[u8]) -> Result<Option<(u64, u64)>, Problem> {
    sized(imagesize::blob_size(bytes))
}

/// Dimensions of a complete spooled file, read with seeks (only the header segments are read).
pub(super) fn measure_file(path: &Path) -> Result<(u64, u64), Problem> {
    sized(imagesize::size(path))?.ok_or(Problem::Unreadable)
}

fn sized(result: imagesize::ImageResult<imagesize::ImageSize>) -> Result<Option<(u64, u64)>, Problem> {
    match result {
        Ok(size) => Ok(Some((size.width as u64, size.height as u64))),
        Err(imagesize::ImageError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(_) => Err(Problem::Unreadable),
    }
}

/// What a complete, structurally sound file turned out to be. `dims: None`: the header was past
/// `HEAD_CAP`; the caller measures the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    pub kind: ImageKind,
    pub dims: Option<(u32, u32)>,
}

#[derive(Debug, Default)]
pub(super) struct Checker {
    len: u64,
    head: Vec<u8>,
    dims: Option<(u32, u32)>,
    walk: Option<Walk>,
}

impl Checker {
    /// Takes the next bytes; an error is final (stop reading the upload).
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<(), Problem> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.len += chunk.len() as u64;
        let before = self.head.len();
        if self.dims.is_none() && before < HEAD_CAP {
            let take = chunk.len().min(HEAD_CAP - before);
            self.head.extend_from_slice(&chunk[..take]);
        }
        match &mut self.walk {
            Some(walk) => walk.feed(chunk)?,
            None => match detect(&self.head) {
                None => return Ok(()),
                Some(None) => return Err(Problem::NotImage),
                Some(Some(kind)) => {
                    // Undetected so far means fewer than 12 bytes came before: all are in `head`.
                    let mut walk = Walk::new(kind);
                    walk.feed(&self.head[..before])?;
                    walk.feed(chunk)?;
                    self.walk = Some(walk);
                }
            },
        }
        if self.dims.is_none()
            && self.head.len() > before
            && let Some((width, height)) = measure(&self.head)?
        {
            self.dims = Some(judge(width, height)?);
            self.head = Vec::new();
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<Verdict, Problem> {
        if self.len == 0 {
            return Err(Problem::Empty);
        }
        let walk = self.walk.ok_or(Problem::NotImage)?;
        let kind = walk.kind();
        walk.finish(self.len)?;
        Ok(Verdict { kind, dims: self.dims })
    }
}
