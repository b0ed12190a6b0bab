//! The upgrade of a single node's metadata log (`__cluster_metadata/metadata.log`, the framed
//! file, or the JSON lines before it) to a one-voter quorum, on the first start that finds one.
//!
//! The old file's records become the quorum's first snapshot, taken at the log id a quorum's
//! first entry has (term 0, index 0) with this node as its one voter, and the Raft log starts
//! after it (its last purged id). Only then is the old file renamed `metadata.log.upgraded`.
//!
//! Crash story: Raft does not start while `metadata.log` exists, so a crash at any point of the
//! upgrade leaves the old file in place and a quorum directory nothing has read; the next start
//! removes that directory and upgrades again from the old file. Once the rename is durable the
//! snapshot is the only state, and the old file is kept, unread, for the operator.
//!
//! Invariant: the image the snapshot gives is the image the old file gave (the same records).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Membership};

use super::log_store;
use super::state_machine;
use super::types::{LogId, NodeId, SnapshotMeta, StoredMembership};
use crate::metadata::MetadataError;

/// The single node's metadata log, in the metadata directory.
pub const LEGACY_LOG: &str = "metadata.log";
/// What the old file is renamed to once upgraded.
pub const UPGRADED_LOG: &str = "metadata.log.upgraded";

/// Upgrades `meta_dir`'s `metadata.log`, if there is one, into the quorum directory `dir` of a
/// quorum whose one voter is `voter`; returns how many records it carried over.
pub fn upgrade_if_needed(
    meta_dir: &Path,
    dir: &Path,
    (node_id, voter): (i32, BasicNode),
) -> Result<Option<usize>, MetadataError> {
    let legacy = meta_dir.join(LEGACY_LOG);
    if !legacy.exists() {
        return Ok(None);
    }
    let records = crate::metadata_log::read_log(&legacy, node_id)?;
    // The image the records give, as a snapshot's records (each topic once, deletions gone).
    let image = state_machine::image_of(&records).map_err(|e| {
        MetadataError::Damaged(format!(
            "{}: a record does not apply: {e}",
            legacy.display()
        ))
    })?;
    let snapshot = crate::snapshot::records_of(&image);
    if dir.exists() {
        // Left by an upgrade that did not finish: Raft never ran on it.
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let first = LogId::new(CommittedLeaderId::new(0, 0), 0);
    let voters: BTreeMap<NodeId, BasicNode> = [(node_id as NodeId, voter)].into();
    let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
    let meta = SnapshotMeta {
        last_log_id: Some(first),
        last_membership: StoredMembership::new(Some(first), Membership::new(vec![ids], voters)),
        snapshot_id: "upgraded-from-metadata.log".into(),
    };
    state_machine::write_snapshot(dir, &meta, &snapshot)?;
    log_store::start_after(dir, first)?;
    std::fs::rename(&legacy, meta_dir.join(UPGRADED_LOG))?;
    std::fs::File::open(meta_dir)?.sync_all()?;
    tracing::info!(records = records.len(), snapshot_records = snapshot.len(), from = %legacy.display(), "upgraded the single node's metadata log to a one-voter quorum");
    Ok(Some(records.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata_log::append_batch;
    use crate::metadata_log::record::{MetadataRecord, PartitionRecord};
    use crate::quorum::log_store::LogStore;

    fn voter() -> (i32, BasicNode) {
        (1, BasicNode::new("localhost:9093"))
    }

    fn topic(name: &str) -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::TopicCreated {
                name: name.into(),
                topic_id: uuid::Uuid::new_v4(),
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            },
            MetadataRecord::Partition(PartitionRecord::on_one_node(name, 0, 1)),
        ]
    }

    /// A single node's directory of old: batches appended to `metadata.log`.
    fn old_log(meta_dir: &Path, batches: &[Vec<MetadataRecord>]) -> Vec<u8> {
        std::fs::create_dir_all(meta_dir).unwrap();
        let path = meta_dir.join(LEGACY_LOG);
        let mut file = std::fs::File::create(&path).unwrap();
        for b in batches {
            append_batch(&mut file, b).unwrap();
        }
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn the_old_file_becomes_the_first_snapshot_of_a_quorum_of_one_and_is_set_aside() {
        let meta = tempfile::tempdir().unwrap();
        let dir = meta.path().join("quorum");
        let deleted = vec![MetadataRecord::TopicDeleted { name: "b".into() }];
        let batches = [topic("a"), topic("b"), deleted, topic("c")];
        old_log(meta.path(), &batches);
        let all: Vec<MetadataRecord> = batches.concat();
        let expected = state_machine::image_of(&all).unwrap();
        assert_eq!(
            upgrade_if_needed(meta.path(), &dir, voter()).unwrap(),
            Some(all.len())
        );
        assert!(!meta.path().join(LEGACY_LOG).exists());
        assert!(meta.path().join(UPGRADED_LOG).exists());
        let (snapshot, records) = state_machine::load_snapshot(&dir).unwrap().unwrap();
        let image = state_machine::image_of(&records).unwrap();
        assert_eq!(
            crate::snapshot::digest(&image),
            crate::snapshot::digest(&expected)
        );
        assert_eq!(image.topics().count(), 2);
        let voters: Vec<NodeId> = snapshot.last_membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1]);
        // The Raft log starts after the snapshot, and a second start has nothing to upgrade.
        let store = LogStore::open(&dir).unwrap();
        let (committed, entries) = store.committed_entries(None);
        assert!(committed.is_none() && entries.is_empty());
        assert_eq!(upgrade_if_needed(meta.path(), &dir, voter()).unwrap(), None);
    }

    #[test]
    fn an_upgrade_cut_short_is_done_again_from_the_old_file() {
        let meta = tempfile::tempdir().unwrap();
        let dir = meta.path().join("quorum");
        old_log(meta.path(), &[topic("a")]);
        // A crash after the snapshot was written, before the old file was renamed.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("snapshot"), b"torn").unwrap();
        upgrade_if_needed(meta.path(), &dir, voter()).unwrap();
        let (_, records) = state_machine::load_snapshot(&dir).unwrap().unwrap();
        assert!(state_machine::image_of(&records)
            .unwrap()
            .topic("a")
            .is_some());
    }

    #[test]
    fn damage_in_the_old_file_stops_the_upgrade_and_changes_nothing() {
        let meta = tempfile::tempdir().unwrap();
        let dir = meta.path().join("quorum");
        let mut bytes = old_log(meta.path(), &[topic("a"), topic("b"), topic("c")]);
        let first = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize + 8;
        bytes[first + 20] ^= 1; // inside batch 2 of 3
        std::fs::write(meta.path().join(LEGACY_LOG), &bytes).unwrap();
        let e = upgrade_if_needed(meta.path(), &dir, voter())
            .expect_err("the start stops")
            .to_string();
        assert!(e.contains("damaged record at byte"), "{e}");
        assert_eq!(std::fs::read(meta.path().join(LEGACY_LOG)).unwrap(), bytes);
        assert!(!dir.exists());
    }
}
