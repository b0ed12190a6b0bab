//! The primitive encodings Kafka's messages are made of, for the parts Quipu writes and reads
//! by hand (zero-copy Fetch responses and Produce requests, headers): unsigned varints, array
//! lengths and strings in their classic and flexible (compact) forms, and tagged fields.
//!
//! Invariant: a read never trusts a length beyond the bytes at hand.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A primitive that runs past the bytes at hand, or past a limit on what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated")]
    Truncated,
    #[error("tagged-field section of {0} fields exceeds the limit of {MAX_TAGGED_FIELDS}")]
    TooManyTaggedFields(u32),
}

/// Kafka 4.4's limit on the fields of one tagged-field section.
pub const MAX_TAGGED_FIELDS: u64 = 10_000;

/// Writes an unsigned varint (flexible versions' compact lengths).
pub fn put_unsigned_varint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes an array length: i32, or a compact length (n + 1) in flexible versions.
pub fn put_array_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_unsigned_varint(buf, len as u32 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Writes a non-null string: i16 length, or a compact length in flexible versions.
pub fn put_string(buf: &mut BytesMut, flexible: bool, s: &str) {
    if flexible {
        put_unsigned_varint(buf, s.len() as u32 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

/// Reads an unsigned varint of at most 5 bytes (a u32), as Kafka's flexible versions use.
pub fn read_unsigned_varint(buf: &mut Bytes) -> Result<u32, WireError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if !buf.has_remaining() {
            return Err(WireError::Truncated);
        }
        let b = buf.get_u8();
        value |= ((b & 0x7f) as u32) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Truncated)
}

/// An unsigned varint of at most `max_bytes` bytes, taken one at a time from `next`; `Ok(None)`
/// when it runs longer. For the readers of record fields, over slices and over streams alike.
pub fn read_varint_with<E>(
    max_bytes: usize,
    mut next: impl FnMut() -> Result<u8, E>,
) -> Result<Option<u64>, E> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let b = next()?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// A zigzag-encoded varint's value (record fields): 0, -1, 1, -2… from 0, 1, 2, 3….
pub fn zigzag_i32(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

/// A zigzag-encoded varlong's value.
pub fn zigzag_i64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Skips a tagged-fields section (a count, then tag, size and bytes for each).
pub fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), WireError> {
    let count = read_unsigned_varint(buf)?;
    // Each field takes at least two bytes: the count is bounded by what is left, not trusted,
    // and by Kafka 4.4's limit.
    if u64::from(count) > MAX_TAGGED_FIELDS {
        return Err(WireError::TooManyTaggedFields(count));
    }
    if count as usize > buf.remaining() / 2 {
        return Err(WireError::Truncated);
    }
    for _ in 0..count {
        let _tag = read_unsigned_varint(buf)?;
        let size = read_unsigned_varint(buf)? as usize;
        if size > buf.remaining() {
            return Err(WireError::Truncated);
        }
        buf.advance(size);
    }
    Ok(())
}
