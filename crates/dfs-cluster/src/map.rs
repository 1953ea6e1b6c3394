//! [`ClusterMap`]: one node's handle on the replicated map: starts the raft, joins or
//! initializes the cluster, registers the node, proposes changes (forwarding them to the
//! leader) and reads the map.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dfs_net::SharedTransport;
use dfs_placement::{NodeId, Placement};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::time::Instant;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::peer::RaftService;
use crate::{
    Admission, ClusterError, ClusterState, MapCommand, MapReader, MapResponse, PeerNetwork,
    ProposeError, Raft, StorageRelease, open_storage, raft_config_with,
};

/// How long [`ClusterMap::shutdown`] waits for openraft's tasks to drop the storage.
pub const STORAGE_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`ClusterMap::join`] waits for the map to have a leader and take this node's
/// registration.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node whose consensus storage is empty waits for a peer to say whether the
/// map records it, before it takes the start for the cluster's first.
pub const STANDING_WAIT: Duration = Duration::from_secs(3);

/// How long [`ClusterMap::propose`] keeps trying (while there is no leader, the leader
/// changes or cannot be reached) before it fails with [`ClusterError::Timeout`]; also the
/// bound of [`ClusterMap::linearizable_lookup`].
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause between two attempts of a proposal; it doubles up to
/// [`PROPOSE_BACKOFF_MAX`].
const PROPOSE_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest pause between two attempts of a proposal: shorter than an election.
const PROPOSE_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Longest one forwarded proposal or read-index request is waited for before it is sent
/// again: a connection that stalled (its peer vanished, a link lost what it carried) must
/// not take a caller's whole deadline; after a few timeouts the link dials anew.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most nodes one attempt follows when each names another leader.
const FORWARD_HOPS_MAX: usize = 3;

/// How a member of the map reaches the others and times its elections.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// What peer connections are made with.
    pub transport: SharedTransport,
    /// Milliseconds of silence from the leader before this member starts an election:
    /// drawn from `[min, max)` each time. The simulator gives each member a fixed, distinct
    /// value (`max = min + 1`) so runs replay exactly.
    pub election_timeout_ms: (u64, u64),
    /// The cluster's shared secret, proven in every peer hello (none: no proof).
    pub secret: Option<dfs_auth::ClusterSecret>,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self {
            transport: dfs_net::Tcp::shared(),
            election_timeout_ms: (
                crate::ELECTION_TIMEOUT_MIN_MS,
                crate::ELECTION_TIMEOUT_MAX_MS,
            ),
            secret: None,
        }
    }
}

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
    /// The members whose votes count (the others are learners: see "Disk loss").
    pub voters: std::collections::BTreeSet<NodeId>,
}

/// One node's handle on the cluster map.
///
/// # Start-up
///
/// [`open`](Self::open) opens the storage and starts the raft; [`join`](Self::join)
/// initializes the group if this storage never was part of one (see "Disk loss"), waits
/// for a leader and registers the node. Between the two the caller starts serving peer
/// connections with [`PeerService::for_map`](crate::PeerService::for_map): in a group of
/// several members no leader can be elected, and this node cannot receive the log, until
/// it does. [`start`](Self::start) does both in one
/// call, for a one-member group (which needs no peer).
///
/// Every member may be started at once with the same member list: each one whose storage
/// is empty initializes the group with that list (openraft allows it: they all write the
/// same first entry), a member whose storage already holds the group skips it, and one
/// whose storage is empty while its peers already formed the group joins by receiving
/// their log.
///
/// # Disk loss
///
/// A member whose storage is empty first asks its peers
/// ([`RaftRpc::Standing`](crate::RaftRpc::Standing)) whether their maps record it as
/// registered. If one does, the member ran before and lost its storage with its disk: what
/// it voted for and which entries it acknowledged are forgotten, so as a voter it could
/// elect a second leader in a term or help lose a committed entry. Until the group has
/// taken it back it takes no part in consensus (its [`Admission`] is closed); then the
/// leader removes it from the group's membership and from every replica set
/// ([`MapCommand::NodeLost`]), adds it back as a learner that receives the log from the
/// start, and makes it a voter again once it has caught up
/// ([`RaftRpc::Readmit`](crate::RaftRpc::Readmit)). Its files come back through repair
/// once it registers. A member that lost its disk while no peer answers within
/// [`STANDING_WAIT`] cannot tell and starts as if the cluster were new: restart it only
/// while another member runs.
///
/// # Writes and reads
///
/// [`propose`](Self::propose) commits through the leader wherever it is called: a follower
/// forwards the command to the leader over the peer connection its raft already uses.
/// [`lookup`](Self::lookup) and [`read`](Self::read) read the map as applied on this node
/// (possibly behind the leader); [`linearizable_lookup`](Self::linearizable_lookup) reads
/// what every committed change is visible in, on the leader.
#[derive(Clone)]
pub struct ClusterMap {
    node_id: NodeId,
    addr: String,
    raft: Raft,
    reader: MapReader,
    network: PeerNetwork,
    release: StorageRelease,
    members: BTreeMap<NodeId, String>,
    /// Closed while this node's storage was empty at open and the group has not decided
    /// (or taken it back, after a disk loss): see "Disk loss".
    admission: Admission,
    fresh: Arc<AtomicBool>,
}

impl std::fmt::Debug for ClusterMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMap")
            .field("node_id", &self.node_id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ClusterMap {
    /// [`open`](Self::open) then [`join`](Self::join): for a group whose members need no
    /// peer connection served to elect a leader, i.e. a one-member group. A node of a
    /// larger group calls the two itself and serves [`raft`](Self::raft) in between.
    ///
    /// If joining fails the raft is shut down.
    pub async fn start(
        node_id: NodeId,
        members: &BTreeMap<NodeId, String>,
        cluster_id: u64,
        dir: &Path,
    ) -> Result<ClusterMap, ClusterError> {
        let map = ClusterMap::open(node_id, members, cluster_id, dir).await?;
        if let Err(e) = map.join().await {
            map.shutdown().await;
            return Err(e);
        }
        Ok(map)
    }

    /// Opens the map's storage in `dir` and starts this node's raft (its network dials
    /// `members` with the hello of `cluster_id`). If this storage has never been part of
    /// the group, the node takes no part in consensus until [`join`](Self::join) decides
    /// whether it starts a new group or lost its disk (see "Disk loss").
    ///
    /// Returns at once, without a leader; serve peer connections with
    /// [`PeerService::for_map`](crate::PeerService::for_map), then call
    /// [`join`](Self::join).
    ///
    /// # Errors
    ///
    /// `node_id` is not in `members`; the storage cannot be opened
    /// ([`ClusterError::StorageLocked`], [`ClusterError::Storage`]); the raft does not
    /// start or refuses the member list.
    pub async fn open(
        node_id: NodeId,
        members: &BTreeMap<NodeId, String>,
        cluster_id: u64,
        dir: &Path,
    ) -> Result<ClusterMap, ClusterError> {
        Self::open_with(node_id, members, cluster_id, dir, &MapOptions::default()).await
    }

    /// [`open`](Self::open) with the transport and election timing of `options`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub async fn open_with(
        node_id: NodeId,
        members: &BTreeMap<NodeId, String>,
        cluster_id: u64,
        dir: &Path,
        options: &MapOptions,
    ) -> Result<ClusterMap, ClusterError> {
        let addr = members
            .get(&node_id)
            .cloned()
            .ok_or_else(|| ClusterError::Raft(format!("node {node_id} is not a member")))?;
        let (log, sm) = open_storage(dir).await?;
        let release = log.release_watch();
        let reader = sm.reader();
        let config = raft_config_with(&format!("{cluster_id:016x}"), options.election_timeout_ms)
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let network = PeerNetwork::new(node_id, cluster_id, options.transport.clone())
            .with_secret(options.secret.clone());
        let raft = Raft::new(node_id, config, network.clone(), log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let initialized = match raft.is_initialized().await {
            Ok(initialized) => initialized,
            Err(e) => {
                let _ = raft.shutdown().await;
                return Err(ClusterError::Raft(e.to_string()));
            }
        };
        Ok(ClusterMap {
            node_id,
            addr,
            raft,
            reader,
            network,
            release,
            members: members.clone(),
            admission: Admission::new(initialized),
            fresh: Arc::new(AtomicBool::new(false)),
        })
    }

    /// For a node whose storage was empty at open: asks the peers whether this node ran
    /// before; then either starts (or joins) the group as new, or, after a disk loss, asks
    /// the leader to take it back. Opens the admission.
    async fn decide_start(&self, deadline: Instant) -> Result<(), ClusterError> {
        let node_id = self.node_id;
        if self.lost_storage().await {
            tracing::warn!(
                node_id,
                "this node's consensus storage is empty but the cluster map records it: its \
                 disk was lost; asking the group to take it back"
            );
            self.readmit(deadline).await?;
            tracing::info!(node_id, "taken back into the cluster map after a disk loss");
            return Ok(());
        }
        let fresh = self.initialize(&self.members).await?;
        self.fresh.store(fresh, Ordering::SeqCst);
        self.admission.open();
        Ok(())
    }

    /// Whether a peer's map records this node (asked of every peer at once, again until
    /// one answers or [`STANDING_WAIT`] passes).
    async fn lost_storage(&self) -> bool {
        let peers: Vec<(NodeId, String)> = self
            .members
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        if peers.is_empty() {
            return false;
        }
        let deadline = Instant::now() + STANDING_WAIT;
        loop {
            let asks = peers.iter().map(|(id, addr)| {
                self.network
                    .standing(*id, addr, self.node_id, Duration::from_millis(500))
            });
            let answers = futures::future::join_all(asks).await;
            if answers.iter().any(|a| matches!(a, Ok(true))) {
                return true;
            }
            if answers.iter().any(|a| a.is_ok()) || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Has the leader take this node back after a disk loss: out of the membership and of
    /// every replica set, then (with the admission open, so that it receives the log) as a
    /// learner and a voter.
    async fn readmit(&self, deadline: Instant) -> Result<(), ClusterError> {
        for promote in [false, true] {
            if promote {
                self.admission.open();
            }
            self.readmit_step(promote, deadline).await?;
        }
        Ok(())
    }

    /// One step of [`readmit`](Self::readmit), sent to each peer in turn (and on to the
    /// leader one names) until one leader has done it.
    async fn readmit_step(&self, promote: bool, deadline: Instant) -> Result<(), ClusterError> {
        let started = Instant::now();
        let me = (self.node_id, self.addr.clone());
        let mut last = String::from("no peer answered");
        loop {
            for (id, addr) in self.members.iter().filter(|(id, _)| **id != self.node_id) {
                let (mut target, mut target_addr) = (*id, addr.clone());
                for _ in 0..FORWARD_HOPS_MAX {
                    // A bound per attempt, a little above the leader's own, so a stalled
                    // connection does not take the whole deadline.
                    let ttl = deadline
                        .saturating_duration_since(Instant::now())
                        .min(crate::PROPOSE_SERVE_TIMEOUT + ATTEMPT_TIMEOUT);
                    let asked = self
                        .network
                        .readmit(target, &target_addr, me.clone(), promote, ttl)
                        .await;
                    match asked {
                        Ok(()) => return Ok(()),
                        Err(ProposeError::NotLeader {
                            leader: Some(next),
                            addr: Some(next_addr),
                        }) if next != target && next != self.node_id => {
                            (target, target_addr) = (next, next_addr);
                        }
                        Err(e) => {
                            last = format!("node {target}: {e}");
                            break;
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    waited: started.elapsed(),
                    last,
                });
            }
            tracing::debug!(node_id = self.node_id, promote, last, "not taken back yet");
            tokio::time::sleep(PROPOSE_BACKOFF_MAX).await;
        }
    }

    /// Initializes the group with `members` if this storage holds none; returns whether
    /// the storage was empty.
    async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<bool, ClusterError> {
        let node_id = self.node_id;
        let fresh = !self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !fresh {
            return Ok(false);
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => tracing::info!(node_id, "initialized the cluster map"),
            // A leader's message reached us first (we have a vote or a log now): we join
            // through its log.
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                tracing::debug!(node_id, error = %e, "the group exists already; joining it");
            }
            Err(e) => {
                return Err(ClusterError::Raft(format!(
                    "initializing the group with {members:?}: {e}"
                )));
            }
        }
        Ok(true)
    }

    /// Waits (at most [`STARTUP_TIMEOUT`]) for the group to have a leader, then registers
    /// this node: `NodeUp` with the incarnation after the one recorded, proposed through
    /// [`propose`](Self::propose) (so a follower forwards it to the leader).
    ///
    /// If the leader refuses the incarnation (the map, once this node has applied it,
    /// records one at least as high), registration is tried again with the next one;
    /// the recorded incarnation equal to ours after an attempt whose answer was lost means
    /// that attempt committed, and counts as registered.
    ///
    /// Call it once per [`open`](Self::open), after serving the peer connections.
    pub async fn join(&self) -> Result<(), ClusterError> {
        let node_id = self.node_id;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        if !self.admission.is_open() {
            self.decide_start(deadline).await?;
        }
        self.wait_for_leader(STARTUP_TIMEOUT).await?;
        // Taken back as a learner after a disk loss, but not made a voter again (that
        // start was stopped first): finish it now.
        if self.members.len() > 1 && !self.status().voters.contains(&node_id) {
            tracing::info!(node_id, "a learner after a disk loss; asking to vote again");
            self.readmit_step(true, deadline).await?;
        }
        loop {
            let incarnation = self.recorded_incarnation() + 1;
            let command = MapCommand::NodeUp {
                id: node_id,
                addr: self.addr.clone(),
                incarnation,
            };
            let (response, uncertain) = match self.propose_until(command, deadline).await {
                Ok(answer) => answer,
                // Perhaps committed, not yet applied here (a slow catch-up): the next
                // round sees it (refused as already recorded), or registers anew.
                Err(e) if Instant::now() + PROPOSE_BACKOFF_MAX < deadline => {
                    tracing::debug!(node_id, incarnation, error = %e, "registration unconfirmed; again");
                    tokio::time::sleep(PROPOSE_BACKOFF_MAX).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match response {
                MapResponse::Done => {
                    tracing::info!(node_id, incarnation, "registered in the cluster map");
                    return Ok(());
                }
                MapResponse::Rejected(why) => {
                    // The leader's map records an incarnation of ours at least as high:
                    // wait until ours shows it, then see whose it is.
                    tracing::debug!(node_id, incarnation, why, "registration refused");
                    self.wait_for_incarnation(incarnation, deadline).await?;
                    if uncertain && self.recorded_incarnation() == incarnation {
                        tracing::info!(node_id, incarnation, "registered in the cluster map");
                        return Ok(());
                    }
                }
                other => {
                    return Err(ClusterError::Raft(format!(
                        "registration refused: {other:?}"
                    )));
                }
            }
        }
    }

    /// Whether this start created the map (its storage held no consensus state before).
    pub fn freshly_initialized(&self) -> bool {
        self.fresh.load(Ordering::SeqCst)
    }

    /// Whether this node takes part in consensus (see "Disk loss"), for
    /// [`PeerService::for_map`](crate::PeerService::for_map).
    pub fn admission(&self) -> Admission {
        self.admission.clone()
    }

    /// The raft instance (for serving peer connections).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The map as applied on this node.
    pub fn reader(&self) -> &MapReader {
        &self.reader
    }

    /// Tells when the storage directory is free again after the raft stopped (its tasks
    /// have dropped their stores), so it can be opened again.
    pub fn storage_release(&self) -> StorageRelease {
        self.release.clone()
    }

    /// Where `name` lives, as applied on this node (which may be behind the leader).
    pub fn lookup(&self, name: &str) -> Option<Placement> {
        self.reader.read(|s| s.files.get(name).cloned())
    }

    /// Where `name` lives, with every change committed before the call visible (see
    /// [`catch_up`](Self::catch_up)).
    pub async fn linearizable_lookup(&self, name: &str) -> Result<Option<Placement>, ClusterError> {
        self.catch_up().await?;
        Ok(self.lookup(name))
    }

    /// On the leader: confirms with a quorum that this node still leads (openraft's read
    /// index) and returns the index of the last committed entry, applied here by then.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotLeader`] (naming the leader) on another node;
    /// [`ClusterError::Timeout`] if no quorum confirms within [`PROPOSE_TIMEOUT`].
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        match RaftService::read_index(&self.raft).await {
            Ok(index) => Ok(index),
            Err(ProposeError::NotLeader { leader, .. }) => Err(ClusterError::NotLeader { leader }),
            Err(e) => Err(ClusterError::Timeout {
                waited: PROPOSE_TIMEOUT,
                last: e.to_string(),
            }),
        }
    }

    /// Waits until this node has applied every change committed before the call: gets a
    /// read index from the leader (itself, or over the peer connection to it) and waits
    /// until this node has applied that far. Afterwards [`lookup`](Self::lookup) and
    /// [`read`](Self::read) see every change committed before `catch_up` was called.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Timeout`] if no leader answers within [`PROPOSE_TIMEOUT`].
    pub async fn catch_up(&self) -> Result<(), ClusterError> {
        let started = Instant::now();
        let deadline = started + PROPOSE_TIMEOUT;
        let mut pause = PROPOSE_BACKOFF_MIN;
        loop {
            let ttl = deadline
                .saturating_duration_since(Instant::now())
                .min(ATTEMPT_TIMEOUT);
            let why = match self.status().leader {
                Some(leader) if leader == self.node_id => match self.read_index().await {
                    Ok(_) => return Ok(()),
                    Err(e) => e.to_string(),
                },
                Some(leader) => match self.member_addr(leader) {
                    Some(addr) => match self.network.read_index(leader, &addr, ttl).await {
                        Ok(index) => return self.wait_applied(index, deadline).await,
                        Err(e) => e.to_string(),
                    },
                    None => format!("no address for leader {leader}"),
                },
                None => "no leader is known".to_owned(),
            };
            if Instant::now() + pause >= deadline {
                return Err(ClusterError::Timeout {
                    waited: started.elapsed(),
                    last: why,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PROPOSE_BACKOFF_MAX);
        }
    }

    /// Waits until this node has applied the log up to `index`, at most until `deadline`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ClusterError> {
        let started = Instant::now();
        self.raft
            .wait(Some(deadline.saturating_duration_since(started)))
            .applied_index_at_least(Some(index), "caught up with the leader")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Timeout {
                waited: started.elapsed(),
                last: format!("entry {index} not applied here: {e}"),
            })
    }

    /// Waits until this node's consensus engine has stopped by itself (a fatal error, such
    /// as a raft log that could not be written), and answers why; never returns while it
    /// runs. Also returns after [`shutdown`](Self::shutdown).
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            let fatal = metrics
                .borrow()
                .running_state
                .as_ref()
                .err()
                .map(ToString::to_string);
            if let Some(why) = fatal {
                return why;
            }
            if metrics.changed().await.is_err() {
                return "the consensus engine stopped".into();
            }
        }
    }

    /// Reads the applied map.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.reader.read(f)
    }

    /// Commits `command` through the consensus log and returns how it applied, wherever
    /// it is called: on the leader it is appended locally; on another node it is forwarded
    /// to the leader ([`RaftRpc::Propose`](crate::RaftRpc::Propose) on the peer connection
    /// to it), and a node that turns out not to lead names the leader it knows, which is
    /// tried next. While no leader is known, the leader changes or cannot be reached, it
    /// tries again after a short pause, for at most [`PROPOSE_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`ClusterError::Timeout`] once [`PROPOSE_TIMEOUT`] has passed (no leader, or a
    /// leader without a quorum: a minority commits nothing), or when the command committed
    /// but this node could not apply it in time (its map does not show it yet);
    /// [`ClusterError::Raft`] if this node's raft has stopped.
    ///
    /// # Retries
    ///
    /// A forwarded proposal whose answer was lost (connection lost, no answer in time) may
    /// have committed, and the retry then applies the command a second time. The commands
    /// are built for it: a repeated `CreateFile` answers `AlreadyExists` (with the same
    /// file id), a repeated `DeleteFile` `NotFound`, a repeated `NodeUp` `Rejected`, a
    /// repeated `SetReplicas` `Conflict`; a [`MapCommand::Tagged`] one answers what its
    /// first application did. A proposal this returns an error for may also have
    /// committed.
    pub async fn propose(&self, command: MapCommand) -> Result<MapResponse, ClusterError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        self.propose_until(command, deadline)
            .await
            .map(|(response, _)| response)
    }

    /// Proposes `command` only if this node leads the map, never forwarding it: for
    /// decisions only a current leader may take (declaring a node down from the silence
    /// it observed). A proposal this node made while it led but that a later leader's log
    /// replaced is reported as `NotLeader`, not carried to the new leader.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotLeader`] on another node (or once this one stepped down);
    /// [`ClusterError::Raft`] if it fails or no quorum commits it in time.
    pub async fn propose_as_leader(
        &self,
        command: MapCommand,
    ) -> Result<MapResponse, ClusterError> {
        match RaftService::propose(&self.raft, command).await {
            Ok(response) => Ok(response),
            Err(ProposeError::NotLeader { leader, .. }) => Err(ClusterError::NotLeader { leader }),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// [`propose`](Self::propose) until `deadline`; also says whether an attempt before
    /// the one that answered had an unknown outcome (so the command may have applied
    /// twice).
    async fn propose_until(
        &self,
        command: MapCommand,
        deadline: Instant,
    ) -> Result<(MapResponse, bool), ClusterError> {
        let started = Instant::now();
        let mut pause = PROPOSE_BACKOFF_MIN;
        let mut uncertain = false;
        loop {
            let local = tokio::time::timeout_at(deadline, self.raft.client_write(command.clone()));
            let why = match local.await {
                Ok(Ok(reply)) => return Ok((reply.data, uncertain)),
                Ok(Err(e)) => {
                    let Some(f) = e.forward_to_leader() else {
                        return Err(ClusterError::Raft(e.to_string()));
                    };
                    let leader = f.leader_id.filter(|l| *l != self.node_id);
                    let addr = match (&f.leader_node, leader) {
                        (Some(node), _) => Some(node.addr.clone()),
                        (None, Some(l)) => self.member_addr(l),
                        (None, None) => None,
                    };
                    match (leader, addr) {
                        (Some(leader), Some(addr)) => {
                            let forwarded = self
                                .forward(leader, addr, &command, deadline, &mut uncertain)
                                .await;
                            match forwarded {
                                Ok(response) => {
                                    // Read-your-writes: the change is visible here too when
                                    // this returns, or the caller hears that it is not.
                                    return match self.catch_up().await {
                                        Ok(()) => Ok((response, uncertain)),
                                        Err(e) => Err(ClusterError::Timeout {
                                            waited: started.elapsed(),
                                            last: format!(
                                                "committed, but not applied here yet: {e}"
                                            ),
                                        }),
                                    };
                                }
                                Err(why) => why,
                            }
                        }
                        (Some(leader), None) => format!("no address for leader {leader}"),
                        (None, _) => "no leader is known".to_owned(),
                    }
                }
                // This node leads (or believes it does) but did not commit in time: it
                // has no quorum.
                Err(_) => "the leader (this node) did not commit it: no quorum".to_owned(),
            };
            if Instant::now() + pause >= deadline {
                return Err(ClusterError::Timeout {
                    waited: started.elapsed(),
                    last: why,
                });
            }
            tracing::debug!(
                node_id = self.node_id,
                why,
                "proposal not taken; trying again"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PROPOSE_BACKOFF_MAX);
        }
    }

    /// Sends `command` to `leader`, and on to the leader it names if it does not lead;
    /// the error says why none took it. Sets `uncertain` when an attempt's outcome is
    /// unknown.
    async fn forward(
        &self,
        mut leader: NodeId,
        mut addr: String,
        command: &MapCommand,
        deadline: Instant,
        uncertain: &mut bool,
    ) -> Result<MapResponse, String> {
        for _ in 0..FORWARD_HOPS_MAX {
            let ttl = deadline
                .saturating_duration_since(Instant::now())
                .min(ATTEMPT_TIMEOUT);
            if ttl.is_zero() {
                break;
            }
            match self
                .network
                .propose(leader, &addr, command.clone(), ttl)
                .await
            {
                Ok(response) => return Ok(response),
                Err(ProposeError::NotLeader {
                    leader: Some(next),
                    addr: Some(next_addr),
                }) if next != leader && next != self.node_id => {
                    tracing::debug!(leader, next, "forwarded proposal redirected");
                    (leader, addr) = (next, next_addr);
                }
                Err(e @ ProposeError::NotLeader { .. }) => {
                    return Err(format!("node {leader}: {e}"));
                }
                Err(e) => {
                    *uncertain = true;
                    return Err(format!("node {leader}: {e}"));
                }
            }
        }
        Err(format!(
            "no leader took it after {FORWARD_HOPS_MAX} redirections (last: node {leader})"
        ))
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
        let voters = m.membership_config.membership().voter_ids().collect();
        MapStatus {
            leader: m.current_leader,
            term: m.current_term,
            role,
            members,
            voters,
        }
    }

    /// Stops this node's raft and waits (at most [`STORAGE_RELEASE_TIMEOUT`]) until its
    /// tasks have dropped the storage, so the directory can be opened again.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
        if !self.release.wait(STORAGE_RELEASE_TIMEOUT).await {
            tracing::warn!(
                node_id = self.node_id,
                "the raft's tasks still hold the storage after {STORAGE_RELEASE_TIMEOUT:?}"
            );
        }
    }

    /// The address of member `id`, from the membership this node knows.
    fn member_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// This node's incarnation in the map as applied here (0 if never registered).
    fn recorded_incarnation(&self) -> u64 {
        self.reader
            .read(|s| s.nodes.get(&self.node_id).map_or(0, |n| n.incarnation))
    }

    /// Waits until the map as applied here records an incarnation of this node of at least
    /// `incarnation`.
    async fn wait_for_incarnation(
        &self,
        incarnation: u64,
        deadline: Instant,
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        let target = incarnation;
        let waited = self
            .raft
            .wait(Some(deadline.saturating_duration_since(started)))
            .metrics(
                |_| self.recorded_incarnation() >= target,
                "the refused incarnation applied here",
            )
            .await;
        waited.map(|_| ()).map_err(|e| ClusterError::Timeout {
            waited: started.elapsed(),
            last: format!("incarnation {incarnation} refused, and never applied here: {e}"),
        })
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
