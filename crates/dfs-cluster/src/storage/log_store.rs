//! The raft log and vote, in a redb database (`log.redb`).
//!
//! Table `entries` maps a log index to the postcard encoding of its [`Entry`]; table `meta`
//! holds `format` (the layout version, `u32`), `vote`, `committed` and `last_purged`, each
//! the postcard encoding of its value. Every change is one write transaction committed with
//! redb's immediate durability (fsync before the commit returns), so:
//!
//! - an `append` is on disk before openraft's flush callback is called;
//! - a `truncate` or `purge` is atomic: no hole can appear in the log, whatever the crash;
//! - the log is never held in memory: reads go to redb (its page cache is bounded by
//!   [`CACHE_BYTES`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DirLock, StoreError, blocking, db_err};
use crate::{MAX_PAYLOAD_ENTRIES, TypeConfig};

/// The log database's file name in the storage directory.
pub(super) const LOG_FILE: &str = "log.redb";
/// Log index -> postcard `Entry<TypeConfig>`.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// Name -> postcard value (see the `KEY_*` constants).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
/// The layout version of `log.redb`; bump it when the tables or their encodings change.
const LOG_FORMAT: u32 = 1;
/// The most memory redb may use to cache pages of the log: 16 MiB.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The durable raft log and vote of one node: openraft's [`RaftLogStorage`].
///
/// Made by [`open_storage`](super::open_storage). Each write is durable (fsynced) when its
/// call completes; see [`open_storage`](crate::open_storage) for the layout.
pub struct LogStore {
    shared: Arc<Shared>,
}

/// A read-only handle on the [`LogStore`]'s entries, which openraft gives to its
/// replication tasks (reads may run concurrently with the writer).
#[derive(Clone)]
pub struct LogStoreReader {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl Debug for LogStoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStoreReader").finish_non_exhaustive()
    }
}

struct Shared {
    db: Database,
    /// Held while any store of the directory is alive.
    _lock: Arc<DirLock>,
}

impl LogStore {
    /// A watch on this open's directory lock, to learn when every store (this one, its
    /// readers and the state machine) has been dropped.
    pub fn release_watch(&self) -> super::StorageRelease {
        super::StorageRelease(Arc::downgrade(&self.shared._lock))
    }

    /// Opens or creates `dir/log.redb` (blocking) and checks its format.
    pub(super) fn open(dir: &Path, lock: Arc<DirLock>) -> Result<LogStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(LOG_FILE))
            .map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(ENTRIES).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let format: Option<u32> = match meta.get(KEY_FORMAT).map_err(db_err)? {
                Some(v) => Some(decode(KEY_FORMAT, v.value())?),
                None => None,
            };
            match format {
                None => {
                    meta.insert(KEY_FORMAT, encode(&LOG_FORMAT)?.as_slice())
                        .map_err(db_err)?;
                }
                Some(LOG_FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::Decode(format!(
                        "{LOG_FILE} has layout version {other}, this build reads {LOG_FORMAT}"
                    )));
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(LogStore {
            shared: Arc::new(Shared { db, _lock: lock }),
        })
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(StoreError::Encode)
}

fn decode<T: DeserializeOwned>(
    what: impl std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode(format!("{what}: {e}")))
}

/// `[start, end)` of a range of log indexes; `end` is `None` when unbounded.
fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl Shared {
    /// Reads the entries in `[start, end)`, at most `max` of them.
    fn read_entries(
        &self,
        start: u64,
        end: Option<u64>,
        max: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        if end.is_some_and(|end| end <= start) || max == 0 {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let range = match end {
            Some(end) => table.range(start..end),
            None => table.range(start..),
        }
        .map_err(db_err)?;
        let mut out = Vec::new();
        for item in range {
            let (index, bytes) = item.map_err(db_err)?;
            let index = index.value();
            out.push(decode(format_args!("log entry {index}"), bytes.value())?);
            if out.len() as u64 >= max {
                break;
            }
        }
        Ok(out)
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(META).map_err(db_err)?;
        match table.get(key).map_err(db_err)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META)
            .map_err(db_err)?
            .insert(key, bytes.as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let last_purged_log_id: Option<LogId<u64>> =
            match meta.get(KEY_LAST_PURGED).map_err(db_err)? {
                Some(v) => decode(KEY_LAST_PURGED, v.value())?,
                None => None,
            };
        let entries = txn.open_table(ENTRIES).map_err(db_err)?;
        let last_log_id = match entries.last().map_err(db_err)? {
            Some((index, bytes)) => {
                let entry: Entry<TypeConfig> =
                    decode(format_args!("log entry {}", index.value()), bytes.value())?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Writes encoded entries in one durable transaction.
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            for (index, bytes) in entries {
                table.insert(index, bytes.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Removes the entries from `index` on, in one durable transaction.
    fn truncate(&self, index: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(ENTRIES)
            .map_err(db_err)?
            .retain_in(index.., |_, _| false)
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Records `upto` as purged and removes the entries up to it, in one durable transaction.
    fn purge(&self, upto: LogId<u64>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let current: Option<LogId<u64>> = match meta.get(KEY_LAST_PURGED).map_err(db_err)? {
                Some(v) => decode(KEY_LAST_PURGED, v.value())?,
                None => None,
            };
            if current.is_some_and(|c| c >= upto) {
                return Ok(());
            }
            meta.insert(KEY_LAST_PURGED, encode(&Some(upto))?.as_slice())
                .map_err(db_err)?;
            txn.open_table(ENTRIES)
                .map_err(db_err)?
                .retain_in(..=upto.index, |_, _| false)
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }
}

fn read_logs_error(e: StoreError) -> StorageError<u64> {
    StorageIOError::read_logs(&e).into()
}

fn write_logs_error(e: StoreError) -> StorageError<u64> {
    StorageIOError::write_logs(&e).into()
}

async fn try_get_entries<RB: RangeBounds<u64>>(
    shared: &Arc<Shared>,
    range: RB,
    max: u64,
) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
    let (start, end) = index_bounds(&range);
    let shared = shared.clone();
    blocking(move || shared.read_entries(start, end, max))
        .await
        .map_err(read_logs_error)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        try_get_entries(&self.shared, range, u64::MAX).await
    }

    /// At most [`MAX_PAYLOAD_ENTRIES`] entries: what one append-entries message carries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        try_get_entries(&self.shared, start..end, MAX_PAYLOAD_ENTRIES).await
    }
}

impl RaftLogReader<TypeConfig> for LogStoreReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        try_get_entries(&self.shared, range, u64::MAX).await
    }

    /// At most [`MAX_PAYLOAD_ENTRIES`] entries: what one append-entries message carries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        try_get_entries(&self.shared, start..end, MAX_PAYLOAD_ENTRIES).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStoreReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let shared = self.shared.clone();
        blocking(move || shared.log_state())
            .await
            .map_err(read_logs_error)
    }

    async fn get_log_reader(&mut self) -> LogStoreReader {
        LogStoreReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let shared = self.shared.clone();
        let vote = *vote;
        blocking(move || shared.put_meta(KEY_VOTE, &vote))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let shared = self.shared.clone();
        blocking(move || shared.get_meta(KEY_VOTE))
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_vote(&e)))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let shared = self.shared.clone();
        blocking(move || shared.put_meta(KEY_COMMITTED, &committed))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write(&e)))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let shared = self.shared.clone();
        let committed: Option<Option<LogId<u64>>> =
            blocking(move || shared.get_meta(KEY_COMMITTED))
                .await
                .map_err(|e| StorageError::from(StorageIOError::read(&e)))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(write_logs_error)?;
        let (Some(first), Some(last)) = (encoded.first(), encoded.last()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let (first, last) = (first.0, last.0);
        let shared = self.shared.clone();
        blocking(move || shared.append(&encoded))
            .await
            .map_err(write_logs_error)?;
        tracing::trace!(first, last, "log entries appended and synced");
        // Durable now: the commit above returned only after the fsync.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let shared = self.shared.clone();
        blocking(move || shared.truncate(log_id.index))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_log_entry(log_id, &e)))?;
        tracing::debug!(%log_id, "log truncated from");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let shared = self.shared.clone();
        blocking(move || shared.purge(log_id))
            .await
            .map_err(write_logs_error)?;
        tracing::debug!(%log_id, "log purged up to");
        Ok(())
    }
}
