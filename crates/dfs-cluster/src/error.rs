//! The crate's error type. Keep it small; add variants at the end.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in the cluster map's machinery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The storage directory is held by another open: another process, or another open in
    /// this one. Two raft nodes must never share one log.
    #[error(
        "cluster storage {} is in use by another open (another process or this one)",
        dir.display()
    )]
    StorageLocked {
        /// The directory.
        dir: PathBuf,
    },
    /// The storage directory could not be opened or read back (I/O, the log database, or
    /// stored data that does not decode).
    #[error("cluster storage {}: {source}", dir.display())]
    Storage {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The consensus group failed or refused (the message says how).
    #[error("cluster map: {0}")]
    Raft(String),
    /// A change was proposed on a node that does not lead the map.
    #[error("this node does not lead the cluster map (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// A proposal (or a linearizable read) did not complete within its deadline: no
    /// leader was known or reachable, or the leader could not reach a quorum. A proposal
    /// that reached a leader may still commit.
    #[error("cluster map: not done within {waited:?}: {last}")]
    Timeout {
        /// How long it was tried.
        waited: Duration,
        /// The last reason it did not complete.
        last: String,
    },
}
