//! The usage journal: one JSON line per entry, appended as it happens (straight to the OS, so a
//! crash loses nothing written) and replayed at start-up. A line that cannot be read (a torn last
//! line after a power cut) is skipped and counted in a warning.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Entry;

#[derive(Debug, thiserror::Error)]
#[error("usage.path `{path}`: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

pub(super) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens the journal for appending (creating it and its directory), with what it holds.
    pub(super) fn open(path: &Path) -> Result<(Journal, Vec<Entry>), JournalError> {
        let error = |source| JournalError { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = OpenOptions::new().create(true).append(true).read(true).open(path).map_err(error)?;
        let (mut entries, mut unreadable) = (Vec::new(), 0usize);
        for line in BufReader::new(&file).lines() {
            let line = line.map_err(error)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(&line) {
                Ok(entry) => entries.push(entry),
                Err(_) => unreadable += 1,
            }
        }
        // A line torn by a crash must not swallow the next entry appended after it.
        let len = file.metadata().map_err(error)?.len();
        if len > 0 {
            use std::io::{Seek, SeekFrom};
            let mut last = [0u8; 1];
            let mut reader = &file;
            reader.seek(SeekFrom::End(-1)).map_err(error)?;
            reader.read_exact(&mut last).map_err(error)?;
            if last[0] != b'\n' {
                (&file).write_all(b"\n").map_err(error)?;
            }
        }
        if unreadable > 0 {
            tracing::warn!(path = %path.display(), unreadable, "usage journal lines that could not be read were skipped");
        }
        tracing::info!(path = %path.display(), entries = entries.len(), "usage journal replayed");
        Ok((Journal { path: path.to_owned(), file: Mutex::new(file) }, entries))
    }

    pub(super) fn append(&self, entry: &Entry) {
        let Ok(mut line) = serde_json::to_string(entry) else { return };
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: appends of whole lines never interleave.
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "could not append to the usage journal");
        }
    }
}
