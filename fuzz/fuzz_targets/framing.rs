//! Framing and request headers: any bytes, in any chunking, are cut into frames within the size
//! limit or refused, and every frame's header parses or is refused; nothing panics.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quipu_protocol::frame::FrameDecoder;
use quipu_protocol::header::decode_request_header;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(1 << 16);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        buf.extend_from_slice(piece);
        assert!(decoder.wanted_bytes(&buf) <= (1 << 16) + 4);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(mut frame)) => {
                    assert!(frame.len() <= 1 << 16);
                    let _ = decode_request_header(&mut frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
