use super::*;
use quipu_config::BrokerConfig;
use quipu_protocol::records::Compression;

fn config(overrides: &[(&str, &str)]) -> TopicConfig {
    let o = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TopicConfig::with_overrides(&BrokerConfig::default(), &o).unwrap()
}

/// A client-style batch (base offset 0) of `count` records stamped from `first_ts`.
fn batch(count: usize, first_ts: i64, compression: Compression) -> Vec<u8> {
    quipu_protocol::testing::batch(count, 200, first_ts, compression)
}

fn read_all(log: &Log) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(bytes) = log
        .read(offset, log.log_end_offset(), 1 << 20, true)
        .unwrap()
    {
        for item in quipu_protocol::record_batch::BatchIter::new(&bytes) {
            let (_, b) = item.unwrap();
            b.validate().unwrap();
            out.push((b.base_offset(), b.last_offset()));
            offset = b.last_offset() + 1;
        }
    }
    out
}

#[test]
fn append_assigns_contiguous_offsets_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    for i in 0..10 {
        let info = log
            .append(&batch(5, 1_000 * i, Compression::None), 0)
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (i * 5, i * 5 + 4));
    }
    assert_eq!(log.log_end_offset(), 50);
    let batches = read_all(&log);
    assert_eq!(batches.len(), 10);
    assert_eq!(batches[9], (45, 49));
    // A read from the middle of a batch starts at that batch.
    let b = log.read(17, 50, 1, true).unwrap().unwrap();
    let v = RecordBatchView::parse(&b).unwrap();
    assert_eq!((v.base_offset(), v.size_bytes()), (15, b.len()));
    assert!(matches!(log.read(50, 50, 100, true), Ok(None)));
    assert!(log.read(51, 50, 100, true).is_err());
}

#[test]
fn max_bytes_limits_whole_batches_but_one_batch_always_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    let one = batch(5, 0, Compression::None);
    for _ in 0..4 {
        log.append(&one, 0).unwrap();
    }
    assert_eq!(
        log.read(0, 20, one.len() * 2 + 1, true)
            .unwrap()
            .unwrap()
            .len(),
        one.len() * 2
    );
    assert_eq!(log.read(0, 20, 1, true).unwrap().unwrap().len(), one.len());
    assert_eq!(log.read(0, 20, 1, false).unwrap(), None);
    // Nothing at or past max_offset is returned.
    assert_eq!(
        log.read(0, 10, 1 << 20, true).unwrap().unwrap().len(),
        one.len() * 2
    );
}

#[test]
fn segments_roll_by_size_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "4096"), ("index.interval.bytes", "512")]);
    let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
    for i in 0..100 {
        log.append(&batch(3, i * 10, Compression::None), 0).unwrap();
    }
    assert!(log.segment_count() > 3, "{}", log.segment_count());
    let before = read_all(&log);
    let ts = lookup(&log, 505).unwrap();
    log.close(0).unwrap();
    drop(log);
    // Closed segments were trimmed to their contents.
    let first_len = std::fs::metadata(dir.path().join("00000000000000000000.log"))
        .unwrap()
        .len();
    assert!(first_len <= 4096);
    let log = Log::open(dir.path(), cfg, None, 0).unwrap();
    assert_eq!(log.log_end_offset(), 300);
    assert_eq!(read_all(&log), before);
    assert_eq!(lookup(&log, 505), Some(ts));
    assert_eq!(ts, (510, 153)); // batch 51 holds timestamps 510..=512 at offsets 153..=155
}

#[test]
fn segments_roll_by_time_between_record_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(&[("segment.ms", "1000")]), Some(0), 0).unwrap();
    let now = 1_000_000_000;
    log.append(&batch(1, 0, Compression::None), now).unwrap();
    log.append(&batch(1, 500, Compression::None), now).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&batch(1, 1_001, Compression::None), now)
        .unwrap();
    assert_eq!(log.segment_count(), 2);
    // Old timestamps far behind the wall clock do not roll every append.
    for _ in 0..5 {
        log.append(&batch(1, 1_100, Compression::None), now)
            .unwrap();
    }
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn segments_without_producer_timestamps_roll_by_wall_clock_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[
        ("segment.ms", "1000"),
        ("message.timestamp.type", "LogAppendTime"),
    ]);
    let mut log = Log::open(dir.path(), cfg, Some(0), 0).unwrap();
    log.append(&batch(1, 0, Compression::None), 0).unwrap();
    log.append(&batch(1, 0, Compression::None), 900).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&batch(1, 0, Compression::None), 1_001).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn timestamp_lookups_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        config(&[("index.interval.bytes", "0")]),
        Some(0),
        0,
    )
    .unwrap();
    for i in 0..20 {
        log.append(&batch(10, 100 * i, Compression::Zstd), 0)
            .unwrap();
    }
    let at = |ts| lookup(&log, ts);
    assert_eq!(at(0), Some((0, 0)));
    assert_eq!(at(205), Some((205, 25)));
    assert_eq!(at(209), Some((209, 29)));
    assert_eq!(at(210), Some((300, 30)));
    assert_eq!(at(1_910), None);
    let max = log
        .max_timestamp_and_offset()
        .unwrap()
        .map(TimestampLookup::resolve);
    assert_eq!(max, Some((1_909, 199)));
}

#[test]
fn log_append_time_topics_stamp_the_broker_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        config(&[("message.timestamp.type", "LogAppendTime")]),
        Some(0),
        0,
    )
    .unwrap();
    let info = log.append(&batch(3, 5, Compression::None), 77_000).unwrap();
    assert_eq!(info.log_append_time_ms, 77_000);
    let b = log.read(0, 3, 1 << 20, true).unwrap().unwrap();
    let v = RecordBatchView::parse(&b).unwrap();
    v.validate().unwrap();
    assert!(v.is_log_append_time());
    assert_eq!(v.max_timestamp(), 77_000);
}

#[test]
fn bad_batches_are_refused_and_leave_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        config(&[("max.message.bytes", "1000")]),
        Some(0),
        0,
    )
    .unwrap();
    let mut b = batch(2, 0, Compression::None);
    let n = b.len();
    b[n - 1] ^= 1;
    assert!(matches!(log.append(&b, 0), Err(AppendError::Corrupt(_))));
    assert!(matches!(
        log.append(&batch(10, 0, Compression::None), 0),
        Err(AppendError::TooLarge { .. })
    ));
    let mut two = batch(1, 0, Compression::None);
    two.extend(batch(1, 0, Compression::None));
    assert!(matches!(
        log.append(&two, 0),
        Err(AppendError::InvalidRecord(_))
    ));
    let mut shifted = batch(1, 0, Compression::None);
    shifted[7] = 1;
    assert!(matches!(
        log.append(&shifted, 0),
        Err(AppendError::InvalidRecord(_))
    ));
    assert!(matches!(
        log.append(&[1, 2, 3], 0),
        Err(AppendError::Corrupt(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn garbage_after_the_last_batch_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    log.append(&batch(4, 0, Compression::Gzip), 0).unwrap();
    log.append(&batch(4, 0, Compression::Gzip), 0).unwrap();
    log.close(0).unwrap();
    drop(log);
    let path = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.truncate(whole - 10); // a torn second batch
    bytes.extend([0xAB; 40]);
    std::fs::write(&path, &bytes).unwrap();
    let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(read_all(&log), vec![(0, 3)]);
    // Appends continue right after the last valid batch.
    assert_eq!(
        log.append(&batch(1, 0, Compression::None), 0)
            .unwrap()
            .base_offset,
        4
    );
}

#[test]
fn retention_by_bytes_deletes_the_oldest_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(3, 0, Compression::None).len();
    let cfg = config(&[
        ("segment.bytes", &(one * 2).to_string()),
        ("retention.bytes", &(one * 5).to_string()),
    ]);
    let mut log = Log::open(dir.path(), cfg, Some(0), 0).unwrap();
    for _ in 0..10 {
        log.append(&batch(3, 0, Compression::None), 0).unwrap();
    }
    assert_eq!(log.segment_count(), 5);
    let deleted = log.apply_retention(0).unwrap();
    // 10 batches in 5 segments of 2, 5 batches' worth allowed: as in Kafka, a segment goes only if
    // the log stays at or above the limit without it, so 3 segments (6 batches) stay.
    assert_eq!(deleted, vec![0, 6]);
    assert_eq!(log.log_start_offset(), 12);
    assert!(log.read(11, 30, 1 << 20, true).is_err());
    assert!(log.read(12, 30, 1 << 20, true).unwrap().is_some());
    assert!(!dir.path().join("00000000000000000000.log").exists());
    drop(log);
    let log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    assert_eq!(log.log_start_offset(), 12);
}

#[test]
fn retention_by_time_uses_the_largest_timestamp_and_spares_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(1, 0, Compression::None).len();
    let cfg = config(&[
        ("segment.bytes", &one.to_string()),
        ("retention.ms", "1000"),
    ]);
    let mut log = Log::open(dir.path(), cfg, Some(0), 0).unwrap();
    for ts in [100, 200, 5_000, 6_000] {
        log.append(&batch(1, ts, Compression::None), 0).unwrap();
    }
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.apply_retention(5_500).unwrap(), vec![0, 1]);
    assert_eq!(log.log_start_offset(), 2);
    // Everything is old by now, but the active segment stays.
    assert_eq!(log.apply_retention(100_000).unwrap(), vec![2]);
    assert_eq!(
        (
            log.segment_count(),
            log.log_start_offset(),
            log.log_end_offset()
        ),
        (1, 3, 4)
    );
}

#[test]
fn advancing_the_log_start_offset_cuts_whole_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(5, 0, Compression::None).len();
    let mut log = Log::open(
        dir.path(),
        config(&[("segment.bytes", &one.to_string())]),
        Some(0),
        0,
    )
    .unwrap();
    for _ in 0..4 {
        log.append(&batch(5, 0, Compression::None), 0).unwrap();
    }
    assert_eq!(log.advance_log_start_offset(7, 20).unwrap(), 7);
    assert_eq!(log.segment_count(), 3);
    assert!(log.read(6, 20, 1 << 20, true).is_err());
    // A read at the new start begins at the batch holding it.
    let b = log.read(7, 20, 1, true).unwrap().unwrap();
    assert_eq!(RecordBatchView::parse(&b).unwrap().base_offset(), 5);
    assert_eq!(
        log.advance_log_start_offset(3, 20).unwrap(),
        7,
        "never backwards"
    );
    assert!(matches!(
        log.advance_log_start_offset(21, 20),
        Err(LogStartError::OutOfRange(_))
    ));
}

/// Five closed segments of two 3-record batches each, and an empty active one, left as a crash
/// leaves them (nothing trimmed, nothing closed).
fn crashed_log(dir: &std::path::Path) -> (TopicConfig, usize) {
    let one = batch(3, 0, Compression::None).len();
    let cfg = config(&[
        ("segment.bytes", &(one * 2).to_string()),
        ("index.interval.bytes", "0"),
    ]);
    let mut log = Log::open(dir, cfg.clone(), Some(0), 0).unwrap();
    for i in 0..10 {
        log.append(&batch(3, i * 10, Compression::None), 0).unwrap();
    }
    assert_eq!((log.segment_count(), log.log_end_offset()), (5, 30));
    (cfg, one)
}

fn damage(path: &std::path::Path, at: usize, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn recovery_cuts_the_log_at_a_flipped_bit_in_a_closed_segment_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, one) = crashed_log(dir.path());
    // Segment 12 holds offsets 12..=17; flip a bit in its second batch (offsets 15..=17).
    damage(
        &dir.path().join("00000000000000000012.log"),
        one + 100,
        &[0xff],
    );
    let mut log = Log::open(dir.path(), cfg, Some(0), 0).unwrap();
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(read_all(&log).last(), Some(&(12, 14)));
    assert!(!dir.path().join("00000000000000000018.log").exists());
    // The damaged segment is active again and takes the next append at offset 15.
    assert_eq!(
        log.append(&batch(1, 0, Compression::None), 0)
            .unwrap()
            .base_offset,
        15
    );
}

#[test]
fn recovery_rereads_only_from_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, one) = crashed_log(dir.path());
    // Damage before the recovery point is not looked for (it was flushed, so a crash cannot have
    // torn it); damage after it is found.
    damage(
        &dir.path().join("00000000000000000006.log"),
        one + 100,
        &[0xff],
    );
    damage(
        &dir.path().join("00000000000000000024.log"),
        one + 100,
        &[0xff],
    );
    let log = Log::open(dir.path(), cfg, Some(18), 0).unwrap();
    assert_eq!(log.log_end_offset(), 27);
    assert_eq!(log.recovery_point(), 27);
}

#[test]
fn a_torn_or_zeroed_tail_of_the_active_segment_is_cut() {
    for tail in [&[0u8; 40][..], &[0xAB; 7][..]] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[]);
        let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
        let one = batch(3, 0, Compression::Snappy);
        log.append(&one, 0).unwrap();
        log.append(&one, 0).unwrap();
        drop(log);
        // The second batch: half of it overwritten.
        damage(
            &dir.path().join("00000000000000000000.log"),
            one.len() + one.len() / 2,
            tail,
        );
        let log = Log::open(dir.path(), cfg, Some(0), 0).unwrap();
        assert_eq!(log.log_end_offset(), 3);
    }
}

#[test]
fn missing_or_garbage_indexes_are_rebuilt_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = crashed_log(dir.path());
    let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
    log.close(0).unwrap();
    drop(log);
    std::fs::remove_file(dir.path().join("00000000000000000006.index")).unwrap();
    std::fs::write(
        dir.path().join("00000000000000000012.index"),
        [0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 1],
    )
    .unwrap();
    std::fs::write(dir.path().join("00000000000000000018.timeindex"), [7u8; 24]).unwrap();
    let log = Log::open(dir.path(), cfg, None, 0).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    for offset in [7, 13, 19] {
        let b = log.read(offset, 30, 1, true).unwrap().unwrap();
        let v = RecordBatchView::parse(&b).unwrap();
        assert!(v.base_offset() <= offset && offset <= v.last_offset());
    }
    assert_eq!(lookup(&log, 41), Some((41, 13)));
    assert!(
        std::fs::metadata(dir.path().join("00000000000000000006.index"))
            .unwrap()
            .len()
            > 0
    );
}

#[test]
fn a_clean_reopen_trusts_the_files_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("index.interval.bytes", "0")]);
    let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
    for i in 0..5 {
        log.append(&batch(2, i * 10, Compression::Gzip), 0).unwrap();
    }
    log.close(0).unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), cfg.clone(), None, 0).unwrap();
    assert_eq!(
        log.append(&batch(2, 50, Compression::None), 0)
            .unwrap()
            .base_offset,
        10
    );
    assert_eq!(read_all(&log).len(), 6);
    assert_eq!(lookup(&log, 51), Some((51, 11)));
    log.close(0).unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg, None, 0).unwrap();
    assert_eq!(read_all(&log).len(), 6);
}

#[test]
fn flush_messages_one_makes_every_append_due_and_flush_moves_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        config(&[("flush.messages", "1"), ("flush.ms", "1000")]),
        Some(0),
        0,
    )
    .unwrap();
    assert!(!log.flush_due_by_messages());
    log.append(&batch(2, 0, Compression::None), 0).unwrap();
    assert!(log.flush_due_by_messages());
    assert!(!log.flush_due_by_time(999));
    assert!(log.flush_due_by_time(1_000));
    assert_eq!(log.recovery_point(), 0);
    log.flush(5).unwrap();
    assert_eq!(log.recovery_point(), 2);
    assert!(!log.flush_due_by_messages());
    assert!(!log.flush_due_by_time(10_000));
}

#[test]
fn appends_after_a_clean_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    log.close(0).unwrap();
    assert!(matches!(
        log.append(&batch(1, 0, Compression::None), 0),
        Err(AppendError::Io(_))
    ));
}

#[test]
fn truncate_to_cuts_at_the_batch_holding_the_offset_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = crashed_log(dir.path());
    let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
    log.truncate_to(16, 0).unwrap(); // offset 16 sits in batch 15..=17
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(read_all(&log).last(), Some(&(12, 14)));
    assert!(!dir.path().join("00000000000000000018.log").exists());
    assert_eq!(
        log.append(&batch(2, 0, Compression::None), 0)
            .unwrap()
            .base_offset,
        15
    );
    log.truncate_to(6, 0).unwrap(); // a segment boundary: the segment at 6 goes entirely
    assert_eq!((log.log_end_offset(), log.segment_count()), (6, 1));
    drop(log);
    let log = Log::open(dir.path(), cfg, Some(0), 0).unwrap();
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn truncating_a_segment_a_reader_holds_leaves_the_reader_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
    for _ in 0..4 {
        log.append(&batch(5, 0, Compression::None), 0).unwrap();
    }
    let held = log.read(10, 20, 1 << 20, true).unwrap().unwrap();
    let before = held.to_vec();
    log.truncate_to(10, 0).unwrap();
    // New bytes at the same offsets do not change what the reader holds.
    log.append(&batch(7, 99, Compression::Gzip), 0).unwrap();
    assert_eq!(held.as_ref(), &before[..]);
    let fresh = log.read(10, 17, 1 << 20, true).unwrap().unwrap();
    assert_ne!(fresh.as_ref(), &before[..fresh.len().min(before.len())]);
    assert_eq!(log.log_end_offset(), 17);
}

#[test]
fn epochs_are_recorded_checkpointed_and_trimmed_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 0, Compression::None).len();
    let cfg = config(&[("segment.bytes", &(one * 2).to_string())]);
    let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
    for epoch in [0, 0, 3, 3, 5, 5] {
        log.set_leader_epoch(epoch);
        log.append(&batch(2, 0, Compression::None), 0).unwrap();
    }
    let entries = |l: &Log| {
        l.epoch_entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&log), vec![(0, 0), (3, 4), (5, 8)]);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 8)));
    assert_eq!(log.end_offset_for_epoch(4), Some((3, 8)));
    assert_eq!(log.end_offset_for_epoch(7), Some((5, 12)));
    // The batch at 8 holds 9: the cut is at 8, and epoch 5 is gone with it.
    log.truncate_to(9, 0).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(entries(&log), vec![(0, 0), (3, 4)]);
    log.advance_log_start_offset(5, 8).unwrap();
    assert_eq!(entries(&log), vec![(3, 5)]);
    drop(log);
    // Reopened after a crash, and with the checkpoint deleted: rebuilt from the batches.
    let log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
    assert_eq!(log.leader_epoch(), 3);
    std::fs::remove_file(dir.path().join(leader_epoch_cache::FILE_NAME)).unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg, None, 0).unwrap();
    assert_eq!(entries(&log), vec![(3, 4)]);
}

mod model {
    //! Append, truncate, flush and reopen (clean or after a crash) against a simple model: the
    //! log's batches, end offset and epoch cache always equal the model's.
    use super::*;
    use proptest::prelude::*;

    /// (base offset, last offset, leader epoch, producer id with its first and last sequence)
    type ModelBatch = (i64, i64, i32, Option<(i64, i32, i32)>);

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            records: usize,
            new_epoch: bool,
            producer: Option<i64>,
        },
        /// A producer resends its last batch: answered with the original offsets.
        Retry {
            producer: i64,
        },
        Truncate {
            back: i64,
        },
        Flush,
        Reopen {
            clean: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..4, proptest::bool::weighted(0.2), proptest::option::of(0i64..3)).prop_map(|(records, new_epoch, producer)| Op::Append { records, new_epoch, producer }),
            1 => (0i64..3).prop_map(|producer| Op::Retry { producer }),
            2 => (0i64..12).prop_map(|back| Op::Truncate { back }),
            1 => Just(Op::Flush),
            2 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = config(&[("segment.bytes", "1000"), ("index.interval.bytes", "300")]);
            let mut log = Log::open(dir.path(), cfg.clone(), Some(0), 0).unwrap();
            let mut model: Vec<ModelBatch> = Vec::new();
            let last_of = |model: &[ModelBatch], producer: i64| {
                model.iter().rev().find_map(|b| b.3.filter(|p| p.0 == producer).map(|p| (b.0, b.1, p.1, p.2)))
            };
            let mut epoch = 0;
            for op in ops {
                let end = model.last().map_or(0, |b| b.1 + 1);
                match op {
                    Op::Append { records, new_epoch, producer } => {
                        if new_epoch {
                            epoch += 1;
                        }
                        log.set_leader_epoch(epoch);
                        let (bytes, seqs) = match producer {
                            None => (batch(records, 1_000, Compression::None), None),
                            Some(id) => {
                                let first = last_of(&model, id).map_or(0, |l| l.3 + 1);
                                let bytes = quipu_protocol::testing::idempotent_batch(records, id, 0, first);
                                (bytes, Some((id, first, first + records as i32 - 1)))
                            }
                        };
                        let info = log.append(&bytes, 0).unwrap();
                        prop_assert_eq!(info.base_offset, end);
                        prop_assert!(!info.duplicate);
                        model.push((end, end + records as i64 - 1, epoch, seqs));
                    }
                    Op::Retry { producer } => {
                        if let Some((base, last, first_seq, last_seq)) = last_of(&model, producer) {
                            let count = (last_seq - first_seq + 1) as usize;
                            let bytes = quipu_protocol::testing::idempotent_batch(count, producer, 0, first_seq);
                            let info = log.append(&bytes, 0).unwrap();
                            prop_assert!(info.duplicate);
                            prop_assert_eq!((info.base_offset, info.last_offset), (base, last));
                        }
                    }
                    Op::Truncate { back } => {
                        let target = (end - back).max(0);
                        log.truncate_to(target, 0).unwrap();
                        model.retain(|b| b.1 < target);
                    }
                    Op::Flush => log.flush(0).unwrap(),
                    Op::Reopen { clean } => {
                        if clean {
                            log.close(0).unwrap();
                        }
                        drop(log);
                        log = Log::open(dir.path(), cfg.clone(), if clean { None } else { Some(0) }, 0).unwrap();
                        log.set_leader_epoch(epoch);
                    }
                }
                let expected: Vec<(i64, i64)> = model.iter().map(|b| (b.0, b.1)).collect();
                prop_assert_eq!(read_all(&log), expected);
                prop_assert_eq!(log.log_end_offset(), model.last().map_or(0, |b| b.1 + 1));
                let mut epochs: Vec<(i32, i64)> = Vec::new();
                for b in &model {
                    if epochs.last().is_none_or(|l| b.2 > l.0) {
                        epochs.push((b.2, b.0));
                    }
                }
                let cached: Vec<(i32, i64)> = log.epoch_entries().iter().map(|e| (e.epoch, e.start_offset)).collect();
                prop_assert_eq!(cached, epochs);
                // Producer state follows the log: each producer's last batch, or nothing.
                for id in 0..3 {
                    let expected = last_of(&model, id);
                    let actual = log.producer_state().entry(id).and_then(|e| e.batches.back()).map(|b| (b.first_offset, b.last_offset, b.first_sequence, b.last_sequence));
                    prop_assert_eq!(actual, expected, "producer {}", id);
                }
            }
        }
    }
}

#[test]
fn a_follower_appends_across_a_gap_its_leaders_cleaner_left() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Log::open(leader_dir.path(), config(&[]), Some(0), 0).unwrap();
    let mut follower = Log::open(follower_dir.path(), config(&[]), Some(0), 0).unwrap();
    leader.set_leader_epoch(2);
    for ts in [1_000, 2_000, 3_000] {
        leader.append(&batch(3, ts, Compression::None), 0).unwrap();
    }
    let first = leader.read(0, 3, 1 << 20, true).unwrap().unwrap();
    let third = leader.read(6, 9, 1 << 20, true).unwrap().unwrap();
    follower.append_as_follower(&first, 0).unwrap();
    // Offsets 3..6 were cleaned away on the leader: its next batch starts at 6.
    let after_gap = follower.append_as_follower(&third, 0).unwrap().unwrap();
    assert_eq!((after_gap.first_offset, after_gap.last_offset), (6, 8));
    assert_eq!(follower.log_end_offset(), 9);
    let from_gap = follower.read(3, 9, 1 << 20, true).unwrap().unwrap();
    assert_eq!(
        &from_gap[..],
        &third[..],
        "a read in the gap starts at the next batch"
    );
    // A gap wider than a segment's relative offsets reach starts a new segment at the batch.
    let mut far = third.to_vec();
    let far_base: i64 = 9 + (1 << 32);
    far[..8].copy_from_slice(&far_base.to_be_bytes());
    follower.append_as_follower(&far, 0).unwrap().unwrap();
    assert_eq!(follower.log_end_offset(), far_base + 3);
    let tail = follower
        .read(far_base, far_base + 3, 1 << 20, true)
        .unwrap()
        .unwrap();
    assert_eq!(&tail[8..], &third[8..]);
    // Below the log end is refused.
    assert!(follower.append_as_follower(&first, 0).is_err());
}

/// A timestamp lookup carried through, as the ListOffsets handler does off the lock.
fn lookup(log: &Log, timestamp_ms: i64) -> Option<(i64, i64)> {
    log.offset_for_timestamp(timestamp_ms)
        .unwrap()
        .map(TimestampLookup::resolve)
}

#[test]
fn a_follower_copies_the_leaders_batches_byte_for_byte_with_epochs_and_producers() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Log::open(leader_dir.path(), config(&[]), Some(0), 0).unwrap();
    let mut follower = Log::open(follower_dir.path(), config(&[]), Some(0), 0).unwrap();
    leader.set_leader_epoch(3);
    leader
        .append(&batch(4, 1_000, Compression::None), 0)
        .unwrap();
    let idempotent = quipu_protocol::testing::idempotent_batch(3, 7, 0, 0);
    leader.append(&idempotent, 0).unwrap();
    leader.set_leader_epoch(5);
    leader
        .append(&batch(2, 2_000, Compression::Lz4), 0)
        .unwrap();
    let bytes = leader
        .read(0, leader.log_end_offset(), 1 << 20, true)
        .unwrap()
        .unwrap();
    // The last batch cut short stays for the next fetch.
    let cut = &bytes[..bytes.len() - 10];
    let first = follower.append_as_follower(cut, 0).unwrap().unwrap();
    assert_eq!(
        (first.first_offset, first.last_offset, first.batches),
        (0, 6, 2)
    );
    let rest = leader
        .read(7, leader.log_end_offset(), 1 << 20, true)
        .unwrap()
        .unwrap();
    follower.append_as_follower(&rest, 0).unwrap().unwrap();
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    let copy = follower
        .read(0, follower.log_end_offset(), 1 << 20, true)
        .unwrap()
        .unwrap();
    assert_eq!(
        &copy[..],
        &bytes[..],
        "the follower's log is the leader's, byte for byte"
    );
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    // The producer's batch is known: its retry is a duplicate on the follower too.
    let retry = follower.append(&idempotent, 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 4);
    // A batch that does not start at the log end, or has a bad CRC, is refused.
    assert!(follower.append_as_follower(&rest, 0).is_err());
    let mut damaged = leader.read(0, 4, 1 << 20, true).unwrap().unwrap().to_vec();
    damaged[70] ^= 1;
    let end = follower.log_end_offset();
    follower.truncate_to(0, 0).unwrap();
    assert!(follower.append_as_follower(&damaged, 0).is_err());
    assert_eq!(follower.log_end_offset(), 0);
    assert!(end > 0);
    // A follower behind its leader's log start starts over there.
    follower.append_as_follower(&bytes, 0).unwrap();
    follower.truncate_fully_and_start_at(100, 0).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (100, 100)
    );
    assert!(follower.epoch_entries().is_empty());
    assert!(follower.producer_state().is_empty());
}
