//! One reference on its way in: enforces the size cap, feeds the checker and the sink chunk by
//! chunk, and names the reference (`image[i]`, "reference i+1") in every error.

use super::check::{self, Checker, Problem};
use super::store::{CheckedImage, Sink, SinkError, Spool, Store};
use super::{UploadLimits, Uploads, no_room};
use crate::error::ApiError;

pub(super) struct Intake<'a> {
    /// 0-based upload index.
    index: usize,
    /// `image` (multipart) or `images` (JSON form).
    prefix: &'static str,
    limits: &'a UploadLimits,
    spool: &'a Spool,
    len: u64,
    checker: Checker,
    sink: Sink,
}

impl<'a> Intake<'a> {
    pub(super) fn new(index: usize, prefix: &'static str, uploads: &'a Uploads) -> Intake<'a> {
        Intake {
            index,
            prefix,
            limits: uploads.limits(),
            spool: &uploads.spool,
            len: 0,
            checker: Checker::default(),
            sink: Sink::new(),
        }
    }

    /// Takes the next bytes. An error is final: the caller stops reading this upload, and
    /// dropping the intake deletes whatever was spooled.
    pub(super) async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.len += chunk.len() as u64;
        if self.len > self.limits.max_file_bytes {
            return Err(too_large(self.prefix, self.index, self.limits.max_file_bytes));
        }
        self.checker.feed(chunk).map_err(|p| self.refused(&p))?;
        match self.sink.write(chunk, self.limits.memory_threshold, self.spool).await {
            Ok(()) => Ok(()),
            Err(SinkError::Io(e)) => Err(spool_failed(e)),
            Err(SinkError::Full) => Err(no_room(
                Some(format!("{}[{}]", self.prefix, self.index)),
                &format!("reference {}", self.index + 1),
            )),
        }
    }

    pub(super) async fn finish(self) -> Result<CheckedImage, ApiError> {
        let verdict = self.checker.finish().map_err(|p| refused(self.prefix, self.index, &p))?;
        let store = self.sink.finish().await.map_err(spool_failed)?;
        let (width, height) = match verdict.dims {
            Some(dims) => dims,
            None => {
                let measured = match &store {
                    Store::Memory(bytes) => check::measure(bytes).and_then(|d| d.ok_or(Problem::Unreadable)),
                    Store::File(path) => {
                        let path = path.clone();
                        tokio::task::spawn_blocking(move || check::measure_file(&path))
                            .await
                            .map_err(|e| spool_failed(std::io::Error::other(e)))?
                    }
                };
                measured
                    .and_then(|(w, h)| check::judge(w, h))
                    .map_err(|p| refused(self.prefix, self.index, &p))?
            }
        };
        Ok(CheckedImage { kind: verdict.kind, width, height, len: self.len, store })
    }

    fn refused(&self, problem: &Problem) -> ApiError {
        refused(self.prefix, self.index, problem)
    }
}

pub(super) fn refused(prefix: &str, index: usize, problem: &Problem) -> ApiError {
    ApiError::invalid(format!("{prefix}[{index}]"), format!("reference {} {}", index + 1, problem.describe()))
}

pub(super) fn too_large(prefix: &str, index: usize, max: u64) -> ApiError {
    ApiError::too_large(
        Some(format!("{prefix}[{index}]")),
        format!(
            "reference {} (`{prefix}[{index}]`) is larger than {} bytes ({:.1} MiB), the limit per image",
            index + 1,
            max,
            max as f64 / (1024.0 * 1024.0)
        ),
    )
}

/// Our fault (disk full, spool dir missing): a bare 500 for the client, the cause for the log.
fn spool_failed(error: std::io::Error) -> ApiError {
    ApiError::internal(format!("could not spool or read back an uploaded reference image: {error}"))
}
