//! Streaming decompression of a batch's records section, bounded: what the record walks
//! (`record_stream`) and the whole-section reads (`record`) both read through.
//!
//! Invariants: at most `limit_bytes` come out of one batch (one more byte is what tells the
//! caller it was over); the memory a stream holds is bounded by the codec, not by the data: a
//! 16 KiB read buffer, the zstd window (at most [`ZSTD_WINDOW_LOG_MAX`]), the lz4 block (at most
//! 4 MiB by the frame format), the gzip window (32 KiB) or one snappy block, whose claimed size
//! is checked against what its compressed bytes can hold before it is allocated.

use std::io::{self, BufRead, BufReader, Read};

use crate::record_batch::{RecordBatchView, BATCH_HEADER_BYTES};
use crate::record_error::RecordError;

/// Largest zstd window accepted (2^24 = 16 MiB). A frame may ask its decoder for a window of up
/// to 2^31 bytes whatever its size; clients at every level up to 19 use at most 2^23. Kafka's own
/// limit (zstd-jni's default) is 2^27: batches compressed at the "ultra" levels 20-22 with
/// windows over 16 MiB are refused here and accepted there.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Snappy's densest encoding (a 3-byte copy of 64 bytes) expands at most 64/3 times; a block that
/// claims more than this many bytes per compressed byte lies about its length.
const SNAPPY_MAX_EXPANSION: usize = 22;

const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A decoder's error as a record error (the snappy reader's own errors come back as they were).
pub(crate) fn codec_failed(e: io::Error) -> RecordError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<RecordError>())
    {
        Some(own) => own.clone(),
        None => RecordError::Codec("decompress records", e.to_string()),
    }
}

/// The records section of `batch` as a buffered stream, decompressed when the batch is
/// compressed, failing once more than `limit_bytes` come out.
pub fn decompressed<'a>(
    batch: &RecordBatchView<'a>,
    limit_bytes: usize,
) -> Result<Box<dyn BufRead + 'a>, RecordError> {
    let body = &batch.as_bytes()[BATCH_HEADER_BYTES..];
    let failed = |e: io::Error| RecordError::Codec("decompress records", e.to_string());
    let reader: Box<dyn Read + 'a> = match batch.compression_codec() {
        // Uncompressed records are read in place.
        0 => return Ok(Box::new(body)),
        1 => Box::new(flate2::read::GzDecoder::new(body)),
        2 => Box::new(SnappyReader::new(body, limit_bytes)),
        3 => Box::new(lz4::Decoder::new(body).map_err(failed)?),
        4 => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(failed)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(failed)?;
            Box::new(decoder)
        }
        other => return Err(RecordError::UnknownCodec(other)),
    };
    Ok(Box::new(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        reader.take(limit_bytes as u64 + 1),
    )))
}

/// Snappy as Kafka's clients write it: xerial framing (a 16-byte header, then blocks of a 4-byte
/// length and a raw snappy block, as the Java client writes), or one raw block (librdkafka).
/// One block is held at a time, and a block's claimed size is checked before it is allocated.
struct SnappyReader<'a> {
    /// Compressed blocks not yet read.
    rest: &'a [u8],
    xerial: bool,
    started: bool,
    block: Vec<u8>,
    at: usize,
    limit_bytes: usize,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8], limit_bytes: usize) -> Self {
        let xerial = body.len() >= 16 && body.starts_with(XERIAL_MAGIC);
        Self {
            rest: if xerial { &body[16..] } else { body },
            xerial,
            started: false,
            block: Vec::new(),
            at: 0,
            limit_bytes,
        }
    }

    /// The next compressed block, `None` when there is none.
    fn next_raw(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        if !self.xerial {
            if self.started {
                return Ok(None);
            }
            self.started = true;
            return Ok(Some(std::mem::take(&mut self.rest)));
        }
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (len, after) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or(RecordError::Malformed("truncated snappy block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let raw = after
            .get(..len)
            .ok_or(RecordError::Malformed("snappy block longer than the batch"))?;
        self.rest = &after[len..];
        Ok(Some(raw))
    }

    fn load_block(&mut self) -> Result<bool, RecordError> {
        let failed = |e: snap::Error| RecordError::Codec("decompress records", e.to_string());
        let Some(raw) = self.next_raw()? else {
            return Ok(false);
        };
        let len = snap::raw::decompress_len(raw).map_err(failed)?;
        if len > self.limit_bytes {
            return Err(RecordError::TooLarge(self.limit_bytes));
        }
        if len > raw.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
            return Err(RecordError::Malformed(
                "snappy block claims more than its bytes can hold",
            ));
        }
        self.block.clear();
        self.block.resize(len, 0);
        snap::raw::Decoder::new()
            .decompress(raw, &mut self.block)
            .map_err(failed)?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.load_block().map_err(io::Error::other)? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
