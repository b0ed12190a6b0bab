//! The metadata log's records: raw bytes, or one body framed with a correct length and CRC (so
//! that the version byte and the record JSON are reached), are read or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quipu_broker::controller::record::MetadataRecord;
use quipu_broker::controller::metadata_log::records_in;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = records_in(rest);
        return;
    }
    let mut framed = (rest.len() as u32).to_be_bytes().to_vec();
    framed.extend(crc32c::crc32c(rest).to_be_bytes());
    framed.extend(rest);
    if let Ok((records, valid_bytes)) = records_in(&framed) {
        assert!(valid_bytes <= framed.len());
        assert!(records.len() <= 1);
    }
});
