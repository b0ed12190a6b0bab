//! Kafka's offset checkpoint files (`log-start-offset-checkpoint`, and later the recovery point
//! and high watermark ones): a version line `0`, a count, then `topic partition offset` lines.
//!
//! Invariant: a checkpoint on disk is always whole: it is written to a temporary file, synced,
//! and renamed over the old one, then the directory is synced. A file that does not parse is
//! reported and treated as empty, which only makes the broker fall back to what the segments say.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub type Offsets = BTreeMap<(String, i32), i64>;

pub fn read(path: &Path) -> Offsets {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Offsets::new();
    };
    match parse(&text) {
        Some(offsets) => offsets,
        None => {
            tracing::warn!(path = %path.display(), "checkpoint file does not parse: ignoring it");
            Offsets::new()
        }
    }
}

fn parse(text: &str) -> Option<Offsets> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut offsets = Offsets::new();
    for line in lines.by_ref().take(count) {
        let mut parts = line.split_whitespace();
        let topic = parts.next()?.to_string();
        let partition: i32 = parts.next()?.parse().ok()?;
        let offset: i64 = parts.next()?.parse().ok()?;
        offsets.insert((topic, partition), offset);
    }
    (offsets.len() == count).then_some(offsets)
}

pub fn write(path: &Path, offsets: &Offsets) -> std::io::Result<()> {
    let mut text = format!("0\n{}\n", offsets.len());
    for ((topic, partition), offset) in offsets {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log-start-offset-checkpoint");
        let mut o = Offsets::new();
        o.insert(("orders".into(), 0), 42);
        o.insert(("orders.v2".into(), 11), 7);
        write(&path, &o).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0\n2\norders 0 42\norders.v2 11 7\n"
        );
        assert_eq!(read(&path), o);
        std::fs::write(&path, "0\n3\norders 0 42\n").unwrap();
        assert!(read(&path).is_empty());
        assert!(read(&dir.path().join("missing")).is_empty());
    }
}
