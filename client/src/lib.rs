mod cluster;
pub mod config;
mod connection;
pub mod error;
pub mod partitioner;
pub mod producer;
pub use config::*;
pub use error::{Error, Result};
pub use producer::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
