//! The quorum's Raft log on disk, for openraft's `RaftLogStorage`: its entries, the vote, and
//! how far the log is purged (behind a snapshot) and known committed.
//!
//! Files, in the quorum directory:
//! - `raft.log`: one frame per entry (`metadata_log`'s framing, version 3: the entry as JSON),
//!   appended and fsynced before openraft is told the entries are durable;
//! - `state.json`: the vote and the last purged log id, replaced whole (write, fsync, rename,
//!   fsync the directory) before `save_vote` or `purge` returns;
//! - `committed.json`: the last log id known committed, replaced whole but not fsynced: it only
//!   lets a restart apply what it already knows is committed without waiting for the leader,
//!   and a stale value is merely older.
//!
//! Invariants: an entry is on disk before it is reported flushed, and the vote before it is
//! acted on; entries are contiguous by index from the first after the purged id; a torn last
//! frame is cut at open, damage before it stops the start; purging records the purged id first
//! and rewrites the log after, so a crash between leaves entries the next open drops.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, QuorumTypes, StorageError, Vote};
use crate::metadata_log::{frame, frames, MetadataLogError, VERSION_RAFT_ENTRY};

const LOG_FILE: &str = "raft.log";
const STATE_FILE: &str = "state.json";
const COMMITTED_FILE: &str = "committed.json";

/// What `state.json` holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct DurableState {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

struct Files {
    dir: PathBuf,
    log: File,
    /// The entries after the last purged one, by index, each with its frame's byte offset.
    entries: BTreeMap<u64, (Entry, u64)>,
    log_bytes: u64,
    state: DurableState,
    committed: Option<LogId>,
}

/// The Raft log; clones share it (openraft reads through a clone while it writes).
#[derive(Clone)]
pub struct LogStore {
    files: Arc<Mutex<Files>>,
}

impl LogStore {
    /// Opens the log in `dir` (made if missing), cutting a torn last entry.
    pub fn open(dir: &Path) -> Result<Self, MetadataLogError> {
        std::fs::create_dir_all(dir)?;
        let state: DurableState = read_json(&dir.join(STATE_FILE))?.unwrap_or_default();
        let committed: Option<LogId> = read_json(&dir.join(COMMITTED_FILE))?.flatten();
        let path = dir.join(LOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let (found, valid_bytes) = frames(&path, &bytes)?;
        let mut entries = BTreeMap::new();
        for f in found {
            let damaged = |reason: String| MetadataLogError::Damaged {
                path: path.display().to_string(),
                at: f.at as u64,
                reason,
            };
            if f.version != VERSION_RAFT_ENTRY {
                return Err(damaged(format!("unknown entry version {}", f.version)));
            }
            let entry: Entry = serde_json::from_slice(f.payload)
                .map_err(|e| damaged(format!("cannot read the entry: {e}")))?;
            entries.insert(entry.log_id.index, (entry, f.at as u64));
        }
        if let Some(purged) = state.last_purged {
            entries.retain(|index, _| *index > purged.index);
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        if valid_bytes < bytes.len() {
            tracing::warn!(path = %path.display(), at_byte = valid_bytes, "quorum log ends in a torn entry: cutting it");
            log.set_len(valid_bytes as u64)?;
        }
        Ok(Self {
            files: Arc::new(Mutex::new(Files {
                dir: dir.to_path_buf(),
                log,
                entries,
                log_bytes: valid_bytes as u64,
                state,
                committed,
            })),
        })
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().expect("quorum log lock")
    }

    /// The last log id known committed at the last run, and the entries up to it after `after`
    /// (what a restart applies before openraft starts).
    pub fn committed_entries(&self, after: Option<u64>) -> (Option<LogId>, Vec<Entry>) {
        let files = self.files();
        let Some(committed) = files.committed else {
            return (None, Vec::new());
        };
        let from = after.map_or(0, |a| a + 1);
        // A snapshot may be ahead of the commit point on disk (`committed.json` is not synced,
        // and a crash can come between the snapshot and its next write): nothing to replay.
        if from > committed.index {
            return (Some(committed), Vec::new());
        }
        let entries = files
            .entries
            .range(from..=committed.index)
            .map(|(_, (e, _))| e.clone())
            .collect();
        (Some(committed), entries)
    }

    /// Appends `entries` and marks the last of them committed (to build a log for a test).
    #[cfg(test)]
    pub(crate) fn append_committed(&self, entries: Vec<Entry>) {
        let mut files = self.files();
        files.committed = entries.last().map(|e| e.log_id);
        let committed = files.committed;
        files.append(entries).unwrap();
        write_json(&files.dir.join(COMMITTED_FILE), &committed, false).unwrap();
    }

    /// The entries in `range`, cloned.
    fn entries_in(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.files()
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect()
    }
}

impl Files {
    fn append(&mut self, entries: Vec<Entry>) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            let json = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            placed.push((entry, self.log_bytes + bytes.len() as u64));
            bytes.extend_from_slice(&frame(VERSION_RAFT_ENTRY, &json));
        }
        self.log.write_all(&bytes)?;
        self.log.sync_data()?;
        self.log_bytes += bytes.len() as u64;
        for (entry, at) in placed {
            self.entries.insert(entry.log_id.index, (entry, at));
        }
        Ok(())
    }

    /// Removes the entries from `index` on, cutting the file at the first of them.
    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        let Some((_, at)) = self.entries.get(&index).map(|(e, at)| (e.log_id, *at)) else {
            return Ok(());
        };
        self.log.set_len(at)?;
        self.log.sync_data()?;
        self.log_bytes = at;
        self.entries.split_off(&index);
        Ok(())
    }

    /// Records `upto` as purged, then rewrites the log without the entries up to it.
    fn purge(&mut self, upto: LogId) -> std::io::Result<()> {
        self.state.last_purged = Some(upto);
        write_json(&self.dir.join(STATE_FILE), &self.state, true)?;
        let kept = self.entries.split_off(&(upto.index + 1));
        let tmp = self.dir.join("raft.log.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut rewritten = Files {
            dir: self.dir.clone(),
            log: OpenOptions::new().create(true).append(true).open(&tmp)?,
            entries: BTreeMap::new(),
            log_bytes: 0,
            state: self.state.clone(),
            committed: self.committed,
        };
        rewritten.append(kept.into_values().map(|(e, _)| e).collect())?;
        std::fs::rename(&tmp, self.dir.join(LOG_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.log = rewritten.log;
        self.entries = rewritten.entries;
        self.log_bytes = rewritten.log_bytes;
        Ok(())
    }
}

/// Reads a JSON file; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, MetadataLogError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| MetadataLogError::Damaged {
                    path: path.display().to_string(),
                    at: 0,
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes `dir` the directory of a log that starts after `last_purged` (whose entries up to it a
/// snapshot holds), durably: as a purge up to it would leave it.
pub fn start_after(dir: &Path, last_purged: LogId) -> std::io::Result<()> {
    let state = DurableState {
        vote: None,
        last_purged: Some(last_purged),
    };
    write_json(&dir.join(STATE_FILE), &state, true)
}

/// Replaces the file at `path` by `value` as JSON: whole or not at all; durable if `sync`.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T, sync: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Runs blocking file work from openraft's tasks without stalling the runtime's other tasks.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(work)
}

impl RaftLogReader<QuorumTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.entries_in(range))
    }
}

impl RaftLogStorage<QuorumTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<QuorumTypes>, StorageError> {
        let files = self.files();
        let last_purged_log_id = files.state.last_purged;
        let last_log_id = files
            .entries
            .last_key_value()
            .map(|(_, (e, _))| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut files = self.files();
        files.state.vote = Some(*vote);
        let (path, state) = (files.dir.join(STATE_FILE), files.state.clone());
        blocking(|| write_json(&path, &state, true))
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.files().state.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut files = self.files();
        files.committed = committed;
        let path = files.dir.join(COMMITTED_FILE);
        blocking(|| write_json(&path, &committed, false))
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.files().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<QuorumTypes>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = blocking(|| self.files().append(entries));
        let failed = result
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(StorageIOError::write_logs(&e).into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(|| self.files().truncate(log_id.index))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(|| self.files().purge(log_id)).map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .entries_in(..)
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[test]
    fn entries_truncation_and_purge_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        store
            .files()
            .append((0..10).map(|i| entry(1, i)).collect())
            .unwrap();
        store.files().truncate(7).unwrap();
        store.files().append(vec![entry(2, 7)]).unwrap();
        store.files().purge(entry(1, 3).log_id).unwrap();
        drop(store);
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![4, 5, 6, 7]);
        assert_eq!(store.entries_in(7..)[0].log_id.leader_id.term, 2);
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![4, 5, 6], "the torn entry is gone");
        store.files().append(vec![entry(3, 7)]).unwrap();
        drop(store);
        assert_eq!(
            indexes(&LogStore::open(dir.path()).unwrap()),
            vec![4, 5, 6, 7]
        );
    }

    #[test]
    fn a_snapshot_ahead_of_the_commit_point_on_disk_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        store.append_committed((0..6).map(|i| entry(1, i)).collect());
        let (committed, entries) = store.committed_entries(Some(9));
        assert_eq!(committed.map(|c| c.index), Some(5));
        assert!(entries.is_empty());
        assert_eq!(store.committed_entries(Some(5)).1.len(), 0);
        assert_eq!(store.committed_entries(Some(3)).1.len(), 2);
    }

    #[test]
    fn a_purge_interrupted_before_the_rewrite_drops_the_purged_entries_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        store
            .files()
            .append((0..5).map(|i| entry(1, i)).collect())
            .unwrap();
        let state = DurableState {
            vote: None,
            last_purged: Some(entry(1, 2).log_id),
        };
        write_json(&dir.path().join(STATE_FILE), &state, true).unwrap();
        drop(store);
        assert_eq!(indexes(&LogStore::open(dir.path()).unwrap()), vec![3, 4]);
    }
}
