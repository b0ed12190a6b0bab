//! Settings of clients, producers and consumers, with Kafka's defaults and names.
//!
//! Every limit is a setting: in-flight requests, buffer memory, batch and response sizes.
//! `validate` checks the combinations Kafka rejects (idempotence needs acks=all, retries and at
//! most 5 requests in flight per connection).

use crate::error::{Error, Result};

/// Settings every client shares (`bootstrap.servers`, `client.id`, timeouts).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`: `host:port` addresses to learn the cluster from.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`, sent in every request header.
    pub client_id: String,
    /// `request.timeout.ms`: how long to wait for one response.
    pub request_timeout_ms: u64,
    /// `socket.connection.setup.timeout.ms`.
    pub connect_timeout_ms: u64,
    /// `metadata.max.age.ms`: cached metadata older than this is fetched again.
    pub metadata_max_age_ms: u64,
    /// `retry.backoff.ms`: the first wait before a retry (doubled each attempt, at most 1 s).
    pub retry_backoff_ms: u64,
    /// `allow.auto.create.topics` for metadata requests.
    pub allow_auto_topic_creation: bool,
    /// Largest response frame accepted; a larger one closes the connection.
    pub max_response_bytes: usize,
}

impl ClientConfig {
    /// Defaults with `bootstrap` as a comma-separated list of `host:port`.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            client_id: "quipu-client".into(),
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            metadata_max_age_ms: 300_000,
            retry_backoff_ms: 100,
            allow_auto_topic_creation: true,
            max_response_bytes: 128 * 1024 * 1024,
        }
    }
}

/// `acks`: how many replicas must hold a write before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: the broker sends no answer; offsets are unknown (-1).
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all` (-1): every in-sync replica holds it.
    All,
}

impl Acks {
    pub(crate) fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// `compression.type` of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (codec 1).
    Gzip,
    /// snappy in Kafka's xerial framing (codec 2).
    Snappy,
    /// LZ4 frames (codec 3).
    Lz4,
    /// Zstandard (codec 4).
    Zstd,
}

impl Compression {
    /// The codec id in a batch's attributes.
    pub fn codec(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "compression `{other}`: expected none, gzip, snappy, lz4 or zstd"
                )))
            }
        })
    }
}

/// Producer settings, with the Java producer's defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Connection settings shared with every client.
    pub client: ClientConfig,
    /// `acks` (default all).
    pub acks: Acks,
    /// `enable.idempotence`: `None` means on unless `acks` is not all, as in the Java client.
    pub enable_idempotence: Option<bool>,
    /// `batch.size`: a partition's batch is sent once it holds this many bytes.
    pub batch_size_bytes: usize,
    /// `linger.ms`: how long a batch waits for more records before it is sent.
    pub linger_ms: u64,
    /// `buffer.memory`: bytes of records waiting to be acknowledged; `send` waits beyond it.
    pub buffer_memory_bytes: usize,
    /// `max.block.ms`: how long `send` waits for buffer memory or metadata.
    pub max_block_ms: u64,
    /// `max.request.size`: the largest record (and produce request) sent.
    pub max_request_size_bytes: usize,
    /// `max.in.flight.requests.per.connection`.
    pub max_in_flight_requests_per_connection: usize,
    /// `retries`: sends of a batch after the first.
    pub retries: u32,
    /// `delivery.timeout.ms`: a record not acknowledged within this fails.
    pub delivery_timeout_ms: u64,
    /// `compression.type`.
    pub compression: Compression,
}

impl ProducerConfig {
    /// The Java producer's defaults, with `bootstrap` as `bootstrap.servers`.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            client: ClientConfig::new(bootstrap),
            acks: Acks::All,
            enable_idempotence: None,
            batch_size_bytes: 16 * 1024,
            linger_ms: 5,
            buffer_memory_bytes: 32 * 1024 * 1024,
            max_block_ms: 60_000,
            max_request_size_bytes: 1024 * 1024,
            max_in_flight_requests_per_connection: 5,
            retries: i32::MAX as u32,
            delivery_timeout_ms: 120_000,
            compression: Compression::None,
        }
    }

    /// Whether the producer is idempotent, after Kafka's rule for an unset `enable.idempotence`.
    pub fn idempotent(&self) -> bool {
        self.enable_idempotence.unwrap_or(self.acks == Acks::All)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.enable_idempotence == Some(true) {
            if self.acks != Acks::All {
                return bad("enable.idempotence requires acks=all");
            }
            if self.retries == 0 {
                return bad("enable.idempotence requires retries > 0");
            }
            if self.max_in_flight_requests_per_connection > 5 {
                return bad(
                    "enable.idempotence requires max.in.flight.requests.per.connection <= 5",
                );
            }
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return bad("max.in.flight.requests.per.connection must be at least 1");
        }
        if self.batch_size_bytes == 0 || self.buffer_memory_bytes < self.batch_size_bytes {
            return bad("batch.size must be positive and at most buffer.memory");
        }
        if self.max_request_size_bytes > self.buffer_memory_bytes {
            return bad("max.request.size must be at most buffer.memory");
        }
        if self.max_request_size_bytes > i32::MAX as usize
            || self.batch_size_bytes > i32::MAX as usize
        {
            return bad("max.request.size and batch.size must be under 2 GiB");
        }
        Ok(())
    }
}

/// `auto.offset.reset`: where to start when there is no committed offset or it is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The partition's first offset.
    Earliest,
    /// The partition's end: only records written from now on.
    Latest,
    /// Fail instead (OFFSET_OUT_OF_RANGE reaches the caller).
    None,
}

/// Consumer settings, with the Java consumer's defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Connection settings shared with every client.
    pub client: ClientConfig,
    /// `group.id`: needed for `subscribe` and for commits.
    pub group_id: Option<String>,
    /// `group.instance.id`: static membership (KIP-345).
    pub group_instance_id: Option<String>,
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`: the longest time between polls before a group member leaves the
    /// group (its partitions go to the others); also the rebalance timeout sent in JoinGroup.
    pub max_poll_interval_ms: u64,
    /// `max.poll.records`: the most records one `poll` returns (the rest wait for the next).
    pub max_poll_records: usize,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`: per fetch response.
    pub fetch_max_bytes: i32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait_ms: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `partition.assignment.strategy`, in order of preference: "range", "roundrobin" and
    /// "cooperative-sticky" (the cooperative protocol when it is the only one offered).
    pub assignment_strategies: Vec<String>,
}

impl ConsumerConfig {
    /// The Java consumer's defaults, with `bootstrap` as `bootstrap.servers`.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            client: ClientConfig::new(bootstrap),
            group_id: None,
            group_instance_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            max_poll_records: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            fetch_max_wait_ms: 500,
            max_partition_fetch_bytes: 1024 * 1024,
            assignment_strategies: vec!["range".into(), "roundrobin".into()],
        }
    }

    /// Whether the consumer follows the cooperative rebalance protocol: only when every
    /// strategy it offers is cooperative (`cooperative-sticky`), as in the Java client.
    pub(crate) fn cooperative(&self) -> bool {
        self.assignment_strategies
            .iter()
            .all(|s| s == "cooperative-sticky")
    }

    /// The same settings with `group.id` set.
    pub fn with_group(mut self, group_id: &str) -> Self {
        self.group_id = Some(group_id.to_string());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_poll_records == 0 {
            return Err(Error::InvalidArgument(
                "max.poll.records must be at least 1".into(),
            ));
        }
        if self.max_partition_fetch_bytes <= 0 || self.fetch_max_bytes <= 0 {
            return Err(Error::InvalidArgument(
                "fetch sizes must be positive".into(),
            ));
        }
        if self.fetch_max_bytes as usize + 1024 * 1024 > self.client.max_response_bytes {
            return Err(Error::InvalidArgument(
                "fetch.max.bytes must leave room under the client's max response size".into(),
            ));
        }
        for s in &self.assignment_strategies {
            if !["range", "roundrobin", "cooperative-sticky"].contains(&s.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "partition.assignment.strategy `{s}`: expected range, roundrobin or cooperative-sticky"
                )));
            }
        }
        if self.assignment_strategies.is_empty() {
            return Err(Error::InvalidArgument(
                "partition.assignment.strategy: at least one".into(),
            ));
        }
        Ok(())
    }
}
