//! # dfs-store: the local file store of a dfs server, and its per-file lock manager
//!
//! dfs keeps every file on R servers. On each server this crate stores the file contents, keyed
//! by a `u64` [`FileId`] handed out by the cluster map, never by the user's file name (names are
//! only recorded in the header and never become OS paths). Files are created, appended to,
//! replaced whole (`put`), written at an offset ([`Store::write_at`]), truncated
//! ([`Store::truncate`]), read and deleted. Every acknowledged write is durable, every file
//! carries a CRC-32C of its content, and a per-file dedup table makes retried writes exactly-once.
//! [`Store`] is usable standalone; its API is synchronous (blocking I/O), so async callers such
//! as the node server use it from `tokio::task::spawn_blocking`.
//!
//! ## On-disk layout
//!
//! ```text
//! <dir>/LOCK                 held with File::try_lock while a Store is open (StoreError::Locked)
//! <dir>/files/<id>           one data file per file id, <id> = 16 lowercase hex digits
//! <dir>/tmp/                 temp files of creates and puts in progress, deleted files
//!                            waiting for the reaper (wiped at open)
//! ```
//!
//! A data file is a header of two 4 KiB slots (A at offset 0, B at offset 4096) followed by the
//! content at offset 8192. Each slot is a complete copy of the file's metadata ([`FileMeta`]) and
//! dedup table; header writes alternate between the slots and the valid slot with the highest
//! sequence number wins, so a torn header write always leaves the previous header intact.
//!
//! ## Header byte layout (format version 2, integers little-endian; version 1 still loads)
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"DFSFILE\0"
//!      8     4  header format version (u32) = 2
//!     12     8  slot sequence number (u64), +1 with every header write
//!     20     8  tail offset (u64): where the append this slot commits begins in the content
//!     28     8  tail length (u64); 0: no tail (the content was synced before this slot)
//!     36     4  tail CRC-32C (u32) of those bytes
//!     40     4  payload length N (u32), N <= 4048
//!     44     N  payload: postcard( Header { meta: FileMeta, dedup: Vec<(DedupKey, WriteOutcome)> } )
//!   44+N   ...  zero padding
//!   4092     4  CRC-32C (u32) of slot bytes 0..4092
//! ```
//!
//! Format version 1 has no tail fields: payload length at 20, payload at 24. Format version 3
//! (written only while an in-place write is under way) carries a **redo** record in the tail
//! fields plus a destination (u64) at 40; its payload length is at 48 and the payload at 52
//! (see below).
//!
//! Names are at most [`NAME_MAX`] (1024) bytes and the dedup table holds at most
//! [`DEDUP_ENTRIES_MAX`] (64) entries, so the worst-case payload (about 4020 bytes) fits; encoding
//! asserts it and a unit test checks the worst case.
//!
//! ## Write paths and their sync order
//!
//! "sync" below is, by default, the **group commit** ([`StoreConfig::group_commit`]): the caller
//! waits for one `syncfs(2)` of the store's file system that began after its writes; one round
//! covers every commit waiting when it starts. Without it, "sync" is the file's own `fsync` (or
//! the directory's).
//!
//! - **create**: write the header (slot A, sequence 1) into `tmp/<id>.<n>.tmp`, sync, `rename`
//!   it to `files/<id>`, sync (the `files/` directory). [`StoreError::AlreadyExists`] if the id
//!   exists.
//! - **append** of at most 1 MiB: write the bytes at content offset `size` (past the committed
//!   length), then the *other* header slot (new size, version, checksum, dedup entry, the next
//!   sequence) recording the bytes as its **tail** (offset, length, CRC-32C), then one sync. Only
//!   then is the append acknowledged. Recovery believes the slot only if the tail's bytes are
//!   there with that checksum: otherwise the sync never completed, and the other slot is the
//!   file.
//! - **larger append**: the bytes, `fdatasync`, then the other header slot without a tail, sync.
//!   A crash before the header leaves uncommitted bytes past the committed length (a torn
//!   append), cut off at recovery.
//! - **put**: write header and new content into a temp file in `tmp/`, sync, `rename` it over
//!   `files/<id>`, sync the directory. Readers see the old or the new file, never a mix. The
//!   dedup table is carried over.
//! - **delete**: `rename` `files/<id>` into `tmp/` and sync the directory; a reaper thread
//!   unlinks it there (freeing a file's blocks can take milliseconds). A write that finds the
//!   disk full waits for the reaper to catch up and tries once more, so the space a delete
//!   freed is there for the writes after it.
//! - **write at or past the end, truncate up**: an append (of a gap of zeros, left as a hole,
//!   then the bytes), with the same order.
//! - **write below the end** (at most [`WRITE_AT_MAX`] bytes): the bytes are staged past the new
//!   committed end, the *other* slot is written in format 3 with the new metadata and a redo
//!   record (staged offset, length, CRC-32C, destination), one sync: committed (recovery
//!   believes the slot only if the staged bytes check out). Then the bytes are copied in place,
//!   sync; the first slot is rewritten with the same metadata and no redo, sync; the staging
//!   area is cut. Recovery finishes a committed redo (the copy is idempotent). While a
//!   [`Snapshot`] of the file is open, the file is instead copied into `tmp/`, changed there
//!   and renamed over, as a put.
//! - **truncate down**: the other slot with the smaller size, sync, then the content is cut
//!   (recovery cuts it if the crash came first); with a snapshot open, a copy and a rename.
//!
//! With [`StoreConfig::fsync`] `false` (not the default) the sync calls are skipped: a documented
//! trade-off for tests and throw-away data; a machine crash may then lose acknowledged writes.
//!
//! Streaming variants ([`Store::begin_append`], [`Store::begin_put`]) write large bodies in
//! chunks without holding the file's state mutex; the transaction owns the file's single writer
//! slot ([`StoreError::Busy`] for other writers and deletes meanwhile), and dropping it without
//! commit aborts (an append is truncated back, a put's temp file removed).
//!
//! ## Checksums, versions, dedup
//!
//! The checksum is the CRC-32C of the whole content, extended incrementally on append,
//! recomputed on put, updated by CRC combination on a write at an offset (only the overwritten
//! bytes are read: `crc(new) = crc(old) ^ shift(crc(old segment) ^ crc(new segment), bytes
//! after it)`) and recomputed from the kept bytes on a truncation down; [`Store::verify`] re-reads the content and compares. The version is 0 at
//! create and +1 for every applied append, put, write at an offset or truncation. A write may carry a [`DedupKey`]; the header
//! stores, atomically with the write, the [`WriteOutcome`] of at most [`DEDUP_ENTRIES_MAX`] keyed
//! writes. A write whose key is in the table is not applied again: it returns the saved outcome
//! with `duplicate: true`. When the table is full, the client with the most entries (the least
//! recently written of those tied) gives up its lowest-`seq` entry, and its **floor** rises to
//! cover it: the flag `duplicate: true` on its lowest remaining entry, stored in the same slot
//! format. [`Store::dedup_lookup`] answers a key at or below its client's floor and not in the
//! table with [`StoreError::OutcomeForgotten`] (it may have been applied), never as new. Only
//! when every entry is a different client's is a client dropped whole (the least recently
//! written).
//!
//! ## Recovery (in [`Store::open`])
//!
//! 1. Everything in `tmp/` is removed (partial creates and puts, which were never visible, and
//!    deleted files the reaper had not unlinked).
//! 2. For each `files/<id>`, the valid slot with the highest sequence is chosen, unless it has a
//!    tail (or a redo's staged bytes) whose bytes are missing or differ (a write whose sync never
//!    completed): then the other slot, and the unfinished one is overwritten with it. A chosen
//!    slot with a redo has its in-place write finished ([`RecoveryReport::writes_finished`]).
//!    - content longer than the committed size: a torn append; truncated to the committed size.
//!    - content shorter than committed by a slot without a tail, no valid slot, or a header
//!      naming another id: the file
//!      is damaged. It stays on disk but out of service: reported in [`RecoveryReport::damaged`],
//!      every access returns [`StoreError::Corrupt`], [`Store::files`] omits it, and
//!      [`Store::delete`] removes it (so it can be restored from another replica).
//!
//! ## Snapshot reads
//!
//! [`Store::snapshot`] takes, under the file's state mutex, an open handle and the committed
//! metadata. While a snapshot is open, content below the committed size is never modified in
//! place: appends only write past it, a put renames a new inode over the name, a delete moves the
//! name away, and a write at an offset or truncation down copies the file and renames the copy
//! over it (the store counts each file's open snapshots). So a snapshot keeps reading exactly the
//! bytes that were committed when it was taken, without blocking writers.
//!
//! ## Lock manager
//!
//! [`LockManager`] gives per-key reader/writer locks for the layer above the store (the seed's
//! two global locks, generalised per file): reads of one key share, a write or delete excludes,
//! different keys never wait on each other, and writers are not starved (each key's lock is a
//! fair, FIFO `tokio::sync::RwLock`; readers arriving after a queued writer wait behind it).
//! Guards are owned (`Send + 'static`) and may be held across `.await`. A key's entry lives only
//! while a guard or a waiter uses it; waiting futures are cancel-safe.
//!
//! ## Dependencies
//!
//! - `crc32c`: hardware-accelerated CRC-32C (SSE 4.2 / ARMv8) that can be extended incrementally
//!   (`crc32c_append`), so an append costs only the new bytes.
//! - `parking_lot`: small, fast mutexes for the file map and per-file state (never held across
//!   `.await`).
//! - `postcard`: compact, stable serde encoding of the header payload (varints keep the worst case
//!   within one 4 KiB slot).
//! - `serde`, `thiserror`, `tracing`: derive the header encoding, the error type, and logs.
//! - `tokio` (`sync`): the fair `RwLock` under the lock manager.

mod crc;
mod error;
mod group;
mod header;
mod lock;
mod store;

pub use error::StoreError;
pub use lock::{LockManager, ReadGuard, WriteGuard};
pub use store::{
    AppendTxn, FILE_SIZE_MAX, InstallState, PutTxn, Snapshot, Store, StoreConfig, WRITE_AT_MAX,
};

/// Identifies a file in the store (assigned by the cluster map).
pub type FileId = u64;

/// Longest file name, in bytes.
pub const NAME_MAX: usize = 1024;

/// How many keyed writes per file the dedup table remembers.
pub const DEDUP_ENTRIES_MAX: usize = 64;

/// The committed metadata of a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMeta {
    /// The file id.
    pub id: FileId,
    /// The user's name for the file (recorded only; never used as a path).
    pub name: String,
    /// Committed content length in bytes.
    pub size: u64,
    /// 0 at create, +1 for every applied append, put, write at an offset or truncation.
    pub version: u64,
    /// CRC-32C of the whole committed content.
    pub checksum: u32,
    /// Unix time in milliseconds of the create or last write.
    pub modified_ms: u64,
}

/// Identifies one logical write of one client, for exactly-once retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DedupKey {
    /// The writing client.
    pub client_id: u64,
    /// The client's sequence number for this write.
    pub seq: u64,
}

/// What a write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteOutcome {
    /// The file version after the write.
    pub version: u64,
    /// The content length after the write.
    pub size: u64,
    /// The content checksum after the write.
    pub checksum: u32,
    /// `true` if the write was a retry of an already applied one and was not applied again.
    pub duplicate: bool,
}

/// What [`Store::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Healthy files now in service.
    pub files: usize,
    /// Leftover temp files removed from `tmp/`.
    pub temp_files_removed: usize,
    /// Files whose uncommitted tail (a torn append) was cut off.
    pub torn_appends_truncated: usize,
    /// Files whose committed in-place write (a [`Store::write_at`] below the size) was
    /// finished from its redo record.
    pub writes_finished: usize,
    /// Files kept out of service, with the reason, sorted by id.
    pub damaged: Vec<(FileId, String)>,
}
