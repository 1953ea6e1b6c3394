//! The receiving side of the cluster map's consensus messages: what travels inside a
//! [`PeerMessage`], and the loop that serves a peer connection once its hello is accepted.
//!
//! ```text
//! leader (PeerClient)                         follower (serve_peer)
//!   | ClientFrame::Peer{id:7, RaftRpc}    ->    | decode, raft.append_entries(..)
//!   | ClientFrame::Peer{id:8, RaftRpc}    ->    |   (at most PEER_RPCS_IN_FLIGHT_MAX at once)
//!   |    <- ServerFrame::Peer{id:8, RaftReply}  | answers in completion order,
//!   |    <- ServerFrame::Peer{id:7, RaftReply}  |   the id pairs them
//! ```
//!
//! Payloads are postcard-encoded [`RaftRpc`]s and [`RaftReply`]s, built from openraft's own
//! serde types; `dfs-proto` carries them as opaque bytes. A payload that does not decode gets
//! a [`RaftReply::Refused`] answer and changes nothing; nothing a peer sends can panic us.
//!
//! Besides openraft's own RPCs, a peer may send [`RaftRpc::Propose`]: a map change that a
//! node which does not lead the group forwards to the leader it knows. The receiving node
//! commits it with its own raft (within [`PROPOSE_SERVE_TIMEOUT`]) or answers
//! [`ProposeError::NotLeader`] with the leader it knows in turn.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_proto::{
    ClientFrame, ErrorCode, PEER_PAYLOAD_BYTES_MAX, PeerMessage, ProtoError, ServerFrame, WireError,
};
use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::{MapCommand, MapResponse, Raft, TypeConfig};

/// Most consensus messages of one peer connection being handled at once; the connection is
/// not read further until one of them is answered.
pub const PEER_RPCS_IN_FLIGHT_MAX: usize = 16;

/// Answers queued for a peer connection's socket.
const OUTBOUND_FRAMES_MAX: usize = 16;

/// How long the peer may take to accept one frame of ours before the connection is closed.
pub const PEER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer connection on which nothing arrives for this long is closed (the peer dials again
/// when it next has something to say).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest a node spends committing one forwarded [`RaftRpc::Propose`] before it answers
/// [`ProposeError::Failed`] (a leader without a quorum never commits; the proposer's own
/// deadline is usually shorter and it stops waiting first).
pub const PROPOSE_SERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A consensus request, as one node's [`PeerClient`](crate::PeerClient) sends it to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Replicate log entries (or a heartbeat, with none).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A candidate asks for a vote.
    Vote(VoteRequest<u64>),
    /// One chunk of a snapshot (chunks are at most
    /// [`SNAPSHOT_CHUNK_BYTES`](crate::SNAPSHOT_CHUNK_BYTES), so each fits in a frame).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A map change forwarded by a node that does not lead the group: the receiver commits
    /// it through its raft if it leads, and answers [`ProposeError::NotLeader`] otherwise.
    Propose(MapCommand),
    /// A follower asks the leader for a read index: the leader confirms with a quorum that
    /// it still leads and answers the index of its last committed entry. A follower that
    /// has applied that far has seen every change committed before it asked.
    ReadIndex,
    /// A message of the data layer (replication of file contents, leases), opaque here:
    /// handed to the node's [`DataHandler`].
    Data(Vec<u8>),
    /// A node whose consensus storage is empty asks whether the map (as applied on the
    /// receiver) records that node as registered: if so, it ran before and lost its
    /// storage (see [`ClusterMap`](crate::ClusterMap), "Disk loss").
    Standing(u64),
    /// A node that lost its consensus storage asks the leader to take it back: first
    /// (`promote: false`) out of the group's membership, so that its votes and
    /// acknowledgements no longer count and the leader forgets what log it had, and out of
    /// every file's replica set ([`MapCommand::NodeLost`]); then (`promote: true`), once it
    /// serves its peers again, as a learner, and as a voter as soon as it has the log. The
    /// receiver answers [`ProposeError::NotLeader`] if it does not lead.
    Readmit {
        /// The node.
        node: u64,
        /// Its address.
        addr: String,
        /// Which step.
        promote: bool,
    },
}

impl RaftRpc {
    /// The request encoded for a [`PeerMessage`].
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Decodes a request; any bytes may be given. A payload nested deeper than
    /// [`PAYLOAD_NESTING_MAX`](crate::PAYLOAD_NESTING_MAX) is refused.
    pub fn decode(payload: &[u8]) -> Result<Self, postcard::Error> {
        crate::nesting::from_bytes(payload)
    }

    /// The request's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RaftRpc::AppendEntries(_) => "append_entries",
            RaftRpc::Vote(_) => "vote",
            RaftRpc::InstallSnapshot(_) => "install_snapshot",
            RaftRpc::Propose(_) => "propose",
            RaftRpc::ReadIndex => "read_index",
            RaftRpc::Data(_) => "data",
            RaftRpc::Standing(_) => "standing",
            RaftRpc::Readmit { .. } => "readmit",
        }
    }
}

/// The answer to a [`RaftRpc`]: what the receiving node's raft returned, error included.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftReply {
    /// The answer to [`RaftRpc::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// The answer to [`RaftRpc::Vote`].
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// The answer to [`RaftRpc::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The node could not take the request (its payload is no [`RaftRpc`] of this version)
    /// or could not send its answer (too large to encode); nothing is known of the outcome.
    Refused(String),
    /// The answer to [`RaftRpc::Propose`]: how the command applied, or why it was not
    /// committed.
    Propose(Result<MapResponse, ProposeError>),
    /// The answer to [`RaftRpc::ReadIndex`]: the index to have applied, or why the node
    /// cannot give one.
    ReadIndex(Result<u64, ProposeError>),
    /// The answer to [`RaftRpc::Data`], opaque here.
    Data(Vec<u8>),
    /// The answer to [`RaftRpc::Standing`]: whether the receiver's map records the node.
    Standing(bool),
    /// The answer to [`RaftRpc::Readmit`]: the step is done, or why not.
    Readmit(Result<(), ProposeError>),
}

/// Why a proposal forwarded to another node ([`RaftRpc::Propose`]) did not come back
/// committed. Travels in [`RaftReply::Propose`]: append variants at the end only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The node does not lead the group; nothing was appended. `leader` is the leader it
    /// knows, if any, and `addr` that leader's address.
    #[error("node does not lead the cluster map (leader: {leader:?} at {addr:?})")]
    NotLeader {
        /// The leader the node knows.
        leader: Option<u64>,
        /// Its address.
        addr: Option<String>,
    },
    /// The node's raft failed, or did not commit the command within
    /// [`PROPOSE_SERVE_TIMEOUT`]: the command may or may not commit.
    #[error("the leader did not commit the proposal: {0}")]
    Failed(String),
    /// The proposal could not be sent, or its answer was lost or did not decode (never
    /// sent by a node; made by the proposing side): the command may or may not commit.
    #[error("forwarding the proposal failed: {0}")]
    Unreachable(String),
}

impl RaftReply {
    /// The answer encoded for a [`PeerMessage`].
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Decodes an answer; any bytes may be given. A payload nested deeper than
    /// [`PAYLOAD_NESTING_MAX`](crate::PAYLOAD_NESTING_MAX) is refused.
    pub fn decode(payload: &[u8]) -> Result<Self, postcard::Error> {
        crate::nesting::from_bytes(payload)
    }
}

/// What a peer connection needs of the local raft: the three calls a leader or candidate
/// makes, and the commit of a forwarded proposal. [`Raft`] is the real one; tests put a
/// stand-in behind the same loop.
pub(crate) trait RaftService: Clone + Send + Sync + 'static {
    fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<u64>, RaftError<u64>>> + Send;

    fn vote(
        &self,
        rpc: VoteRequest<u64>,
    ) -> impl Future<Output = Result<VoteResponse<u64>, RaftError<u64>>> + Send;

    fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> impl Future<
        Output = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>,
    > + Send;

    fn propose(
        &self,
        command: MapCommand,
    ) -> impl Future<Output = Result<MapResponse, ProposeError>> + Send;

    /// Answers a [`RaftRpc::ReadIndex`]; by default, as a node that leads nothing.
    fn read_index(&self) -> impl Future<Output = Result<u64, ProposeError>> + Send {
        async {
            Err(ProposeError::NotLeader {
                leader: None,
                addr: None,
            })
        }
    }

    /// Whether the node takes part in consensus (see [`Admission`]); by default, yes.
    fn admitted(&self) -> bool {
        true
    }

    /// The local node's id, if known: a consensus message in its name did not come from a
    /// peer (see [`dispatch_with`]).
    fn local_id(&self) -> Option<u64> {
        None
    }

    /// Answers a [`RaftRpc::Standing`]; by default, as a node whose map records nothing.
    fn standing(&self, _node: u64) -> bool {
        false
    }

    /// Answers a [`RaftRpc::Readmit`]; by default, as a node that leads nothing.
    fn readmit(
        &self,
        _node: u64,
        _addr: String,
        _promote: bool,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send {
        async {
            Err(ProposeError::NotLeader {
                leader: None,
                addr: None,
            })
        }
    }

    /// Answers a [`RaftRpc::Data`]; by default, refuses it.
    fn data(&self, payload: Vec<u8>) -> impl Future<Output = RaftReply> + Send {
        async move {
            RaftReply::Refused(format!(
                "no data layer serves this node ({} bytes refused)",
                payload.len()
            ))
        }
    }
}

/// The data layer's side of peer connections: answers [`RaftRpc::Data`] payloads.
pub trait DataHandler: Send + Sync + 'static {
    /// Handles one request payload and returns the answer payload. Any bytes may be given.
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'_, Vec<u8>>;
}

/// Where a node's [`DataHandler`] goes once it exists: peer connections are served (for the
/// map's consensus) before the data layer has started; until it is set, data requests are
/// refused.
#[derive(Clone, Default)]
pub struct DataSlot(Arc<std::sync::OnceLock<Arc<dyn DataHandler>>>);

impl DataSlot {
    /// Installs the handler (only the first call has an effect).
    pub fn set(&self, handler: Arc<dyn DataHandler>) {
        let _ = self.0.set(handler);
    }
}

impl std::fmt::Debug for DataSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSlot")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

/// Whether a node takes part in the map's consensus. Closed while a node that lost its
/// consensus storage waits to be taken back as a learner: it then answers no vote request
/// and acknowledges no entry, since what it promised before the loss is forgotten (a vote
/// given twice in one term could elect two leaders; an entry it acknowledged may be
/// committed on the strength of that acknowledgement).
#[derive(Debug, Clone)]
pub struct Admission(Arc<std::sync::atomic::AtomicBool>);

impl Admission {
    /// Open (`true`) or closed.
    pub fn new(open: bool) -> Self {
        Self(Arc::new(std::sync::atomic::AtomicBool::new(open)))
    }

    /// Whether it is open.
    pub fn is_open(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Opens it.
    pub fn open(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(true)
    }
}

/// What a node serves on its peer connections: its raft, and its data layer once set.
#[derive(Clone)]
pub struct PeerService {
    raft: Raft,
    data: DataSlot,
    map: Option<crate::MapReader>,
    admission: Admission,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService")
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl PeerService {
    /// Serves `raft`, and data requests through `data` once a handler is set in it.
    pub fn new(raft: Raft, data: DataSlot) -> Self {
        Self {
            raft,
            data,
            map: None,
            admission: Admission::default(),
        }
    }

    /// Serves `map`'s raft (within its [`Admission`]) and answers [`RaftRpc::Standing`]
    /// from its applied state; data requests through `data` once a handler is set in it.
    pub fn for_map(map: &crate::ClusterMap, data: DataSlot) -> Self {
        Self {
            raft: map.raft().clone(),
            data,
            map: Some(map.reader().clone()),
            admission: map.admission(),
        }
    }
}

impl From<Raft> for PeerService {
    fn from(raft: Raft) -> Self {
        Self::new(raft, DataSlot::default())
    }
}

impl RaftService for PeerService {
    async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.raft.append_entries(rpc).await
    }

    async fn vote(&self, rpc: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        self.raft.vote(rpc).await
    }

    async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.raft.install_snapshot(rpc).await
    }

    async fn propose(&self, command: MapCommand) -> Result<MapResponse, ProposeError> {
        RaftService::propose(&self.raft, command).await
    }

    async fn read_index(&self) -> Result<u64, ProposeError> {
        RaftService::read_index(&self.raft).await
    }

    fn admitted(&self) -> bool {
        self.admission.is_open()
    }

    fn local_id(&self) -> Option<u64> {
        RaftService::local_id(&self.raft)
    }

    fn standing(&self, node: u64) -> bool {
        self.map
            .as_ref()
            .is_some_and(|m| m.read(|s| s.nodes.contains_key(&node)))
    }

    async fn readmit(&self, node: u64, addr: String, promote: bool) -> Result<(), ProposeError> {
        RaftService::readmit(&self.raft, node, addr, promote).await
    }

    async fn data(&self, payload: Vec<u8>) -> RaftReply {
        match self.data.0.get() {
            Some(handler) => RaftReply::Data(handler.handle(payload).await),
            None => RaftReply::Refused("the node's data layer is still starting".into()),
        }
    }
}

impl RaftService for Raft {
    async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        Raft::append_entries(self, rpc).await
    }

    async fn vote(&self, rpc: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        Raft::vote(self, rpc).await
    }

    async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        Raft::install_snapshot(self, rpc).await
    }

    fn local_id(&self) -> Option<u64> {
        Some(self.metrics().borrow().id)
    }

    async fn propose(&self, command: MapCommand) -> Result<MapResponse, ProposeError> {
        as_leader(self.client_write(command), "not committed")
            .await
            .map(|reply| reply.data)
    }

    async fn read_index(&self) -> Result<u64, ProposeError> {
        as_leader(self.ensure_linearizable(), "leadership not confirmed")
            .await
            .map(|log_id| log_id.map_or(0, |l| l.index))
    }

    async fn readmit(&self, node: u64, addr: String, promote: bool) -> Result<(), ProposeError> {
        let step = async {
            if promote {
                // A learner again, followed from scratch: this waits until it has the log,
                // then makes it a voter.
                self.add_learner(node, openraft::BasicNode { addr }, true)
                    .await?;
                let voters = std::collections::BTreeSet::from([node]);
                self.change_membership(openraft::ChangeMembers::AddVoterIds(voters), true)
                    .await?;
            } else {
                // Out of the membership altogether: the leader then forgets how much of
                // the log it had (a learner kept on would still count its lost entries
                // as matched), and follows it anew once it is added back.
                let metrics = self.metrics().borrow().clone();
                let config = metrics.membership_config.membership();
                let ids = std::collections::BTreeSet::from([node]);
                let change = if config.voter_ids().any(|v| v == node) {
                    Some(openraft::ChangeMembers::RemoveVoters(ids))
                } else if config.get_node(&node).is_some() {
                    Some(openraft::ChangeMembers::RemoveNodes(ids))
                } else {
                    None
                };
                if let Some(change) = change {
                    self.change_membership(change, false).await?;
                }
                // Its copies are gone with its disk: out of every replica set.
                self.client_write(MapCommand::NodeLost { id: node }).await?;
            }
            Ok::<_, RaftError<u64, openraft::error::ClientWriteError<u64, openraft::BasicNode>>>(())
        };
        as_leader(step, "not taken back").await
    }
}

/// `work`, which only a leader can do, within [`PROPOSE_SERVE_TIMEOUT`]: its result, or
/// `NotLeader` (with the leader this node knows) if it does not lead, or `Failed` (saying
/// what was `not_done` in time).
async fn as_leader<T, E>(
    work: impl Future<Output = Result<T, RaftError<u64, E>>>,
    not_done: &str,
) -> Result<T, ProposeError>
where
    E: std::error::Error
        + openraft::TryAsRef<openraft::error::ForwardToLeader<u64, openraft::BasicNode>>,
{
    match tokio::time::timeout(PROPOSE_SERVE_TIMEOUT, work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => match e.forward_to_leader() {
            Some(f) => Err(ProposeError::NotLeader {
                leader: f.leader_id,
                addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
            }),
            None => Err(ProposeError::Failed(e.to_string())),
        },
        Err(_) => Err(ProposeError::Failed(format!(
            "{not_done} within {PROPOSE_SERVE_TIMEOUT:?}"
        ))),
    }
}

/// Handles one encoded [`RaftRpc`] with the local raft and returns the encoded
/// [`RaftReply`]. Never panics: a payload that does not decode is answered with
/// [`RaftReply::Refused`].
pub async fn dispatch(raft: &Raft, payload: &[u8]) -> Bytes {
    dispatch_with(raft, payload).await
}

pub(crate) async fn dispatch_with<S: RaftService>(service: &S, payload: &[u8]) -> Bytes {
    let reply =
        match RaftRpc::decode(payload) {
            Ok(
                rpc @ (RaftRpc::AppendEntries(_) | RaftRpc::Vote(_) | RaftRpc::InstallSnapshot(_)),
            ) if !service.admitted() => RaftReply::Refused(format!(
                "this node lost its consensus storage and waits to be taken back ({} refused)",
                rpc.kind()
            )),
            // A leader or candidate never sends to itself: a message in this node's own
            // name is forged or corrupt, and openraft, which trusts it, would act as the
            // leader and a follower of the same term at once (a debug build panics).
            Ok(rpc) if sender(&rpc).is_some_and(|s| service.local_id() == Some(s)) => {
                RaftReply::Refused(format!(
                    "{} in the name of the receiving node: refused",
                    rpc.kind()
                ))
            }
            Ok(RaftRpc::AppendEntries(rpc)) => {
                RaftReply::AppendEntries(service.append_entries(rpc).await)
            }
            Ok(RaftRpc::Vote(rpc)) => RaftReply::Vote(service.vote(rpc).await),
            Ok(RaftRpc::InstallSnapshot(rpc)) => {
                RaftReply::InstallSnapshot(service.install_snapshot(rpc).await)
            }
            Ok(RaftRpc::Propose(command)) => RaftReply::Propose(service.propose(command).await),
            Ok(RaftRpc::ReadIndex) => RaftReply::ReadIndex(service.read_index().await),
            Ok(RaftRpc::Data(payload)) => service.data(payload).await,
            Ok(RaftRpc::Standing(node)) => RaftReply::Standing(service.standing(node)),
            Ok(RaftRpc::Readmit {
                node,
                addr,
                promote,
            }) => RaftReply::Readmit(service.readmit(node, addr, promote).await),
            Err(e) => {
                tracing::warn!(len = payload.len(), error = %e, "undecodable raft request");
                RaftReply::Refused(format!(
                    "undecodable raft request of {} bytes: {e}",
                    payload.len()
                ))
            }
        };
    encode_reply(&reply)
}

/// The node a consensus request speaks for: the leader or candidate its vote names.
fn sender(rpc: &RaftRpc) -> Option<u64> {
    let vote = match rpc {
        RaftRpc::AppendEntries(r) => &r.vote,
        RaftRpc::Vote(r) => &r.vote,
        RaftRpc::InstallSnapshot(r) => &r.vote,
        _ => return None,
    };
    vote.leader_id().voted_for()
}

/// Encodes an answer, replacing one that cannot be sent by a [`RaftReply::Refused`].
fn encode_reply(reply: &RaftReply) -> Bytes {
    let why = match reply.encode() {
        Ok(bytes) if bytes.len() <= PEER_PAYLOAD_BYTES_MAX => return Bytes::from(bytes),
        Ok(bytes) => format!(
            "the answer is {} bytes, over the {PEER_PAYLOAD_BYTES_MAX}-byte limit",
            bytes.len()
        ),
        Err(e) => format!("the answer does not encode: {e}"),
    };
    tracing::error!(why, "cannot send a raft answer");
    // A short string always encodes; should it not, the caller sees an undecodable answer.
    RaftReply::Refused(why)
        .encode()
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Serves a peer connection whose `Role::Peer` hello the node has accepted (and answered
/// with `Welcome`): reads [`ClientFrame::Peer`] requests, handles up to
/// [`PEER_RPCS_IN_FLIGHT_MAX`] at once with `service` (a [`Raft`] or a [`PeerService`]), and writes each answer as a
/// [`ServerFrame::Peer`] with the request's id.
///
/// Any other frame, an undecodable frame or [`PEER_IDLE_TIMEOUT`] of silence ends the
/// connection with a `Goodbye`. Returns once the peer has left and the answers in progress
/// are written (or could not be). Dropping the future abandons the requests in progress.
///
/// Works on any frame stream and sink, such as the `FramedRead` / `FramedWrite` halves of a
/// socket with `dfs_proto::ServerCodec`.
pub async fn serve_peer<R, W>(service: impl Into<PeerService>, reader: R, writer: W)
where
    R: Stream<Item = Result<ClientFrame, ProtoError>> + Unpin,
    W: Sink<ServerFrame> + Unpin,
    W::Error: std::fmt::Display,
{
    serve_with(service.into(), reader, writer).await;
}

pub(crate) async fn serve_with<S, R, W>(service: S, mut reader: R, writer: W)
where
    S: RaftService,
    R: Stream<Item = Result<ClientFrame, ProtoError>> + Unpin,
    W: Sink<ServerFrame> + Unpin,
    W::Error: std::fmt::Display,
{
    let (out, out_rx) = mpsc::channel::<ServerFrame>(OUTBOUND_FRAMES_MAX);
    let read_side = async move {
        // Dispatches run as tasks: a slow one does not hold up the others. The set aborts
        // them if this future is dropped.
        let mut tasks = JoinSet::new();
        let permits = Arc::new(Semaphore::new(PEER_RPCS_IN_FLIGHT_MAX));
        let bye = |code, message: String| ServerFrame::Goodbye(WireError::new(code, message));
        loop {
            while tasks.try_join_next().is_some() {}
            let next = tokio::select! {
                // The writer has given up: the peer does not take our answers.
                _ = out.closed() => break,
                next = tokio::time::timeout(PEER_IDLE_TIMEOUT, reader.next()) => next,
            };
            let frame = match next {
                Err(_) => {
                    let msg = format!("idle for {PEER_IDLE_TIMEOUT:?}");
                    let _ = out.send(bye(ErrorCode::Timeout, msg)).await;
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "bad frame from a peer");
                    let code = match e {
                        ProtoError::FrameTooLarge { .. } => ErrorCode::TooLarge,
                        ProtoError::Io(_) => ErrorCode::Internal,
                        ProtoError::Malformed(_) | ProtoError::Truncated(_) => {
                            ErrorCode::InvalidRequest
                        }
                    };
                    let _ = out.send(bye(code, e.to_string())).await;
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let PeerMessage { id, payload } = match frame {
                ClientFrame::Peer(message) => message,
                other => {
                    let what = match other {
                        ClientFrame::Hello(_) => "a second hello",
                        ClientFrame::Request(_) => "a client request",
                        ClientFrame::Chunk(_) => "a chunk",
                        ClientFrame::Cancel { .. } => "a cancel",
                        ClientFrame::Peer(_) => "a peer message",
                        ClientFrame::Proof(_) => "a proof",
                    };
                    let msg = format!("{what} on a peer connection: only peer messages");
                    let _ = out.send(bye(ErrorCode::ProtocolMismatch, msg)).await;
                    break;
                }
            };
            // At most PEER_RPCS_IN_FLIGHT_MAX at once: wait (and read nothing) meanwhile.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (service, out) = (service.clone(), out.clone());
            tasks.spawn(async move {
                let payload = dispatch_with(&service, &payload).await;
                let _ = out
                    .send(ServerFrame::Peer(PeerMessage { id, payload }))
                    .await;
                drop(permit);
            });
        }
        drop(out);
        // The answers in progress still go out; the writer ends after the last one.
        while tasks.join_next().await.is_some() {}
    };
    tokio::join!(read_side, write_frames(writer, out_rx));
}

/// Writes queued frames until the queue closes, a `Goodbye` is written or the peer stops
/// taking frames.
async fn write_frames<W>(mut sink: W, mut rx: mpsc::Receiver<ServerFrame>)
where
    W: Sink<ServerFrame> + Unpin,
    W::Error: std::fmt::Display,
{
    while let Some(frame) = rx.recv().await {
        let last = matches!(frame, ServerFrame::Goodbye(_));
        match tokio::time::timeout(PEER_WRITE_TIMEOUT, sink.feed(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "writing to a peer failed");
                return;
            }
            Err(_) => {
                tracing::debug!("a peer does not take our frames; closing");
                return;
            }
        }
        if (last || rx.is_empty())
            && !matches!(
                tokio::time::timeout(PEER_WRITE_TIMEOUT, sink.flush()).await,
                Ok(Ok(()))
            )
        {
            return;
        }
        if last {
            break;
        }
    }
    // Dropping the receiver here tells the reading side that nothing more goes out.
    drop(rx);
    let _ = tokio::time::timeout(PEER_WRITE_TIMEOUT, sink.close()).await;
}
