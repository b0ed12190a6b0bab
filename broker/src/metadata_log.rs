//! The metadata log file: records framed with a length, a CRC-32C and a version.
//!
//! Frame: `length u32 | crc32c u32 | version u8 | payload`, big-endian, where `length` counts the
//! version and the payload and the CRC covers them. The payload of version 1 is one
//! [`MetadataRecord`](crate::metadata::MetadataRecord) as JSON.
//!
//! Invariants: a record is in the file, synced, before it takes effect; at start only a torn
//! tail is cut (a last frame that runs past the end of the file, or whose CRC fails and after
//! which nothing follows); damage anywhere else stops the start with the byte offset of the
//! damage, so that no record after it is silently dropped. A file from before the framing (JSON
//! lines) is read once and rewritten framed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

const HEADER_BYTES: usize = 9;
const VERSION: u8 = 1;
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

/// One record as a frame.
pub fn frame<R: Serialize>(record: &R) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    assert!(
        payload.len() < MAX_RECORD_BYTES,
        "metadata records are small"
    );
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Appends one record and syncs it.
pub fn append<R: Serialize>(file: &mut File, record: &R) -> std::io::Result<()> {
    file.write_all(&frame(record)?)?;
    file.sync_data()
}

/// Reads every record of the file at `path` (none if it does not exist), cutting a torn tail.
pub fn replay<R: Serialize + DeserializeOwned>(path: &Path) -> Result<Vec<R>, MetadataLogError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if bytes.first() == Some(&b'{') {
        return replay_json_lines(path, &bytes);
    }
    let (records, valid_bytes) = parse(path, &bytes)?;
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
/// torn tail), as [`replay`] reads a file; for the fuzz target.
pub fn records_in<R: DeserializeOwned>(bytes: &[u8]) -> Result<(Vec<R>, usize), MetadataLogError> {
    parse(Path::new("<bytes>"), bytes)
}

/// The records of a framed file and how many bytes they fill; what follows is a torn tail.
fn parse<R: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<R>, usize), MetadataLogError> {
    let mut records = Vec::new();
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
        if body[0] != VERSION {
            return Err(damaged(format!("unknown record version {}", body[0])));
        }
        let record = serde_json::from_slice(&body[1..])
            .map_err(|e| damaged(format!("cannot read the record: {e}")))?;
        records.push(record);
        at = end;
    }
    Ok((records, at))
}

/// Whether `rest` holds nothing a later record could have written: only zeros, as a file
/// extended but never written leaves it.
fn is_tail(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

/// A file from before the framing: JSON lines, a torn last line cut. Rewritten framed (to a new
/// file renamed over the old one, so a crash leaves one or the other whole).
fn replay_json_lines<R: Serialize + DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<R>, MetadataLogError> {
    let mut records = Vec::new();
    let mut lines = bytes.split_inclusive(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<R>(line.trim_ascii_end()) {
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
        out.write_all(&frame(r)?)?;
    }
    out.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), records = records.len(), "metadata log rewritten with framed records");
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        n: u32,
    }

    fn write(path: &Path, records: &[u32]) -> Vec<u8> {
        let mut f = File::create(path).unwrap();
        for n in records {
            append(&mut f, &R { n: *n }).unwrap();
        }
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let whole = write(&path, &[1, 2, 3]);
        for cut in [whole.len() - 1, whole.len() - 5, whole.len() - 12] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let got: Vec<R> = replay(&path).unwrap();
            assert_eq!(got, vec![R { n: 1 }, R { n: 2 }]);
            assert!(std::fs::metadata(&path).unwrap().len() < cut as u64);
        }
        // A last record whose bytes never reached the disk (zeros after its length).
        let mut zeroed = whole.clone();
        let last = whole.len() - frame(&R { n: 3 }).unwrap().len();
        zeroed[last + 4..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(replay::<R>(&path).unwrap().len(), 2);
    }

    #[test]
    fn damage_in_the_middle_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let whole = write(&path, &[1, 2, 3]);
        let second = frame(&R { n: 1 }).unwrap().len();
        for at in [second, second + 5, second + 10] {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x40;
            std::fs::write(&path, &damaged).unwrap();
            let e = replay::<R>(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("at byte {second}")), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing is cut");
        }
    }

    #[test]
    fn json_lines_from_before_the_framing_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        std::fs::write(&path, b"{\"n\":1}\n{\"n\":2}\n{\"n\":").unwrap();
        assert_eq!(replay::<R>(&path).unwrap(), vec![R { n: 1 }, R { n: 2 }]);
        assert_eq!(replay::<R>(&path).unwrap(), vec![R { n: 1 }, R { n: 2 }]);
        assert_eq!(std::fs::read(&path).unwrap()[0], 0, "framed now");
        std::fs::write(&path, b"{\"n\":1}\n{\"n\"\n{\"n\":3}\n").unwrap();
        assert!(
            replay::<R>(&path).is_err(),
            "a damaged middle line stops the start"
        );
    }
}
