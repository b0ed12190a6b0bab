//! DeleteTopics: deletes topics by name (and, from v6, by id).

use quipu_protocol::messages::delete_topics_response::DeletableTopicResult;
use quipu_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use quipu_protocol::{ResponseError, StrBytes};

use super::metadata_error_code;
use crate::request_context::RequestContext;

pub fn handle(
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    // Up to v5 the names come as a list of strings; from v6 as (name or id) entries.
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    if version >= 6 {
        wanted = request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect();
    }
    for (name, id) in wanted {
        let mut r = DeletableTopicResult::default();
        r.topic_id = id;
        let topic = match (&name, id.is_nil()) {
            (Some(n), true) => ctx
                .metadata
                .topic(n)
                .ok_or(ResponseError::UnknownTopicOrPartition),
            (None, false) => ctx
                .metadata
                .topic_by_id(id)
                .ok_or(ResponseError::UnknownTopicId),
            _ => Err(ResponseError::InvalidRequest),
        };
        r.name = name.clone().map(|n| TopicName(StrBytes::from_string(n)));
        match topic.and_then(|t| {
            r.name = Some(TopicName(StrBytes::from_string(t.name.to_string())));
            if version >= 6 {
                r.topic_id = t.id;
            }
            ctx.controller
                .delete_topic(&t.name)
                .map_err(|e| metadata_error_code(&e))
        }) {
            Ok(()) => {}
            Err(e) => {
                r.error_code = e.code();
                if version >= 5 {
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
        }
        response.responses.push(r);
    }
    response
}

super::handler::api!(
    DeleteTopics,
    1..=6,
    DeleteTopicsRequest,
    |ctx, request, meta| {
        let version = meta.version;
        meta.reply(&super::blocking(&ctx, move |b| handle(b, request, version)).await)
    }
);
