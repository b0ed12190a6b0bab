//! Request headers, versions 0 to 2, read with every length checked against the bytes left.
//!
//! v0: api_key, api_version, correlation_id. v1 adds the nullable client_id. v2 (flexible
//! versions) adds tagged fields, which are skipped. The header version follows from the api key
//! and version, as in Kafka's JSON specs; unknown tagged fields are kept out of the body.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ApiKey;

/// The fixed part every header version starts with; enough to route or reject a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// 0, 1 or 2.
    pub header_version: i16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("request header is truncated")]
    Truncated,
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("client id is not valid UTF-8")]
    BadClientId,
    #[error("tagged-field section of {0} fields exceeds the limit of 10000")]
    TooManyTaggedFields(u32),
}

/// Reads the 8 bytes every request starts with, without consuming them.
pub fn peek_prefix(frame: &[u8]) -> Result<RequestPrefix, HeaderError> {
    if frame.len() < 8 {
        return Err(HeaderError::Truncated);
    }
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Which header version a request of this api key and version carries.
pub fn header_version(api_key: ApiKey, api_version: i16) -> i16 {
    api_key.request_header_version(api_version)
}

/// Reads the request header off the front of `frame`, leaving the body.
pub fn decode_request_header(frame: &mut Bytes) -> Result<RequestHeader, HeaderError> {
    let prefix = peek_prefix(frame)?;
    let api_key =
        ApiKey::try_from(prefix.api_key).map_err(|_| HeaderError::UnknownApiKey(prefix.api_key))?;
    let header_version = header_version(api_key, prefix.api_version);
    frame.advance(8);
    let mut client_id = None;
    if header_version >= 1 {
        let len = read_i16(frame)?;
        if len >= 0 {
            let bytes = take(frame, len as usize)?;
            client_id =
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| HeaderError::BadClientId)?);
        }
    }
    if header_version >= 2 {
        skip_tagged_fields(frame)?;
    }
    Ok(RequestHeader {
        api_key,
        api_version: prefix.api_version,
        correlation_id: prefix.correlation_id,
        client_id,
        header_version,
    })
}

fn read_i16(buf: &mut Bytes) -> Result<i16, HeaderError> {
    if buf.remaining() < 2 {
        return Err(HeaderError::Truncated);
    }
    Ok(buf.get_i16())
}

fn take(buf: &mut Bytes, len: usize) -> Result<Bytes, HeaderError> {
    if buf.remaining() < len {
        return Err(HeaderError::Truncated);
    }
    Ok(buf.split_to(len))
}

use crate::wire::{skip_tagged_fields, WireError};

impl From<WireError> for HeaderError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => HeaderError::Truncated,
            WireError::TooManyTaggedFields(count) => HeaderError::TooManyTaggedFields(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn header(api_key: i16, version: i16, client_id: Option<&str>, tagged: bool) -> Bytes {
        let mut b = bytes::BytesMut::new();
        b.put_i16(api_key);
        b.put_i16(version);
        b.put_i32(7);
        match client_id {
            Some(c) => {
                b.put_i16(c.len() as i16);
                b.put_slice(c.as_bytes());
            }
            None => b.put_i16(-1),
        }
        if tagged {
            b.put_u8(1); // one tagged field
            b.put_u8(0); // tag 0
            b.put_u8(2); // two bytes
            b.put_slice(&[9, 9]);
        }
        b.put_slice(b"body");
        b.freeze()
    }

    #[test]
    fn v1_header_reads_client_id_and_leaves_body() {
        let mut f = header(3, 1, Some("me"), false); // Metadata v1: header v1
        let h = decode_request_header(&mut f).unwrap();
        assert_eq!(h.header_version, 1);
        assert_eq!(h.client_id.as_deref(), Some("me"));
        assert_eq!(h.correlation_id, 7);
        assert_eq!(f.as_ref(), b"body");
    }

    #[test]
    fn v2_header_skips_tagged_fields() {
        let mut f = header(3, 9, None, true); // Metadata v9 is flexible: header v2
        let h = decode_request_header(&mut f).unwrap();
        assert_eq!(h.header_version, 2);
        assert_eq!(h.client_id, None);
        assert_eq!(f.as_ref(), b"body");
    }

    #[test]
    fn unknown_api_key_and_truncation_are_errors() {
        let mut f = header(999, 0, None, false);
        assert_eq!(
            decode_request_header(&mut f),
            Err(HeaderError::UnknownApiKey(999))
        );
        let mut f = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 50, b'x']);
        assert_eq!(decode_request_header(&mut f), Err(HeaderError::Truncated));
    }

    #[test]
    fn hostile_tagged_field_count_is_rejected() {
        let mut b = bytes::BytesMut::new();
        b.put_slice(&[0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff]);
        let prefix = b.clone();
        b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let mut f = b.freeze();
        assert_eq!(
            decode_request_header(&mut f),
            Err(HeaderError::TooManyTaggedFields(u32::MAX))
        );
        // Within Kafka's limit, a count the bytes cannot hold.
        let mut b = prefix;
        b.put_slice(&[0x90, 0x4e]); // 10 000
        let mut f = b.freeze();
        assert_eq!(decode_request_header(&mut f), Err(HeaderError::Truncated));
    }
}
