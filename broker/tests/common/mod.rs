//! Test support: a `quipu` process on a loopback port with its own data directory, and a raw
//! Kafka-protocol connection to it built on the kafka-protocol crate's codecs.
#![allow(dead_code)]

pub mod cluster;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quipu_protocol::messages::create_topics_request::CreatableTopic;
use quipu_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use quipu_protocol::messages::join_group_request;
use quipu_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use quipu_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, JoinGroupRequest, ProduceRequest,
    RequestHeader, ResponseHeader, TopicName,
};
use quipu_protocol::{Decodable, Encodable, StrBytes};

pub struct BrokerProcess {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// RLIMIT_NOFILE the broker runs under, when set.
    pub fd_limit: Option<u64>,
    /// RLIMIT_AS (bytes of address space) the broker runs under, when set.
    pub address_space_limit: Option<u64>,
    /// A controller-only node serves no clients: it is ready once this port (its controller
    /// listener) accepts connections.
    pub ready_port: Option<u16>,
}

/// A port no other test of this process is given, below the kernel's ephemeral range (so no
/// client socket's source port can take it, and a test that restarts its broker gets the same
/// port back). Taking `bind(0)` ports instead let two tests running at once get the same port
/// after one broker stopped, and a test then talked to another test's broker.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 600) * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl BrokerProcess {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts the broker with extra environment variables (for the `QUIPU_*` layer).
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_prepared(args, envs, |_| {})
    }

    /// Starts the broker after `prepare` has made its data directory (a small mount, say).
    pub fn start_prepared(
        args: &[&str],
        envs: &[(&str, &str)],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Self {
        let mut b = Self::unstarted(args, envs);
        prepare(&b.data_dir());
        b.spawn();
        b
    }

    /// Starts a controller-only node (it serves no clients), ready once its controller
    /// listener on `controller_port` accepts connections.
    pub fn start_controller(args: &[&str], controller_port: u16) -> Self {
        let mut b = Self::unstarted(args, &[]);
        b.ready_port = Some(controller_port);
        b.spawn();
        b
    }

    /// A broker with its data directory made, not yet started.
    fn unstarted(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Self {
            port: free_port(),
            log_path: dir.path().join("quipu.log"),
            dir,
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fd_limit: None,
            address_space_limit: None,
            ready_port: None,
        }
    }

    /// Starts the broker with at most `bytes` of address space, as a host with strict
    /// overcommit would allow: a huge reservation fails instead of being mapped lazily.
    pub fn start_with_address_space_limit(args: &[&str], bytes: u64) -> Self {
        let mut b = Self::start(args);
        b.terminate();
        b.address_space_limit = Some(bytes);
        b.spawn();
        b
    }

    /// Starts the broker with at most `fd_limit` open files, for this start and the next.
    pub fn start_with_fd_limit(args: &[&str], fd_limit: u64) -> Self {
        let mut b = Self::start(args);
        b.terminate();
        b.fd_limit = Some(fd_limit);
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        // TEST_QUIPU_BIN runs the tests against another build (an older one, to see a test
        // fail on the code before its fix).
        let binary = std::env::var_os("TEST_QUIPU_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_quipu").into());
        let mut command = Command::new(binary);
        let limits: Vec<(libc::__rlimit_resource_t, u64)> = [
            (libc::RLIMIT_NOFILE, self.fd_limit),
            (libc::RLIMIT_AS, self.address_space_limit),
        ]
        .into_iter()
        .filter_map(|(r, v)| Some((r, v?)))
        .collect();
        if !limits.is_empty() {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    for &(resource, limit) in &limits {
                        let l = libc::rlimit {
                            rlim_cur: limit,
                            rlim_max: limit,
                        };
                        if libc::setrlimit(resource, &l) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .envs(self.envs.iter().cloned())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // A connection to a port nobody listens on can meet itself (TCP simultaneous open,
            // when the kernel picks the same port as its source): that is not the broker.
            // The port listens before the broker has opened its data (start-up work such as
            // recovery and removing leftovers runs first): ready means it answers a request.
            if let Some(port) = self.ready_port {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return;
                }
            } else if TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|s| {
                s.local_addr().is_ok_and(|a| a.port() != self.port) && answers_api_versions(s)
            }) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("quipu exited: {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("quipu did not listen within 30 s");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Whether the broker on `stream` answers an ApiVersions v0 request within 10 s.
fn answers_api_versions(mut stream: TcpStream) -> bool {
    use std::io::{Read, Write};
    // Size 10, then api key 18, version 0, correlation id 1, and a null client id.
    let request = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let mut size = [0u8; 4];
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .is_ok()
        && stream.write_all(&request).is_ok()
        && stream.read_exact(&mut size).is_ok()
        && i32::from_be_bytes(size) > 0
}

impl BrokerProcess {
    pub fn connect(&self) -> Conn {
        Conn::new(TcpStream::connect(("127.0.0.1", self.port)).unwrap())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Stops the broker with SIGTERM (clean shutdown) and starts it again on the same data.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// SIGKILL: the process dies at once, as in a crash; `start_again` brings it back.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// The broker process's id, while it runs.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Largest resident memory the broker process has had (VmHWM), in bytes.
    #[allow(dead_code)]
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "quipu did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failing test shows what the broker said, the last of it.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            for (at, _) in lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains("panicked at"))
            {
                let end = (at + 3).min(lines.len());
                eprintln!(
                    "broker on port {} panicked:\n{}",
                    self.port,
                    lines[at..end].join("\n")
                );
            }
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- broker log (last {} lines) ---", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub struct Conn {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            stream,
            correlation_id: 0,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a request frame and returns its correlation id.
    pub fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, request: &R) -> i32 {
        self.correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_static_str("quipu-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.send_raw(&frame);
        self.correlation_id
    }

    /// Reads one response frame; None when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        read_exact_or_eof(&mut self.stream, &mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        read_exact_or_eof(&mut self.stream, &mut body)?;
        Some(Bytes::from(body))
    }

    /// Reads a response, checks its correlation id, and decodes it at `version`.
    pub fn receive<R: Decodable>(&mut self, api: ApiKey, version: i16, correlation_id: i32) -> R {
        let mut frame = self
            .read_frame()
            .expect("connection closed where a response was expected");
        let header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        let response = R::decode(&mut frame, version).unwrap();
        assert!(
            !frame.has_remaining(),
            "{api:?} v{version}: {} bytes left after the response",
            frame.remaining()
        );
        response
    }

    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        let id = self.send(api, version, request);
        self.receive(api, version, id)
    }

    /// Whether the broker closed this connection (EOF or reset) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

fn read_exact_or_eof(stream: &mut TcpStream, buf: &mut [u8]) -> Option<()> {
    let mut read = 0;
    while read < buf.len() {
        match stream.read(&mut buf[read..]) {
            Ok(0) => return None,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    Some(())
}

/// A client-style record batch of `count` records (keys `key-<i>`, 100-byte values).
pub fn batch(count: usize) -> Vec<u8> {
    quipu_protocol::testing::batch(
        count,
        100,
        1_000,
        quipu_protocol::records::Compression::None,
    )
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A Produce request of one batch to one partition.
pub fn produce_request(topic: &str, partition: i32, acks: i16, records: Vec<u8>) -> ProduceRequest {
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(Bytes::from(records));
    let mut td = TopicProduceData::default();
    td.name = name(topic);
    td.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5_000;
    r.topic_data = vec![td];
    r
}

/// A sessionless consumer Fetch of partition 0 from `offset`, answered at once.
pub fn fetch_request(
    topic: &str,
    offset: i64,
    partition_max_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.fetch_offset = offset;
    fp.partition_max_bytes = partition_max_bytes;
    fp.current_leader_epoch = -1;
    let mut ft = FetchTopic::default();
    ft.topic = name(topic);
    ft.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_bytes = max_bytes;
    r.session_epoch = -1;
    r.topics = vec![ft];
    r
}

/// CreateTopics v7 for one topic with replication factor 1.
pub fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) -> CreateTopicsResponse {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 5_000;
    conn.call(ApiKey::CreateTopics, 7, &r)
}

/// A JoinGroup for `group` with one `range` protocol (10 s session and rebalance timeouts).
#[allow(dead_code)]
pub fn join_request(group: &str, member_id: &str) -> JoinGroupRequest {
    let mut p = join_group_request::JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    p.metadata = Bytes::from_static(b"meta");
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.session_timeout_ms = 10_000;
    r.rebalance_timeout_ms = 10_000;
    r.member_id = StrBytes::from_string(member_id.to_string());
    r.protocol_type = StrBytes::from_static_str("consumer");
    r.protocols = vec![p];
    r
}

/// FindCoordinator for `group`, as a client asks before its first group request; the first one
/// makes `__consumer_offsets`.
#[allow(dead_code)]
pub fn find_coordinator(conn: &mut Conn, group: &str) {
    let mut find = FindCoordinatorRequest::default();
    find.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
    let found: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 4, &find);
    assert_eq!(
        found.coordinators[0].error_code, 0,
        "FindCoordinator {group}"
    );
}

/// IncrementalAlterConfigs v1 setting one topic config; the resource's error code.
pub fn set_config(conn: &mut Conn, topic: &str, key: &str, value: &str) -> i16 {
    let mut c =
        quipu_protocol::messages::incremental_alter_configs_request::AlterableConfig::default();
    c.name = StrBytes::from_string(key.to_string());
    c.value = Some(StrBytes::from_string(value.to_string()));
    let mut res =
        quipu_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default(
        );
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.to_string());
    res.configs = vec![c];
    let mut r = quipu_protocol::messages::IncrementalAlterConfigsRequest::default();
    r.resources = vec![res];
    let resp: quipu_protocol::messages::IncrementalAlterConfigsResponse =
        conn.call(ApiKey::IncrementalAlterConfigs, 1, &r);
    resp.responses[0].error_code
}
