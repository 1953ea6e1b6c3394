//! Writes at an offset and truncations ([`Store::write_at`], [`Store::truncate`]).
//!
//! Bytes past the committed size are written as an append is (the tail's checks cover
//! them). Bytes below it are overwritten **in place** through a redo record, so that a
//! crash at any instant leaves the old or the new content, never a mix:
//!
//! 1. the new bytes are staged past the new committed end;
//! 2. the other header slot is written in format 3 (the new metadata plus a redo record:
//!    where the bytes are staged, their length and CRC-32C, where they go); one sync. The
//!    write is now committed: recovery believes the slot only if the staged bytes check
//!    out (otherwise the previous slot is the file, and nothing in place has changed);
//! 3. the staged bytes are copied to their place; sync;
//! 4. the first slot is overwritten with the same metadata without a redo; sync;
//! 5. the staging area is cut off (recovery would cut it too).
//!
//! Recovery of a file whose newest valid slot has a redo repeats steps 3 to 5 (the copy is
//! idempotent). While a [`Snapshot`](crate::Snapshot) of the file is open, bytes below
//! the committed size are never changed in place: the write (or a truncation that cuts
//! bytes off) copies the file into `tmp/`, changes the copy and renames it over the file,
//! as a put does, so the snapshot keeps reading the inode it opened.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use super::{
    Added, FILE_SIZE_MAX, FileState, Inner, Live, PutCommit, Status, Store, WRITE_AT_MAX,
    commit_append, commit_put, discard_temp, file_name, now_ms, slot_offset,
};
use crate::crc;
use crate::error::{IoContext, StoreError};
use crate::header::{HEADER_SIZE, Header, Redo, encode_redo_slot, encode_slot};
use crate::{DedupKey, FileId, WriteOutcome};

// Test hook: the step of an in-place write after which it stops as if the process had
// died there (0: none). See `crash_point`.
#[cfg(test)]
thread_local! {
    pub(super) static CRASH_AFTER: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Stops an in-place write after `step` in tests that ask for it.
fn crash_point(step: u8) -> std::io::Result<()> {
    #[cfg(test)]
    if CRASH_AFTER.get() == step {
        return Err(std::io::Error::other(format!(
            "simulated crash after step {step}"
        )));
    }
    let _ = step;
    Ok(())
}

/// Bytes read at a time when a truncation re-reads the content it keeps.
const READ_CHUNK: usize = 256 * 1024;

impl Store {
    /// Writes `data` at content offset `offset` of file `id`: bytes below the size are
    /// overwritten, the rest extends the file; a write that starts past the end fills the
    /// gap with zeros. Applied whole or not at all (see the module docs of `inplace`),
    /// durable before it returns, version + 1 (also for an empty `data`, which changes no
    /// byte). Dedup and [`StoreError::Busy`] as for [`Store::append`]. At most
    /// [`WRITE_AT_MAX`] bytes ([`StoreError::OutOfRange`] otherwise).
    pub fn write_at(
        &self,
        id: FileId,
        offset: u64,
        data: &[u8],
        key: Option<DedupKey>,
    ) -> Result<WriteOutcome, StoreError> {
        self.write_once(id, key, |inner, st| {
            let live = st.live(id)?;
            let len = data.len() as u64;
            if len > WRITE_AT_MAX {
                return Err(StoreError::OutOfRange(format!(
                    "a write at an offset of {len} bytes; at most {WRITE_AT_MAX} are allowed"
                )));
            }
            let end = offset
                .checked_add(len)
                .filter(|end| *end <= FILE_SIZE_MAX)
                .ok_or_else(|| {
                    StoreError::OutOfRange(format!(
                        "a write of {len} bytes at {offset} would end past the largest file size, \
                     {FILE_SIZE_MAX} bytes"
                    ))
                })?;
            let size = live.header.meta.size;
            let crc = live.header.meta.checksum;
            let file = inner.open_rw(id)?;
            let path = inner.file_path(id);
            // Whatever an aborted write left past the committed end must not show in a gap.
            file.set_len(HEADER_SIZE + size)
                .ctx(|| format!("truncating {}", path.display()))?;
            if len == 0 || offset >= size {
                // An append, possibly after a gap of zeros (a hole in the file).
                let gap = if len == 0 { 0 } else { offset - size };
                if len > 0 {
                    inner
                        .write_new(&file, data, HEADER_SIZE + offset)
                        .ctx(|| format!("writing {}", path.display()))?;
                }
                let tail_crc = crc32c::crc32c_append(crc::zeros(gap), data);
                let added = Added {
                    base: size,
                    len: gap + len,
                    crc: crc::combine(crc, tail_crc, gap + len),
                    tail_crc,
                };
                return commit_append(inner, id, st, &file, added, key);
            }
            // Overwrites `over` bytes in place, appends the rest.
            let over = usize::try_from((size - offset).min(len)).unwrap_or(data.len());
            let mut old = vec![0u8; over];
            file.read_exact_at(&mut old, HEADER_SIZE + offset)
                .ctx(|| format!("reading {}", path.display()))?;
            let after = size - offset - over as u64;
            let new_crc = crc32c::crc32c_append(
                crc::overwrite(crc, &old, &data[..over], after),
                &data[over..],
            );
            let new_size = size.max(end);
            let mut header = live.header.clone();
            let outcome = next_version(&mut header, new_size, new_crc, key);
            if has_readers(st) {
                let change = |tmp: &File| inner.write_new(tmp, data, HEADER_SIZE + offset);
                return copy_and_replace(inner, id, st, size, new_size, change, new_crc, key);
            }
            overwrite_in_place(inner, id, st, &file, header, offset, data)?;
            Ok(outcome)
        })
    }

    /// Sets the size of file `id` to `size`: cuts the end off, or extends the file with
    /// zeros. Applied whole or not at all, durable before it returns, version + 1 (also
    /// when the size does not change). Dedup and [`StoreError::Busy`] as for
    /// [`Store::append`].
    ///
    /// Cost: extending computes the new checksum without reading anything; cutting re-reads
    /// the bytes kept (the checksum of a prefix cannot be derived from the whole file's).
    pub fn truncate(
        &self,
        id: FileId,
        size: u64,
        key: Option<DedupKey>,
    ) -> Result<WriteOutcome, StoreError> {
        self.write_once(id, key, |inner, st| {
            let live = st.live(id)?;
            if size > FILE_SIZE_MAX {
                return Err(StoreError::OutOfRange(format!(
                    "a truncation to {size} bytes: the largest file size is {FILE_SIZE_MAX} bytes"
                )));
            }
            let old_size = live.header.meta.size;
            let crc = live.header.meta.checksum;
            let file = inner.open_rw(id)?;
            let path = inner.file_path(id);
            if size >= old_size {
                // Extending is an append of zeros (a hole in the file).
                let added_len = size - old_size;
                file.set_len(HEADER_SIZE + old_size)
                    .and_then(|()| file.set_len(HEADER_SIZE + size))
                    .ctx(|| format!("extending {}", path.display()))?;
                let tail_crc = crc::zeros(added_len);
                let added = Added {
                    base: old_size,
                    len: added_len,
                    crc: crc::combine(crc, tail_crc, added_len),
                    tail_crc,
                };
                return commit_append(inner, id, st, &file, added, key);
            }
            // Cutting: the checksum of what is kept.
            let mut new_crc = 0u32;
            let mut buf = vec![0u8; READ_CHUNK.min(usize::try_from(size).unwrap_or(READ_CHUNK))];
            let mut at = 0u64;
            while at < size {
                let n = usize::try_from(size - at).map_or(buf.len(), |left| left.min(buf.len()));
                file.read_exact_at(&mut buf[..n], HEADER_SIZE + at)
                    .ctx(|| format!("reading {}", path.display()))?;
                new_crc = crc32c::crc32c_append(new_crc, &buf[..n]);
                at += n as u64;
            }
            if has_readers(st) {
                let change = |_: &File| Ok(());
                return copy_and_replace(inner, id, st, size, size, change, new_crc, key);
            }
            let live = st.live(id)?;
            let mut header = live.header.clone();
            let outcome = next_version(&mut header, size, new_crc, key);
            // The new header first (the content is intact until it is durable), then the cut.
            let slot = 1 - live.slot;
            let seq = live.seq + 1;
            write_header(inner, id, st, &file, &encode_slot(seq, &header, None), slot)?;
            *st.live(id)? = Live { header, slot, seq };
            if let Err(e) = file.set_len(HEADER_SIZE + size) {
                // Committed; recovery cuts the bytes past the size.
                tracing::warn!(id = %file_name(id), error = %e, "cannot cut a truncated file");
            }
            Ok(outcome)
        })
    }
}

/// Whether a snapshot of the file is open (called with the state locked, under which
/// snapshots are taken).
fn has_readers(st: &FileState) -> bool {
    std::sync::Arc::strong_count(&st.readers) > 1
}

/// Sets `header` to the next version with `size` and `crc`, records `key`; the outcome.
fn next_version(header: &mut Header, size: u64, crc: u32, key: Option<DedupKey>) -> WriteOutcome {
    header.meta.size = size;
    header.meta.version += 1;
    header.meta.checksum = crc;
    header.meta.modified_ms = now_ms();
    let outcome = WriteOutcome {
        version: header.meta.version,
        size,
        checksum: crc,
        duplicate: false,
    };
    if let Some(k) = key {
        header.record(k, outcome);
    }
    outcome
}

/// Writes a header slot image and syncs it; on failure the file goes out of service (the
/// slot may or may not be on disk: only recovery can tell).
fn write_header(
    inner: &Inner,
    id: FileId,
    st: &mut FileState,
    file: &File,
    image: &[u8],
    slot: usize,
) -> Result<(), StoreError> {
    let written = file
        .write_all_at(image, slot_offset(slot))
        .and_then(|()| inner.sync_data(file));
    written.map_err(|e| damaged(inner, id, st, "header write", e))
}

/// Takes the file out of service after a failure that only recovery can sort out.
fn damaged(
    inner: &Inner,
    id: FileId,
    st: &mut FileState,
    what: &str,
    e: std::io::Error,
) -> StoreError {
    let reason = format!("{what} failed ({e}); reopen the store to recover");
    tracing::error!(id = %file_name(id), %reason, "file taken out of service");
    st.status = Status::Damaged(reason);
    StoreError::io(format!("{what} of {}", inner.file_path(id).display()), e)
}

/// The in-place write through a redo record (steps 1 to 5 of the module docs). `header`
/// is the new one (size, version, checksum, dedup entry).
fn overwrite_in_place(
    inner: &Inner,
    id: FileId,
    st: &mut FileState,
    file: &File,
    header: Header,
    offset: u64,
    data: &[u8],
) -> Result<(), StoreError> {
    let path = inner.file_path(id);
    let staged = header.meta.size;
    // 1. Stage.
    inner
        .write_new(file, data, HEADER_SIZE + staged)
        .and_then(|()| crash_point(1))
        .ctx(|| format!("staging a write in {}", path.display()))?;
    // 2. Commit the redo.
    let live = st.live(id)?;
    let redo = Redo {
        staged,
        len: data.len() as u64,
        crc: crc32c::crc32c(data),
        to: offset,
    };
    let redo_slot = 1 - live.slot;
    let redo_seq = live.seq + 1;
    let old_slot = live.slot;
    write_header(
        inner,
        id,
        st,
        file,
        &encode_redo_slot(redo_seq, &header, redo),
        redo_slot,
    )?;
    crash_point(2).map_err(|e| damaged(inner, id, st, "an in-place write", e))?;
    *st.live(id)? = Live {
        header: header.clone(),
        slot: redo_slot,
        seq: redo_seq,
    };
    // 3.-5. Apply it.
    apply_redo(file, &header, redo, old_slot, redo_seq + 1, |f| {
        inner.sync_data(f)
    })
    .map_err(|e| damaged(inner, id, st, "an in-place write", e))?;
    *st.live(id)? = Live {
        header,
        slot: old_slot,
        seq: redo_seq + 1,
    };
    Ok(())
}

/// Steps 3 to 5 of an in-place write whose redo slot is durable (also recovery's replay):
/// copies the staged bytes (already read into memory or not) to their place, syncs,
/// commits `header` without the redo into `clean_slot` with sequence `seq`, syncs, and
/// cuts the staging area off.
pub(super) fn apply_redo(
    file: &File,
    header: &Header,
    redo: Redo,
    clean_slot: usize,
    seq: u64,
    sync: impl Fn(&File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let len = usize::try_from(redo.len).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, HEADER_SIZE + redo.staged)?;
    let half = len / 2;
    file.write_all_at(&buf[..half], HEADER_SIZE + redo.to)?;
    crash_point(3)?;
    file.write_all_at(&buf[half..], HEADER_SIZE + redo.to + half as u64)?;
    sync(file)?;
    crash_point(4)?;
    file.write_all_at(&encode_slot(seq, header, None), slot_offset(clean_slot))?;
    sync(file)?;
    crash_point(5)?;
    if let Err(e) = file.set_len(HEADER_SIZE + header.meta.size) {
        tracing::warn!(error = %e, "cannot cut the staging area of an in-place write");
    }
    Ok(())
}

/// A write below the committed size while snapshots are open: the file is copied into
/// `tmp/` (`copy_file_range`, a reflink where the file system has them), `change` is
/// applied to the copy, cut or extended to `new_size`, and the copy renamed over the file
/// as a put. `keep` bytes of content are copied.
#[allow(clippy::too_many_arguments)]
fn copy_and_replace(
    inner: &Inner,
    id: FileId,
    st: &mut FileState,
    keep: u64,
    new_size: u64,
    change: impl FnOnce(&File) -> std::io::Result<()>,
    crc: u32,
    key: Option<DedupKey>,
) -> Result<WriteOutcome, StoreError> {
    let (tmp_path, tmp) = inner.new_temp(id)?;
    let path = inner.file_path(id);
    let result = fs::copy(&path, &tmp_path)
        .and_then(|_| tmp.set_len(HEADER_SIZE + keep))
        .and_then(|()| change(&tmp))
        .and_then(|()| tmp.set_len(HEADER_SIZE + new_size))
        .ctx(|| format!("copying {} for a write", path.display()))
        .and_then(|()| {
            commit_put(
                inner,
                id,
                st,
                &tmp,
                &tmp_path,
                new_size,
                crc,
                PutCommit::Write(key),
            )
        });
    if result.is_err() {
        discard_temp(&tmp_path);
    }
    result
}
