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

/// Writes every chunk of a frame with vectored writes, up to 64 slices a system call, so record
/// bytes go out from where they are (a mapped segment, a producer's batch) without a copy.
/// The chunks are advanced past what was written; empty chunks are skipped.
pub async fn write_chunks<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &mut [bytes::Bytes],
) -> std::io::Result<()> {
    use bytes::Buf;
    use tokio::io::AsyncWriteExt;
    const MAX_SLICES: usize = 64;
    let mut first = 0;
    loop {
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let slices: Vec<std::io::IoSlice<'_>> = chunks[first..]
            .iter()
            .take(MAX_SLICES)
            .map(|c| std::io::IoSlice::new(c))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let advanced = written.min(chunks[first].len());
            chunks[first].advance(advanced);
            written -= advanced;
            if chunks[first].is_empty() {
                first += 1;
            }
        }
    }
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

    #[tokio::test]
    async fn chunks_are_written_whole_and_empty_ones_skipped() {
        let mut out: Vec<u8> = Vec::new();
        let mut chunks = vec![
            bytes::Bytes::from_static(b"ab"),
            bytes::Bytes::new(),
            bytes::Bytes::from_static(b"cd"),
            bytes::Bytes::new(),
        ];
        super::write_chunks(&mut out, &mut chunks).await.unwrap();
        assert_eq!(out, b"abcd");
        assert!(chunks.iter().all(|c| c.is_empty()));
        // A writer that takes a few bytes at a time: chunks split across writes.
        let (mut tx, mut rx) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut got)
                .await
                .unwrap();
            got
        });
        let mut chunks: Vec<bytes::Bytes> =
            (0..100u8).map(|i| bytes::Bytes::from(vec![i; 7])).collect();
        super::write_chunks(&mut tx, &mut chunks).await.unwrap();
        drop(tx);
        let expected: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 7]).collect();
        assert_eq!(reader.await.unwrap(), expected);
    }
}
