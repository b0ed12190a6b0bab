//! What can be wrong with the records of a batch, as its readers report it (`record`,
//! `record_stream`, `decompression`).

/// Why a batch's records cannot be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is malformed: {0}")]
    Malformed(&'static str),
    #[error("compression codec {0} is not supported")]
    UnknownCodec(i16),
    #[error("cannot {0}: {1}")]
    Codec(&'static str, String),
    #[error("records decompress to more than {0} bytes")]
    TooLarge(usize),
}
