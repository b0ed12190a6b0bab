//! The broker's own log lines: where they go, and what keeps a client from shaping them.
//!
//! Clients choose many strings the broker logs (topic names, client and group ids, what their
//! bad requests hold). [`EscapingWriter`] writes each line with every control character escaped
//! (`\n`, `\r`, ESC… as `\xNN`) except the newline that ends it, so a client can neither forge
//! a log line nor send escape sequences to an operator's terminal; when colour is on (stderr is
//! a terminal) the colour sequences the formatter itself writes are let through, and nothing
//! else. [`warn_limited!`](crate::warn_limited) caps how often one call site warns: a client that repeats a bad
//! request cannot fill the disk with the same line.
//!
//! Invariants: one `write` of the formatter is one line, and it leaves as one line; a call site
//! of `warn_limited!` writes at most [`LINES_PER_WINDOW`] lines a second, and the next line it
//! writes after holding some back says how many.

use std::io::{self, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Lines one `warn_limited!` call site writes in a window of [`WINDOW_MS`].
pub const LINES_PER_WINDOW: u64 = 10;
pub const WINDOW_MS: i64 = 1_000;

/// Escapes control characters on their way to `inner`, except a line's final newline and, when
/// `colour` is on, SGR colour sequences (`ESC [ digits ; … m`).
pub struct EscapingWriter<W> {
    inner: W,
    colour: bool,
}

impl<W: Write> EscapingWriter<W> {
    pub fn new(inner: W, colour: bool) -> Self {
        Self { inner, colour }
    }
}

/// The bytes of `line` as they may be shown: controls escaped as `\xNN`.
pub fn escape_line(line: &[u8], colour: bool) -> Vec<u8> {
    let (body, newline) = match line.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (line, false),
    };
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if colour && b == 0x1b {
            if let Some(len) = sgr_len(&body[i..]) {
                out.extend_from_slice(&body[i..i + len]);
                i += len;
                continue;
            }
        }
        if b < 0x20 && b != b'\t' || b == 0x7f {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
        i += 1;
    }
    if newline {
        out.push(b'\n');
    }
    out
}

/// The length of an SGR sequence (`ESC [ [0-9;]* m`) at the start of `bytes`, if there is one.
fn sgr_len(bytes: &[u8]) -> Option<usize> {
    if bytes.get(1) != Some(&b'[') {
        return None;
    }
    let params = bytes[2..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b';')
        .count();
    (bytes.get(2 + params) == Some(&b'm')).then_some(3 + params)
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape_line(buf, self.colour))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How often one call site has logged lately (see [`warn_limited!`](crate::warn_limited)).
pub struct RateLimit {
    window_start_ms: AtomicI64,
    in_window: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            window_start_ms: AtomicI64::new(i64::MIN),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one written)` when a line may be written now.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(start) >= WINDOW_MS
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Ordering::Relaxed);
        }
        if self.in_window.fetch_add(1, Ordering::Relaxed) < LINES_PER_WINDOW {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::warn!` for what clients can make happen again and again (bad frames, refused
/// requests): at most [`LINES_PER_WINDOW`] lines a second from one call site, each with a
/// `suppressed` count of the lines held back before it.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_output::RateLimit = $crate::log_output::RateLimit::new();
        if let Some(suppressed) = LIMIT.admit($crate::clock::now_ms()) {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_only_the_last_newline_kept() {
        let line = b"topic=evil\nFAKE LINE\r\x1b]0;title\x07\x1b[2J end\n";
        let out = escape_line(line, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "topic=evil\\x0aFAKE LINE\\x0d\\x1b]0;title\\x07\\x1b[2J end\n"
        );
    }

    #[test]
    fn with_colour_only_colour_sequences_pass() {
        let line = b"\x1b[32m INFO\x1b[0m \x1b[2J\x1b[1;31mred\n";
        let out = String::from_utf8(escape_line(line, true)).unwrap();
        assert_eq!(out, "\x1b[32m INFO\x1b[0m \\x1b[2J\x1b[1;31mred\n");
    }

    #[test]
    fn a_call_site_writes_at_most_its_lines_per_window_and_counts_the_rest() {
        let limit = RateLimit::new();
        let admitted: Vec<_> = (0..25).filter_map(|_| limit.admit(5_000)).collect();
        assert_eq!(admitted, vec![0; LINES_PER_WINDOW as usize]);
        assert_eq!(limit.admit(5_999), None);
        assert_eq!(
            limit.admit(6_000),
            Some(16),
            "the next window says how many were held"
        );
        assert_eq!(limit.admit(6_001), Some(0));
    }
}
