//! Progress of long produce and consume runs: a line on stderr, rewritten at most once a second,
//! only when stderr is a terminal; and a summary at the end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    verb: &'static str,
    started: Instant,
    last_shown: Instant,
    records: u64,
    bytes: u64,
    terminal: bool,
}

impl Progress {
    pub fn new(verb: &'static str) -> Self {
        let now = Instant::now();
        Self {
            verb,
            started: now,
            last_shown: now,
            records: 0,
            bytes: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn add(&mut self, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        if self.terminal && self.last_shown.elapsed() >= Duration::from_secs(1) {
            self.last_shown = Instant::now();
            eprint!("\r{}", self.line());
            let _ = std::io::stderr().flush();
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{} {} records ({:.1} MB) in {:.1} s: {:.0} records/s, {:.1} MB/s",
            self.verb,
            self.records,
            self.bytes as f64 / 1e6,
            secs,
            self.records as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        )
    }

    /// The summary line, replacing the progress line on a terminal.
    pub fn finish(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{}", self.line());
    }
}
