//! Replica placement for dfs: which nodes hold a file.
//!
//! This crate is the placement "hashtable" of dfs. It is pure code: no I/O,
//! no clock, no async and no randomness at runtime, and it depends on no
//! other dfs crate. Everything in it is deterministic, so every replica of
//! the cluster map computes exactly the same answers.
//!
//! # Rendezvous hashing
//!
//! [`place`] picks the replicas of a file by *rendezvous* (highest random
//! weight, HRW) hashing: every member node gets a pseudo-random
//! [`weight`] computed from the pair `(file name, node id)`, and the `r`
//! nodes with the highest weights hold the file, the heaviest being the
//! primary.
//!
//! Rendezvous hashing is used because placement stays put when membership
//! changes. A name's weight on a node never depends on which other nodes
//! exist, so:
//!
//! * when a node joins a cluster of `N`, a name's replica set only changes if
//!   the new node ranks among its top `r`; the primary moves for about
//!   `1/(N + 1)` of the names, and every name that moves, moves *to the new
//!   node* (nothing is shuffled between the old nodes);
//! * when a node leaves, only the names it held are affected; each of them
//!   just promotes its next-heaviest node.
//!
//! Since weights are uniformly spread, every node is primary for about `1/N`
//! of the names and holds about `r/N` of the replicas. Compared with a hash
//! ring, there are no virtual nodes to tune and no ring to keep: the member
//! list is all the state needed.
//!
//! # The hash and its stability
//!
//! The weight decides where data lives, so it must never change: not across
//! platforms, not across Rust versions, not across releases of this crate.
//! That rules out [`std::hash::DefaultHasher`] and `RandomState`, whose
//! algorithm is explicitly unspecified (and randomly keyed). The weight is
//! instead a small, fully specified function implemented here (see
//! [`weight`] for the exact definition):
//!
//! 1. the name's UTF-8 bytes are hashed with 64-bit FNV-1a;
//! 2. the node id is scrambled with the splitmix64 output function;
//! 3. the two are XORed and finished with MurmurHash3's `fmix64` mixer.
//!
//! FNV-1a is simple and endianness-independent (it works byte by byte) but
//! mixes poorly on its own; the final `fmix64` avalanche fixes that, so
//! weights are spread evenly over all 64 bits. Every step is a bijection in
//! the node id, so for a given name two distinct nodes never get the same
//! weight. The unit tests
//! pin concrete weight values so that any accidental change is caught.
//!
//! # The placement table
//!
//! [`PlacementTable`] records, per file name, the [`Placement`] chosen for it
//! (file id, replica list and epoch). It is a plain serde data structure kept
//! in a sorted map: it is owned by the cluster map (a Raft state machine),
//! which is the only writer; this crate merely supplies the data structure
//! and its deterministic queries (lookup, sorted paging by prefix, names per
//! node).

mod hash;
mod rendezvous;
mod table;

#[cfg(test)]
mod test;

pub use hash::weight;
pub use rendezvous::place;
pub use table::{Placement, PlacementTable};

/// Identifier of a storage node in the cluster.
pub type NodeId = u64;

/// Identifier of a file, assigned by the cluster map.
pub type FileId = u64;

/// Errors from placing replicas and from updating a [`PlacementTable`].
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// A placement was asked for zero replicas.
    #[error("a placement needs at least one replica, but zero were requested")]
    ZeroReplicas,
    /// Fewer distinct member nodes exist than replicas were requested.
    #[error("cannot place {wanted} replicas on only {available} distinct nodes")]
    NotEnoughNodes {
        /// Number of replicas requested.
        wanted: usize,
        /// Number of distinct member nodes available.
        available: usize,
    },
    /// The name already has a placement in the table.
    #[error("{0:?} is already placed")]
    AlreadyPlaced(String),
    /// The name has no placement in the table.
    #[error("{0:?} is not placed")]
    NotPlaced(String),
}
