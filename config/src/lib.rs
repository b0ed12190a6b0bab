//! Quipu's configuration: typed, validated, layered.
//!
//! Layers, each overriding the one before: built-in defaults < a TOML file < `QUIPU_*` environment
//! variables < command-line overrides. Keys use Kafka's broker names; `log.dirs`, `log_dirs`,
//! `[log] dirs = …` and `QUIPU_LOG_DIRS` all name the same setting. An unknown key or a bad value is
//! an error that names the key and what it accepts: the broker does not start on a guess.
//!
//! This module owns the layering (`load`) and reading composite values (listeners, per-address
//! limits). Each broker key (name, type, default, check, documentation) is defined once, in the
//! table of `broker_keys.rs` ([`BROKER_KEYS`]); [`topic`] holds the per-topic settings (Kafka's
//! topic config names such as `retention.ms`).
//!
//! Invariant: an unknown key or a bad value is an error naming it, never a silent default; serde
//! refuses unknown keys and values of the wrong type, the key table the rest.

mod broker_keys;
#[cfg(test)]
mod readme;
pub mod topic;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};

pub use broker_keys::{broker_key, BrokerConfig, BrokerKey, Check, BROKER_KEYS};

/// Prefix of the environment variables that configure the broker.
pub const ENV_PREFIX: &str = "QUIPU";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}` has invalid value {value}: {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: String,
    },
}

/// Where the layers come from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// A TOML file; it must exist when named.
    pub file: Option<PathBuf>,
    /// Read `QUIPU_*` environment variables.
    pub environment: bool,
    /// `key=value` overrides from the command line, applied last.
    pub overrides: Vec<(String, String)>,
}

/// Builds the configuration from its layers and validates it.
///
/// Each layer is flattened to Kafka-style keys on its own before it is laid over the previous
/// ones, so `num.partitions` in the file and `QUIPU_NUM_PARTITIONS` in the environment are the same
/// key and the later layer wins.
pub fn load(sources: &Sources) -> Result<BrokerConfig, ConfigError> {
    let mut flat = BTreeMap::new();
    if let Some(path) = &sources.file {
        let file = Config::builder()
            .add_source(
                File::from(path.as_path())
                    .format(FileFormat::Toml)
                    .required(true),
            )
            .build()?;
        flatten("", file.try_deserialize()?, &mut flat);
    }
    if sources.environment {
        let env = Config::builder()
            .add_source(Environment::with_prefix(ENV_PREFIX).prefix_separator("_"))
            .build()?;
        flatten("", env.try_deserialize()?, &mut flat);
    }
    for (key, value) in &sources.overrides {
        flat.insert(normalize_key(key), Value::from(value.as_str()));
    }
    let mut builder = Config::builder();
    for (key, value) in flat {
        builder = builder.set_override(key, value)?;
    }
    let config: BrokerConfig = builder.build()?.try_deserialize()?;
    config.validate()?;
    Ok(config)
}

/// Loads from an explicit file path only (no environment), for tests and tools.
pub fn load_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
    load(&Sources {
        file: Some(path.to_path_buf()),
        ..Default::default()
    })
}

fn normalize_key(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace(['.', '-'], "_")
}

fn flatten(prefix: &str, table: config::Map<String, Value>, out: &mut BTreeMap<String, Value>) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            normalize_key(&key)
        } else {
            format!("{prefix}_{}", normalize_key(&key))
        };
        match value.kind {
            ValueKind::Table(inner) => flatten(&key, inner, out),
            _ => {
                out.insert(key, value);
            }
        }
    }
}

fn invalid(
    key: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        expected: expected.into(),
    }
}

impl BrokerConfig {
    /// The address clients are told to use.
    pub fn advertised_host_port(&self) -> (String, u16) {
        let l = self
            .advertised_listeners
            .as_deref()
            .unwrap_or(&self.listeners);
        parse_listener(l).expect("validated at load")
    }

    /// `max.connections.per.ip.overrides` read: each address with its own limit.
    pub fn connection_limits_per_ip(&self) -> Result<HashMap<IpAddr, u32>, String> {
        parse_connection_limits(&self.max_connections_per_ip_overrides)
    }

    /// The address to bind.
    pub fn listen_host_port(&self) -> (String, u16) {
        parse_listener(&self.listeners).expect("validated at load")
    }
}

/// Parses `ip:count,ip:count` (an IPv6 address may be bracketed).
fn parse_connection_limits(text: &str) -> Result<HashMap<IpAddr, u32>, String> {
    let mut limits = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry
            .rsplit_once(':')
            .and_then(|(ip, n)| Some((ip.trim_matches(['[', ']']).parse().ok()?, n.parse().ok()?)));
        match parsed {
            Some((ip, n)) => {
                limits.insert(ip, n);
            }
            None => return Err(format!("`ip:count` entries, not `{entry}`")),
        }
    }
    Ok(limits)
}

/// Parses `host:port` or `PLAINTEXT://host:port`.
pub fn parse_listener(s: &str) -> Result<(String, u16), String> {
    let rest = s.strip_prefix("PLAINTEXT://").unwrap_or(s);
    if rest.contains("://") {
        return Err(
            "only PLAINTEXT listeners are supported: `host:port` or `PLAINTEXT://host:port`".into(),
        );
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "expected `host:port` or `PLAINTEXT://host:port`".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port `{port}` is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

/// One voter of the metadata quorum: its node id and its controller listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

/// Parses `controller.quorum.voters`: `id@host:port,...`, each id and each address once; empty
/// for none.
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry
            .split_once('@')
            .ok_or_else(|| format!("`{entry}` is not `id@host:port`"))?;
        let node_id: i32 = id
            .parse()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("`{id}` in `{entry}` is not a node id (a number >= 0)"))?;
        let (host, port) = parse_listener(address).map_err(|e| format!("`{entry}`: {e}"))?;
        let voter = Voter {
            node_id,
            host,
            port,
        };
        if voters.iter().any(|v| v.node_id == node_id) {
            return Err(format!("node id {node_id} is listed twice"));
        }
        if voters
            .iter()
            .any(|v| (&v.host, v.port) == (&voter.host, voter.port))
        {
            return Err(format!("address {address} is listed twice"));
        }
        voters.push(voter);
    }
    Ok(voters)
}

impl BrokerConfig {
    /// The voters of the metadata quorum, in the order given; empty for a single node.
    pub fn quorum_voters(&self) -> Vec<Voter> {
        parse_voters(&self.controller_quorum_voters).expect("validated at load")
    }

    /// Whether this node is a voter of the metadata quorum (`controller` in `process.roles`).
    pub fn is_controller(&self) -> bool {
        self.process_roles
            .split(',')
            .any(|r| r.trim() == "controller")
    }

    /// Whether this node serves clients and hosts replicas (`broker` in `process.roles`).
    pub fn is_broker(&self) -> bool {
        self.process_roles.split(',').any(|r| r.trim() == "broker")
    }

    /// The controller listener's address.
    pub fn controller_host_port(&self) -> (String, u16) {
        parse_listener(&self.controller_listener).expect("validated at load")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn with(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        load(&Sources {
            overrides: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn a_quorum_lists_each_voter_once_and_this_node_among_them() {
        let voters = "1@localhost:9101, 2@127.0.0.1:9102,3@[::1]:9103";
        let c = with(&[
            ("controller.quorum.voters", voters),
            ("node.id", "2"),
            ("controller.listener", "0.0.0.0:9102"),
        ])
        .unwrap();
        let parsed = c.quorum_voters();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            (parsed[2].node_id, parsed[2].host.as_str(), parsed[2].port),
            (3, "::1", 9103)
        );
        let refused = |pairs: &[(&str, &str)]| with(pairs).unwrap_err().to_string();
        for (bad, says) in [
            ("1@a:1,1@b:2", "listed twice"),
            ("1@a:1,2@a:1", "listed twice"),
            ("x@a:1", "not a node id"),
            ("1a:1", "not `id@host:port`"),
            ("1@a", "host:port"),
        ] {
            let e = refused(&[("controller.quorum.voters", bad)]);
            assert!(
                e.contains(says) && e.contains("controller.quorum.voters"),
                "{bad}: {e}"
            );
        }
        let e = refused(&[("controller.quorum.voters", "1@a:9101"), ("node.id", "4")]);
        assert!(e.contains("node.id"), "{e}");
        let e = refused(&[("controller.quorum.voters", "1@a:9101"), ("node.id", "1")]);
        assert!(
            e.contains("controller.listener") && e.contains("9101"),
            "{e}"
        );
        let e = refused(&[("process.roles", "controller")]);
        assert!(e.contains("controller.quorum.voters"), "{e}");
        let e = refused(&[("process.roles", "broker,broker")]);
        assert!(e.contains("process.roles"), "{e}");
        let e = refused(&[("process.roles", "broker")]);
        assert!(e.contains("controller.quorum.voters"), "{e}");
        let e = refused(&[
            ("process.roles", "broker"),
            ("controller.quorum.voters", "1@a:9101"),
            ("node.id", "1"),
        ]);
        assert!(e.contains("node.id") && e.contains("not a voter"), "{e}");
        let e = refused(&[("broker.heartbeat.interval.ms", "9000")]);
        assert!(e.contains("broker.session.timeout.ms"), "{e}");
        assert!(refused(&[("cluster.id", "a b")]).contains("cluster.id"));
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = load(&Sources::default()).unwrap();
        assert_eq!(c, BrokerConfig::default());
        assert_eq!(c.listen_host_port(), ("localhost".to_string(), 9092));
        assert_eq!(c.socket_request_max_bytes, 104_857_600);
    }

    #[test]
    fn file_accepts_kafka_dotted_names_and_tables() {
        let f = file("num.partitions = 3\n[log]\nsegment.bytes = 1048576\n");
        let c = load_file(f.path()).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.log_segment_bytes, 1_048_576);
    }

    #[test]
    fn overrides_beat_the_file() {
        let f = file("num_partitions = 3\n");
        let c = load(&Sources {
            file: Some(f.path().into()),
            environment: false,
            overrides: vec![("num.partitions".into(), "5".into())],
        })
        .unwrap();
        assert_eq!(c.num_partitions, 5);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_accepted_keys() {
        let f = file("num.partitionz = 3\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("num_partitionz"), "{e}");
        assert!(e.contains("num_partitions"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let f = file("num.partitions = \"many\"\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("num_partitions"), "{e}");
        let f = file("num.partitions = 0\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("num.partitions") && e.contains(">= 1"), "{e}");
        let f = file("listeners = \"SSL://x:1\"\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("listeners") && e.contains("PLAINTEXT"), "{e}");
    }

    #[test]
    fn each_bad_group_and_offsets_setting_is_named_by_its_own_key() {
        for (key, value) in [
            ("group.max.size", "0"),
            ("group.initial.rebalance.delay.ms", "-1"),
            ("offsets.retention.minutes", "0"),
            ("offsets.retention.check.interval.ms", "0"),
        ] {
            let e = load(&Sources {
                file: None,
                environment: false,
                overrides: vec![(key.into(), value.into())],
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("key `{key}` ")), "{key}: {e}");
        }
    }
}
