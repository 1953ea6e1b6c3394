//! A FUSE mount of a dfs cluster: the cluster's files appear as a directory tree, so any
//! program (`cp -r`, `tar`, `git`, `rsync`, an editor) can use them.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Runtime::new()?;
//! let client = rt.block_on(dfs_client::Client::connect(["127.0.0.1:6000"]))?;
//! let mount = dfs_mount::mount(
//!     client,
//!     rt.handle().clone(),
//!     "/mnt/dfs".as_ref(),
//!     dfs_mount::MountOptions::default(),
//! )?;
//! std::fs::write("/mnt/dfs/notes/today.txt", b"hello")?;
//! mount.unmount()?;
//! # Ok(()) }
//! ```
//!
//! Built on [`fuser`] (its pure-Rust mount: no libfuse needed), which runs the kernel
//! session on its own threads; every operation calls the async [`dfs_client::Client`]
//! through a tokio runtime handle. The crate is Linux-only in practice.
//!
//! # Directories
//! The store has flat, `/`-separated names and no directories. The mount derives them:
//! `a/b/c` makes directories `a` and `a/b`. A directory made with `mkdir` is kept by a
//! hidden zero-byte **marker file** named [`DIR_MARKER`] (`.dfs-dir`) inside it (`a/.dfs-dir`),
//! so an empty directory survives a remount and is seen by every other mount; the markers
//! never show in the mount's listings, and a program cannot create or open one. `rmdir`
//! refuses a directory with any other entry (`ENOTEMPTY`) and deletes its marker. When
//! the last file of a directory is unlinked through the mount, the mount writes the
//! directory's marker so the directory stays, as on a local disk. A name that is both a
//! file and the prefix of other names (`a` and `a/b`, made through the plain client) shows
//! as the directory.
//!
//! # Rename
//! The store has no rename: renaming a file copies it to the new name (one `put`, so a
//! replaced target changes atomically: readers see the old or the new content) and then
//! deletes the old name. Renaming a directory does that for every file under it. It costs
//! a copy of the bytes, and it is **not atomic across a crash**: a mount that dies in the
//! middle leaves both names (a directory rename, some files at each). `RENAME_NOREPLACE`
//! answers `EEXIST` if the target exists; `RENAME_EXCHANGE` is refused (`EINVAL`).
//!
//! # What is accepted and what is refused
//! Regular files and directories only. `symlink`, `link` and `mknod` of anything but a
//! regular file answer `EPERM` (git then falls back to rename, `cp -a` and `tar` report the
//! one entry). `chmod`, `chown` and `utimens` are accepted and change nothing (files show
//! `0644`, directories `0755`, owned by the mounting user; times are the store's
//! modification time), so `cp -a`, `tar x`, `git` and `rsync -a` work; `rsync` without
//! `--checksum` may then copy a file again because the times it set did not stick.
//! Extended attributes answer `ENOTSUP`. An unlinked file that is still open cannot be
//! written or read any more (no "delete on last close").
//!
//! # Guarantees and caching
//! Writes are buffered per open file ([`MountOptions::write_back`]) and sent with
//! `write_at` (or `append` for a file opened with `O_APPEND`, so appends from several
//! mounts never overwrite each other), with the store's guarantees: once `close()` (the
//! kernel's flush) or `fsync()` returns success, the data is acknowledged by the cluster
//! and durable on every replica. A failed write-back is reported by the next `write`,
//! `read`, `close` or `fsync` of the file (`EIO` or the mapped errno; see [`errno`]).
//! Attributes and directory entries are cached for [`MountOptions::attr_ttl`]; a file's
//! attributes are fetched again when it is opened (close-to-open consistency, as NFS).
//! Large sequential reads fetch [`MountOptions::read_ahead`] bytes at a time.
//!
//! # Failover
//! The client fails over between nodes by itself; the mount retries an operation that
//! still failed with `Unavailable`, `Busy` or `Timeout` until
//! [`MountOptions::retry_deadline`] (appends excepted: the client's own exactly-once
//! retries are all they get), so programs keep going while a node dies.

pub mod errno;
mod fs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dfs_client::Client;
use fuser::{BackgroundSession, MountOption};

/// The hidden marker file that keeps a directory made with `mkdir` (see the crate docs).
pub const DIR_MARKER: &str = ".dfs-dir";

/// How a mount caches and retries. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// How long the kernel and the mount may use attributes and directory entries before
    /// asking the cluster again. Default 1 s; zero turns the caches off.
    pub attr_ttl: Duration,
    /// How many bytes a sequential read fetches at once (the rest serves the reads that
    /// follow). Default 1 MiB; zero turns read-ahead off.
    pub read_ahead: usize,
    /// The most bytes all open files may hold in read-ahead blocks. Default 64 MiB.
    pub read_ahead_total: usize,
    /// The most written bytes one open file buffers before sending them. Default 4 MiB;
    /// zero sends every write at once.
    pub write_back: usize,
    /// The most written bytes all files together buffer. Default 64 MiB.
    pub write_back_total: usize,
    /// How long an operation is retried while the cluster answers `Unavailable`, `Busy`
    /// or `Timeout` (a failover), before the program gets `EIO` / `ETIMEDOUT`. Default 30 s.
    pub retry_deadline: Duration,
    /// How many threads serve the kernel's requests. Default 4.
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            attr_ttl: Duration::from_secs(1),
            read_ahead: 1 << 20,
            read_ahead_total: 64 << 20,
            write_back: 4 << 20,
            write_back_total: 64 << 20,
            retry_deadline: Duration::from_secs(30),
            threads: 4,
        }
    }
}

/// Why a mount could not be made or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The mount point is missing or not a directory.
    #[error("cannot mount on {path}: {why}")]
    MountPoint {
        /// The directory asked for.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The kernel refused the mount.
    #[error("cannot mount on {path}: {source}")]
    Fuse {
        /// The directory asked for.
        path: PathBuf,
        /// What the kernel (or `/dev/fuse`) said.
        source: std::io::Error,
    },
    /// Unmounting failed, or the session ended with an error.
    #[error("unmount: {0}")]
    Unmount(#[source] std::io::Error),
}

/// A live mount. Dropping it unmounts (as [`unmount`](Self::unmount) does, logging
/// errors instead of returning them).
#[derive(Debug)]
pub struct Mount {
    session: Option<BackgroundSession>,
    dir: PathBuf,
}

impl Mount {
    /// The directory the cluster is mounted on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the session has ended (someone unmounted the directory).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the session's threads to end. Buffered writes of files
    /// still open are sent first.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.end()
    }

    fn end(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        tracing::debug!(dir = %self.dir.display(), "unmounting");
        match session.umount_and_join() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // A program still uses the mount (an open file, a working directory):
                // detach it from the tree now; the kernel ends the session when this
                // process goes away.
                tracing::warn!(dir = %self.dir.display(), "mount busy: detaching it lazily");
                lazy_unmount(&self.dir).map_err(MountError::Unmount)
            }
            other => other.map_err(MountError::Unmount),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "unmount failed");
        }
    }
}

/// Detaches a busy mount (`umount -l`, else `fusermount3 -uz`, else `fusermount -uz`).
fn lazy_unmount(dir: &Path) -> std::io::Result<()> {
    let tries: [(&str, &[&str]); 3] = [
        ("umount", &["-l"]),
        ("fusermount3", &["-u", "-z"]),
        ("fusermount", &["-u", "-z"]),
    ];
    let mut last = std::io::Error::other("no unmount program found");
    for (program, args) in tries {
        match std::process::Command::new(program)
            .args(args)
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = std::io::Error::other(format!(
                    "{program} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Mounts the cluster `client` talks to on `dir` (an existing directory) and serves it on
/// background threads until the returned [`Mount`] is dropped or unmounted. `runtime`
/// runs the client's calls; it must be a multi-threaded runtime, and must not be the
/// thread that then uses the mount.
pub fn mount(
    client: Client,
    runtime: tokio::runtime::Handle,
    dir: &Path,
    options: MountOptions,
) -> Result<Mount, MountError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MountError::MountPoint {
                path: dir.to_owned(),
                why: "not a directory".into(),
            });
        }
        Err(e) => {
            return Err(MountError::MountPoint {
                path: dir.to_owned(),
                why: e.to_string(),
            });
        }
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("dfs".into()),
        MountOption::Subtype("dfs".into()),
        MountOption::NoAtime,
    ];
    config.n_threads = Some(options.threads.max(1));
    let fs = fs::DfsFs::new(client, runtime, options);
    let session = fuser::spawn_mount(fs, dir, &config).map_err(|source| MountError::Fuse {
        path: dir.to_owned(),
        source,
    })?;
    tracing::info!(dir = %dir.display(), "mounted");
    Ok(Mount {
        session: Some(session),
        dir: dir.to_owned(),
    })
}
