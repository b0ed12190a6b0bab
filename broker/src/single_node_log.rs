//! The metadata log of a single node: the framed file of `metadata_log`, appended and fsynced
//! batch by batch, each batch applied through the [`Applier`] as it is appended.
//!
//! Invariant: a batch is applied only if it applies to the image and only once it is fsynced
//! (the applier runs the append between its check and its swap); the frame count is the number of
//! batches committed, for DescribeQuorum.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

use crate::applier::Applier;
use crate::commit_log::{CommitError, MetadataLog};
use crate::metadata_log::record::MetadataRecord;
use crate::metadata_log::{append_batch, frame_count, MetadataLogError};

/// The metadata log of a single node: one file of framed batches, fsynced on each append, and
/// the applier each appended batch goes through.
pub struct FileMetadataLog {
    file: Mutex<File>,
    applier: Applier,
    /// Frames in the file (batches, or legacy records).
    frames: std::sync::atomic::AtomicI64,
}

impl FileMetadataLog {
    /// Opens the file at `path` for appending, after `metadata_log::read_log` read it;
    /// appended batches are applied through `applier`.
    pub fn open(path: &Path, applier: Applier) -> Result<Self, MetadataLogError> {
        let existing = frame_count(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            applier,
            frames: existing.into(),
        })
    }

    fn append(&self, records: &[MetadataRecord]) -> std::io::Result<()> {
        append_batch(&mut self.file.lock().expect("metadata log lock"), records)
    }
}

impl MetadataLog for FileMetadataLog {
    fn commit(&self, records: &[MetadataRecord]) -> Result<(), CommitError> {
        self.applier.apply(records, || self.append(records))?;
        self.frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn is_single_node(&self) -> bool {
        true
    }

    fn committed_end(&self) -> i64 {
        self.frames.load(std::sync::atomic::Ordering::Relaxed)
    }
}
