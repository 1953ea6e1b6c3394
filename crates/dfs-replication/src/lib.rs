//! The dfs replication engine: where every file operation is ordered and applied.
//!
//! A node's network front end (`dfs-node`) turns requests into calls on an [`Engine`]. The
//! engine looks the file up in the cluster map ([`LocalMap`]), takes the file's lock from
//! the store's [`LockManager`](dfs_store::LockManager) (reads share, a write or delete
//! excludes, different files never wait on each other), checks the client's [`OpTag`](dfs_proto::OpTag) so
//! a retried write is not applied twice, and applies the operation to the replicas.
//!
//! # Today and next
//! This version runs a one-member cluster: the map is [`LocalMap`], rebuilt at start-up
//! from the names the store records, and the file's only replica is this node's own
//! [`Store`](dfs_store::Store). The replicated cluster replaces `LocalMap` with a map kept
//! under consensus (openraft) and adds the forwarding of each write from the primary to
//! the other replicas in [`Engine::write`]; the engine's API, which the node and the
//! tests use, stays as it is. `ARCHITECTURE.md` at the repository root shows the path.
//!
//! # Guarantees kept here
//! - A write is acknowledged only after the store made it durable (fsync).
//! - Writes to one file are applied one at a time, in the order they take its lock.
//! - A read is a snapshot taken under the file's shared lock: it sees every write
//!   acknowledged before it started and nothing half-applied.
//! - A write carrying an [`OpTag`](dfs_proto::OpTag) already applied returns the saved result.

mod body;
mod engine;
mod error;
mod map;

pub use body::{BODY_CHUNK_TIMEOUT, BodyStream, BodyTx};
pub use engine::{Engine, EngineConfig, Member, ReadHandle, WriteMode};
pub use error::EngineError;
pub use map::LocalMap;

#[cfg(test)]
mod test;
