//! The local file store: [`Store`], its streaming write transactions and snapshots.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tracing::{debug, error, info, warn};

use self::reaper::Reaper;
use crate::error::{IoContext, StoreError};
use crate::group::GroupSync;
use crate::header::{
    DedupEntry, HEADER_SIZE, Header, Recall, SLOT_SIZE, Slot, Tail, decode_slot, encode_slot,
};
use crate::{DedupKey, FileId, FileMeta, NAME_MAX, RecoveryReport, WriteOutcome};

/// Where a store lives and how careful it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store directory; created if missing.
    pub dir: PathBuf,
    /// Call `fsync`/`fdatasync` so that an acknowledged write survives a crash or power loss
    /// (default `true`). With `false` the sync calls are skipped: much faster, but a machine crash
    /// may lose recent acknowledged writes or leave files damaged (a process crash alone is still
    /// safe, the page cache survives it). Meant for tests and throw-away data.
    pub fsync: bool,
    /// Sync by group commit (default `true`, with `fsync`): one `syncfs(2)` of the file
    /// system holding the store makes every commit that is waiting (appends, creates, puts,
    /// deletes) durable at once, instead of each syncing its own file and directory. Best
    /// when the store has its file system to itself: `syncfs` also writes back other
    /// programs' dirty data there. With `false` each commit syncs its own file.
    pub group_commit: bool,
}

impl StoreConfig {
    /// A configuration for `dir` with `fsync` on.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            fsync: true,
            group_commit: true,
        }
    }
}

/// The committed state of a healthy file.
#[derive(Debug)]
struct Live {
    header: Header,
    /// The slot (0 = A, 1 = B) holding `header`; the next header write goes to the other one.
    slot: usize,
    /// The sequence number of `slot`.
    seq: u64,
}

#[derive(Debug)]
enum Status {
    Live(Live),
    /// Kept out of service; the reason.
    Damaged(String),
    /// Deleted, or a create that has not finished (or failed). Such an entry is only briefly in
    /// the map, while its creator or deleter holds the state lock.
    Gone,
}

#[derive(Debug)]
struct FileState {
    status: Status,
    /// An [`AppendTxn`] or [`PutTxn`] owns the file's writer slot.
    writer: bool,
    /// One clone per open [`Snapshot`] (plus this one): while a snapshot is open, content
    /// below the committed size is never changed in place (a write over it or a
    /// truncation goes through a copy and a rename instead).
    readers: Arc<()>,
}

impl FileState {
    fn live(&mut self, id: FileId) -> Result<&mut Live, StoreError> {
        match &mut self.status {
            Status::Live(live) => Ok(live),
            Status::Damaged(reason) => Err(StoreError::Corrupt {
                id,
                reason: reason.clone(),
            }),
            Status::Gone => Err(StoreError::NotFound(id)),
        }
    }
}

type StateRef = Arc<Mutex<FileState>>;

struct Inner {
    dir: PathBuf,
    files_dir: PathBuf,
    tmp_dir: PathBuf,
    fsync: bool,
    /// The group committer every sync goes through (with `fsync` and `group_commit` on).
    group: Option<GroupSync>,
    /// Unlinks deleted files moved into `tmp/` (see [`Store::delete`]).
    reaper: Reaper,
    files: Mutex<HashMap<FileId, StateRef>>,
    tmp_counter: AtomicU64,
    /// Holds the `LOCK` file's lock for as long as the store (or a transaction) lives.
    _lock: File,
}

impl Inner {
    /// `file.write_all_at(data, offset)` for bytes that may need new blocks: on a full disk
    /// it waits for the reaper to unlink what deletes left it (their blocks are still in
    /// use until then) and tries once more.
    fn write_new(&self, file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
        match file.write_all_at(data, offset) {
            Err(e) if e.kind() == ErrorKind::StorageFull => {
                if !self.reaper.wait_caught_up(reaper::CATCH_UP_WAIT) {
                    return Err(e);
                }
                file.write_all_at(data, offset)
            }
            other => other,
        }
    }

    fn file_path(&self, id: FileId) -> PathBuf {
        self.files_dir.join(file_name(id))
    }

    fn state(&self, id: FileId) -> Result<StateRef, StoreError> {
        self.files
            .lock()
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(id))
    }

    /// Removes `id` from the map if it still maps to `state`. Called with `state` locked.
    fn forget(&self, id: FileId, state: &StateRef) {
        let mut map = self.files.lock();
        if map.get(&id).is_some_and(|s| Arc::ptr_eq(s, state)) {
            map.remove(&id);
        }
    }

    fn new_temp(&self, id: FileId) -> Result<(PathBuf, File), StoreError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp_dir.join(format!("{}.{n}.tmp", file_name(id)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("creating temp file {}", path.display()))?;
        Ok((path, file))
    }

    fn sync_files_dir(&self) -> Result<(), StoreError> {
        match &self.group {
            Some(group) => group
                .sync()
                .ctx(|| format!("syncing {}", self.files_dir.display())),
            None if self.fsync => sync_dir(&self.files_dir),
            None => Ok(()),
        }
    }

    /// Makes `file`'s content (and its size) durable: the group commit's round, or its own
    /// `fdatasync` (nothing with `fsync` off).
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        match &self.group {
            Some(group) => group.sync(),
            None if self.fsync => file.sync_data(),
            None => Ok(()),
        }
    }

    /// Makes `file`'s content and metadata durable: the group commit's round, or its own
    /// `fsync` (nothing with `fsync` off).
    fn sync_file(&self, file: &File) -> std::io::Result<()> {
        match &self.group {
            Some(group) => group.sync(),
            None if self.fsync => file.sync_all(),
            None => Ok(()),
        }
    }

    fn open_rw(&self, id: FileId) -> Result<File, StoreError> {
        let path = self.file_path(id);
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))
    }
}

/// The name of a file's data file inside `files/`: the id as 16 lowercase hex digits.
fn file_name(id: FileId) -> String {
    format!("{id:016x}")
}

/// The inverse of [`file_name`]; `None` for anything else.
fn parse_file_name(name: &str) -> Option<FileId> {
    if name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u64::from_str_radix(name, 16).ok()
    } else {
        None
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn slot_offset(slot: usize) -> u64 {
    if slot == 0 { 0 } else { SLOT_SIZE as u64 }
}

/// A two-slot header image with `header` in slot A and slot B empty (invalid).
fn fresh_header_image(seq: u64, header: &Header) -> Vec<u8> {
    let mut image = vec![0u8; 2 * SLOT_SIZE];
    image[..SLOT_SIZE].copy_from_slice(&encode_slot(seq, header, None));
    image
}

/// Removes a temp file, ignoring one that is already gone (renamed into place).
fn discard_temp(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "cannot remove temp file"),
    }
}

/// Cuts uncommitted bytes off a file after an aborted append (best effort: recovery would remove
/// them anyway, and the next append overwrites them).
fn truncate_back(file: &File, id: FileId, size: u64) {
    if let Err(e) = file.set_len(HEADER_SIZE + size) {
        warn!(id = %file_name(id), error = %e, "cannot truncate an aborted append");
    }
}

fn duplicate(outcome: WriteOutcome) -> WriteOutcome {
    WriteOutcome {
        duplicate: true,
        ..outcome
    }
}

/// A local store of files keyed by [`FileId`]. Cheap to clone (a handle); `Send + Sync`.
///
/// Every method is synchronous and does blocking I/O: from async code call it through
/// `tokio::task::spawn_blocking`. Operations on different files never wait for each other;
/// operations on one file are serialised by that file's state mutex (the streaming
/// transactions hold it only at `begin_*` and `commit`, not while their data is written).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("fsync", &self.inner.fsync)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `config.dir`, takes its `LOCK` and runs recovery:
    /// temp files are removed, torn appends truncated, damaged files reported and kept out of
    /// service. Fails with [`StoreError::Locked`] if another store has the directory open.
    pub fn open(config: StoreConfig) -> Result<(Store, RecoveryReport), StoreError> {
        let dir = config.dir;
        let files_dir = dir.join("files");
        let tmp_dir = dir.join("tmp");
        for d in [&dir, &files_dir, &tmp_dir] {
            fs::create_dir_all(d).ctx(|| format!("creating directory {}", d.display()))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .ctx(|| format!("opening {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::io(
                    format!("locking {}", lock_path.display()),
                    e,
                ));
            }
        }

        let mut report = RecoveryReport::default();

        // 1. Temp files are never referenced: whatever is in tmp/ is a partial create or put, or
        //    a deleted file the reaper had not unlinked yet.
        for entry in fs::read_dir(&tmp_dir).ctx(|| format!("listing {}", tmp_dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", tmp_dir.display()))?;
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match removed {
                // The reaper of a store closed just before may be unlinking it.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                other => other.ctx(|| format!("removing temp file {}", path.display()))?,
            }
            debug!(path = %path.display(), "removed leftover temp file");
            report.temp_files_removed += 1;
        }

        // 2. Every data file: pick the valid slot, cut torn appends, set damaged files aside.
        let mut map = HashMap::new();
        for entry in fs::read_dir(&files_dir).ctx(|| format!("listing {}", files_dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", files_dir.display()))?;
            let path = entry.path();
            let id = match entry.file_name().to_str().and_then(parse_file_name) {
                Some(id) if entry.file_type().map(|t| t.is_file()).unwrap_or(false) => id,
                _ => {
                    warn!(path = %path.display(), "ignoring unexpected entry in files/");
                    continue;
                }
            };
            let status = match recover_file(&path, id, config.fsync) {
                Ok((live, found)) => {
                    match found {
                        Found::Clean => {}
                        Found::Torn => report.torn_appends_truncated += 1,
                        Found::Finished => report.writes_finished += 1,
                    }
                    report.files += 1;
                    Status::Live(live)
                }
                Err(reason) => {
                    error!(id = %file_name(id), %reason, "damaged file kept out of service");
                    report.damaged.push((id, reason.clone()));
                    Status::Damaged(reason)
                }
            };
            map.insert(
                id,
                Arc::new(Mutex::new(FileState {
                    status,
                    writer: false,
                    readers: Arc::new(()),
                })),
            );
        }
        report.damaged.sort();

        info!(
            dir = %dir.display(),
            files = report.files,
            temp_files_removed = report.temp_files_removed,
            torn_appends_truncated = report.torn_appends_truncated,
            writes_finished = report.writes_finished,
            damaged = report.damaged.len(),
            "store opened"
        );
        let group = if config.fsync && config.group_commit {
            Some(
                GroupSync::open(&files_dir)
                    .map_err(|e| StoreError::io(format!("opening {}", files_dir.display()), e))?,
            )
        } else {
            None
        };
        let reaper =
            Reaper::start().map_err(|e| StoreError::io("starting the reaper thread", e))?;
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                files_dir,
                tmp_dir,
                fsync: config.fsync,
                group,
                reaper,
                files: Mutex::new(map),
                tmp_counter: AtomicU64::new(0),
                _lock: lock,
            }),
        };
        Ok((store, report))
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates an empty file (version 0) named `name` (at most [`NAME_MAX`] bytes; the name is
    /// only recorded in the header, never used as a path). Durable when it returns.
    pub fn create(&self, id: FileId, name: &str) -> Result<FileMeta, StoreError> {
        if name.len() > NAME_MAX {
            return Err(StoreError::NameTooLong(name.len()));
        }
        let inner = &self.inner;
        // Claim the id with a fresh entry that is locked before anyone else can see it.
        let fresh: StateRef = Arc::new(Mutex::new(FileState {
            status: Status::Gone,
            writer: false,
            readers: Arc::new(()),
        }));
        let mut st = fresh.lock();
        loop {
            let existing = match inner.files.lock().entry(id) {
                Entry::Vacant(v) => {
                    v.insert(Arc::clone(&fresh));
                    break;
                }
                Entry::Occupied(o) => Arc::clone(o.get()),
            };
            // Only a deleter (or failed creator) holding the lock leaves a Gone entry in the map,
            // and it removes it before unlocking: look again.
            if !matches!(existing.lock().status, Status::Gone) {
                return Err(StoreError::AlreadyExists(id));
            }
        }

        let header = Header {
            meta: FileMeta {
                id,
                name: name.to_string(),
                size: 0,
                version: 0,
                checksum: crc32c::crc32c(&[]),
                modified_ms: now_ms(),
            },
            dedup: Vec::new(),
        };
        let result = (|| {
            let (tmp_path, tmp) = inner.new_temp(id)?;
            let written = (|| {
                inner
                    .write_new(&tmp, &fresh_header_image(1, &header), 0)
                    .ctx(|| format!("writing {}", tmp_path.display()))?;
                inner
                    .sync_file(&tmp)
                    .ctx(|| format!("syncing {}", tmp_path.display()))?;
                let path = inner.file_path(id);
                fs::rename(&tmp_path, &path).ctx(|| format!("renaming into {}", path.display()))
            })();
            if written.is_err() {
                discard_temp(&tmp_path);
            }
            written
        })();
        if let Err(e) = result {
            inner.forget(id, &fresh);
            return Err(e);
        }
        let meta = header.meta.clone();
        st.status = Status::Live(Live {
            header,
            slot: 0,
            seq: 1,
        });
        drop(st);
        // The file is in place; if the directory sync fails the create may not survive a crash.
        inner.sync_files_dir()?;
        debug!(id = %file_name(id), "created");
        Ok(meta)
    }

    /// The committed metadata of a file.
    pub fn meta(&self, id: FileId) -> Result<FileMeta, StoreError> {
        let state = self.inner.state(id)?;
        let mut st = state.lock();
        Ok(st.live(id)?.header.meta.clone())
    }

    /// The metadata of every healthy file, sorted by id.
    pub fn files(&self) -> Vec<FileMeta> {
        let states: Vec<StateRef> = self.inner.files.lock().values().cloned().collect();
        let mut metas: Vec<FileMeta> = states
            .iter()
            .filter_map(|s| match &s.lock().status {
                Status::Live(live) => Some(live.header.meta.clone()),
                _ => None,
            })
            .collect();
        metas.sort_by_key(|m| m.id);
        metas
    }

    /// The files kept out of service and why, sorted by id.
    pub fn damaged(&self) -> Vec<(FileId, String)> {
        let states: Vec<(FileId, StateRef)> = self
            .inner
            .files
            .lock()
            .iter()
            .map(|(id, s)| (*id, Arc::clone(s)))
            .collect();
        let mut damaged: Vec<(FileId, String)> = states
            .into_iter()
            .filter_map(|(id, s)| match &s.lock().status {
                Status::Damaged(reason) => Some((id, reason.clone())),
                _ => None,
            })
            .collect();
        damaged.sort();
        damaged
    }

    /// The saved outcome of the write to `id` that carried `key` (as a duplicate), or
    /// `None` if the table knows of no such write (it keeps at most
    /// [`DEDUP_ENTRIES_MAX`](crate::DEDUP_ENTRIES_MAX) entries and drops a client whole only
    /// when every entry is a different client's; see the crate docs).
    /// [`StoreError::OutcomeForgotten`] if one may have been applied and its outcome was
    /// evicted: the key is at or below its client's floor.
    pub fn dedup_lookup(
        &self,
        id: FileId,
        key: DedupKey,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        let state = self.inner.state(id)?;
        let mut st = state.lock();
        match st.live(id)?.header.recall(key) {
            Recall::Applied(saved) => Ok(Some(duplicate(saved))),
            Recall::New => Ok(None),
            Recall::Forgotten => Err(StoreError::OutcomeForgotten {
                id,
                client_id: key.client_id,
                seq: key.seq,
            }),
        }
    }

    /// Runs `apply` on file `id`'s state under its lock once the file is known healthy:
    /// the one preamble of every one-call write. [`StoreError::Busy`] while a streaming
    /// transaction holds the file; a `key` already applied answers its saved outcome as a
    /// duplicate without calling `apply`.
    fn write_once(
        &self,
        id: FileId,
        key: Option<DedupKey>,
        apply: impl FnOnce(&Inner, &mut FileState) -> Result<WriteOutcome, StoreError>,
    ) -> Result<WriteOutcome, StoreError> {
        let inner = &self.inner;
        let state = inner.state(id)?;
        let mut st = state.lock();
        if st.writer {
            return Err(StoreError::Busy(id));
        }
        let live = st.live(id)?;
        if let Some(k) = key
            && let Some(saved) = live.header.lookup(k)
        {
            return Ok(duplicate(saved));
        }
        apply(inner, &mut st)
    }

    /// Appends `data`; durable before it returns. With a `key` already in the dedup table nothing
    /// is written and the saved outcome is returned with `duplicate: true`. Holds the file's state
    /// mutex throughout (concurrent appends to one file are serialised); for large bodies use
    /// [`Store::begin_append`]. [`StoreError::Busy`] while a streaming transaction is open.
    pub fn append(
        &self,
        id: FileId,
        data: &[u8],
        key: Option<DedupKey>,
    ) -> Result<WriteOutcome, StoreError> {
        self.write_once(id, key, |inner, st| {
            let live = st.live(id)?;
            let base = live.header.meta.size;
            let crc = crc32c::crc32c_append(live.header.meta.checksum, data);
            let tail_crc = crc32c::crc32c(data);
            let file = inner.open_rw(id)?;
            if let Err(e) = inner.write_new(&file, data, HEADER_SIZE + base) {
                truncate_back(&file, id, base);
                return Err(StoreError::io(
                    format!("appending to {}", inner.file_path(id).display()),
                    e,
                ));
            }
            let added = Added {
                base,
                len: data.len() as u64,
                crc,
                tail_crc,
            };
            commit_append(inner, id, st, &file, added, key)
        })
    }

    /// Replaces the whole content atomically (readers see the old or the new content, never a
    /// mix); durable before it returns. The dedup table is carried over. Dedup and `Busy` as for
    /// [`Store::append`]; for large bodies use [`Store::begin_put`].
    pub fn put(
        &self,
        id: FileId,
        data: &[u8],
        key: Option<DedupKey>,
    ) -> Result<WriteOutcome, StoreError> {
        self.write_once(id, key, |inner, st| {
            let (tmp_path, tmp) = inner.new_temp(id)?;
            let result = inner
                .write_new(&tmp, data, HEADER_SIZE)
                .ctx(|| format!("writing {}", tmp_path.display()))
                .and_then(|()| {
                    commit_put(
                        inner,
                        id,
                        st,
                        &tmp,
                        &tmp_path,
                        data.len() as u64,
                        crc32c::crc32c(data),
                        PutCommit::Write(key),
                    )
                });
            if result.is_err() {
                discard_temp(&tmp_path);
            }
            result
        })
    }

    /// Starts a streaming append; the transaction owns the file's writer slot until it is
    /// committed or dropped ([`StoreError::Busy`] if another one is open).
    pub fn begin_append(&self, id: FileId) -> Result<AppendTxn, StoreError> {
        let inner = &self.inner;
        let state = inner.state(id)?;
        let mut st = state.lock();
        if st.writer {
            return Err(StoreError::Busy(id));
        }
        let live = st.live(id)?;
        let base = live.header.meta.size;
        let crc = live.header.meta.checksum;
        let file = inner.open_rw(id)?;
        st.writer = true;
        drop(st);
        Ok(AppendTxn {
            inner: Arc::clone(inner),
            id,
            state,
            file,
            base,
            written: 0,
            crc,
            tail_crc: 0,
            failed: false,
            finished: false,
        })
    }

    /// Starts the install of a copy of file `id` from another replica: like
    /// [`begin_put`](Self::begin_put), creating the file first if it does not exist; commit
    /// with [`PutTxn::commit_install`].
    pub fn begin_install(&self, id: FileId, name: &str) -> Result<PutTxn, StoreError> {
        match self.create(id, name) {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => self.begin_put(id),
            Err(e) => Err(e),
        }
    }

    /// The dedup table of a file, oldest first (for copying it to another replica). An entry
    /// whose outcome has `duplicate: true` is also its client's floor: that client's writes
    /// with a lower `seq` not in the table may have been applied and forgotten. Its own
    /// outcome is right.
    pub fn dedup_entries(&self, id: FileId) -> Result<Vec<(DedupKey, WriteOutcome)>, StoreError> {
        let state = self.inner.state(id)?;
        let mut st = state.lock();
        let live = st.live(id)?;
        Ok(live
            .header
            .dedup
            .iter()
            .map(|e| (e.key, e.outcome))
            .collect())
    }

    /// Starts a streaming put (whole replacement) into a temp file; the transaction owns the
    /// file's writer slot until it is committed or dropped ([`StoreError::Busy`] if another one
    /// is open).
    pub fn begin_put(&self, id: FileId) -> Result<PutTxn, StoreError> {
        let inner = &self.inner;
        let state = inner.state(id)?;
        let mut st = state.lock();
        if st.writer {
            return Err(StoreError::Busy(id));
        }
        st.live(id)?;
        let (tmp_path, file) = inner.new_temp(id)?;
        st.writer = true;
        drop(st);
        Ok(PutTxn {
            inner: Arc::clone(inner),
            id,
            state,
            tmp_path,
            file,
            written: 0,
            crc: crc32c::crc32c(&[]),
            failed: false,
            finished: false,
        })
    }

    /// A consistent point-in-time view of a file: an open handle plus the committed metadata,
    /// taken under the file's state mutex. Later appends (past the committed size), puts (the
    /// rename replaces the inode) and deletes (unlink) do not change what it reads.
    pub fn snapshot(&self, id: FileId) -> Result<Snapshot, StoreError> {
        let inner = &self.inner;
        let state = inner.state(id)?;
        let mut st = state.lock();
        let meta = st.live(id)?.header.meta.clone();
        let path = inner.file_path(id);
        let file = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        let reader = Arc::clone(&st.readers);
        drop(st);
        Ok(Snapshot {
            meta,
            file,
            _reader: reader,
        })
    }

    /// The whole committed content of a file (a [`Snapshot`] read to the end).
    pub fn read(&self, id: FileId) -> Result<Vec<u8>, StoreError> {
        self.snapshot(id)?.read_all()
    }

    /// Deletes a file (damaged ones too, so that they can be restored from a replica).
    /// [`StoreError::Busy`] while a streaming transaction is open on it.
    pub fn delete(&self, id: FileId) -> Result<(), StoreError> {
        let inner = &self.inner;
        let state = inner.state(id)?;
        let mut st = state.lock();
        if st.writer {
            return Err(StoreError::Busy(id));
        }
        if matches!(st.status, Status::Gone) {
            return Err(StoreError::NotFound(id));
        }
        let path = inner.file_path(id);
        // Unlinking a file can take milliseconds (freeing its blocks; on a file system
        // mounted with `discard`, waiting for the device to trim them): it is moved out of
        // `files/` into `tmp/`, and the reaper unlinks it there. Recovery empties `tmp/`.
        let n = inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let doomed = inner.tmp_dir.join(format!("{}.{n}.deleted", file_name(id)));
        match fs::rename(&path, &doomed) {
            Ok(()) => inner.reaper.hand_over(doomed),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                warn!(id = %file_name(id), "data file already missing at delete");
            }
            Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
        }
        st.status = Status::Gone;
        inner.forget(id, &state);
        drop(st);
        inner.sync_files_dir()?;
        debug!(id = %file_name(id), "deleted");
        Ok(())
    }

    /// Re-reads the committed content and compares its CRC-32C with the recorded checksum.
    /// `Ok(false)` means the content has rotted on disk.
    pub fn verify(&self, id: FileId) -> Result<bool, StoreError> {
        let snap = self.snapshot(id)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut crc = crc32c::crc32c(&[]);
        let mut offset = 0u64;
        loop {
            let n = snap.read_at(offset, &mut buf)?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            offset += n as u64;
        }
        let ok = crc == snap.meta.checksum;
        if !ok {
            warn!(
                id = %file_name(id),
                recorded = snap.meta.checksum,
                computed = crc,
                "checksum mismatch"
            );
        }
        Ok(ok)
    }
}

/// The bytes an append adds, already written past the committed end.
struct Added {
    /// The committed size before them.
    base: u64,
    len: u64,
    /// CRC-32C of the whole content with them.
    crc: u32,
    /// CRC-32C of them alone.
    tail_crc: u32,
}

/// The most bytes an append may add and still commit with one sync (a header slot with a
/// [`Tail`]); recovery reads at most this much per file to check a tail. Bigger appends
/// sync their bytes first, then the header.
pub(crate) const TAIL_MAX: u64 = 1 << 20;

/// The most bytes one in-place write ([`Store::write_at`] below the committed size) may
/// stage; recovery reads at most this much per file to check and replay it.
pub const WRITE_AT_MAX: u64 = 16 << 20;

/// The largest size a write at an offset or a truncation may give a file: 16 TiB, the
/// largest file ext4 keeps (with 4 KiB blocks). It also keeps every position in the data
/// file (`HEADER_SIZE` + a content offset) far from overflowing.
pub const FILE_SIZE_MAX: u64 = 1 << 44;

/// Makes appended bytes durable and commits them with a header write into the other slot.
/// Called with the file's state locked and dedup checked.
///
/// Up to [`TAIL_MAX`] bytes: the header slot records them as its tail and one sync (the
/// group commit's, or an `fdatasync`) makes both durable. More: `fdatasync` of the bytes,
/// then the header and its sync, so the header never names bytes that are not on disk.
fn commit_append(
    inner: &Inner,
    id: FileId,
    st: &mut FileState,
    file: &File,
    added: Added,
    key: Option<DedupKey>,
) -> Result<WriteOutcome, StoreError> {
    let Added {
        base,
        len,
        crc,
        tail_crc,
    } = added;
    let path = inner.file_path(id);
    let tail = (len > 0 && len <= TAIL_MAX).then_some(Tail {
        offset: base,
        len,
        crc: tail_crc,
    });
    if inner.fsync
        && tail.is_none()
        && let Err(e) = file.sync_data()
    {
        truncate_back(file, id, base);
        return Err(StoreError::io(format!("syncing {}", path.display()), e));
    }
    let live = st.live(id)?;
    let mut header = live.header.clone();
    header.meta.size = base + len;
    header.meta.version += 1;
    header.meta.checksum = crc;
    header.meta.modified_ms = now_ms();
    let outcome = WriteOutcome {
        version: header.meta.version,
        size: header.meta.size,
        checksum: crc,
        duplicate: false,
    };
    if let Some(k) = key {
        header.record(k, outcome);
    }
    let slot = 1 - live.slot;
    let seq = live.seq + 1;
    let image = encode_slot(seq, &header, tail);
    let written = file
        .write_all_at(&image, slot_offset(slot))
        .and_then(|()| match &inner.group {
            Some(group) => group.sync(),
            None if inner.fsync => file.sync_data(),
            None => Ok(()),
        });
    if let Err(e) = written {
        // The header may or may not have reached the disk: only recovery can tell.
        let reason = format!("header write failed ({e}); reopen the store to recover");
        error!(id = %file_name(id), %reason, "file taken out of service");
        st.status = Status::Damaged(reason);
        return Err(StoreError::io(
            format!("writing header of {}", path.display()),
            e,
        ));
    }
    *live = Live { header, slot, seq };
    Ok(outcome)
}

/// Writes the header into a temp file whose content (`size` bytes with checksum `crc`) is already
/// written at [`HEADER_SIZE`], syncs it and renames it over the data file. Called with the file's
/// state locked and dedup checked; on error the caller discards the temp file.
#[allow(clippy::too_many_arguments)]
fn commit_put(
    inner: &Inner,
    id: FileId,
    st: &mut FileState,
    tmp: &File,
    tmp_path: &Path,
    size: u64,
    crc: u32,
    how: PutCommit,
) -> Result<WriteOutcome, StoreError> {
    let live = st.live(id)?;
    let mut header = live.header.clone();
    header.meta.size = size;
    header.meta.checksum = crc;
    match how {
        PutCommit::Write(key) => {
            header.meta.version += 1;
            header.meta.modified_ms = now_ms();
            if let Some(k) = key {
                let outcome = WriteOutcome {
                    version: header.meta.version,
                    size,
                    checksum: crc,
                    duplicate: false,
                };
                header.record(k, outcome);
            }
        }
        PutCommit::Install(state) => {
            header.meta.version = state.version;
            header.meta.modified_ms = state.modified_ms;
            header.dedup = state
                .dedup
                .into_iter()
                .rev()
                .take(crate::DEDUP_ENTRIES_MAX)
                .rev()
                .map(|(key, outcome)| DedupEntry { key, outcome })
                .collect();
        }
    }
    let outcome = WriteOutcome {
        version: header.meta.version,
        size,
        checksum: crc,
        duplicate: false,
    };
    let seq = live.seq + 1;
    inner
        .write_new(tmp, &fresh_header_image(seq, &header), 0)
        .ctx(|| format!("writing {}", tmp_path.display()))?;
    inner
        .sync_file(tmp)
        .ctx(|| format!("syncing {}", tmp_path.display()))?;
    let path = inner.file_path(id);
    fs::rename(tmp_path, &path).ctx(|| format!("renaming into {}", path.display()))?;
    *live = Live {
        header,
        slot: 0,
        seq,
    };
    // Applied; if the directory sync fails the caller may retry with the same key (dedup).
    inner.sync_files_dir()?;
    Ok(outcome)
}

/// What recovery found in a healthy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Nothing to do.
    Clean,
    /// Uncommitted bytes were cut off (a torn append, an unfinished write rolled back).
    Torn,
    /// A committed in-place write was finished.
    Finished,
}

/// Start-up recovery of one data file. `Ok((live, found))` for a healthy file; `Err(reason)`
/// for a damaged one.
fn recover_file(path: &Path, id: FileId, fsync: bool) -> Result<(Live, Found), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let mut image = vec![0u8; 2 * SLOT_SIZE];
    let mut got = 0usize;
    while got < image.len() {
        match file.read_at(&mut image[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read header: {e}")),
        }
    }
    let a = decode_slot(&image[..got.min(SLOT_SIZE)]);
    let b = decode_slot(&image[SLOT_SIZE.min(got)..got]);
    let (newest, older) = match (a, b) {
        (Ok(sa), Ok(sb)) if sa.seq >= sb.seq => ((0, sa), Some((1, sb))),
        (Ok(sa), Ok(sb)) => ((1, sb), Some((0, sa))),
        (Ok(sa), Err(_)) => ((0, sa), None),
        (Err(_), Ok(sb)) => ((1, sb), None),
        (Err(ra), Err(rb)) => {
            return Err(format!("no valid header slot (A: {ra}; B: {rb})"));
        }
    };
    // A slot with a tail was synced together with the bytes it appended: if they are not
    // all there, that append never finished, and the slot before it is the file.
    let mut rolled_back = None;
    let (
        slot,
        Slot {
            seq, header, redo, ..
        },
    ) = match check_slot(&file, len, &newest.1)? {
        Ok(()) => newest,
        Err(why) => match older {
            Some(older)
                if (newest.1.tail.is_some() || newest.1.redo.is_some())
                    && older.1.seq + 1 == newest.1.seq =>
            {
                warn!(id = %file_name(id), %why, "rolling back an append that did not finish");
                rolled_back = Some((newest.0, newest.1.seq));
                older
            }
            _ => return Err(why),
        },
    };
    if header.meta.id != id {
        return Err(format!("header belongs to file {:016x}", header.meta.id));
    }
    let committed = HEADER_SIZE
        .checked_add(header.meta.size)
        .ok_or_else(|| format!("impossible committed size {}", header.meta.size))?;
    if len < committed {
        return Err(format!(
            "content is {} bytes but {} bytes are committed",
            len.saturating_sub(HEADER_SIZE),
            header.meta.size
        ));
    }
    if let Some(redo) = redo {
        // A committed in-place write that may not have reached its place: finish it.
        warn!(id = %file_name(id), bytes = redo.len, to = redo.to, "finishing an in-place write");
        let clean = 1 - slot;
        inplace::apply_redo(&file, &header, redo, clean, seq + 1, |f| {
            if fsync { f.sync_data() } else { Ok(()) }
        })
        .map_err(|e| format!("cannot finish an in-place write: {e}"))?;
        return Ok((
            Live {
                header,
                slot: clean,
                seq: seq + 1,
            },
            Found::Finished,
        ));
    }
    let torn = if len > committed || rolled_back.is_some() {
        Found::Torn
    } else {
        Found::Clean
    };
    if len > committed {
        warn!(
            id = %file_name(id),
            extra = len - committed,
            "truncating a torn append"
        );
        file.set_len(committed)
            .map_err(|e| format!("cannot truncate a torn append: {e}"))?;
        if fsync {
            file.sync_all()
                .map_err(|e| format!("cannot sync after truncating: {e}"))?;
        }
    }
    if let Some((bad_slot, bad_seq)) = rolled_back {
        // Overwrite the unfinished append's slot with the file as it is, so that no later
        // recovery can take it for a finished one (should its bytes ever be written again).
        let seq = bad_seq + 1;
        file.write_all_at(&encode_slot(seq, &header, None), slot_offset(bad_slot))
            .map_err(|e| format!("cannot rewrite the header: {e}"))?;
        if fsync {
            file.sync_data()
                .map_err(|e| format!("cannot sync the header: {e}"))?;
        }
        return Ok((
            Live {
                header,
                slot: bad_slot,
                seq,
            },
            torn,
        ));
    }
    Ok((Live { header, slot, seq }, torn))
}

/// Whether the content `file` (`len` bytes long) holds what `slot` commits: its size, and
/// its tail's bytes with their checksum. `Err(reason)` if it cannot be read at all.
fn check_slot(file: &File, len: u64, slot: &Slot) -> Result<Result<(), String>, String> {
    let size = slot.header.meta.size;
    if len.saturating_sub(HEADER_SIZE) < size {
        return Ok(Err(format!(
            "content is {} bytes but {size} bytes are committed",
            len.saturating_sub(HEADER_SIZE)
        )));
    }
    let tail = match (slot.tail, slot.redo) {
        (Some(tail), _) => tail,
        // The staged bytes of an in-place write are checked as a tail is.
        (None, Some(redo)) => Tail {
            offset: redo.staged,
            len: redo.len,
            crc: redo.crc,
        },
        (None, None) => return Ok(Ok(())),
    };
    if slot.redo.is_some() && tail.len > WRITE_AT_MAX {
        return Ok(Err(format!("a redo of {} bytes is too long", tail.len)));
    }
    if slot.redo.is_none() && tail.len > TAIL_MAX {
        return Ok(Err(format!("a tail of {} bytes is too long", tail.len)));
    }
    if len.saturating_sub(HEADER_SIZE) < tail.offset.saturating_add(tail.len) {
        return Ok(Err(format!(
            "content is {} bytes but the last write ends at {}",
            len.saturating_sub(HEADER_SIZE),
            tail.offset.saturating_add(tail.len)
        )));
    }
    // tail.len <= TAIL_MAX or WRITE_AT_MAX, so the cast is lossless.
    let mut buf = vec![0u8; tail.len as usize];
    file.read_exact_at(&mut buf, HEADER_SIZE + tail.offset)
        .map_err(|e| format!("cannot read the last append: {e}"))?;
    let crc = crc32c::crc32c(&buf);
    if crc != tail.crc {
        return Ok(Err(format!(
            "the last append ({} bytes at {}) has checksum {crc:08x}, not {:08x}",
            tail.len, tail.offset, tail.crc
        )));
    }
    Ok(Ok(()))
}

/// A streaming append. Owns the file's writer slot; `Send + 'static`, so it can move between
/// `spawn_blocking` calls. Dropping it without [`commit`](AppendTxn::commit) aborts: the bytes
/// written so far are cut off again.
pub struct AppendTxn {
    inner: Arc<Inner>,
    id: FileId,
    state: StateRef,
    file: File,
    /// Committed size when the transaction began (cannot change while it owns the writer slot).
    base: u64,
    written: u64,
    /// Checksum of the committed content plus everything written so far.
    crc: u32,
    /// Checksum of everything written so far.
    tail_crc: u32,
    failed: bool,
    finished: bool,
}

impl fmt::Debug for AppendTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendTxn")
            .field("id", &self.id)
            .field("base", &self.base)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl AppendTxn {
    /// The file being appended to.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Bytes written so far in this transaction.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the next chunk past the committed end (invisible to readers until commit). After an
    /// error the transaction can only be dropped.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(failed_txn(self.id));
        }
        let offset = HEADER_SIZE + self.base + self.written;
        if let Err(e) = self.inner.write_new(&self.file, data, offset) {
            self.failed = true;
            return Err(StoreError::io(
                format!("appending to {}", self.inner.file_path(self.id).display()),
                e,
            ));
        }
        self.written += data.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.tail_crc = crc32c::crc32c_append(self.tail_crc, data);
        Ok(())
    }

    /// Makes everything written durable and visible as one append. With a `key` already in the
    /// dedup table nothing is committed and the saved outcome is returned with `duplicate: true`.
    pub fn commit(mut self, key: Option<DedupKey>) -> Result<WriteOutcome, StoreError> {
        let state = Arc::clone(&self.state);
        let mut st = state.lock();
        // Whatever happens below, the transaction ends here.
        st.writer = false;
        self.finished = true;
        if self.failed {
            truncate_back(&self.file, self.id, self.base);
            return Err(failed_txn(self.id));
        }
        let saved = match st.live(self.id) {
            Ok(live) => key.and_then(|k| live.header.lookup(k)),
            Err(e) => {
                truncate_back(&self.file, self.id, self.base);
                return Err(e);
            }
        };
        if let Some(saved) = saved {
            truncate_back(&self.file, self.id, self.base);
            return Ok(duplicate(saved));
        }
        let added = Added {
            base: self.base,
            len: self.written,
            crc: self.crc,
            tail_crc: self.tail_crc,
        };
        commit_append(&self.inner, self.id, &mut st, &self.file, added, key)
    }
}

impl Drop for AppendTxn {
    fn drop(&mut self) {
        if !self.finished {
            truncate_back(&self.file, self.id, self.base);
            self.state.lock().writer = false;
            debug!(id = %file_name(self.id), "append aborted");
        }
    }
}

/// A streaming whole-file replacement, written into a temp file. Owns the file's writer slot;
/// `Send + 'static`. Dropping it without [`commit`](PutTxn::commit) aborts: the temp file is
/// removed and the file is unchanged.
pub struct PutTxn {
    inner: Arc<Inner>,
    id: FileId,
    state: StateRef,
    tmp_path: PathBuf,
    file: File,
    written: u64,
    crc: u32,
    failed: bool,
    finished: bool,
}

impl fmt::Debug for PutTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutTxn")
            .field("id", &self.id)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl PutTxn {
    /// The file being replaced.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Bytes written so far in this transaction.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the next chunk of the new content. After an error the transaction can only be
    /// dropped.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(failed_txn(self.id));
        }
        let offset = HEADER_SIZE + self.written;
        if let Err(e) = self.inner.write_new(&self.file, data, offset) {
            self.failed = true;
            return Err(StoreError::io(
                format!("writing {}", self.tmp_path.display()),
                e,
            ));
        }
        self.written += data.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, data);
        Ok(())
    }

    /// Atomically replaces the file's content with everything written (durable when it returns).
    /// With a `key` already in the dedup table nothing is committed and the saved outcome is
    /// returned with `duplicate: true`.
    pub fn commit(mut self, key: Option<DedupKey>) -> Result<WriteOutcome, StoreError> {
        let state = Arc::clone(&self.state);
        let mut st = state.lock();
        st.writer = false;
        self.finished = true;
        let result = if self.failed {
            Err(failed_txn(self.id))
        } else {
            match st.live(self.id) {
                Err(e) => Err(e),
                Ok(live) => match key.and_then(|k| live.header.lookup(k)) {
                    Some(saved) => {
                        discard_temp(&self.tmp_path);
                        return Ok(duplicate(saved));
                    }
                    None => commit_put(
                        &self.inner,
                        self.id,
                        &mut st,
                        &self.file,
                        &self.tmp_path,
                        self.written,
                        self.crc,
                        PutCommit::Write(key),
                    ),
                },
            }
        };
        if result.is_err() {
            discard_temp(&self.tmp_path);
        }
        result
    }
}

impl PutTxn {
    /// Atomically replaces the file's content with everything written and sets its
    /// version, modification time and dedup table to `state` (a copy from another replica;
    /// the checksum is computed from the bytes written). Durable when it returns.
    pub fn commit_install(mut self, state: InstallState) -> Result<FileMeta, StoreError> {
        let shared = Arc::clone(&self.state);
        let mut st = shared.lock();
        st.writer = false;
        self.finished = true;
        let result = if self.failed {
            Err(failed_txn(self.id))
        } else {
            commit_put(
                &self.inner,
                self.id,
                &mut st,
                &self.file,
                &self.tmp_path,
                self.written,
                self.crc,
                PutCommit::Install(state),
            )
        };
        match result {
            Ok(_) => Ok(st.live(self.id)?.header.meta.clone()),
            Err(e) => {
                discard_temp(&self.tmp_path);
                Err(e)
            }
        }
    }
}

/// The state a copy of a file gets besides its bytes ([`PutTxn::commit_install`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallState {
    /// The version of the copied file.
    pub version: u64,
    /// Its modification time (Unix milliseconds).
    pub modified_ms: u64,
    /// Its dedup table, oldest first (at most [`DEDUP_ENTRIES_MAX`](crate::DEDUP_ENTRIES_MAX)
    /// entries are kept, the newest).
    pub dedup: Vec<(DedupKey, WriteOutcome)>,
}

/// How a put's header changes at commit.
enum PutCommit {
    /// A client's write: version + 1, the key recorded.
    Write(Option<DedupKey>),
    /// A copy from another replica.
    Install(InstallState),
}

impl Drop for PutTxn {
    fn drop(&mut self) {
        if !self.finished {
            discard_temp(&self.tmp_path);
            self.state.lock().writer = false;
            debug!(id = %file_name(self.id), "put aborted");
        }
    }
}

fn failed_txn(id: FileId) -> StoreError {
    StoreError::io(
        format!("write transaction on {}", file_name(id)),
        std::io::Error::other("an earlier write in this transaction failed"),
    )
}

/// A consistent point-in-time view of one file (see [`Store::snapshot`]). `Send + Sync + 'static`;
/// reads never block writers.
#[derive(Debug)]
pub struct Snapshot {
    meta: FileMeta,
    file: File,
    /// Counts this snapshot among the file's readers (see `FileState::readers`).
    _reader: Arc<()>,
}

impl Snapshot {
    /// The committed metadata at the time the snapshot was taken.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// Reads content bytes at `offset` into `buf`; returns how many (fewer only at the committed
    /// end, 0 at or past it).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let size = self.meta.size;
        if offset >= size {
            return Ok(0);
        }
        let n = usize::try_from(size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        match self.file.read_exact_at(&mut buf[..n], HEADER_SIZE + offset) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(StoreError::Corrupt {
                id: self.meta.id,
                reason: "content ends before the committed size".to_string(),
            }),
            Err(e) => Err(StoreError::io(
                format!("reading file {}", file_name(self.meta.id)),
                e,
            )),
        }
    }

    /// The whole committed content.
    pub fn read_all(&self) -> Result<Vec<u8>, StoreError> {
        let len = usize::try_from(self.meta.size).map_err(|_| StoreError::Corrupt {
            id: self.meta.id,
            reason: "too large to read into memory".to_string(),
        })?;
        let mut buf = vec![0u8; len];
        let n = self.read_at(0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

mod inplace;
mod reaper;
#[cfg(test)]
mod tests;
