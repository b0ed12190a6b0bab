//! Quipu's Rust client crate: producer, consumer and admin built on [`quipu_protocol`].
//!
//! It holds only the wire layer for now; the producer, consumer and admin come with the client
//! issue ("Rust client crate and the quipu command-line tool"). Until then, applications use any
//! Kafka client: Quipu speaks Kafka's protocol.

pub use quipu_protocol as protocol;
