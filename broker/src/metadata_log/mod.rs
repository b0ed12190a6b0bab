//! The metadata log's file format: framed batches of records, as a single node kept its log
//! before the quorum (read once, to upgrade it: `quorum::upgrade`), and whose framing the
//! quorum's files reuse.
//!
//! Frame: `length u32 | crc32c u32 | version u8 | payload`, big-endian, where `length` counts the
//! version and the payload and the CRC covers them. The payload of version 2 is a batch of
//! binary [`MetadataRecord`]s (`record`), written and read whole, so the records of one change
//! are all there or none is. Version 1 (read only) is one record as JSON, as written before the
//! binary records; it is upgraded as it is read (`legacy`).
//!
//! Invariants: a record is in the file, synced, before it takes effect; at start only a torn
//! tail is cut (a last frame that runs past the end of the file, or whose CRC fails and after
//! which nothing follows); damage anywhere else stops the start with the byte offset of the
//! damage, so that no record after it is silently dropped. A file from before the framing (JSON
//! lines) is read once and rewritten framed.

pub mod legacy;
pub mod record;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use legacy::{LegacyRecord, Upgrader};
use record::{decode_all, MetadataRecord};

const HEADER_BYTES: usize = 9;
/// A frame of JSON, one legacy record (read only).
const VERSION_JSON: u8 = 1;
/// A frame holding one batch of binary records.
pub(crate) const VERSION_BATCH: u8 = 2;
/// A frame holding one Raft log entry as JSON (the quorum's log).
pub(crate) const VERSION_RAFT_ENTRY: u8 = 3;
/// A frame holding a snapshot's metadata as JSON (the quorum's snapshot file).
pub(crate) const VERSION_SNAPSHOT_META: u8 = 4;
/// Largest record accepted: a bound on what a damaged length can make the start allocate.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    #[error("metadata log {path}: damaged record at byte {at}: {reason}; records after it exist, so it is not a torn write: restore the file or remove it knowingly")]
    Damaged {
        path: String,
        at: u64,
        reason: String,
    },
    #[error("metadata log: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the metadata log file at `path` (none if it does not exist): every record it holds, a
/// torn tail cut; legacy records are upgraded with `node_id` as their replica.
pub fn read_log(path: &Path, node_id: i32) -> Result<Vec<MetadataRecord>, MetadataLogError> {
    replay(path, node_id)
}

/// Appends `records` to `file` as one frame and syncs it (as a single node did).
#[cfg(test)]
pub fn append_batch(file: &mut File, records: &[MetadataRecord]) -> std::io::Result<()> {
    file.write_all(&frame(VERSION_BATCH, &record::encode_all(records)))?;
    file.sync_data()
}

/// A payload as a frame of `version`.
pub(crate) fn frame(version: u8, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() < MAX_RECORD_BYTES,
        "a metadata batch is bounded by the largest change (a topic of 10000 partitions)"
    );
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(version);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A legacy record as a version 1 frame, as files written before the binary records hold.
fn frame_json(record: &LegacyRecord) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    Ok(frame(VERSION_JSON, &payload))
}

/// Reads every record of the file at `path` (none if it does not exist), cutting a torn tail.
fn replay(path: &Path, node_id: i32) -> Result<Vec<MetadataRecord>, MetadataLogError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if bytes.first() == Some(&b'{') {
        rewrite_json_lines(path, &bytes)?;
        return replay(path, node_id);
    }
    let (records, valid_bytes) = parse(path, &bytes, node_id)?;
    if valid_bytes < bytes.len() {
        tracing::warn!(path = %path.display(), at_byte = valid_bytes, cut_bytes = bytes.len() - valid_bytes, "metadata log ends in a torn record: cutting it");
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(valid_bytes as u64)?;
    }
    Ok(records)
}

/// The records of framed metadata-log bytes and how many bytes they fill (what follows is a
/// torn tail), as [`read_log`] reads a file; for the fuzz target.
pub fn records_in(bytes: &[u8]) -> Result<(Vec<MetadataRecord>, usize), MetadataLogError> {
    parse(Path::new("<bytes>"), bytes, 0)
}

/// The records of a framed file and how many bytes they fill; what follows is a torn tail.
fn parse(
    path: &Path,
    bytes: &[u8],
    node_id: i32,
) -> Result<(Vec<MetadataRecord>, usize), MetadataLogError> {
    let mut upgrader = Upgrader::new(node_id);
    let mut records = Vec::new();
    let (frames, valid_bytes) = frames(path, bytes)?;
    for frame in frames {
        let damaged = |reason: String| MetadataLogError::Damaged {
            path: path.display().to_string(),
            at: frame.at as u64,
            reason,
        };
        match frame.version {
            VERSION_BATCH => records.extend(
                decode_all(frame.payload)
                    .map_err(|e| damaged(format!("cannot read the records: {e}")))?,
            ),
            VERSION_JSON => {
                let legacy: LegacyRecord = serde_json::from_slice(frame.payload)
                    .map_err(|e| damaged(format!("cannot read the record: {e}")))?;
                records.extend(upgrader.upgrade(legacy));
            }
            other => return Err(damaged(format!("unknown record version {other}"))),
        }
    }
    Ok((records, valid_bytes))
}

/// One frame of a file: where it starts, its version and its payload.
pub(crate) struct Frame<'a> {
    pub at: usize,
    pub version: u8,
    pub payload: &'a [u8],
}

/// The frames of `bytes` whose CRCs hold, and how many bytes they fill; what follows is a torn
/// tail. Damage before the last frame is an error naming its byte offset.
pub(crate) fn frames<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(Vec<Frame<'a>>, usize), MetadataLogError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let damaged = |reason: String| MetadataLogError::Damaged {
            path: path.display().to_string(),
            at: at as u64,
            reason,
        };
        let Some(header) = rest.get(..HEADER_BYTES) else {
            break; // torn: not even a whole header
        };
        let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let stored_crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        if length == 0 || length > MAX_RECORD_BYTES {
            if is_tail(rest) {
                break;
            }
            return Err(damaged(format!("impossible length {length}")));
        }
        let Some(body) = rest.get(8..8 + length) else {
            break; // torn: runs past the end of the file
        };
        let end = at + 8 + length;
        if crc32c::crc32c(body) != stored_crc {
            if end == bytes.len() || is_tail(&bytes[end..]) {
                break;
            }
            return Err(damaged("CRC mismatch".into()));
        }
        frames.push(Frame {
            at,
            version: body[0],
            payload: &body[1..],
        });
        at = end;
    }
    Ok((frames, at))
}

/// Whether `rest` holds nothing a later record could have written: only zeros, as a file
/// extended but never written leaves it.
fn is_tail(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

/// A file from before the framing: JSON lines, a torn last line cut. Rewritten in version 1
/// frames (to a new file renamed over the old one, so a crash leaves one or the other whole).
fn rewrite_json_lines(path: &Path, bytes: &[u8]) -> Result<(), MetadataLogError> {
    let mut records = Vec::new();
    let mut lines = bytes.split_inclusive(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<LegacyRecord>(line.trim_ascii_end()) {
            Ok(r) if complete => records.push(r),
            _ if lines.peek().is_none() => break, // a torn last line
            Err(e) => {
                return Err(MetadataLogError::Damaged {
                    path: path.display().to_string(),
                    at: (line.as_ptr() as usize - bytes.as_ptr() as usize) as u64,
                    reason: format!("cannot read the record: {e}"),
                })
            }
            Ok(_) => unreachable!("only the last line can be incomplete"),
        }
    }
    let tmp = path.with_extension("log.framed");
    let mut out = File::create(&tmp)?;
    for r in &records {
        out.write_all(&frame_json(r)?)?;
    }
    out.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), records = records.len(), "metadata log rewritten with framed records");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::encode_all;
    use uuid::Uuid;

    fn deleted(n: u32) -> MetadataRecord {
        MetadataRecord::TopicDeleted {
            name: format!("t{n}"),
        }
    }

    /// A file of one batch per number, and its bytes.
    fn write(path: &Path, batches: &[u32]) -> Vec<u8> {
        let _ = std::fs::remove_file(path);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for n in batches {
            append_batch(&mut log, &[deleted(*n), deleted(*n + 100)]).unwrap();
        }
        std::fs::read(path).unwrap()
    }

    fn replayed(path: &Path) -> Vec<MetadataRecord> {
        read_log(path, 1).unwrap()
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let whole = write(&path, &[1, 2, 3]);
        let expected = vec![deleted(1), deleted(101), deleted(2), deleted(102)];
        for cut in [whole.len() - 1, whole.len() - 5, whole.len() - 12] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert_eq!(replayed(&path), expected, "a batch is all there or gone");
            assert!(std::fs::metadata(&path).unwrap().len() < cut as u64);
        }
        // A last batch whose bytes never reached the disk (zeros after its length).
        let mut zeroed = whole.clone();
        let last =
            whole.len() - frame(VERSION_BATCH, &encode_all(&[deleted(3), deleted(103)])).len();
        zeroed[last + 4..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(replayed(&path).len(), 4);
    }

    #[test]
    fn damage_in_the_middle_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let whole = write(&path, &[1, 2, 3]);
        let second = frame(VERSION_BATCH, &encode_all(&[deleted(1), deleted(101)])).len();
        for at in [second, second + 5, second + 10] {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x40;
            std::fs::write(&path, &damaged).unwrap();
            let e = read_log(&path, 1).err().unwrap().to_string();
            assert!(e.contains(&format!("at byte {second}")), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing is cut");
        }
    }

    #[test]
    fn legacy_json_records_are_upgraded_and_new_batches_follow_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let id = Uuid::new_v4();
        let created = format!(
            "{{\"type\":\"TopicCreated\",\"name\":\"a\",\"topic_id\":\"{id}\",\"partitions\":1,\"configs\":{{}}}}\n"
        );
        let grown = "{\"type\":\"PartitionsCreated\",\"name\":\"a\",\"partitions\":2}\n";
        std::fs::write(&path, format!("{created}{grown}{{\"type\":")).unwrap();
        let records = read_log(&path, 7).unwrap();
        assert_eq!(records.len(), 3, "{records:?}");
        let MetadataRecord::Partition(p) = &records[2] else {
            panic!("{records:?}")
        };
        assert_eq!((p.partition, p.leader, &p.replicas[..]), (1, 7, &[7][..]));
        let mut log = OpenOptions::new().append(true).open(&path).unwrap();
        append_batch(&mut log, &[deleted(1)]).unwrap();
        drop(log);
        let again = replayed(&path);
        assert_eq!(again.len(), 4);
        assert_eq!(again[3], deleted(1));
        assert_eq!(std::fs::read(&path).unwrap()[0], 0, "framed now");
        std::fs::write(
            &path,
            b"{\"type\":\"TopicDeleted\",\"name\":\"a\"}\n{\"n\"\n{}\n",
        )
        .unwrap();
        assert!(
            read_log(&path, 1).is_err(),
            "a damaged middle line stops the start"
        );
    }
}
