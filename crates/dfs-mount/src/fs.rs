//! The FUSE filesystem: the kernel's requests turned into client calls.
//!
//! Locking: `state` (the inode table, handles, caches) is held only for short, non-blocking
//! updates, never across a call to the cluster. Each open file has its own `FileIo` lock,
//! held across that file's calls to the cluster (so its writes are sent in order); a
//! thread may take `state` while it holds a `FileIo`, never the other way round.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dfs_client::{Client, ClientError, WriteAck};
use dfs_proto::{ErrorCode, NAME_BYTES_MAX, SEGMENT_BYTES_MAX, WRITE_BYTES_MAX};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;

use crate::errno::client_errno;
use crate::{DIR_MARKER, MountOptions};

type Res<T> = Result<T, Errno>;

const ROOT: u64 = 1;
/// Inodes the kernel has forgotten are dropped once the table holds more than this.
const INODES_MAX: usize = 100_000;
/// Files up to this size are renamed through memory; larger ones are streamed.
const COPY_IN_MEMORY_MAX: u64 = 8 << 20;
/// The pause between two attempts of a retried operation.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const BLOCK: u32 = 4096;
/// The path of an inode whose file or directory was removed through the mount (a name
/// never valid in the store): using it answers `ENOENT`.
const GONE: &str = "\0gone";

/// One entry of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

impl Kind {
    fn file_type(self) -> FileType {
        match self {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
        }
    }
}

/// What the mount knows of a file's attributes.
#[derive(Debug, Clone, Copy)]
struct Meta {
    size: u64,
    mtime_ms: u64,
}

struct Node {
    path: String,
    kind: Kind,
    nlookup: u64,
    open: u32,
    meta: Option<(Meta, Instant)>,
    io: Option<Arc<Mutex<FileIo>>>,
}

/// A directory's children, as last listed.
struct Listing {
    at: Instant,
    children: BTreeMap<String, Kind>,
    marker: bool,
}

/// An open file handle.
struct OpenFile {
    /// Opened with `O_APPEND`: its writes are appends.
    append: bool,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next_ino: u64,
    listings: HashMap<String, Listing>,
    handles: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, Vec<(u64, FileType, String)>>,
    next_fh: u64,
}

/// Written bytes not sent yet: a run at an offset, or an append.
enum Dirty {
    At { offset: u64, data: Vec<u8> },
    Append { data: Vec<u8> },
}

impl Dirty {
    fn len(&self) -> usize {
        match self {
            Dirty::At { data, .. } | Dirty::Append { data } => data.len(),
        }
    }
}

/// A block read ahead.
struct ReadBlock {
    offset: u64,
    data: Bytes,
    /// The block ends at the end of the file.
    eof: bool,
    at: Instant,
}

/// An open file's buffers.
#[derive(Default)]
struct FileIo {
    dirty: Option<Dirty>,
    block: Option<ReadBlock>,
    /// A write-back that failed, reported by the next flush or fsync.
    error: Option<Errno>,
    /// Where the last read ended (read-ahead starts only for sequential reads).
    last_end: u64,
}

/// The filesystem served to the kernel.
pub(crate) struct DfsFs {
    client: Client,
    rt: Handle,
    opts: MountOptions,
    uid: u32,
    gid: u32,
    started: SystemTime,
    state: Mutex<State>,
    dirty_total: AtomicUsize,
    block_total: AtomicUsize,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn prefix_of(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn is_retryable(e: &ClientError) -> bool {
    matches!(
        e.code(),
        ErrorCode::Unavailable | ErrorCode::Busy | ErrorCode::Timeout
    )
}

/// A name from the kernel as one segment of a store name.
fn segment(name: &OsStr) -> Res<&str> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.len() > SEGMENT_BYTES_MAX {
        return Err(Errno::from_i32(libc::ENAMETOOLONG));
    }
    Ok(name)
}

/// The store name of `name` in directory `dir`; the marker name is not one a program may use.
fn child_path(dir: &str, name: &OsStr, marker_errno: Errno) -> Res<String> {
    let name = segment(name)?;
    if name == DIR_MARKER {
        return Err(marker_errno);
    }
    let path = join(dir, name);
    if path.len() > NAME_BYTES_MAX {
        return Err(Errno::from_i32(libc::ENAMETOOLONG));
    }
    Ok(path)
}

impl DfsFs {
    pub(crate) fn new(client: Client, rt: Handle, opts: MountOptions) -> Self {
        let mut state = State {
            next_ino: ROOT + 1,
            next_fh: 1,
            ..State::default()
        };
        state.nodes.insert(
            ROOT,
            Node {
                path: String::new(),
                kind: Kind::Dir,
                nlookup: 1,
                open: 0,
                meta: None,
                io: None,
            },
        );
        state.by_path.insert(String::new(), ROOT);
        let (uid, gid) = current_ids();
        Self {
            client,
            rt,
            opts,
            uid,
            gid,
            started: SystemTime::now(),
            state: Mutex::new(state),
            dirty_total: AtomicUsize::new(0),
            block_total: AtomicUsize::new(0),
        }
    }

    // ---- calls to the cluster ----

    /// Runs a client call, retried through failovers until the retry deadline.
    fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Res<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.opts.retry_deadline;
        self.rt.block_on(async {
            loop {
                match f().await {
                    Ok(v) => return Ok(v),
                    Err(e) if is_retryable(&e) && Instant::now() < deadline => {
                        tracing::debug!(what, error = %e, "retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Err(e) => {
                        tracing::debug!(what, error = %e, "failed");
                        return Err(client_errno(&e));
                    }
                }
            }
        })
    }

    /// Runs a client call once (it may not be repeated: an append).
    fn once<T>(&self, what: &str, f: impl Future<Output = Result<T, ClientError>>) -> Res<T> {
        self.rt.block_on(f).map_err(|e| {
            tracing::debug!(what, error = %e, "failed");
            client_errno(&e)
        })
    }

    fn ttl(&self) -> Duration {
        self.opts.attr_ttl
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.opts.attr_ttl
    }

    // ---- the inode table ----

    fn node_path(&self, ino: u64) -> Res<(String, Kind)> {
        let state = self.state.lock();
        let node = state.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        if node.path == GONE {
            return Err(Errno::ENOENT);
        }
        Ok((node.path.clone(), node.kind))
    }

    fn dir_path(&self, ino: u64) -> Res<String> {
        match self.node_path(ino)? {
            (path, Kind::Dir) => Ok(path),
            (_, Kind::File) => Err(Errno::ENOTDIR),
        }
    }

    /// The inode of `path`, made if new; counts a kernel lookup if `lookup`.
    fn intern(state: &mut State, path: &str, kind: Kind, lookup: bool) -> u64 {
        if let Some(&ino) = state.by_path.get(path)
            && let Some(node) = state.nodes.get_mut(&ino)
        {
            if node.kind != kind {
                node.kind = kind;
                node.meta = None;
            }
            node.nlookup += u64::from(lookup);
            return ino;
        }
        if state.nodes.len() >= INODES_MAX {
            Self::evict(state);
        }
        let ino = state.next_ino;
        state.next_ino += 1;
        state.nodes.insert(
            ino,
            Node {
                path: path.to_owned(),
                kind,
                nlookup: u64::from(lookup),
                open: 0,
                meta: None,
                io: None,
            },
        );
        state.by_path.insert(path.to_owned(), ino);
        ino
    }

    /// Drops every inode the kernel does not hold and no handle uses.
    fn evict(state: &mut State) {
        let gone: Vec<u64> = state
            .nodes
            .iter()
            .filter(|(ino, n)| **ino != ROOT && n.nlookup == 0 && n.open == 0)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in gone {
            Self::drop_node(state, ino);
        }
    }

    fn drop_node(state: &mut State, ino: u64) {
        if let Some(node) = state.nodes.remove(&ino)
            && state.by_path.get(&node.path) == Some(&ino)
        {
            state.by_path.remove(&node.path);
        }
    }

    fn set_meta(&self, ino: u64, meta: Meta) {
        if let Some(node) = self.state.lock().nodes.get_mut(&ino) {
            node.meta = Some((meta, Instant::now()));
        }
    }

    /// Records what an acknowledged write left: its size, modified now.
    fn written(&self, ino: u64, ack: &WriteAck) {
        self.set_meta(
            ino,
            Meta {
                size: ack.size,
                mtime_ms: now_ms(),
            },
        );
    }

    // ---- directory listings ----

    /// Lists directory `dir` from the cluster.
    fn fetch_listing(&self, dir: &str) -> Res<Listing> {
        let prefix = prefix_of(dir);
        let entries = self.retry("list", || self.client.list(&prefix))?;
        let mut children = BTreeMap::new();
        let mut marker = false;
        for entry in entries {
            let Some(rest) = entry.name.strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((first, _)) => {
                    children.insert(first.to_owned(), Kind::Dir);
                }
                None if rest == DIR_MARKER => marker = true,
                None => {
                    children.entry(rest.to_owned()).or_insert(Kind::File);
                }
            }
        }
        Ok(Listing {
            at: Instant::now(),
            children,
            marker,
        })
    }

    /// Makes sure the cached listing of `dir` is fresh.
    fn refresh_listing(&self, dir: &str) -> Res<()> {
        {
            let state = self.state.lock();
            if let Some(l) = state.listings.get(dir)
                && self.fresh(l.at)
            {
                return Ok(());
            }
        }
        let listing = self.fetch_listing(dir)?;
        self.state.lock().listings.insert(dir.to_owned(), listing);
        Ok(())
    }

    /// What `name` is in directory `dir`, from a fresh listing.
    fn child_kind(&self, dir: &str, name: &str) -> Res<Option<Kind>> {
        self.refresh_listing(dir)?;
        let state = self.state.lock();
        Ok(state
            .listings
            .get(dir)
            .and_then(|l| l.children.get(name).copied()))
    }

    /// Records in the cached listing of `path`'s directory that it now is `kind` (or gone).
    fn note_child(&self, path: &str, kind: Option<Kind>) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut state = self.state.lock();
        if let Some(l) = state.listings.get_mut(dir) {
            match kind {
                Some(k) => {
                    l.children.insert(name.to_owned(), k);
                }
                None => {
                    l.children.remove(name);
                }
            }
        }
    }

    /// Forgets the cached listings of `dir` and every directory under it.
    fn forget_listings_under(&self, dir: &str) {
        let prefix = prefix_of(dir);
        self.state
            .lock()
            .listings
            .retain(|k, _| k != dir && (prefix.is_empty() || !k.starts_with(&prefix)));
    }

    /// After the last entry of `dir` went away through this mount: keep the directory
    /// with a marker, as a local filesystem would.
    fn keep_dir(&self, dir: &str) {
        if dir.is_empty() {
            return;
        }
        let needs = {
            let state = self.state.lock();
            state
                .listings
                .get(dir)
                .is_some_and(|l| l.children.is_empty() && !l.marker)
        };
        if needs {
            let marker = join(dir, DIR_MARKER);
            match self.retry("create marker", || self.client.create(&marker)) {
                Ok(_) | Err(Errno::EEXIST) => {
                    if let Some(l) = self.state.lock().listings.get_mut(dir) {
                        l.marker = true;
                    }
                }
                Err(e) => tracing::warn!(dir, error = ?e, "cannot keep the empty directory"),
            }
        }
    }

    // ---- attributes ----

    fn dir_attr(&self, ino: u64) -> FileAttr {
        self.attr(ino, Kind::Dir, 0, self.started)
    }

    fn attr(&self, ino: u64, kind: Kind, size: u64, mtime: SystemTime) -> FileAttr {
        let (perm, nlink) = match kind {
            Kind::Dir => (0o755, 2),
            Kind::File => (0o644, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: kind.file_type(),
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    /// A file's attributes: cached or fetched, with its unsent writes counted in.
    fn file_attr(&self, ino: u64, path: &str, refetch: bool) -> Res<FileAttr> {
        // The file's buffers are locked before its cached size is read, and stay locked
        // until the unsent writes are counted in: a write-back finishing in between would
        // otherwise leave us with the size from before it and no unsent bytes to add.
        let io = self.state.lock().nodes.get(&ino).and_then(|n| n.io.clone());
        let io = io.as_ref().map(|io| io.lock());
        let cached = {
            let state = self.state.lock();
            let node = state.nodes.get(&ino).ok_or(Errno::ENOENT)?;
            node.meta.filter(|(_, at)| !refetch && self.fresh(*at))
        };
        let mut meta = match cached {
            Some((m, _)) => m,
            None => {
                let info = self.retry("stat", || self.client.stat(path))?;
                let m = Meta {
                    size: info.size,
                    mtime_ms: info.modified_ms,
                };
                self.set_meta(ino, m);
                m
            }
        };
        if let Some(io) = io {
            match &io.dirty {
                Some(Dirty::At { offset, data }) => {
                    meta.size = meta.size.max(offset + data.len() as u64);
                    meta.mtime_ms = now_ms();
                }
                Some(Dirty::Append { data }) => {
                    meta.size += data.len() as u64;
                    meta.mtime_ms = now_ms();
                }
                None => {}
            }
        }
        let mtime = UNIX_EPOCH + Duration::from_millis(meta.mtime_ms);
        Ok(self.attr(ino, Kind::File, meta.size, mtime))
    }

    fn attr_of(&self, ino: u64) -> Res<FileAttr> {
        match self.node_path(ino)? {
            (_, Kind::Dir) => Ok(self.dir_attr(ino)),
            (path, Kind::File) => self.file_attr(ino, &path, false),
        }
    }

    // ---- write-back ----

    /// Sends `io`'s unsent writes. A failure is also kept for the next flush or fsync.
    fn flush_io(&self, ino: u64, io: &mut FileIo) -> Res<()> {
        let Some(dirty) = io.dirty.take() else {
            return Ok(());
        };
        self.dirty_total.fetch_sub(dirty.len(), Ordering::Relaxed);
        let path = match self.node_path(ino) {
            Ok((path, _)) => path,
            Err(e) => {
                io.error = Some(e);
                return Err(e);
            }
        };
        let result: Res<WriteAck> = match dirty {
            Dirty::At { offset, data } => self.write_run(&path, offset, Bytes::from(data)),
            Dirty::Append { data } => self.once("append", self.client.append(&path, data)),
        };
        match result {
            Ok(ack) => {
                self.written(ino, &ack);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(path, error = ?e, "write-back failed");
                io.error = Some(e);
                Err(e)
            }
        }
    }

    /// Sends a run of bytes at `offset` as writes at an offset of at most
    /// `WRITE_BYTES_MAX` each (the most one may carry; the buffer can pass `write_back`
    /// by the last write added, and `write_back` itself may be set higher). An empty run
    /// is still sent once (it bumps the version, as a write of nothing does).
    fn write_run(&self, path: &str, offset: u64, data: Bytes) -> Res<WriteAck> {
        let mut at = 0usize;
        loop {
            let end = data.len().min(at + WRITE_BYTES_MAX);
            let piece = data.slice(at..end);
            let piece_at = offset + at as u64;
            let ack = self.retry("write_at", || {
                self.client.write_at(path, piece_at, piece.clone())
            })?;
            at = end;
            if at >= data.len() {
                return Ok(ack);
            }
        }
    }

    /// Sends `ino`'s unsent writes (if it is open) and returns any failed write-back.
    fn sync_ino(&self, ino: u64) -> Res<()> {
        let io = self.state.lock().nodes.get(&ino).and_then(|n| n.io.clone());
        if let Some(io) = io {
            let mut io = io.lock();
            let result = self.flush_io(ino, &mut io);
            let kept = io.error.take();
            result?;
            if let Some(e) = kept {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops `ino`'s unsent writes and read-ahead (its file was truncated or deleted).
    fn discard_io(&self, ino: u64) {
        let io = self.state.lock().nodes.get(&ino).and_then(|n| n.io.clone());
        if let Some(io) = io {
            let mut io = io.lock();
            if let Some(d) = io.dirty.take() {
                self.dirty_total.fetch_sub(d.len(), Ordering::Relaxed);
            }
            self.drop_block(&mut io);
        }
    }

    fn drop_block(&self, io: &mut FileIo) {
        if let Some(b) = io.block.take() {
            self.block_total.fetch_sub(b.data.len(), Ordering::Relaxed);
        }
    }

    fn io_of(&self, ino: u64) -> Res<Arc<Mutex<FileIo>>> {
        self.state
            .lock()
            .nodes
            .get(&ino)
            .and_then(|n| n.io.clone())
            .ok_or(Errno::EBADF)
    }

    /// Registers an open handle of file `ino`.
    fn open_handle(&self, ino: u64, append: bool) -> Res<u64> {
        let mut state = self.state.lock();
        let node = state.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        node.open += 1;
        if node.io.is_none() {
            node.io = Some(Arc::new(Mutex::new(FileIo::default())));
        }
        let fh = state.next_fh;
        state.next_fh += 1;
        state.handles.insert(fh, OpenFile { append });
        Ok(fh)
    }

    /// Truncates the file at `path` (inode `ino`) to `size`.
    fn truncate(&self, ino: u64, path: &str, size: u64) -> Res<()> {
        let io = self.state.lock().nodes.get(&ino).and_then(|n| n.io.clone());
        let _guard = match &io {
            Some(io) => {
                let mut guard = io.lock();
                self.flush_io(ino, &mut guard)?;
                self.drop_block(&mut guard);
                Some(guard)
            }
            None => None,
        };
        let ack = self.retry("truncate", || self.client.truncate(path, size))?;
        self.written(ino, &ack);
        Ok(())
    }

    // ---- copies, for rename ----

    /// Copies file `src` to `dst` (replacing it atomically).
    fn copy_file(&self, src: &str, dst: &str) -> Res<()> {
        self.retry("copy", || async {
            let info = self.client.stat(src).await?;
            if info.size <= COPY_IN_MEMORY_MAX {
                let data = self.client.read(src, 0, None).await?;
                self.client.put(dst, data).await?;
                return Ok(());
            }
            let (mut tx, rx) = tokio::io::duplex(1 << 20);
            let reader = async {
                let mut stream = self.client.read_stream(src, 0, None).await?;
                while let Some(chunk) = stream.next_chunk().await {
                    tx.write_all(&chunk?).await?;
                }
                tx.shutdown().await?;
                drop(tx);
                Ok::<(), ClientError>(())
            };
            let (read, put) = tokio::join!(reader, self.client.put_stream(dst, rx));
            read?;
            put?;
            Ok(())
        })
    }

    /// Deletes `path`, which may be gone already.
    fn delete_quietly(&self, path: &str) -> Res<()> {
        match self.retry("delete", || self.client.delete(path)) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Points every inode at or under `src` to the same place under `dst`.
    fn move_nodes(&self, src: &str, dst: &str) {
        let mut state = self.state.lock();
        let src_prefix = format!("{src}/");
        // The target's old inodes lose their names.
        let dst_prefix = format!("{dst}/");
        let old: Vec<String> = state
            .by_path
            .keys()
            .filter(|p| *p == dst || p.starts_with(&dst_prefix))
            .cloned()
            .collect();
        for p in old {
            state.by_path.remove(&p);
        }
        let moving: Vec<(String, u64)> = state
            .by_path
            .iter()
            .filter(|(p, _)| *p == src || p.starts_with(&src_prefix))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (path, ino) in moving {
            state.by_path.remove(&path);
            let new = format!("{dst}{}", &path[src.len()..]);
            if let Some(node) = state.nodes.get_mut(&ino) {
                node.path = new.clone();
            }
            state.by_path.insert(new, ino);
        }
    }

    fn rename_inner(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let pdir = self.dir_path(parent)?;
        let ndir = self.dir_path(newparent)?;
        let src = child_path(&pdir, name, Errno::ENOENT)?;
        let dst = child_path(&ndir, newname, Errno::EPERM)?;
        let src_name = src.rsplit('/').next().unwrap_or(&src).to_owned();
        let dst_name = dst.rsplit('/').next().unwrap_or(&dst).to_owned();
        let src_kind = self.child_kind(&pdir, &src_name)?.ok_or(Errno::ENOENT)?;
        let dst_kind = self.child_kind(&ndir, &dst_name)?;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && dst_kind.is_some() {
            return Err(Errno::EEXIST);
        }
        if src == dst {
            return Ok(());
        }
        match src_kind {
            Kind::File => {
                if dst_kind == Some(Kind::Dir) {
                    return Err(Errno::EISDIR);
                }
                // Unsent writes go first, so the copy has them.
                let src_ino = self.state.lock().by_path.get(&src).copied();
                if let Some(ino) = src_ino {
                    self.sync_ino(ino)?;
                }
                let dst_ino = self.state.lock().by_path.get(&dst).copied();
                if let Some(ino) = dst_ino {
                    self.discard_io(ino);
                }
                self.copy_file(&src, &dst)?;
                self.delete_quietly(&src)?;
            }
            Kind::Dir => {
                if dst.starts_with(&format!("{src}/")) {
                    return Err(Errno::EINVAL);
                }
                match dst_kind {
                    Some(Kind::File) => return Err(Errno::ENOTDIR),
                    Some(Kind::Dir) => {
                        let prefix = format!("{dst}/");
                        let entries = self.retry("list", || self.client.list(&prefix))?;
                        if entries.iter().any(|e| e.name != join(&dst, DIR_MARKER)) {
                            return Err(Errno::ENOTEMPTY);
                        }
                    }
                    None => {}
                }
                // Every open file under the directory sends its writes first.
                let src_prefix = format!("{src}/");
                let open: Vec<u64> = {
                    let state = self.state.lock();
                    state
                        .nodes
                        .iter()
                        .filter(|(_, n)| n.io.is_some() && n.path.starts_with(&src_prefix))
                        .map(|(i, _)| *i)
                        .collect()
                };
                for ino in open {
                    self.sync_ino(ino)?;
                }
                let entries = self.retry("list", || self.client.list(&src_prefix))?;
                for entry in &entries {
                    let to = format!("{dst}/{}", &entry.name[src_prefix.len()..]);
                    self.copy_file(&entry.name, &to)?;
                    self.delete_quietly(&entry.name)?;
                }
                self.forget_listings_under(&src);
                self.forget_listings_under(&dst);
            }
        }
        self.move_nodes(&src, &dst);
        self.note_child(&src, None);
        self.note_child(&dst, Some(src_kind));
        if src_kind == Kind::Dir
            && let Some(l) = self.state.lock().listings.get_mut(&ndir)
        {
            l.at = Instant::now() - self.opts.attr_ttl;
        }
        self.keep_dir(&pdir);
        Ok(())
    }

    // ---- reads ----

    fn read_inner(&self, ino: u64, offset: u64, size: u32) -> Res<Bytes> {
        let io = self.io_of(ino)?;
        let mut io = io.lock();
        self.flush_io(ino, &mut io)?;
        let size = u64::from(size);
        if let Some(b) = &io.block {
            let end = b.offset + b.data.len() as u64;
            if self.fresh(b.at) && offset >= b.offset && (offset + size <= end || b.eof) {
                let from = (offset - b.offset).min(b.data.len() as u64) as usize;
                let to = (offset + size - b.offset).min(b.data.len() as u64) as usize;
                let out = b.data.slice(from..to);
                io.last_end = offset + out.len() as u64;
                return Ok(out);
            }
        }
        self.drop_block(&mut io);
        let ra = self.opts.read_ahead as u64;
        let sequential = offset == 0 || offset == io.last_end;
        let want = if sequential
            && ra > size
            && self.block_total.load(Ordering::Relaxed) + self.opts.read_ahead
                <= self.opts.read_ahead_total
        {
            ra
        } else {
            size
        };
        let (path, _) = self.node_path(ino)?;
        let data = self.retry("read", || self.client.read(&path, offset, Some(want)))?;
        let out = data.slice(..data.len().min(size as usize));
        io.last_end = offset + out.len() as u64;
        if want > size {
            self.block_total.fetch_add(data.len(), Ordering::Relaxed);
            io.block = Some(ReadBlock {
                offset,
                eof: (data.len() as u64) < want,
                data,
                at: Instant::now(),
            });
        }
        Ok(out)
    }

    // ---- writes ----

    fn write_inner(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Res<()> {
        let append = {
            let state = self.state.lock();
            state.handles.get(&fh).ok_or(Errno::EBADF)?.append
        };
        let io = self.io_of(ino)?;
        let mut io = io.lock();
        self.drop_block(&mut io);
        let before = io.dirty.as_ref().map_or(0, Dirty::len);
        // A buffer of just these bytes.
        let fresh = || {
            if append {
                Dirty::Append {
                    data: data.to_vec(),
                }
            } else {
                Dirty::At {
                    offset,
                    data: data.to_vec(),
                }
            }
        };
        let fits = match &mut io.dirty {
            Some(Dirty::Append { data: buf }) if append => {
                buf.extend_from_slice(data);
                true
            }
            Some(Dirty::At {
                offset: at,
                data: buf,
            }) if !append && offset >= *at && offset <= *at + buf.len() as u64 => {
                let from = (offset - *at) as usize;
                let to = from + data.len();
                if buf.len() < to {
                    buf.resize(to, 0);
                }
                buf[from..to].copy_from_slice(data);
                true
            }
            None => {
                io.dirty = Some(fresh());
                true
            }
            Some(_) => false,
        };
        if !fits {
            self.flush_io(ino, &mut io)?;
            io.dirty = Some(fresh());
        }
        // What the buffer grew by (an overwrite inside it adds nothing); a flush above
        // already took the old bytes off the total.
        let mine = io.dirty.as_ref().map_or(0, Dirty::len);
        let grown = if fits { mine - before } else { mine };
        let total = self.dirty_total.fetch_add(grown, Ordering::Relaxed) + grown;
        if mine >= self.opts.write_back.max(1) || total > self.opts.write_back_total {
            self.flush_io(ino, &mut io)?;
        }
        Ok(())
    }

    fn create_inner(&self, parent: u64, name: &OsStr, flags: i32) -> Res<(u64, FileAttr)> {
        let dir = self.dir_path(parent)?;
        let path = child_path(&dir, name, Errno::EPERM)?;
        let seg = path.rsplit('/').next().unwrap_or(&path).to_owned();
        if self.child_kind(&dir, &seg)? == Some(Kind::Dir) {
            return Err(Errno::EISDIR);
        }
        let made = match self.retry("create", || self.client.create(&path)) {
            Ok(info) => Some(info),
            Err(Errno::EEXIST) if flags & libc::O_EXCL == 0 => None,
            Err(e) => return Err(e),
        };
        self.note_child(&path, Some(Kind::File));
        let ino = Self::intern(&mut self.state.lock(), &path, Kind::File, true);
        let existed = made.is_none();
        match made {
            Some(info) => self.set_meta(
                ino,
                Meta {
                    size: info.size,
                    mtime_ms: info.modified_ms,
                },
            ),
            None if flags & libc::O_TRUNC != 0 => {
                self.discard_io(ino);
                self.truncate(ino, &path, 0)?;
            }
            None => {}
        }
        let attr = self.file_attr(ino, &path, existed)?;
        Ok((ino, attr))
    }
}

fn current_ids() -> (u32, u32) {
    // The mount's files belong to whoever runs it.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

fn gen0() -> Generation {
    Generation(0)
}

impl Filesystem for DfsFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        Ok(())
    }

    fn destroy(&mut self) {
        // Unmounted with files still open: send what they buffered.
        let inos: Vec<u64> = {
            let state = self.state.lock();
            state
                .nodes
                .iter()
                .filter(|(_, n)| n.io.is_some())
                .map(|(i, _)| *i)
                .collect()
        };
        for ino in inos {
            if let Err(e) = self.sync_ino(ino) {
                tracing::warn!(ino, error = ?e, "write-back at unmount failed");
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let dir = self.dir_path(parent.0)?;
            let path = child_path(&dir, name, Errno::ENOENT)?;
            let seg = path.rsplit('/').next().unwrap_or(&path).to_owned();
            let known = self.state.lock().by_path.get(&path).copied();
            // A file open here is known even before its listing says so.
            if let Some(ino) = known {
                let open = self
                    .state
                    .lock()
                    .nodes
                    .get(&ino)
                    .is_some_and(|n| n.io.is_some() && n.kind == Kind::File);
                if open {
                    self.state
                        .lock()
                        .nodes
                        .entry(ino)
                        .and_modify(|n| n.nlookup += 1);
                    return self.file_attr(ino, &path, false);
                }
            }
            match self.child_kind(&dir, &seg)? {
                None => Err(Errno::ENOENT),
                Some(Kind::Dir) => {
                    let ino = Self::intern(&mut self.state.lock(), &path, Kind::Dir, true);
                    Ok(self.dir_attr(ino))
                }
                Some(Kind::File) => {
                    let ino = Self::intern(&mut self.state.lock(), &path, Kind::File, false);
                    match self.file_attr(ino, &path, false) {
                        Ok(attr) => {
                            if let Some(n) = self.state.lock().nodes.get_mut(&ino) {
                                n.nlookup += 1;
                            }
                            Ok(attr)
                        }
                        Err(e) => {
                            if e == Errno::ENOENT {
                                self.note_child(&path, None);
                            }
                            Err(e)
                        }
                    }
                }
            }
        })();
        match result {
            Ok(attr) => reply.entry(&self.ttl(), &attr, gen0()),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut state = self.state.lock();
        let gone = match state.nodes.get_mut(&ino.0) {
            Some(node) if ino.0 != ROOT => {
                node.nlookup = node.nlookup.saturating_sub(nlookup);
                node.nlookup == 0 && node.open == 0
            }
            _ => false,
        };
        if gone {
            Self::drop_node(&mut state, ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Ok(attr) => reply.attr(&self.ttl(), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            let (path, kind) = self.node_path(ino.0)?;
            if let Some(size) = size {
                if kind == Kind::Dir {
                    return Err(Errno::EISDIR);
                }
                self.truncate(ino.0, &path, size)?;
            }
            // Modes, owners and times are accepted and not kept (see the crate docs).
            self.attr_of(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&self.ttl(), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        match self.create_inner(parent.0, name, libc::O_EXCL) {
            Ok((_, attr)) => reply.entry(&self.ttl(), &attr, gen0()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let dir = self.dir_path(parent.0)?;
            let path = child_path(&dir, name, Errno::EPERM)?;
            let seg = path.rsplit('/').next().unwrap_or(&path).to_owned();
            if self.child_kind(&dir, &seg)?.is_some() {
                return Err(Errno::EEXIST);
            }
            let marker = join(&path, DIR_MARKER);
            self.retry("mkdir", || self.client.create(&marker))?;
            self.note_child(&path, Some(Kind::Dir));
            self.state.lock().listings.insert(
                path.clone(),
                Listing {
                    at: Instant::now(),
                    children: BTreeMap::new(),
                    marker: true,
                },
            );
            let ino = Self::intern(&mut self.state.lock(), &path, Kind::Dir, true);
            Ok(self.dir_attr(ino))
        })();
        match result {
            Ok(attr) => reply.entry(&self.ttl(), &attr, gen0()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let dir = self.dir_path(parent.0)?;
            let path = child_path(&dir, name, Errno::ENOENT)?;
            let seg = path.rsplit('/').next().unwrap_or(&path).to_owned();
            if self.child_kind(&dir, &seg)? == Some(Kind::Dir) {
                return Err(Errno::EISDIR);
            }
            let ino = self.state.lock().by_path.get(&path).copied();
            let deleted = self.retry("delete", || self.client.delete(&path));
            if let Err(e) = deleted
                && e != Errno::ENOENT
            {
                return Err(e);
            }
            self.note_child(&path, None);
            if let Some(ino) = ino {
                // Its unsent writes have nowhere to go.
                self.discard_io(ino);
                let mut state = self.state.lock();
                if state.by_path.get(&path) == Some(&ino) {
                    state.by_path.remove(&path);
                }
                if let Some(n) = state.nodes.get_mut(&ino) {
                    n.meta = None;
                    n.path = GONE.to_owned();
                }
            }
            deleted?;
            self.keep_dir(&dir);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let dir = self.dir_path(parent.0)?;
            let path = child_path(&dir, name, Errno::ENOENT)?;
            let prefix = format!("{path}/");
            let marker = join(&path, DIR_MARKER);
            let entries = self.retry("list", || self.client.list(&prefix))?;
            if entries.iter().any(|e| e.name != marker) {
                return Err(Errno::ENOTEMPTY);
            }
            if entries.is_empty() {
                let seg = path.rsplit('/').next().unwrap_or(&path).to_owned();
                if self.child_kind(&dir, &seg)? == Some(Kind::File) {
                    return Err(Errno::ENOTDIR);
                }
                // Already gone (its last file was deleted elsewhere): that is what rmdir
                // wants.
            } else {
                self.delete_quietly(&marker)?;
            }
            self.note_child(&path, None);
            let mut state = self.state.lock();
            state.listings.remove(&path);
            if let Some(ino) = state.by_path.remove(&path)
                && let Some(n) = state.nodes.get_mut(&ino)
            {
                n.path = GONE.to_owned();
            }
            drop(state);
            self.keep_dir(&dir);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.rename_inner(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| {
            let (path, kind) = self.node_path(ino.0)?;
            if kind == Kind::Dir {
                return Err(Errno::EISDIR);
            }
            if flags.0 & libc::O_TRUNC != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                self.discard_io(ino.0);
                self.truncate(ino.0, &path, 0)?;
            } else {
                // Close-to-open: an open sees what others wrote before.
                self.file_attr(ino.0, &path, true)?;
            }
            let fh = self.open_handle(ino.0, flags.0 & libc::O_APPEND != 0)?;
            if let Ok(io) = self.io_of(ino.0) {
                self.drop_block(&mut io.lock());
            }
            Ok(fh)
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_inner(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_inner(ino.0, fh.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.sync_ino(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.sync_ino(ino.0);
        if let Err(e) = result {
            tracing::warn!(ino = ino.0, error = ?e, "write-back at release failed");
        }
        let mut state = self.state.lock();
        state.handles.remove(&fh.0);
        let mut gone = false;
        let mut io = None;
        if let Some(node) = state.nodes.get_mut(&ino.0) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 {
                io = node.io.take();
                gone = node.nlookup == 0;
            }
        }
        if gone {
            Self::drop_node(&mut state, ino.0);
        }
        drop(state);
        if let Some(io) = io {
            self.drop_block(&mut io.lock());
        }
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.sync_ino(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = (|| {
            let dir = self.dir_path(ino.0)?;
            self.refresh_listing(&dir)?;
            let mut state = self.state.lock();
            let parent = if ino.0 == ROOT {
                ROOT
            } else {
                state.by_path.get(parent_of(&dir)).copied().unwrap_or(ROOT)
            };
            let children: Vec<(String, Kind)> = state
                .listings
                .get(&dir)
                .map(|l| l.children.iter().map(|(n, k)| (n.clone(), *k)).collect())
                .unwrap_or_default();
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".to_owned()),
                (parent, FileType::Directory, "..".to_owned()),
            ];
            for (name, kind) in children {
                let child = Self::intern(&mut state, &join(&dir, &name), kind, false);
                entries.push((child, kind.file_type(), name));
            }
            let fh = state.next_fh;
            state.next_fh += 1;
            state.dirs.insert(fh, entries);
            Ok(fh)
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state.lock();
        let Some(entries) = state.dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are acknowledged by the cluster when they return.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The cluster reports no capacity: say 1 PiB, all free, and plenty of inodes.
        let blocks = (1u64 << 50) / u64::from(BLOCK);
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 32,
            1 << 32,
            BLOCK,
            SEGMENT_BYTES_MAX as u32,
            BLOCK,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let (ino, attr) = self.create_inner(parent.0, name, flags)?;
            let fh = self.open_handle(ino, flags & libc::O_APPEND != 0)?;
            Ok((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &self.ttl(),
                &attr,
                gen0(),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}
