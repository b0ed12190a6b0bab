//! The metadata log's records: raw bytes, or one body framed with a correct length and CRC (so
//! that the version byte and the records, binary batches or legacy JSON, are reached), are read
//! or refused, never a panic; what decodes is encoded and decoded again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quipu_broker::metadata_log::record::{decode_all, encode_all};
use quipu_broker::metadata_log::records_in;

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
        // What was read is written back and read again unchanged.
        assert_eq!(decode_all(&encode_all(&records)).as_ref(), Ok(&records));
    }
});
