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
use crate::request_context::RequestContext;

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
        ctx: Arc<RequestContext>,
        request: Self::Request,
        meta: RequestMeta,
    ) -> impl Future<Output = Result<Handled, RequestError>> + Send;
}

/// Declares the API a handler file answers: its `Api` type with the key, the versions served
/// (`min..=max`) and the request message, and the body that answers a decoded request, given
/// the broker, the request and its [`RequestMeta`].
macro_rules! api {
    ($key:ident, $min:literal..=$max:literal, $request:ident, |$ctx:ident, $req:ident, $meta:ident| $body:block) => {
        #[doc = concat!(stringify!($key), ", versions ", stringify!($min), " to ", stringify!($max), ".")]
        pub struct Api;

        impl $crate::api::handler::Handler for Api {
            const KEY: quipu_protocol::messages::ApiKey = quipu_protocol::messages::ApiKey::$key;
            const VERSIONS: (i16, i16) = ($min, $max);
            type Request = quipu_protocol::messages::$request;

            async fn handle(
                $ctx: std::sync::Arc<$crate::request_context::RequestContext>,
                $req: Self::Request,
                #[allow(unused_mut)] mut $meta: $crate::api::handler::RequestMeta,
            ) -> Result<$crate::api::Handled, $crate::api::RequestError> $body
        }
    };
}
pub(crate) use api;
