//! What identifies a version of a file without reading it (modification time
//! and length), so that whoever follows mesh.toml polls one `stat`, not the
//! whole file.

use std::{fs::Metadata, path::Path, time::SystemTime};

/// A version of a file; `FileStamp::default()` stands for "unknown", which
/// any real stamp differs from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStamp(Option<(SystemTime, u64)>);

impl FileStamp {
    /// The file's stamp now (unknown if it cannot be read).
    pub fn of(path: &Path) -> Self {
        Self::from_metadata(std::fs::metadata(path).ok().as_ref())
    }

    /// The stamp of metadata already read (for async callers, which use
    /// `tokio::fs::metadata`).
    pub fn from_metadata(metadata: Option<&Metadata>) -> Self {
        FileStamp(metadata.and_then(|m| Some((m.modified().ok()?, m.len()))))
    }

    pub fn is_known(&self) -> bool {
        self.0.is_some()
    }
}
