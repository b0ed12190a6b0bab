//! `__consumer_offsets` record keys and values in Kafka's formats: decoded or refused, never a
//! panic; whatever decodes encodes back to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quipu_broker::group::offsets_topic::{GroupValue, Key, OffsetValue};

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = Key::decode(data) {
        assert_eq!(Key::decode(&key.encode()).as_ref(), Ok(&key));
    }
    if let Ok(value) = OffsetValue::decode(data) {
        assert!(OffsetValue::decode(&value.encode()).is_ok());
    }
    if let Ok(value) = GroupValue::decode(data) {
        assert!(GroupValue::decode(&value.encode()).is_ok());
    }
});
