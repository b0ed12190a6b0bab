//! The quorum's state machine, for openraft's `RaftStateMachine`: committed entries applied to
//! the metadata image through the [`Applier`] on every node, and snapshots of that image.
//!
//! A snapshot is a file, `snapshot`, in the quorum directory: a frame of its metadata (the last
//! log id it covers and the membership, as JSON) and frames of the image's records
//! (`snapshot::records_of`), replaced whole (written aside, fsynced, renamed). What a leader
//! sends a far-behind node is that file's bytes, and the node keeps them as its own.
//!
//! Invariants: entries are applied in log order, each once (the applied id only grows); a batch
//! the image refuses is refused alike on every node and changes nothing; a snapshot holds
//! exactly the image at its last log id (the builder takes the image and the applied id
//! together); installing one replaces the image whole and publishes the difference.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};

use super::types::{
    Entry, LogId, Outcome, QuorumTypes, SnapshotMeta, StorageError, StoredMembership,
};
use crate::applier::{Applier, ApplyFailure};
use crate::image::MetadataImage;
use crate::metadata_log::record::{decode_all, encode_all, MetadataRecord};
use crate::metadata_log::{frame, frames, MetadataLogError, VERSION_BATCH, VERSION_SNAPSHOT_META};

const SNAPSHOT_FILE: &str = "snapshot";
/// Records per frame of a snapshot file, keeping each frame well under the frame limit.
const RECORDS_PER_FRAME: usize = 5_000;

/// Where the state machine stands: the last entry applied and the membership it gave.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

struct Shared {
    applier: Applier,
    dir: PathBuf,
    applied: Mutex<Applied>,
    /// The index just past the last applied entry, for those waiting on it.
    applied_end: tokio::sync::watch::Sender<u64>,
    snapshots_built: AtomicU64,
}

/// The state machine; clones share it.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// A state machine whose image (the applier's) is what `applied` says has been applied.
    pub fn new(applier: Applier, dir: &Path, applied: Applied) -> Self {
        let end = applied.last_applied.map_or(0, |l| l.index + 1);
        Self {
            shared: Arc::new(Shared {
                applier,
                dir: dir.to_path_buf(),
                applied: Mutex::new(applied),
                applied_end: tokio::sync::watch::channel(end).0,
                snapshots_built: AtomicU64::new(0),
            }),
        }
    }

    pub fn applier(&self) -> &Applier {
        &self.shared.applier
    }

    /// Watches the index just past the last applied entry.
    pub fn applied_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applied_end.subscribe()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.shared
            .applied
            .lock()
            .expect("applied lock")
            .last_applied
    }

    fn set_applied(&self, applied: Applied) {
        let end = applied.last_applied.map_or(0, |l| l.index + 1);
        *self.shared.applied.lock().expect("applied lock") = applied;
        self.shared.applied_end.send_replace(end);
    }

    /// Applies one entry: a batch through the applier, a membership by recording it.
    fn apply_entry(&self, entry: Entry, applied: &mut Applied) -> Outcome {
        assert!(
            applied
                .last_applied
                .is_none_or(|l| l.index < entry.log_id.index),
            "entries are applied once, in order"
        );
        applied.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => Ok(()),
            EntryPayload::Membership(m) => {
                applied.membership = StoredMembership::new(Some(entry.log_id), m);
                Ok(())
            }
            EntryPayload::Normal(batch) => match self.shared.applier.apply(&batch.0, || Ok(())) {
                Ok(()) => Ok(()),
                Err(ApplyFailure::Refused(e)) => {
                    tracing::info!(index = entry.log_id.index, error = %e, "a committed batch does not apply: refused on every node");
                    Err(e)
                }
                Err(ApplyFailure::Io(e)) => unreachable!("applying writes nothing: {e}"),
            },
        }
    }
}

/// A snapshot file's bytes: its metadata frame, then the records in frames.
fn encode_snapshot(meta: &SnapshotMeta, records: &[MetadataRecord]) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let mut out = frame(VERSION_SNAPSHOT_META, &json);
    for chunk in records.chunks(RECORDS_PER_FRAME) {
        out.extend_from_slice(&frame(VERSION_BATCH, &encode_all(chunk)));
    }
    Ok(out)
}

/// A snapshot's metadata and records from its bytes; a torn or damaged one is an error.
pub fn decode_snapshot(
    path: &Path,
    bytes: &[u8],
) -> Result<(SnapshotMeta, Vec<MetadataRecord>), MetadataLogError> {
    let damaged = |at: usize, reason: String| MetadataLogError::Damaged {
        path: path.display().to_string(),
        at: at as u64,
        reason,
    };
    let (found, valid_bytes) = frames(path, bytes)?;
    if valid_bytes != bytes.len() {
        return Err(damaged(valid_bytes, "the snapshot is incomplete".into()));
    }
    let mut found = found.into_iter();
    let meta = match found.next() {
        Some(f) if f.version == VERSION_SNAPSHOT_META => serde_json::from_slice(f.payload)
            .map_err(|e| damaged(f.at, format!("cannot read the snapshot's metadata: {e}")))?,
        _ => return Err(damaged(0, "no snapshot metadata".into())),
    };
    let mut records = Vec::new();
    for f in found {
        if f.version != VERSION_BATCH {
            return Err(damaged(
                f.at,
                format!("unknown frame version {}", f.version),
            ));
        }
        records.extend(
            decode_all(f.payload)
                .map_err(|e| damaged(f.at, format!("cannot read the records: {e}")))?,
        );
    }
    Ok((meta, records))
}

/// The newest snapshot kept in `dir`, if any.
pub fn load_snapshot(
    dir: &Path,
) -> Result<Option<(SnapshotMeta, Vec<MetadataRecord>)>, MetadataLogError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode_snapshot(&path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The image `records` give (a snapshot's, which applied once already).
pub fn image_of(records: &[MetadataRecord]) -> Result<MetadataImage, crate::image::ApplyError> {
    let mut image = MetadataImage::default();
    image.apply_all(records)?;
    Ok(image)
}

/// Writes a snapshot of `records` at `meta` into `dir`, durably, replacing the one there.
pub fn write_snapshot(
    dir: &Path,
    meta: &SnapshotMeta,
    records: &[MetadataRecord],
) -> std::io::Result<()> {
    keep_snapshot(dir, &encode_snapshot(meta, records)?)
}

fn keep_snapshot(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join("snapshot.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

fn snapshot_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// Builds a snapshot of the image and the applied state taken together.
pub struct SnapshotBuilder {
    machine: StateMachine,
    image: Arc<MetadataImage>,
    applied: Applied,
}

impl RaftSnapshotBuilder<QuorumTypes> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QuorumTypes>, StorageError> {
        let shared = &self.machine.shared;
        let built = shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let last = self.applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{built}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        let records = crate::snapshot::records_of(&self.image);
        let bytes = encode_snapshot(&meta, &records).map_err(snapshot_error)?;
        tokio::task::block_in_place(|| keep_snapshot(&shared.dir, &bytes))
            .map_err(snapshot_error)?;
        tracing::info!(records = records.len(), bytes = bytes.len(), last_index = ?last.map(|l| l.index), "metadata snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<QuorumTypes> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.applied.lock().expect("applied lock").clone();
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.shared.applied.lock().expect("applied lock").clone();
        let outcomes = tokio::task::block_in_place(|| {
            entries
                .into_iter()
                .map(|e| self.apply_entry(e, &mut applied))
                .collect()
        });
        self.set_applied(applied);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let applied = self.shared.applied.lock().expect("applied lock").clone();
        SnapshotBuilder {
            machine: self.clone(),
            image: self.shared.applier.metadata().image(),
            applied,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let dir = self.shared.dir.clone();
        let (_, records) =
            decode_snapshot(&dir.join("received snapshot"), &bytes).map_err(snapshot_error)?;
        let image = image_of(&records).map_err(snapshot_error)?;
        tokio::task::block_in_place(|| {
            keep_snapshot(&dir, &bytes)?;
            self.shared.applier.replace(image);
            std::io::Result::Ok(())
        })
        .map_err(snapshot_error)?;
        tracing::info!(records = records.len(), last_index = ?meta.last_log_id.map(|l| l.index), "installed a metadata snapshot from the leader");
        self.set_applied(Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<QuorumTypes>>, StorageError> {
        let path = self.shared.dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snapshot_error(e)),
        };
        let (meta, _) = decode_snapshot(&path, &bytes).map_err(snapshot_error)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_file_round_trips_across_frames_and_a_torn_one_is_refused() {
        let records: Vec<MetadataRecord> = (0..6_000)
            .map(|n| MetadataRecord::TopicCreated {
                name: format!("t{n}"),
                topic_id: uuid::Uuid::new_v4(),
                configs: Default::default(),
            })
            .collect();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(4, 2), 12_345)),
            last_membership: StoredMembership::default(),
            snapshot_id: "4-12345-0".into(),
        };
        let bytes = encode_snapshot(&meta, &records).unwrap();
        let path = Path::new("snapshot");
        let (read_meta, read) = decode_snapshot(path, &bytes).unwrap();
        assert_eq!(read_meta, meta);
        assert_eq!(read, records, "two frames of records, in order");
        let image = image_of(&read).unwrap();
        assert_eq!(
            crate::snapshot::digest(&image),
            crate::snapshot::digest(&image_of(&records).unwrap())
        );
        assert!(
            decode_snapshot(path, &bytes[..bytes.len() - 10]).is_err(),
            "a torn snapshot is refused"
        );
    }
}
