//! The dfs replication engine: where every file operation is ordered and applied.
//!
//! A node's network front end (`dfs-node`) turns requests into calls on an [`Engine`]. The
//! engine looks the file up in the cluster map ([`ClusterMap`](dfs_cluster::ClusterMap), kept
//! under consensus), takes the file's lock from
//! the store's [`LockManager`](dfs_store::LockManager) (reads share, a write or delete
//! excludes, different files never wait on each other), checks the client's [`OpTag`](dfs_proto::OpTag) so
//! a retried write is not applied twice, and applies the operation to the replicas.
//!
//! # Today and next
//! The map is the consensus-backed [`ClusterMap`](dfs_cluster::ClusterMap): creates and
//! deletes commit through its log (stored under the node's data directory) before the
//! store follows. The cluster has one member for now, so a file's only replica is this
//! node's own [`Store`](dfs_store::Store). The replicated cluster adds the forwarding of
//! each write from the primary to the other replicas in [`Engine::write`], and the
//! forwarding of map changes to the map's leader; the engine's API stays as it is.
//! `ARCHITECTURE.md` at the repository root shows the path.
//!
//! # Guarantees kept here
//! - A write is acknowledged only after the store made it durable (fsync).
//! - Writes to one file are applied one at a time, in the order they take its lock.
//! - A read is a snapshot taken under the file's shared lock: it sees every write
//!   acknowledged before it started and nothing half-applied.
//! - A write carrying an [`OpTag`](dfs_proto::OpTag) already applied returns the saved result.

mod background;
mod body;
mod engine;
mod error;
mod primary;
mod replica;
mod scrub;
mod wire;

pub use body::{BODY_CHUNK_TIMEOUT, BodyStream, BodyTx};
pub use engine::{Engine, EngineConfig, Member, ReadHandle, Timing, WriteMode};
pub use error::EngineError;
pub use replica::DataService;

#[cfg(test)]
mod test;
