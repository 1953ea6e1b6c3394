//! The reaper: a thread that unlinks deleted data files, off the delete's path.
//!
//! Unlinking a large file frees its blocks and can take milliseconds (on a file system
//! mounted with `discard`, much longer), so [`Store::delete`](super::Store::delete) only
//! renames the file into `tmp/` and hands it over. Until the reaper has unlinked it, its
//! blocks are still in use: a write that finds the disk full waits for the reaper to catch
//! up ([`Reaper::wait_caught_up`]) and tries once more, so that space a delete freed is
//! there for the writes after it.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::warn;

/// Deleted files waiting for the reaper thread; past this, a delete unlinks its own.
const QUEUE: usize = 1024;

/// How long a write that found the disk full waits for the reaper to catch up.
pub(crate) const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// Files handed over and not unlinked yet, and the writes waiting for them.
#[derive(Default)]
struct Backlog {
    pending: usize,
    waiting: usize,
}

#[derive(Default)]
struct Shared {
    backlog: Mutex<Backlog>,
    caught_up: Condvar,
    /// Held by a test to stop the reaper before its next unlink.
    #[cfg(test)]
    gate: Mutex<()>,
}

impl Shared {
    fn done(&self) {
        let mut backlog = self.backlog.lock();
        backlog.pending -= 1;
        if backlog.pending == 0 {
            self.caught_up.notify_all();
        }
    }
}

/// The handle of the reaper thread; the thread ends when this is dropped.
pub(crate) struct Reaper {
    queue: SyncSender<PathBuf>,
    shared: Arc<Shared>,
}

impl Reaper {
    /// Starts the reaper thread.
    pub(crate) fn start() -> std::io::Result<Reaper> {
        let (queue, doomed) = std::sync::mpsc::sync_channel::<PathBuf>(QUEUE);
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("dfs-store-reaper".into())
            .spawn(move || {
                // Ends when the store is dropped (its sender with it).
                for path in doomed {
                    #[cfg(test)]
                    drop(theirs.gate.lock());
                    unlink(&path);
                    theirs.done();
                }
            })?;
        Ok(Reaper { queue, shared })
    }

    /// Hands `path` (already out of `files/`) over to be unlinked; unlinks it here if the
    /// reaper is too far behind, so that its queue stays bounded.
    pub(crate) fn hand_over(&self, path: PathBuf) {
        self.shared.backlog.lock().pending += 1;
        if let Err(TrySendError::Full(path) | TrySendError::Disconnected(path)) =
            self.queue.try_send(path)
        {
            unlink(&path);
            self.shared.done();
        }
    }

    /// Waits until every file handed over so far is unlinked, for at most `limit`; whether
    /// it was.
    pub(crate) fn wait_caught_up(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut backlog = self.shared.backlog.lock();
        backlog.waiting += 1;
        while backlog.pending > 0 {
            if self
                .shared
                .caught_up
                .wait_until(&mut backlog, deadline)
                .timed_out()
            {
                break;
            }
        }
        backlog.waiting -= 1;
        backlog.pending == 0
    }

    /// Stops the reaper before its next unlink until the guard is dropped.
    #[cfg(test)]
    pub(crate) fn pause(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.shared.gate.lock()
    }

    /// (files handed over and not unlinked, writes waiting for them)
    #[cfg(test)]
    pub(crate) fn backlog(&self) -> (usize, usize) {
        let backlog = self.shared.backlog.lock();
        (backlog.pending, backlog.waiting)
    }
}

fn unlink(path: &std::path::Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove a deleted file");
    }
}
