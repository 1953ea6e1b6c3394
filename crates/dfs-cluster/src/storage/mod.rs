//! Durable raft storage of the cluster map: the log and vote ([`LogStore`]) and the state
//! machine with its snapshot ([`StateMachineStore`]), both under one directory opened with
//! [`open_storage`].
//!
//! What is persisted where, the fsync points, the snapshot format and what happens at
//! restart are documented on [`open_storage`], the public entry point.

mod log_store;
mod snapshot_bytes;
mod state_machine;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use log_store::{LogStore, LogStoreReader};
pub use snapshot_bytes::SnapshotBytes;
pub use state_machine::{MapReader, StateMachineStore};

use crate::error::ClusterError;

/// The file whose exclusive lock marks the directory as open.
const LOCK_FILE: &str = "LOCK";

/// What can fail inside the storage, before it is turned into openraft's
/// [`openraft::StorageError`] or into a [`ClusterError`].
#[derive(Debug, thiserror::Error)]
enum StoreError {
    /// The log database failed.
    #[error("log database: {0}")]
    Db(#[from] redb::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes do not decode.
    #[error("stored data does not decode: {0}")]
    Decode(String),
    /// A value does not encode.
    #[error("cannot encode: {0}")]
    Encode(#[source] postcard::Error),
    /// The blocking task was cancelled (the runtime is shutting down).
    #[error("storage task cancelled")]
    Cancelled,
}

impl StoreError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}

/// Converts any redb error into [`StoreError::Db`].
fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// Runs blocking storage work (disk I/O, fsync) off the async threads (inline in a
/// simulation: see `dfs_net::blocking`). A panic in `f` is resumed in the caller.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    if dfs_net::blocking::is_inline() {
        return f();
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Cancelled),
    }
}

/// The exclusive lock on a storage directory, released when the last store holding it is
/// dropped.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

/// Tells when a storage directory's lock has been released: after the raft that used the
/// stores has shut down *and* its background tasks have dropped them.
#[derive(Debug, Clone)]
pub struct StorageRelease(std::sync::Weak<DirLock>);

impl StorageRelease {
    /// Whether every store of the open is gone, so the directory can be opened again.
    pub fn is_released(&self) -> bool {
        self.0.strong_count() == 0
    }

    /// Waits until [`is_released`](Self::is_released), for at most `timeout`; returns
    /// whether it was released.
    pub async fn wait(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_released() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, ClusterError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                storage_error(dir, StoreError::io(format!("open {}", path.display()))(e))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(ClusterError::StorageLocked {
                dir: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(storage_error(
                dir,
                StoreError::io(format!("lock {}", path.display()))(e),
            )),
        }
    }
}

fn storage_error(dir: &Path, e: StoreError) -> ClusterError {
    ClusterError::Storage {
        dir: dir.to_path_buf(),
        source: Box::new(e),
    }
}

/// Opens (creating if needed) the raft storage of the cluster map in `dir`: the log store
/// and the state machine, loaded from the last snapshot if there is one.
///
/// # What is where
///
/// | path | what | written by |
/// |---|---|---|
/// | `LOCK` | empty; an exclusive lock on it marks the directory as open | [`open_storage`] |
/// | `log.redb` | table `entries` (log index → postcard [`openraft::Entry`]) and table `meta` (`format`, `vote`, `committed`, `last_purged`) | [`LogStore`] |
/// | `snapshot` | the last snapshot: its metadata and the map (format below) | [`StateMachineStore`] |
/// | `snapshot.tmp` | a snapshot being written; removed at open | [`StateMachineStore`] |
///
/// # Why redb for the log
///
/// The log needs durable appends, atomic truncation and purging, and reads of index ranges
/// without holding the log in memory. [redb](https://docs.rs/redb) is a pure-Rust embedded
/// B-tree store with ACID transactions: every commit is durable (fsync) when it returns, a
/// crash leaves the last committed transaction, and torn writes are detected by its page
/// checksums. That is everything a hand-written segment file would have to re-implement
/// (fsync ordering, torn-tail detection, compaction of purged segments), for a log whose
/// rate is that of cluster-map changes (node joins, file creates), not of data writes.
///
/// # fsync points
///
/// - **Log** ([`LogStore`]): each `append`, `truncate`, `purge`, `save_vote` and
///   `save_committed` is one redb write transaction committed with immediate durability, so
///   it is on disk when the call completes; `append` calls openraft's flush callback only
///   after that commit returned.
/// - **Snapshot** ([`StateMachineStore`]): a snapshot is written to `snapshot.tmp`, which is
///   fsynced, renamed over `snapshot`, and then the directory is fsynced, so `snapshot` is
///   always either the old or the new snapshot, complete.
/// - **State machine**: `apply` only changes memory. Its durable form is the snapshot plus
///   the log after it.
///
/// # Snapshot format
///
/// The snapshot's data (what openraft sends to a lagging follower, and what
/// `get_current_snapshot` returns) is postcard of `(format: u32 = 1, last_applied:
/// Option<LogId>, last_membership: StoredMembership, state: ClusterState)`.
///
/// The file `snapshot` wraps it with the metadata openraft needs back:
/// `b"dfs-snap"` (8 bytes), the file format version (`u32` little-endian, 1), the CRC-32C
/// of the body (`u32` LE), the body's length (`u64` LE), then the body: postcard of
/// `(SnapshotMeta, data bytes)`. A file with another magic, version, length or checksum is
/// refused at open (the node does not start on a damaged snapshot).
///
/// # At restart
///
/// Opening loads the snapshot, if any, into the state machine: its `ClusterState`,
/// `last_applied` and membership are those of the snapshot (a leftover `snapshot.tmp` is
/// deleted). When the raft starts, openraft reads the vote, the log state and the
/// committed log id from the [`LogStore`] and re-applies the entries after the snapshot up
/// to the committed one, so the map is back to the last committed id this node had saved,
/// before the node takes part in the cluster again; the cluster then brings it up to date.
///
/// # Memory
///
/// The log stays on disk: entries are read in ranges (replication reads at most
/// [`MAX_PAYLOAD_ENTRIES`](crate::MAX_PAYLOAD_ENTRIES) at a time) and redb's page cache is
/// limited to 16 MiB. The map itself is in memory, plus one encoded copy while a snapshot
/// is built, sent or installed.
///
/// # Errors
///
/// Fails with [`ClusterError::StorageLocked`] while another open of `dir` (in this process
/// or another) is alive, i.e. until both of its stores are dropped; with
/// [`ClusterError::Storage`] when the directory cannot be created, or holds a log or
/// snapshot that does not read back.
pub async fn open_storage(dir: &Path) -> Result<(LogStore, StateMachineStore), ClusterError> {
    let dir: PathBuf = dir.to_path_buf();
    let opened = blocking({
        let dir = dir.clone();
        move || Ok(open_blocking(&dir))
    })
    .await
    .map_err(|e| storage_error(&dir, e))??;
    tracing::info!(dir = %dir.display(), last_applied = ?opened.1.reader().last_applied(), "cluster storage open");
    Ok(opened)
}

fn open_blocking(dir: &Path) -> Result<(LogStore, StateMachineStore), ClusterError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| storage_error(dir, StoreError::io(format!("create {}", dir.display()))(e)))?;
    let lock = Arc::new(DirLock::acquire(dir)?);
    let log = LogStore::open(dir, lock.clone()).map_err(|e| storage_error(dir, e))?;
    let sm = StateMachineStore::open(dir, lock).map_err(|e| storage_error(dir, e))?;
    Ok((log, sm))
}
