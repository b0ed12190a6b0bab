//! InitProducerId: hands an idempotent producer a producer id that was never used before, with
//! epoch 0.
//!
//! As Kafka does for producers without a transactional id, every request gets a fresh id, also
//! when it names its current id and epoch (v3+, KIP-360): the producer then starts its sequences
//! over. Transactions are not supported: a request with a transactional id is refused with
//! INVALID_REQUEST, which clients treat as fatal rather than retrying.

use quipu_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use quipu_protocol::ResponseError;

use super::metadata_error_code;
use crate::request_context::RequestContext;

pub fn handle(ctx: &RequestContext, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = (-1).into();
    response.producer_epoch = -1;
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        tracing::warn!(transactional_id = ?request.transactional_id, "InitProducerId for a transactional producer refused: transactions are not supported");
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    match ctx.controller.allocate_producer_id() {
        Ok(id) => {
            response.producer_id = id.into();
            response.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            response.error_code = metadata_error_code(&e).code();
        }
    }
    response
}

super::handler::api!(
    InitProducerId,
    0..=5,
    InitProducerIdRequest,
    |ctx, request, meta| { meta.reply(&handle(&ctx, request)) }
);
