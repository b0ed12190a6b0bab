//! The handler trait: each Kafka API is a type that names its key, the versions it serves and
//! its request message, and answers a decoded request. The registry in `api/mod.rs` is built
//! from these types, so what ApiVersions advertises and what is dispatched are one list.
//!
//! Invariant: a handler runs only for a version inside its `VERSIONS` and a body that passed
//! the shape check and decoded whole.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use quipu_protocol::messages::ApiKey;
use quipu_protocol::{Decodable, Encodable};

use super::produce::AppendTurn;
use super::{encode, Handled, RequestError};
use crate::broker::Broker;

/// What a request carries besides its body.
pub struct RequestMeta {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub peer: SocketAddr,
    /// The request's place among its connection's Produce requests (Produce only).
    pub append_turn: Option<AppendTurn>,
}

impl RequestMeta {
    /// `response` as this request's response frame.
    pub fn reply<R: Encodable>(&self, response: &R) -> Result<Handled, RequestError> {
        Ok(Handled::Response(encode(
            self.correlation_id,
            self.api,
            self.version,
            response,
        )?))
    }
}

pub trait Handler {
    /// The API this type answers.
    const KEY: ApiKey;
    /// The lowest and highest version served; every version between them works.
    const VERSIONS: (i16, i16);
    type Request: Decodable + Send + 'static;

    fn handle(
        broker: Arc<Broker>,
        request: Self::Request,
        meta: RequestMeta,
    ) -> impl Future<Output = Result<Handled, RequestError>> + Send;
}
