//! [`ClusterMap`]: one node's handle on the replicated map: starts the raft, joins or
//! initializes the cluster, registers the node, proposes changes and reads the map.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dfs_placement::{NodeId, Placement};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};

use crate::{
    ClusterError, ClusterState, MapCommand, MapReader, MapResponse, PeerNetwork, Raft,
    open_storage, raft_config,
};

/// How long [`ClusterMap::start`] waits for the map to have a leader and take this node's
/// registration.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's role in the map's consensus group, as [`ClusterMap::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapRole {
    /// Leads the group.
    Leader,
    /// Follows a leader.
    Follower,
    /// Running an election.
    Candidate,
    /// Not a voter, or shutting down.
    Other,
}

/// The map's consensus state as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapStatus {
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// This node's role.
    pub role: MapRole,
    /// Every member of the group and its address.
    pub members: BTreeMap<NodeId, String>,
}

/// One node's handle on the cluster map.
#[derive(Clone)]
pub struct ClusterMap {
    node_id: NodeId,
    raft: Raft,
    reader: MapReader,
    fresh: bool,
}

impl std::fmt::Debug for ClusterMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMap")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ClusterMap {
    /// Opens the map's storage in `dir`, starts this node's raft, initializes the group with
    /// `members` if this storage has never been part of one, waits for a leader, and
    /// registers the node (`NodeUp` with the next incarnation).
    ///
    /// Registration goes through the leader, so today this completes only where this node
    /// can lead (a one-member group); forwarding proposals to a remote leader comes with the
    /// replicated data path.
    pub async fn start(
        node_id: NodeId,
        members: &BTreeMap<NodeId, String>,
        cluster_id: u64,
        dir: &Path,
    ) -> Result<ClusterMap, ClusterError> {
        let addr = members
            .get(&node_id)
            .cloned()
            .ok_or_else(|| ClusterError::Raft(format!("node {node_id} is not a member")))?;
        let (log, sm) = open_storage(dir).await?;
        let reader = sm.reader();
        let config = raft_config(&format!("{cluster_id:016x}"))
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft = Raft::new(
            node_id,
            config,
            PeerNetwork::new(node_id, cluster_id),
            log,
            sm,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let map = ClusterMap {
            node_id,
            raft,
            reader,
            fresh,
        };
        if fresh {
            let nodes: BTreeMap<NodeId, BasicNode> = members
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match map.raft.initialize(nodes).await {
                Ok(()) => tracing::info!(node_id, "initialized the cluster map"),
                // Another member initialized it first: we join through its log.
                Err(e) => tracing::debug!(node_id, error = %e, "not initializing"),
            }
        }
        map.wait_for_leader(STARTUP_TIMEOUT).await?;
        let incarnation = map
            .reader
            .read(|s| s.nodes.get(&node_id).map_or(0, |n| n.incarnation))
            + 1;
        match map
            .propose(MapCommand::NodeUp {
                id: node_id,
                addr,
                incarnation,
            })
            .await?
        {
            MapResponse::Done => {}
            other => {
                return Err(ClusterError::Raft(format!(
                    "registration refused: {other:?}"
                )));
            }
        }
        tracing::info!(node_id, incarnation, "registered in the cluster map");
        Ok(map)
    }

    /// Whether this start created the map (its storage held no consensus state before).
    pub fn freshly_initialized(&self) -> bool {
        self.fresh
    }

    /// The raft instance (for serving peer connections).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The map as applied on this node.
    pub fn reader(&self) -> &MapReader {
        &self.reader
    }

    /// Where `name` lives, as applied on this node.
    pub fn lookup(&self, name: &str) -> Option<Placement> {
        self.reader.read(|s| s.files.get(name).cloned())
    }

    /// Reads the applied map.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.reader.read(f)
    }

    /// Commits `command` through the consensus log and returns how it applied. Fails with
    /// [`ClusterError::NotLeader`] on a node that does not lead the group.
    pub async fn propose(&self, command: MapCommand) -> Result<MapResponse, ClusterError> {
        match self.raft.client_write(command).await {
            Ok(reply) => Ok(reply.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ClusterError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// The consensus state: leader, term, this node's role, the members.
    pub fn status(&self) -> MapStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => MapRole::Leader,
            ServerState::Follower => MapRole::Follower,
            ServerState::Candidate => MapRole::Candidate,
            _ => MapRole::Other,
        };
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        MapStatus {
            leader: m.current_leader,
            term: m.current_term,
            role,
            members,
        }
    }

    /// Stops this node's raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
    }

    async fn wait_for_leader(&self, timeout: Duration) -> Result<(), ClusterError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Raft(format!("no leader within {timeout:?}: {e}")))
    }
}
