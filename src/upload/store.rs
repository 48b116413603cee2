//! Where a reference's bytes live: in memory when small, else in a temporary file written as the
//! bytes arrive and deleted with the last clone of its `CheckedImage`; read back as base64.

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tempfile::TempPath;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::ImageKind;
use super::budget::{Budget, Charge};

/// Name prefix of every file the gateway spools; start-up removes leftovers with it (and only those).
pub(super) const SPOOL_PREFIX: &str = "fluxgate-ref-";

/// Raw bytes per base64 chunk: a multiple of 3, so chunks join without padding in between.
const RAW_CHUNK: usize = 48 * 1024;

/// A reference image that passed every check of this module (format, size, structure).
#[derive(Clone, Debug)]
pub struct CheckedImage {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
    pub len: u64,
    pub(super) store: Store,
}

#[derive(Clone)]
pub(super) enum Store {
    Memory(Bytes),
    File(Arc<SpoolFile>),
}

/// A spooled reference on disk. Dropping it deletes the file, then gives its bytes back to the
/// spool budget (fields drop in declaration order).
pub(super) struct SpoolFile {
    path: TempPath,
    _charge: Charge,
}

impl Deref for SpoolFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// Where references are spooled and the process-wide cap on the bytes spooled there.
#[derive(Debug, Clone)]
pub(super) struct Spool {
    pub(super) dir: PathBuf,
    pub(super) budget: Budget,
}

/// Why an upload could not be written: our disk, or the spool budget is spent for now.
#[derive(Debug)]
pub(super) enum SinkError {
    Io(io::Error),
    Full,
}

impl From<io::Error> for SinkError {
    fn from(error: io::Error) -> SinkError {
        SinkError::Io(error)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
            Store::File(file) => write!(f, "File({})", file.path.display()),
        }
    }
}

impl CheckedImage {
    /// The image as base64 (standard alphabet, padded, no `data:` prefix), in chunks of at most
    /// 64 KiB, from memory or by reading the spooled file incrementally. Each call starts over.
    pub fn base64_stream(&self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static + use<> {
        let source = match &self.store {
            Store::Memory(bytes) => Source::Memory(bytes.clone()),
            Store::File(path) => Source::Unopened(path.clone(), self.len),
        };
        futures_util::stream::try_unfold(source, |source| async move {
            let (raw, next) = match source {
                Source::Memory(mut bytes) if !bytes.is_empty() => {
                    let raw = bytes.split_to(bytes.len().min(RAW_CHUNK));
                    (raw, Source::Memory(bytes))
                }
                Source::Memory(_) => return Ok(None),
                Source::Unopened(path, len) => {
                    let file = tokio::fs::File::open(&path.path).await?;
                    let mut reader = Box::new(file.take(len));
                    let raw = read_block(&mut reader).await?;
                    (raw, Source::Open(reader, path))
                }
                Source::Open(mut reader, path) => {
                    (read_block(&mut reader).await?, Source::Open(reader, path))
                }
            };
            if raw.is_empty() { Ok(None) } else { Ok(Some((Bytes::from(STANDARD.encode(&raw)), next))) }
        })
    }

    /// Exact length of the `base64_stream` text: 4 * ceil(len / 3).
    pub fn base64_len(&self) -> u64 {
        self.len.div_ceil(3) * 4
    }

    /// Where the bytes are spooled, if they are.
    #[cfg(test)]
    pub(super) fn spool_path(&self) -> Option<&Path> {
        match &self.store {
            Store::Memory(_) => None,
            Store::File(file) => Some(&file.path),
        }
    }
}

enum Source {
    Memory(Bytes),
    /// Opened on first poll; the `Arc` keeps the file alive for as long as the stream reads it.
    Unopened(Arc<SpoolFile>, u64),
    Open(Box<tokio::io::Take<tokio::fs::File>>, Arc<SpoolFile>),
}

/// Up to `RAW_CHUNK` bytes; shorter only at the end of the file.
async fn read_block<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Bytes> {
    let mut block = BytesMut::zeroed(RAW_CHUNK);
    let mut filled = 0;
    while filled < RAW_CHUNK {
        match reader.read(&mut block[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    block.truncate(filled);
    Ok(block.freeze())
}

/// The bytes of one upload in progress: memory up to the threshold, then a temporary file whose
/// bytes are charged to the spool budget as they are written.
pub(super) enum Sink {
    Memory(BytesMut),
    File { file: tokio::fs::File, path: TempPath, charge: Charge },
}

impl Sink {
    pub(super) fn new() -> Sink {
        Sink::Memory(BytesMut::new())
    }

    pub(super) async fn write(
        &mut self,
        chunk: &[u8],
        threshold: usize,
        spool: &Spool,
    ) -> Result<(), SinkError> {
        if let Sink::Memory(buf) = self {
            if buf.len() + chunk.len() <= threshold {
                buf.extend_from_slice(chunk);
                return Ok(());
            }
            let mut charge = spool.budget.charge();
            charge.grow(buf.len() as u64).map_err(|_| SinkError::Full)?;
            let dir = spool.dir.clone();
            let spooled = tokio::task::spawn_blocking(move || {
                tempfile::Builder::new().prefix(SPOOL_PREFIX).tempfile_in(dir)
            })
            .await
            .map_err(io::Error::other)??;
            let (file, path) = spooled.into_parts();
            let mut file = tokio::fs::File::from_std(file);
            file.write_all(buf).await?;
            *self = Sink::File { file, path, charge };
        }
        match self {
            Sink::File { file, charge, .. } => {
                charge.grow(chunk.len() as u64).map_err(|_| SinkError::Full)?;
                Ok(file.write_all(chunk).await?)
            }
            Sink::Memory(_) => Ok(()),
        }
    }

    /// Everything is written (and flushed) once this returns.
    pub(super) async fn finish(self) -> io::Result<Store> {
        match self {
            Sink::Memory(buf) => Ok(Store::Memory(buf.freeze())),
            Sink::File { mut file, path, charge } => {
                file.flush().await?;
                drop(file);
                Ok(Store::File(Arc::new(SpoolFile { path, _charge: charge })))
            }
        }
    }
}

/// Creates the spool directory if need be and removes the files an earlier run left in it: only
/// regular files named with our prefix, never anything in a subdirectory.
pub(super) fn prepare_dir(dir: &Path) -> io::Result<usize> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ours = entry.file_name().to_str().is_some_and(|name| name.starts_with(SPOOL_PREFIX));
        // `file_type` does not follow symlinks: a link named like ours is removed, not its target.
        let kind = entry.file_type()?;
        if ours && (kind.is_file() || kind.is_symlink()) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
