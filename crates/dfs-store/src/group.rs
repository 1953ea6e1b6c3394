//! Group commit: one `syncfs(2)` makes the writes of many concurrent commits durable.
//!
//! Each `fdatasync` of a small append costs a device cache flush, a virtio notification and
//! two context switches; on a two-core virtual machine that was half of a node's CPU time
//! under 64 clients. Commits that want durability call [`GroupSync::sync`]: the first
//! caller while none is running becomes the leader and syncs the whole file system holding
//! the store once; callers that arrive meanwhile wait and are covered by the next round,
//! which one of them leads. Every write a caller made before calling is durable when its
//! call returns `Ok`: a round covers exactly the calls that began before the round's
//! `syncfs` did.
//!
//! `syncfs` reports a write-back error anywhere on the file system since the last round
//! (Linux 5.8 and later), so an error fails every call of its round: possibly more than
//! the write that failed, never fewer.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;

use parking_lot::{Condvar, Mutex};

/// Failed rounds remembered for callers that have not woken up yet.
const FAILURES_KEPT: usize = 64;

/// The group committer of one store (see the module docs).
#[derive(Debug)]
pub(crate) struct GroupSync {
    /// A handle on the store's directory: `syncfs` syncs the file system it is on.
    dir: File,
    state: Mutex<Rounds>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct Rounds {
    /// Tickets handed out: the last call's.
    issued: u64,
    /// Every ticket up to this one is settled (synced, or failed).
    settled: u64,
    /// Whether a leader is syncing now.
    running: bool,
    /// Recent failed rounds: first and last ticket, and the error.
    failures: VecDeque<(u64, u64, String)>,
}

impl GroupSync {
    /// A group committer for the file system holding `dir`.
    pub(crate) fn open(dir: &Path) -> std::io::Result<GroupSync> {
        Ok(GroupSync {
            dir: File::open(dir)?,
            state: Mutex::new(Rounds::default()),
            done: Condvar::new(),
        })
    }

    /// Returns once every write this thread made before the call is durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let mut st = self.state.lock();
        st.issued += 1;
        let ticket = st.issued;
        loop {
            if st.settled >= ticket {
                return match st
                    .failures
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&ticket))
                {
                    Some((_, _, e)) => Err(std::io::Error::other(e.clone())),
                    None => Ok(()),
                };
            }
            if !st.running {
                // Lead a round covering every call issued so far (this one included).
                st.running = true;
                let (first, last) = (st.settled + 1, st.issued);
                drop(st);
                let result = syncfs(&self.dir);
                st = self.state.lock();
                st.running = false;
                st.settled = last;
                if let Err(e) = result {
                    if st.failures.len() >= FAILURES_KEPT {
                        st.failures.pop_front();
                    }
                    st.failures.push_back((first, last, e.to_string()));
                }
                self.done.notify_all();
                continue;
            }
            self.done.wait(&mut st);
        }
    }
}

fn syncfs(dir: &File) -> std::io::Result<()> {
    rustix::fs::syncfs(dir).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_calls_all_return_settled_and_unfailed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let group = Arc::new(GroupSync::open(dir.path()).expect("open"));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (group, path) = (group.clone(), dir.path().join(format!("f{i}")));
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        std::fs::write(&path, b"data").expect("write");
                        group.sync().expect("sync");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let st = group.state.lock();
        assert_eq!(st.issued, 160);
        assert_eq!(st.settled, 160);
        assert!(!st.running);
        assert!(st.failures.is_empty());
    }
}
