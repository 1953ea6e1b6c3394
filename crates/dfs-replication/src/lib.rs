//! The dfs replication engine: where every file operation is ordered and applied.
//!
//! A node's network front end (`dfs-node`) turns requests into calls on an [`Engine`]. The
//! engine looks the file up in the cluster map ([`ClusterMap`](dfs_cluster::ClusterMap), kept
//! under consensus), takes the file's lock from
//! the store's [`LockManager`](dfs_store::LockManager) (reads share, a write or delete
//! excludes, different files never wait on each other), checks the client's [`OpTag`](dfs_proto::OpTag) so
//! a retried write is not applied twice, and applies the operation to the replicas.
//!
//! # What it does
//! Creates and deletes commit through the consensus-backed map before any store acts
//! (exactly once per client request, through the map's sessions). A file's primary
//! (holding a lease from the map's leader) orders its writes and forwards each to the
//! other replicas before it answers (`primary.rs`; the replicas' side in `replica.rs`).
//! Background tasks (`background.rs`) renew the lease, declare silent nodes down on the
//! leader, restore missing replicas (at once on a home node that returns, elsewhere after
//! `Timing::rereplicate_after`) and remove copies the map no longer gives this node;
//! `scrub.rs` checks every copy against its checksum and replaces damaged ones.
//! `ARCHITECTURE.md` at the repository root shows the paths.
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
#[doc(hidden)]
pub mod fuzzing;
mod locking;
mod primary;
mod replica;
mod scrub;
mod wire;

pub use body::{BODY_CHUNK_TIMEOUT, BodyStream, BodyTx};
pub use engine::{Engine, EngineConfig, Member, ReadHandle, Timing, WriteMode};
pub use error::EngineError;
pub use replica::DataService;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod test;
