//! Timestamps on the command line: epoch milliseconds, or an ISO-8601 date or date-time
//! (`2026-11-24`, `2026-11-24T10:00:00`, `2026-11-24T10:00:00.5+01:00`, `…Z`); without a zone,
//! UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Milliseconds since the epoch of `s`, or a one-line reason it is not a timestamp.
pub fn parse_timestamp_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("timestamp `{s}` is too large"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis());
    }
    Err(format!(
        "timestamp `{s}`: expected epoch milliseconds or an ISO-8601 date such as 2026-11-24T10:00:00Z"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_iso_forms() {
        assert_eq!(parse_timestamp_ms("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_timestamp_ms("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(parse_timestamp_ms("1970-01-01T01:00:01+01:00"), Ok(1_000));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.250"), Ok(1_250));
        assert_eq!(parse_timestamp_ms("1970-01-01 00:01:00"), Ok(60_000));
        assert!(parse_timestamp_ms("yesterday").is_err());
        assert!(parse_timestamp_ms("2026-13-01").is_err());
        assert!(parse_timestamp_ms("99999999999999999999999").is_err());
    }
}
