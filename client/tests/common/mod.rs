//! Test support: the broker the client's tests talk to, and a TCP proxy that can stall or cut
//! connections.
//!
//! `QUIPU_TEST_BOOTSTRAP=host:port` points the suite at a running broker (Apache Kafka from the
//! reference harness, for one); without it each test starts a Quipu broker inside the test
//! process, on a loopback port with its own data directory, and stops it when dropped. Topic and
//! group names get a random suffix so tests can share an external broker.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quipu_client::admin::{Admin, NewTopic};
use quipu_client::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct TestBroker {
    pub bootstrap: String,
    pub external: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    /// The external broker if `QUIPU_TEST_BOOTSTRAP` is set, else an in-process Quipu broker.
    pub fn start() -> Self {
        match std::env::var("QUIPU_TEST_BOOTSTRAP") {
            Ok(b) if !b.is_empty() => Self {
                bootstrap: b,
                external: true,
                shutdown: None,
                thread: None,
                _dir: None,
            },
            _ => Self::in_process(&[]),
        }
    }

    /// An in-process Quipu broker with extra settings (`advertised.listeners`, …).
    pub fn in_process(settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mut overrides = vec![
            (
                "log.dirs".to_string(),
                dir.path().join("data").display().to_string(),
            ),
            ("listeners".to_string(), format!("127.0.0.1:{port}")),
            (
                "group.initial.rebalance.delay.ms".to_string(),
                "0".to_string(),
            ),
        ];
        overrides.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = quipu_config::load(&quipu_config::Sources {
            file: None,
            environment: false,
            overrides,
        })
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                quipu_broker::lifecycle::run(config, listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            bootstrap: format!("127.0.0.1:{port}"),
            external: false,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: Some(dir),
        }
    }

    pub fn admin(&self) -> Admin {
        Admin::new(ClientConfig::new(&self.bootstrap)).unwrap()
    }

    /// Creates a topic with a unique name starting with `prefix` and waits for its leaders.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        let name = unique(prefix);
        let admin = self.admin();
        admin
            .create_topic(NewTopic::new(name.clone(), partitions))
            .await
            .unwrap();
        admin
            .wait_for_topic(&name, Duration::from_secs(30))
            .await
            .unwrap();
        name
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A base for the tests' record timestamps: an hour ago, the same for the whole process. Apache
/// Kafka rolls away from a segment whose first record is older than `segment.ms` (7 days) and
/// its retention check deletes segments stamped past `retention.ms`, so records stamped in 1970
/// could vanish in the middle of a test run against it.
pub fn recent_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        now - 3_600_000
    })
}

/// `prefix` with a suffix unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A TCP proxy in front of `upstream`: it can stall (stop forwarding, connections stay open)
/// or cut every connection it carries.
pub struct Proxy {
    pub addr: String,
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a loopback port chosen now; forwards to `upstream` (which may be set later
    /// through `upstream_port`, read at each connection).
    pub async fn start(upstream: Arc<std::sync::Mutex<String>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stalled = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (s, g) = (stalled.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let target = upstream.lock().unwrap().clone();
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(pipe(cr, sw, s.clone(), g.clone(), born));
                tokio::spawn(pipe(sr, cw, s.clone(), g.clone(), born));
            }
        });
        Self {
            addr,
            stalled,
            generation,
            task,
        }
    }

    pub fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await;
        if generation.load(Ordering::SeqCst) != born {
            return;
        }
        let n = match read {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            if generation.load(Ordering::SeqCst) != born {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if generation.load(Ordering::SeqCst) != born || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
