//! The Kafka wire protocol as Quipu speaks it.
//!
//! - [`frame`]: length-prefixed framing, bounded by `socket.request.max.bytes`.
//! - [`header`]: request headers (v0-v2, flexible versions and tagged fields).
//! - [`produce_request`]: the Produce request as framing plus the producer's own batches.
//! - [`record_batch`]: a view over magic v2 record batches that validates them (sizes,
//!   CRC-32C) and rewrites base offset, leader epoch and LogAppendTime in place.
//! - [`record`]: the records inside a batch, read one by one and rebuilt from a subset, for
//!   compaction.
//! - [`record_stream`]: a batch's records walked as a bounded stream, for validation (Kafka's
//!   LogValidator) and timestamp lookups, without holding or allocating per record.
//! - [`batch_builder`]: a v2 batch built record by record, as producers write them.
//! - [`request_shape`]: a request body walked against its message's wire shape before it is
//!   decoded, so that no count read from the wire is acted on unchecked (Kafka 4.4's limits).
//! - [`wire`]: varints, lengths, strings and tagged fields, for what is encoded by hand.
//! - [`fetch_response`]: the Fetch response written as framing plus record slices, so
//!   record bytes are never copied on the way out.
//!
//! Control-plane messages are the `kafka-protocol` crate's, re-exported as [`messages`].
//!
//! Architecture invariant: this crate knows nothing of the broker, of storage or of the network.

pub mod batch_builder;
pub mod decompression;
pub mod fetch_response;
pub mod frame;
pub mod header;
pub mod produce_request;
pub mod record;
pub mod record_batch;
pub mod record_error;
pub mod record_stream;
pub mod request_shape;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wire;

pub use kafka_protocol::error::ResponseError;
pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, StrBytes,
};
pub use kafka_protocol::records;
