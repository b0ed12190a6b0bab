//! How `consume` prints a record: the value (`text`), key and value (`kv`), or one JSON object
//! per line (`json`) with topic, partition, offset, timestamp, key, value and headers; in JSON,
//! bytes that are not UTF-8 are given as base64 under `key_base64` / `value_base64`.

use std::io::Write;

use base64::Engine;
use quipu_client::ConsumerRecord;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// The value only.
    Text,
    /// `key<separator>value`.
    Kv,
    /// One JSON object per record.
    Json,
}

pub(crate) fn write_record(
    out: &mut impl Write,
    format: Format,
    separator: &str,
    r: &ConsumerRecord,
) -> std::io::Result<()> {
    let text = |b: &Option<bytes::Bytes>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "null".into())
    };
    match format {
        Format::Text => writeln!(out, "{}", text(&r.value)),
        Format::Kv => writeln!(out, "{}{}{}", text(&r.key), separator, text(&r.value)),
        Format::Json => {
            let mut o = Map::new();
            o.insert("topic".into(), json!(&*r.topic));
            o.insert("partition".into(), json!(r.partition));
            o.insert("offset".into(), json!(r.offset));
            o.insert("timestamp".into(), json!(r.timestamp_ms));
            o.insert(
                "timestamp_type".into(),
                json!(if r.log_append_time {
                    "LogAppendTime"
                } else {
                    "CreateTime"
                }),
            );
            put_bytes(&mut o, "key", r.key.as_deref());
            put_bytes(&mut o, "value", r.value.as_deref());
            let headers: Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = match v.as_deref() {
                        None => Value::Null,
                        Some(b) => match std::str::from_utf8(b) {
                            Ok(s) => json!(s),
                            Err(_) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
                        },
                    };
                    (k.clone(), v)
                })
                .collect();
            o.insert("headers".into(), Value::Object(headers));
            serde_json::to_writer(&mut *out, &Value::Object(o))?;
            writeln!(out)
        }
    }
}

fn put_bytes(o: &mut Map<String, Value>, name: &str, b: Option<&[u8]>) {
    match b {
        None => {
            o.insert(name.into(), Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                o.insert(name.into(), json!(s));
            }
            Err(_) => {
                o.insert(
                    format!("{name}_base64"),
                    json!(base64::engine::general_purpose::STANDARD.encode(b)),
                );
            }
        },
    }
}
