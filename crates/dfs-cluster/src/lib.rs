//! The dfs cluster map under consensus: membership and the placement table, replicated to
//! every node with openraft.
//!
//! - [`ClusterState`] is the map's data and [`MapCommand`] the changes to it; applying a
//!   command is deterministic, so every node that applies the same log holds the same map.
//! - [`TypeConfig`] binds them into openraft.
//! - [`open_storage`] gives the durable log ([`LogStore`], redb) and state machine
//!   ([`StateMachineStore`], snapshots in the data directory); [`MapReader`] is the cheap
//!   read handle the rest of a node uses.
//! - [`PeerNetwork`] sends Raft RPCs to other nodes as `dfs-proto` peer messages;
//!   [`serve_peer`] / [`dispatch`] answer them; [`raft_config`] sets timeouts and sizes so
//!   every message fits a frame.
//!
//! - [`ClusterMap`] is a node's handle: [`ClusterMap::open`] starts the raft and
//!   initializes the group (every member may, with the same member list),
//!   [`ClusterMap::join`] waits for a leader and registers the node, the caller serving
//!   peer connections in between ([`ClusterMap::start`] does both, for a one-member group).
//!   [`ClusterMap::propose`] commits a change from any member: a follower forwards it to
//!   the leader ([`RaftRpc::Propose`], on the peer connections [`PeerNetwork`] keeps), and
//!   it is retried while leadership moves, for at most [`PROPOSE_TIMEOUT`]. Reads are
//!   local ([`ClusterMap::lookup`]), or linearizable on the leader
//!   ([`ClusterMap::linearizable_lookup`]).
//!
//! Why openraft: a maintained Raft library with joint-consensus membership changes,
//! snapshots and linearizable reads (read index); we supply storage and the transport.

mod config;
mod error;
mod locks;
mod map;
mod nesting;
mod network;
mod peer;
mod state;
mod storage;

pub use config::{
    ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS,
    INSTALL_SNAPSHOT_TIMEOUT_MS, LOG_ENTRY_BYTES_MAX, MAX_PAYLOAD_ENTRIES, SNAPSHOT_CHUNK_BYTES,
    raft_config, raft_config_with,
};
pub use error::ClusterError;
pub use locks::{FenceError, Held, IDLE_NAMES_MAX, LEASES_MAX, Lease, LeaseClock, Locks};
pub use map::{
    ClusterMap, MapOptions, MapRole, MapStatus, PROPOSE_TIMEOUT, STANDING_WAIT, STARTUP_TIMEOUT,
    STORAGE_RELEASE_TIMEOUT,
};
pub use nesting::PAYLOAD_NESTING_MAX;
pub use network::{
    DataCallError, PEER_BACKOFF, PEER_DIAL_TIMEOUT, PeerClient, PeerNetwork, TIMEOUTS_BEFORE_REDIAL,
};
pub use peer::{
    Admission, DataHandler, DataSlot, PEER_IDLE_TIMEOUT, PEER_RPCS_IN_FLIGHT_MAX,
    PEER_WRITE_TIMEOUT, PROPOSE_SERVE_TIMEOUT, PeerService, ProposeError, RaftReply, RaftRpc,
    dispatch, serve_peer,
};
pub use state::{
    ClusterState, MapCommand, MapResponse, NodeInfo, RequestTag, SESSIONS_MAX, Sessions,
    WriteResult,
};
pub use storage::{
    LogStore, LogStoreReader, MapReader, SnapshotBytes, StateMachineStore, StorageRelease,
    open_storage,
};

openraft::declare_raft_types!(
    /// The openraft types of the cluster map: node ids are the `--id`s, a node is its address.
    pub TypeConfig:
        D = MapCommand,
        R = MapResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = SnapshotBytes,
);

/// The raft instance of the cluster map.
pub type Raft = openraft::Raft<TypeConfig>;

#[cfg(test)]
mod transport_tests;
