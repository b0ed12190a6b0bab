//! Length-prefixed framing: a 4-byte big-endian size, then that many bytes.
//!
//! Invariant: no frame larger than `max_frame_bytes` is ever buffered; the size is checked
//! before any byte of the body is accepted, so a hostile length costs nothing.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the size prefix in front of every request and response.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size_bytes} is negative")]
    Negative { size_bytes: i32 },
    #[error(
        "frame size {size_bytes} exceeds the limit of {max_bytes} bytes (socket.request.max.bytes)"
    )]
    TooLarge { size_bytes: i32, max_bytes: usize },
}

/// Cuts frames out of a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        assert!(max_frame_bytes > 0);
        Self { max_frame_bytes }
    }

    /// Takes one whole frame off the front of `buf`, without its size prefix, or returns
    /// `Ok(None)` when more bytes are needed (the frame's size has then been checked against the
    /// limit, and [`FrameDecoder::wanted_bytes`] tells how much buffer it takes). Nothing is
    /// reserved here: the caller decides when memory for a frame may be taken.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < FRAME_SIZE_PREFIX_BYTES {
            return Ok(None);
        }
        let size_bytes = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size_bytes < 0 {
            return Err(FrameError::Negative { size_bytes });
        }
        let size = size_bytes as usize;
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size_bytes,
                max_bytes: self.max_frame_bytes,
            });
        }
        let total = FRAME_SIZE_PREFIX_BYTES + size;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(FRAME_SIZE_PREFIX_BYTES);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

impl FrameDecoder {
    /// The bytes the frame at the front of `buf` takes whole, its prefix included, once its size
    /// is known (and within the limit); 0 before.
    pub fn wanted_bytes(&self, buf: &[u8]) -> usize {
        match buf.first_chunk::<FRAME_SIZE_PREFIX_BYTES>() {
            Some(prefix) => {
                let size = i32::from_be_bytes(*prefix);
                usize::try_from(size)
                    .ok()
                    .filter(|s| *s <= self.max_frame_bytes)
                    .map_or(0, |s| s + FRAME_SIZE_PREFIX_BYTES)
            }
            None => 0,
        }
    }
}

/// A response frame: length, the response header of `api` at `version` (correlation id
/// `correlation_id`), then `body`; or why the body does not encode at that version.
pub fn response_frame<R: crate::Encodable>(
    correlation_id: i32,
    api: crate::messages::ApiKey,
    version: i16,
    body: &R,
) -> Result<BytesMut, String> {
    use crate::Encodable as _;
    use bytes::BufMut;
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = crate::messages::ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_waits_for_whole_body() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[3, 0, 0]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().as_ref(), &[1, 2, 3]);
        assert_eq!(buf.as_ref(), &[0, 0]);
    }

    #[test]
    fn frame_over_limit_is_rejected_before_body_arrives() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&101i32.to_be_bytes()[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&100i32.to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn negative_frame_size_is_rejected() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::Negative { size_bytes: -1 })
        );
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&0i32.to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().len(), 0);
    }
}
