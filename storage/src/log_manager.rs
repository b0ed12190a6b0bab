//! The LogManager: owns the data directory (`log.dirs`) and every partition log in it, as
//! Kafka's LogManager does.
//!
//! It holds the directory's lock file, opens the logs of the partitions the metadata says are
//! live (`num.recovery.threads.per.data.dir` at a time, recovering them from their recovery
//! points after a crash), makes and removes partition directories, writes the recovery-point,
//! log-start and cleaner checkpoints, and writes the clean-shutdown marker last at a clean close.
//! It knows topics only by name, id and config: which partitions are live is the metadata's
//! word, handed in.
//!
//! Invariants: a partition directory carries its topic id (`partition.metadata`), so the
//! directory of a deleted topic is never taken for a new topic of the same name; start-up never
//! deletes a live partition's directory (a damaged marker stops the start instead) and removes
//! every directory no live partition owns; new directories are durable before
//! [`LogManager::create_logs`] returns them; the checkpoints and the marker claim only what one
//! sync of the file system has made durable.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use quipu_config::topic::TopicConfig;
use uuid::Uuid;

use crate::checkpoint;
use crate::log::Log;

/// A partition's log, shared by the LogManager (checkpoints, close) and the partition that
/// serves it. Held only for short, non-blocking work.
#[derive(Clone)]
pub struct SharedLog(Arc<Mutex<Log>>);

impl SharedLog {
    /// The log, locked.
    pub fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock would leave the log in an unknown state: stop serving it.
        self.0.lock().expect("partition log lock poisoned")
    }
}

/// A topic the metadata says is live: what opening its logs needs.
pub struct LiveTopic {
    pub name: Arc<str>,
    pub id: Uuid,
    /// The partitions of the topic this broker has a replica of.
    pub partitions: Vec<i32>,
    pub config: TopicConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum LogManagerError {
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// A file the start cannot trust; the start stops rather than risk live data.
    #[error("{0}")]
    Damaged(String),
}

/// Where each partition's recovery point (all below it is on disk) is kept, as Kafka keeps it.
const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Where the log start offsets moved by retention and DeleteRecords are kept.
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// Where each compacted partition's first dirty offset (where the cleaner resumes) is kept.
const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Written last at a clean shutdown, removed at start: without it, logs are recovered.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";
/// The file in each partition directory that names its topic id, as Kafka writes it.
pub const PARTITION_MARKER: &str = "partition.metadata";
/// The lock file a running broker holds.
const LOCK_FILE: &str = ".lock";

type LogKey = (Arc<str>, i32);

pub struct LogManager {
    data_dir: PathBuf,
    recovery_threads: usize,
    logs: RwLock<BTreeMap<LogKey, SharedLog>>,
    /// Serializes writers of the checkpoint files.
    checkpoint_lock: Mutex<()>,
    /// The exclusive lock on `<log.dirs>/.lock`, held for the manager's life.
    _dir_lock: File,
}

/// How the logs opened at start are to be loaded.
enum Startup<'a> {
    /// After a clean shutdown: trust the files.
    Clean,
    /// After a crash: re-read each log from its checkpointed recovery point (0 if none).
    Recover(&'a checkpoint::Offsets),
}

impl LogManager {
    /// Takes the data directory's lock (made if missing): a second broker on the same
    /// directory gets an error here, before anything in it is read or written.
    pub fn lock(data_dir: &Path, recovery_threads: usize) -> Result<Self, LogManagerError> {
        std::fs::create_dir_all(data_dir)?;
        Ok(Self {
            _dir_lock: lock_data_dir(data_dir)?,
            data_dir: data_dir.to_path_buf(),
            recovery_threads,
            logs: RwLock::new(BTreeMap::new()),
            checkpoint_lock: Mutex::new(()),
        })
    }

    /// Opens the logs of every live partition, once, at start: leftovers of an interrupted topic
    /// change are removed first, a crash is recovered from the recovery points (made durable by
    /// one sync of the file system), and the log start and cleaner offsets come back from their
    /// checkpoints. From its return on, a crash must recover: the clean-shutdown marker is gone.
    pub fn load(&self, live: &[LiveTopic], now_ms: i64) -> Result<(), LogManagerError> {
        assert!(
            self.logs.read().expect("log manager lock").is_empty(),
            "the logs are loaded once"
        );
        self.remove_orphan_dirs(live);
        let marker = self.data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        let recovery_points = checkpoint::read(&self.data_dir.join(RECOVERY_POINT_CHECKPOINT));
        let startup = if clean {
            Startup::Clean
        } else {
            Startup::Recover(&recovery_points)
        };
        if !clean && !live.is_empty() {
            tracing::warn!(data_dir = %self.data_dir.display(), "no clean shutdown marker: recovering logs from their recovery points");
        }
        self.open_live(live, &startup, now_ms)?;
        self.sync_recovered(now_ms)?;
        if clean {
            std::fs::remove_file(&marker)?;
            File::open(&self.data_dir)?.sync_all()?;
        }
        self.restore_offsets();
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log of a partition, when it is open here.
    pub fn log(&self, topic: &str, partition: i32) -> Option<SharedLog> {
        self.logs
            .read()
            .expect("log manager lock")
            .get(&(Arc::from(topic), partition))
            .cloned()
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Opens every live partition's log, `recovery_threads` at a time.
    fn open_live(
        &self,
        live: &[LiveTopic],
        startup: &Startup<'_>,
        now_ms: i64,
    ) -> Result<(), LogManagerError> {
        let work: Vec<(&LiveTopic, i32)> = live
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, *p)))
            .collect();
        let keys: Vec<LogKey> = work.iter().map(|(t, p)| (t.name.clone(), *p)).collect();
        let opened = crate::parallel::map(work, self.recovery_threads, |(topic, p)| {
            self.open_existing(topic, p, startup, now_ms)
        });
        let mut logs = self.logs.write().expect("log manager lock");
        for (key, log) in keys.into_iter().zip(opened) {
            logs.insert(key, SharedLog(Arc::new(Mutex::new(log?))));
        }
        Ok(())
    }

    /// Opens a live partition's log at start. Its directory must carry the topic's id; a
    /// directory with no marker (written by a version that created directories after the
    /// record) gets one, and a damaged marker stops the start rather than risk live data.
    fn open_existing(
        &self,
        topic: &LiveTopic,
        p: i32,
        startup: &Startup<'_>,
        now_ms: i64,
    ) -> Result<Log, LogManagerError> {
        let dir = self.partition_dir(&topic.name, p);
        check_marker(&dir, &topic.name, topic.id)?;
        let recovery_point = match startup {
            Startup::Clean => None,
            Startup::Recover(points) => Some(
                points
                    .get(&(topic.name.to_string(), p))
                    .copied()
                    .unwrap_or(0),
            ),
        };
        Ok(Log::open_unsynced(
            &dir,
            topic.config.clone(),
            recovery_point,
            now_ms,
        )?)
    }

    /// Makes what recovery rewrote durable with one sync of the file system, then lets each
    /// recovered log count it as flushed (its recovery point moves to its end).
    fn sync_recovered(&self, now_ms: i64) -> std::io::Result<()> {
        let recovered: Vec<SharedLog> = self
            .all_logs()
            .into_iter()
            .filter(|(_, log)| log.lock().sync_pending())
            .map(|(_, log)| log)
            .collect();
        if recovered.is_empty() {
            return Ok(());
        }
        sync_file_system(&self.data_dir)?;
        for log in recovered {
            log.lock().mark_synced(now_ms);
        }
        Ok(())
    }

    /// Log start offsets moved inside a segment (DeleteRecords), and where each compacted log's
    /// uncleaned part starts, come back from their checkpoints.
    fn restore_offsets(&self) {
        for ((topic, partition), offset) in
            checkpoint::read(&self.data_dir.join(LOG_START_CHECKPOINT))
        {
            if let Some(log) = self.log(&topic, partition) {
                let mut log = log.lock();
                let end = log.log_end_offset();
                if let Err(e) = log.advance_log_start_offset(offset.min(end), end) {
                    tracing::warn!(topic, partition, error = %e, "cannot restore the log start offset");
                }
            }
        }
        for ((topic, partition), offset) in
            checkpoint::read(&self.data_dir.join(CLEANER_CHECKPOINT))
        {
            if let Some(log) = self.log(&topic, partition) {
                log.lock().set_first_dirty_offset(offset);
            }
        }
    }

    /// Makes and opens the logs of partitions `from..to` of a topic not yet recorded as having
    /// them, all or nothing: each directory is made fresh (whatever sat at its path belongs to no
    /// live partition) and marked with the topic id, and all of them are durable (one sync of the
    /// file system) before they are returned. On any failure the directories made are removed.
    pub fn create_logs(
        &self,
        topic: &Arc<str>,
        id: Uuid,
        (from, to): (i32, i32),
        config: &TopicConfig,
        now_ms: i64,
    ) -> Result<Vec<SharedLog>, LogManagerError> {
        let made = crate::parallel::map((from..to).collect(), self.recovery_threads, |p| {
            self.create_log(topic, id, p, config, now_ms)
        });
        let logs = match made.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(logs) => logs,
            Err(e) => {
                self.remove_dirs(topic, id, from..to);
                return Err(e);
            }
        };
        if let Err(e) = sync_file_system(&self.data_dir) {
            drop(logs);
            self.remove_dirs(topic, id, from..to);
            return Err(e.into());
        }
        let shared: Vec<SharedLog> = logs
            .into_iter()
            .map(|log| SharedLog(Arc::new(Mutex::new(log))))
            .collect();
        let mut registry = self.logs.write().expect("log manager lock");
        for (p, log) in (from..to).zip(&shared) {
            registry.insert((topic.clone(), p), log.clone());
        }
        Ok(shared)
    }

    fn create_log(
        &self,
        topic: &str,
        id: Uuid,
        p: i32,
        config: &TopicConfig,
        now_ms: i64,
    ) -> Result<Log, LogManagerError> {
        let dir = self.partition_dir(topic, p);
        if dir.exists() {
            tracing::warn!(dir = %dir.display(), "removing a directory left where a new partition goes");
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        // Made durable with the rest of the new partitions, by one sync of the file system.
        std::fs::write(dir.join(PARTITION_MARKER), marker_text(id).as_bytes())?;
        Ok(Log::open_unsynced(&dir, config.clone(), None, now_ms)?)
    }

    /// Forgets the logs of partitions `partitions` of a topic and removes their directories
    /// (renamed away first, so the name is free at once). Readers still holding slices of their
    /// segments keep their mappings (unlink is safe). A failure is logged; the next start
    /// removes what is left.
    pub fn remove_logs(&self, topic: &str, id: Uuid, partitions: impl Iterator<Item = i32>) {
        let partitions: Vec<i32> = partitions.collect();
        {
            let mut registry = self.logs.write().expect("log manager lock");
            for p in &partitions {
                registry.remove(&(Arc::from(topic), *p));
            }
        }
        self.remove_dirs(topic, id, partitions.into_iter());
    }

    fn remove_dirs(&self, topic: &str, id: Uuid, partitions: impl Iterator<Item = i32>) {
        for p in partitions {
            let dir = self.partition_dir(topic, p);
            if !dir.exists() {
                continue;
            }
            let gone = self
                .data_dir
                .join(format!("{topic}-{p}.{}-delete", id.simple()));
            if let Err(e) =
                std::fs::rename(&dir, &gone).and_then(|_| std::fs::remove_dir_all(&gone))
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove partition directory");
            }
        }
    }

    fn all_logs(&self) -> Vec<(LogKey, SharedLog)> {
        self.logs
            .read()
            .expect("log manager lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Writes every log's recovery point to its checkpoint.
    pub fn checkpoint_recovery_points(&self) -> std::io::Result<()> {
        self.checkpoint(RECOVERY_POINT_CHECKPOINT, |log| log.recovery_point())
    }

    /// Writes every log's log start offset to its checkpoint.
    pub fn checkpoint_log_start_offsets(&self) -> std::io::Result<()> {
        self.checkpoint(LOG_START_CHECKPOINT, |log| log.log_start_offset())
    }

    /// Writes every log's first dirty offset (where the cleaner resumes) to its checkpoint.
    pub fn checkpoint_cleaner_offsets(&self) -> std::io::Result<()> {
        self.checkpoint(CLEANER_CHECKPOINT, |log| log.first_dirty_offset())
    }

    /// Writes one offset a log, taken by `offset_of`, to a checkpoint file.
    fn checkpoint(&self, file: &str, offset_of: impl Fn(&Log) -> i64) -> std::io::Result<()> {
        let _writer = self.checkpoint_lock.lock().expect("checkpoint lock");
        let offsets: checkpoint::Offsets = self
            .all_logs()
            .into_iter()
            .map(|((topic, p), log)| ((topic.to_string(), p), offset_of(&log.lock())))
            .collect();
        checkpoint::write(&self.data_dir.join(file), &offsets)
    }

    /// Clean shutdown: every log closed and trimmed (`recovery_threads` at a time), made durable
    /// by one sync of the file system, the checkpoints written, and last the clean-shutdown
    /// marker, which tells the next start that no recovery is needed. Any failure leaves the
    /// marker out, so the next start recovers. Returns whether the shutdown was clean.
    pub fn close(&self, now_ms: i64) -> bool {
        let logs = self.all_logs();
        let closed = crate::parallel::map(logs.clone(), self.recovery_threads, |(key, log)| {
            let result = log.lock().close_unsynced();
            if let Err(e) = &result {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot close log");
            }
            result.is_ok()
        });
        let mut clean = closed.into_iter().all(|ok| ok);
        // One sync of the file system makes every log durable; only then do the checkpoints
        // say so.
        match sync_file_system(&self.data_dir) {
            Ok(()) => {
                for (_, log) in &logs {
                    log.lock().mark_synced(now_ms);
                }
            }
            Err(e) => {
                clean = false;
                tracing::error!(error = %e, "cannot sync the logs to disk");
            }
        }
        for (what, result) in [
            ("recovery points", self.checkpoint_recovery_points()),
            ("log start offsets", self.checkpoint_log_start_offsets()),
            ("cleaner offsets", self.checkpoint_cleaner_offsets()),
        ] {
            if let Err(e) = result {
                clean = false;
                tracing::error!(error = %e, "cannot checkpoint {what}");
            }
        }
        if clean {
            if let Err(e) = write_synced(&self.data_dir.join(CLEAN_SHUTDOWN_MARKER), b"") {
                clean = false;
                tracing::error!(error = %e, "cannot write the clean shutdown marker");
            }
        }
        clean
    }

    /// Finishes, at start, what a crash interrupted: directories renamed for deletion are
    /// removed, and so is every partition directory that no live partition owns (a topic or
    /// partitions whose record was never written, or a deletion whose record was). A directory
    /// belongs to a live partition when its name is `<topic>-<index>` of a live topic whose
    /// partition `index` this broker hosts, and its marker, if readable, carries that topic's
    /// id; those are never touched here.
    fn remove_orphan_dirs(&self, live: &[LiveTopic]) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        let by_name: BTreeMap<&str, &LiveTopic> = live.iter().map(|t| (&*t.name, t)).collect();
        let mut removed = 0usize;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || !is_orphan(&entry.file_name().to_string_lossy(), &path, &by_name) {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove a partition directory no live partition owns")
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                directories = removed,
                "removed partition directories left by an interrupted topic change"
            );
        }
    }
}

/// Whether the directory `name` at `path` belongs to no live partition.
fn is_orphan(name: &str, path: &Path, live: &BTreeMap<&str, &LiveTopic>) -> bool {
    if name.ends_with("-delete") {
        return true;
    }
    let Some((topic, p)) = partition_dir_name(name) else {
        return false;
    };
    match (live.get(topic), read_marker(&path.join(PARTITION_MARKER))) {
        (Some(t), Ok(Some(found))) => found != t.id || !t.partitions.contains(&p),
        (Some(t), _) => !t.partitions.contains(&p),
        (None, _) => true,
    }
}

/// Checks that a live partition's directory carries its topic's id, writing the marker when
/// there is none.
fn check_marker(dir: &Path, name: &str, id: Uuid) -> Result<(), LogManagerError> {
    let marker = dir.join(PARTITION_MARKER);
    match read_marker(&marker) {
        Ok(Some(found)) if found == id => Ok(()),
        Ok(Some(found)) => Err(LogManagerError::Damaged(format!(
            "{} names topic id {found}, but {name} is {id}: refusing to start rather than mix the two",
            marker.display()
        ))),
        Ok(None) => {
            tracing::warn!(dir = %dir.display(), "partition directory without its topic id: writing it");
            std::fs::create_dir_all(dir)?;
            write_synced(&marker, marker_text(id).as_bytes())?;
            Ok(())
        }
        Err(e) => Err(LogManagerError::Damaged(format!(
            "{} cannot be read ({e}): refusing to start rather than risk the partition's data",
            marker.display()
        ))),
    }
}

/// Takes the exclusive lock on `<dir>/.lock`, as Kafka does, so that a second broker on the same
/// data directory refuses to start instead of serving (and losing) the same logs. The kernel
/// lets go of it when the process ends, however it ends.
fn lock_data_dir(dir: &Path) -> std::io::Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(format!(
            "the data directory {} is in use by another broker (it holds {})",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Makes everything written to the file system that holds `dir` durable (syncfs(2)): one call
/// where thousands of partitions changed together, instead of several fsyncs each. It reports
/// a writeback error of any file on that file system since the last sync.
fn sync_file_system(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn marker_text(id: Uuid) -> String {
    format!("version: 0\ntopic_id: {id}\n")
}

/// The topic id a partition directory's marker names: `None` when there is no marker, an error
/// when it cannot be read or parsed.
pub fn read_marker(path: &Path) -> std::io::Result<Option<Uuid>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
        .map(Some)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no topic id"))
}

/// `<topic>-<index>` as a partition directory is named, when `name` is one.
fn partition_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: i32 = index.parse().ok()?;
    is_topic_name(topic).then_some((topic, index))
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
