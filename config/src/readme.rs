//! README.md's Configuration table, checked against the broker key table and printed from it.
//!
//! A row is ``| `key` | default | meaning |``. The default is rendered by one rule
//! (`readme_default`): whole numbers as they are, except a size in bytes that is a whole number
//! of MiB or GiB (`1 GiB`), a time in ms or minutes that is a whole number of days (`7 days`),
//! and `i32::MAX` or `i64::MAX` (`unlimited`); words in backticks; an empty string as `empty`;
//! an unset key as the key it falls back to. The meaning is the key's doc comment, followed by
//! ``Per topic: `name`.`` when a topic key takes its default from it.
//!
//! Every broker key is user-facing (each can be set in the file, the environment or a flag), so
//! each must have a row. Invariant: a row that names no key, or gives another default or meaning
//! than the definition, fails a test that names the key and prints the row to write instead.
//! `cargo test -p quipu-config print_readme_table -- --ignored --nocapture` prints the table.

use crate::broker_keys::{BrokerKey, BROKER_KEYS};
use crate::topic::TOPIC_CONFIG_KEYS;
use crate::{broker_key, BrokerConfig};

const README: &str = include_str!("../../README.md");
const TABLE_HEADER: &str = "| setting | default | meaning |";

const MIB: i128 = 1 << 20;
const GIB: i128 = 1 << 30;
const DAY_MS: i128 = 24 * 3_600_000;
const DAY_MINUTES: i128 = 24 * 60;

fn readme_default(key: &BrokerKey, defaults: &BrokerConfig) -> String {
    let value = (key.get)(defaults);
    let Some(text) = value.text() else {
        return format!("`{}`", key.unset_shows.unwrap_or("unset"));
    };
    match value.whole() {
        Some(n) => whole_default(key.name, n),
        None if text.is_empty() => "empty".into(),
        None if text.parse::<f64>().is_ok() || text.parse::<bool>().is_ok() => text,
        None => format!("`{text}`"),
    }
}

fn whole_default(name: &str, n: i128) -> String {
    let multiple = |unit: i128| n > 0 && n % unit == 0;
    let is_bytes = name.ends_with(".bytes") || name.ends_with(".buffer.size");
    if n == i32::MAX.into() || n == i64::MAX.into() {
        "unlimited".into()
    } else if is_bytes && multiple(GIB) {
        format!("{} GiB", n / GIB)
    } else if is_bytes && multiple(MIB) {
        format!("{} MiB", n / MIB)
    } else if name.ends_with(".ms") && multiple(DAY_MS) {
        days(n / DAY_MS)
    } else if name.ends_with(".minutes") && multiple(DAY_MINUTES) {
        days(n / DAY_MINUTES)
    } else {
        n.to_string()
    }
}

fn days(n: i128) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

fn readme_meaning(key: &BrokerKey) -> String {
    let mut meaning = key.doc().to_string();
    for topic_key in TOPIC_CONFIG_KEYS
        .iter()
        .filter(|t| t.broker_synonym == key.name)
    {
        meaning.push_str(&format!(" Per topic: `{}`.", topic_key.name));
    }
    meaning
}

fn readme_row(key: &BrokerKey) -> String {
    let default = readme_default(key, &BrokerConfig::default());
    format!("| `{}` | {default} | {} |", key.name, readme_meaning(key))
}

/// The table as the definitions give it, for README.md's Configuration section.
fn readme_table() -> String {
    let mut table = format!("{TABLE_HEADER}\n|---|---|---|\n");
    for key in BROKER_KEYS {
        table.push_str(&readme_row(key));
        table.push('\n');
    }
    table
}

/// The rows of README.md's table: key, default, meaning, as written.
fn rows_in_readme() -> Vec<[String; 3]> {
    let mut lines = README.lines().skip_while(|l| l.trim() != TABLE_HEADER);
    assert!(
        lines.next().is_some(),
        "README.md has no `{TABLE_HEADER}` table"
    );
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            cells
                .try_into()
                .unwrap_or_else(|_| panic!("README.md: not a row of three cells: {line}"))
        })
        .collect()
}

#[test]
fn readme_rows_match_the_key_definitions() {
    let defaults = BrokerConfig::default();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for [setting, default, meaning] in rows_in_readme() {
        let name = setting.trim_matches('`').to_string();
        let Some(key) = broker_key(&name) else {
            problems.push(format!("`{name}` is in README.md but is no broker key"));
            continue;
        };
        if seen.contains(&name) {
            problems.push(format!("`{name}` has two rows in README.md"));
        }
        seen.push(name.clone());
        let (want_default, want_meaning) = (readme_default(key, &defaults), readme_meaning(key));
        for (what, written, wanted) in [
            ("setting", setting, format!("`{name}`")),
            ("default", default, want_default),
            ("meaning", meaning, want_meaning),
        ] {
            if written != wanted {
                problems.push(format!(
                    "`{name}`: README.md's {what} is {written:?}, its definition's {wanted:?}; \
                     the row:\n{}",
                    readme_row(key)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's Configuration table differs from config/src/broker_keys.rs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_broker_key_is_in_the_readme() {
    let documented: Vec<String> = rows_in_readme()
        .into_iter()
        .map(|[setting, ..]| setting.trim_matches('`').to_string())
        .collect();
    let missing: Vec<String> = BROKER_KEYS
        .iter()
        .filter(|k| !documented.iter().any(|d| d == k.name))
        .map(|k| {
            format!(
                "`{}` has no row in README.md; add:\n{}",
                k.name,
                readme_row(k)
            )
        })
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn defaults_render_by_the_readme_rule() {
    assert_eq!(whole_default("log.segment.bytes", 1 << 30), "1 GiB");
    assert_eq!(whole_default("fetch.max.bytes", 55 << 20), "55 MiB");
    assert_eq!(whole_default("message.max.bytes", 1_048_588), "1048588");
    assert_eq!(whole_default("log.retention.ms", 7 * DAY_MS), "7 days");
    assert_eq!(whole_default("producer.id.expiration.ms", DAY_MS), "1 day");
    assert_eq!(
        whole_default("offsets.retention.minutes", 7 * 1440),
        "7 days"
    );
    assert_eq!(whole_default("log.cleaner.min.compaction.lag.ms", 0), "0");
    assert_eq!(whole_default("group.max.size", 10_000), "10000");
    assert_eq!(
        whole_default("log.flush.interval.ms", i64::MAX.into()),
        "unlimited"
    );
}

/// Prints the table for README.md, so a new key's row is written from its definition.
#[test]
#[ignore = "prints README.md's Configuration table"]
fn print_readme_table() {
    print!("{}", readme_table());
}
