//! A produced record batch: validation (structure, every record, keys, timestamps) and
//! recompression accept or refuse any bytes without panicking, and a batch they accept parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quipu_storage::log::{check_batch, ProducePolicy};
use quipu_config::topic::TopicCompression;
use quipu_protocol::record_batch::RecordBatchView;
use quipu_protocol::record_stream::RecordRules;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, batch)) = data.split_first() else {
        return;
    };
    let compression = match choice % 4 {
        0 => TopicCompression::Producer,
        1 => TopicCompression::Codec(0, None),
        2 => TopicCompression::Codec(4, Some(3)),
        _ => TopicCompression::Codec(3, Some(1)),
    };
    let policy = ProducePolicy {
        rules: RecordRules {
            keys_required: choice & 4 != 0,
            timestamp_range_ms: (choice & 8 != 0).then_some((0, 1 << 40)),
        },
        compression,
    };
    if let Ok(checked) = check_batch(batch, policy) {
        let stored = checked.recompressed.as_deref().unwrap_or(batch);
        assert!(RecordBatchView::parse(stored).is_ok());
    }
});
