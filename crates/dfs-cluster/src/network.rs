//! The sending side of the cluster map's consensus messages: openraft's network, over peer
//! connections of the dfs protocol.
//!
//! [`PeerNetwork`] keeps one link per target node, shared by every [`PeerClient`] openraft
//! makes for it (openraft makes a fresh client for each vote and each read-index round, so
//! links are kept by the factory, not by the client). A link dials lazily, says hello with
//! `Role::Peer`, and then multiplexes requests on one connection: a writer task, a reader
//! task that routes each answer to its caller by id, and a table of calls waiting.
//!
//! | failure | openraft sees |
//! |---|---|
//! | no connection (refused, dial timeout, hello refused, connection lost) | [`RPCError::Unreachable`]: it backs off for [`PEER_BACKOFF`] |
//! | no answer within the call's time to live | [`RPCError::Timeout`] |
//! | an answer that does not decode, or of the wrong kind | [`RPCError::Network`] |
//! | the remote raft's error | [`RPCError::RemoteError`] |
//! | append-entries too large for a frame | [`RPCError::PayloadTooLarge`]: it sends fewer entries |
//!
//! A connection that fails is dropped and dialled again on the next call, and so is one on
//! which [`TIMEOUTS_BEFORE_REDIAL`] calls in a row timed out (a peer that vanished without
//! closing its socket).
//!
//! [`PeerNetwork::propose`] forwards a map change to the leader on the same links, so a
//! node's proposals and its raft's messages share one connection per target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dfs_auth::ClusterSecret;
use dfs_net::{BoxStream, SharedTransport};
use dfs_proto::{
    ClientCodec, ClientFrame, Hello, PEER_PAYLOAD_BYTES_MAX, PeerMessage, Role, ServerFrame,
};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::peer::{ProposeError, RaftReply, RaftRpc};
use crate::{MapCommand, MapResponse, TypeConfig};

/// Longest wait for a connection and its hello's answer (a call's own time to live, when
/// shorter, cuts it first).
pub const PEER_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long openraft waits before calling an unreachable peer again. Shorter than the
/// election timeout, so a restarted follower hears from the leader before it runs for
/// election.
pub const PEER_BACKOFF: Duration = Duration::from_millis(100);

/// Calls in a row without an answer in time after which the connection is dropped and
/// dialled again.
pub const TIMEOUTS_BEFORE_REDIAL: u32 = 3;

/// Frames queued for one peer connection's socket.
const OUTBOUND_FRAMES_MAX: usize = 16;

/// openraft's network: makes a [`PeerClient`] per target, all clients of a target sharing
/// one connection. Cheap to clone (clones share the connections).
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    node_id: u64,
    cluster_id: u64,
    transport: SharedTransport,
    secret: Option<ClusterSecret>,
    links: Arc<Mutex<BTreeMap<u64, Arc<PeerLink>>>>,
}

impl PeerNetwork {
    /// The network of node `node_id` of cluster `cluster_id` (both go in every hello; a node
    /// of another cluster refuses us), dialing over `transport`.
    pub fn new(node_id: u64, cluster_id: u64, transport: SharedTransport) -> Self {
        Self {
            node_id,
            cluster_id,
            transport,
            secret: None,
            links: Arc::default(),
        }
    }

    /// The same network proving `secret` in every hello (the cluster's nodes share it);
    /// without one, hellos carry no proof and a node that asks for one refuses us.
    pub fn with_secret(mut self, secret: Option<ClusterSecret>) -> Self {
        self.secret = secret;
        self
    }

    /// The link to `target` at `addr`, made on first use or when the address changed.
    fn link(&self, target: u64, addr: &str) -> Arc<PeerLink> {
        let mut links = self.links.lock();
        if let Some(link) = links.get(&target)
            && link.addr == addr
        {
            return link.clone();
        }
        let link = Arc::new(PeerLink {
            node_id: self.node_id,
            cluster_id: self.cluster_id,
            target,
            addr: addr.to_owned(),
            transport: self.transport.clone(),
            secret: self.secret.clone(),
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            timeouts: AtomicU32::new(0),
        });
        links.insert(target, link.clone());
        link
    }

    /// Forwards `command` to node `target` at `addr` ([`RaftRpc::Propose`]) on the link
    /// openraft uses for that node, and waits at most `ttl` for the outcome.
    ///
    /// [`ProposeError::NotLeader`] means `target` does not lead and appended nothing (it
    /// names the leader it knows); [`ProposeError::Failed`] and
    /// [`ProposeError::Unreachable`] leave the outcome unknown: the command may still
    /// commit.
    pub async fn propose(
        &self,
        target: u64,
        addr: &str,
        command: MapCommand,
        ttl: Duration,
    ) -> Result<MapResponse, ProposeError> {
        let link = self.link(target, addr);
        match link.call(&RaftRpc::Propose(command), ttl).await {
            Ok(RaftReply::Propose(result)) => result,
            Ok(RaftReply::Refused(why)) => Err(ProposeError::Unreachable(format!(
                "node {target} refused the proposal: {why}"
            ))),
            Ok(other) => Err(ProposeError::Unreachable(format!(
                "node {target} answered the proposal with {}",
                reply_kind(&other)
            ))),
            Err(e) => Err(ProposeError::Unreachable(format!("node {target}: {e}"))),
        }
    }
}

impl PeerNetwork {
    /// Asks node `target` at `addr` whether its map records node `node`
    /// ([`RaftRpc::Standing`]), waiting at most `ttl`.
    pub async fn standing(
        &self,
        target: u64,
        addr: &str,
        node: u64,
        ttl: Duration,
    ) -> Result<bool, ProposeError> {
        let link = self.link(target, addr);
        match link.call(&RaftRpc::Standing(node), ttl).await {
            Ok(RaftReply::Standing(known)) => Ok(known),
            Ok(other) => Err(ProposeError::Unreachable(format!(
                "node {target} answered a standing request with {}",
                reply_kind(&other)
            ))),
            Err(e) => Err(ProposeError::Unreachable(format!("node {target}: {e}"))),
        }
    }

    /// Asks node `target` at `addr` to take node `node` back ([`RaftRpc::Readmit`]),
    /// waiting at most `ttl`.
    pub async fn readmit(
        &self,
        target: u64,
        target_addr: &str,
        node: (u64, String),
        promote: bool,
        ttl: Duration,
    ) -> Result<(), ProposeError> {
        let link = self.link(target, target_addr);
        let rpc = RaftRpc::Readmit {
            node: node.0,
            addr: node.1,
            promote,
        };
        match link.call(&rpc, ttl).await {
            Ok(RaftReply::Readmit(result)) => result,
            Ok(other) => Err(ProposeError::Unreachable(format!(
                "node {target} answered a readmit request with {}",
                reply_kind(&other)
            ))),
            Err(e) => Err(ProposeError::Unreachable(format!("node {target}: {e}"))),
        }
    }

    /// Asks node `target` at `addr` for a read index ([`RaftRpc::ReadIndex`]), waiting at
    /// most `ttl`.
    pub async fn read_index(
        &self,
        target: u64,
        addr: &str,
        ttl: Duration,
    ) -> Result<u64, ProposeError> {
        let link = self.link(target, addr);
        match link.call(&RaftRpc::ReadIndex, ttl).await {
            Ok(RaftReply::ReadIndex(result)) => result,
            Ok(other) => Err(ProposeError::Unreachable(format!(
                "node {target} answered a read index request with {}",
                reply_kind(&other)
            ))),
            Err(e) => Err(ProposeError::Unreachable(format!("node {target}: {e}"))),
        }
    }

    /// Sends a data-layer request ([`RaftRpc::Data`]) to node `target` at `addr` and waits
    /// at most `ttl` for its answer. An error leaves the outcome unknown.
    pub async fn call_data(
        &self,
        target: u64,
        addr: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, DataCallError> {
        let link = self.link(target, addr);
        match link.call(&RaftRpc::Data(payload), ttl).await {
            Ok(RaftReply::Data(answer)) => Ok(answer),
            Ok(RaftReply::Refused(why)) => Err(DataCallError(format!(
                "node {target} refused the request: {why}"
            ))),
            Ok(other) => Err(DataCallError(format!(
                "node {target} answered a data request with {}",
                reply_kind(&other)
            ))),
            Err(e) => Err(DataCallError(format!("node {target}: {e}"))),
        }
    }
}

/// A data-layer request ([`PeerNetwork::call_data`]) that got no answer: the peer could not
/// be reached, did not answer in time or refused it. Its outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataCallError(pub String);

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            link: self.link(target, &node.addr),
            node: node.clone(),
        }
    }
}

/// openraft's client for one target node. Connects on first use.
#[derive(Debug)]
pub struct PeerClient {
    link: Arc<PeerLink>,
    node: BasicNode,
}

type RpcError<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerClient {
    /// Maps a failed call into openraft's error.
    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<u64, BasicNode, E> {
        tracing::debug!(target = self.link.target, ?action, error = %e, "raft call failed");
        match e {
            CallError::Unreachable(_) | CallError::Refused(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.link.node_id,
                target: self.link.target,
                timeout: ttl,
            }),
            CallError::TooLarge(_) | CallError::Encode(_) | CallError::Decode(_) => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<u64, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.link.target,
            self.node.clone(),
            e,
        ))
    }
}

/// The kind of an answer, for errors.
fn reply_kind(reply: &RaftReply) -> &'static str {
    match reply {
        RaftReply::AppendEntries(_) => "append_entries",
        RaftReply::Vote(_) => "vote",
        RaftReply::InstallSnapshot(_) => "install_snapshot",
        RaftReply::Refused(_) => "refused",
        RaftReply::Propose(_) => "propose",
        RaftReply::ReadIndex(_) => "read_index",
        RaftReply::Data(_) => "data",
        RaftReply::Standing(_) => "standing",
        RaftReply::Readmit(_) => "readmit",
    }
}

fn wrong_answer(action: RPCTypes, reply: &RaftReply) -> CallError {
    let got = reply_kind(reply);
    CallError::Decode(format!("a {got} answer to a {action:?} request"))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        let (action, ttl) = (RPCTypes::AppendEntries, option.soft_ttl());
        let entries = rpc.entries.len() as u64;
        match self.link.call(&RaftRpc::AppendEntries(rpc), ttl).await {
            Ok(RaftReply::AppendEntries(result)) => result.map_err(|e| self.remote(e)),
            Ok(RaftReply::Refused(why)) => {
                Err(self.rpc_error(CallError::Refused(why), action, ttl))
            }
            Ok(other) => Err(self.rpc_error(wrong_answer(action, &other), action, ttl)),
            Err(CallError::TooLarge(len)) => {
                tracing::debug!(len, entries, "append-entries over the frame limit; fewer");
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries / 2).max(1)),
                ))
            }
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcError<InstallSnapshotError>> {
        let (action, ttl) = (RPCTypes::InstallSnapshot, option.soft_ttl());
        match self.link.call(&RaftRpc::InstallSnapshot(rpc), ttl).await {
            Ok(RaftReply::InstallSnapshot(result)) => result.map_err(|e| self.remote(e)),
            Ok(RaftReply::Refused(why)) => {
                Err(self.rpc_error(CallError::Refused(why), action, ttl))
            }
            Ok(other) => Err(self.rpc_error(wrong_answer(action, &other), action, ttl)),
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError> {
        let (action, ttl) = (RPCTypes::Vote, option.soft_ttl());
        match self.link.call(&RaftRpc::Vote(rpc), ttl).await {
            Ok(RaftReply::Vote(result)) => result.map_err(|e| self.remote(e)),
            Ok(RaftReply::Refused(why)) => {
                Err(self.rpc_error(CallError::Refused(why), action, ttl))
            }
            Ok(other) => Err(self.rpc_error(wrong_answer(action, &other), action, ttl)),
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(PEER_BACKOFF))
    }
}

/// Why one call failed, before it becomes an openraft error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No connection, or it was lost before the answer came.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the call's time to live.
    #[error("no answer in time")]
    Timeout,
    /// The encoded request is over the peer payload limit.
    #[error("request of {0} bytes is over the {PEER_PAYLOAD_BYTES_MAX}-byte peer payload limit")]
    TooLarge(usize),
    /// The request does not encode.
    #[error("request does not encode: {0}")]
    Encode(#[source] postcard::Error),
    /// The answer does not decode, or answers another kind of request.
    #[error("bad answer: {0}")]
    Decode(String),
    /// The peer could not take the request.
    #[error("the peer refused the request: {0}")]
    Refused(String),
}

/// Everything needed to reach one target node, and its current connection.
#[derive(Debug)]
struct PeerLink {
    node_id: u64,
    cluster_id: u64,
    target: u64,
    addr: String,
    transport: SharedTransport,
    secret: Option<ClusterSecret>,
    /// The connection, if one is up; held across a dial so callers share it.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    /// Calls in a row that timed out.
    timeouts: AtomicU32,
}

impl PeerLink {
    /// Sends one request and waits for its answer, all within `ttl`.
    async fn call(&self, rpc: &RaftRpc, ttl: Duration) -> Result<RaftReply, CallError> {
        let payload = rpc.encode().map_err(CallError::Encode)?;
        if payload.len() > PEER_PAYLOAD_BYTES_MAX {
            return Err(CallError::TooLarge(payload.len()));
        }
        let deadline = Instant::now() + ttl;
        let conn = match tokio::time::timeout_at(deadline, self.connection()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(why)) => return Err(CallError::Unreachable(why)),
            Err(_) => {
                return Err(CallError::Unreachable(format!(
                    "{}: no connection within {ttl:?}",
                    self.addr
                )));
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, _forget) = conn.register(id).ok_or_else(|| self.lost())?;
        let frame = ClientFrame::Peer(PeerMessage {
            id,
            payload: Bytes::from(payload),
        });
        tracing::trace!(target = self.target, id, kind = rpc.kind(), "raft call");
        let answer = async {
            conn.out.send(frame).await.map_err(|_| self.lost())?;
            answer.await.map_err(|_| self.lost())
        };
        let payload = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let n = self.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= TIMEOUTS_BEFORE_REDIAL {
                    tracing::debug!(
                        target = self.target,
                        n,
                        "calls time out; dropping the connection"
                    );
                    self.drop_connection(&conn).await;
                }
                return Err(CallError::Timeout);
            }
        };
        self.timeouts.store(0, Ordering::Relaxed);
        RaftReply::decode(&payload).map_err(|e| {
            CallError::Decode(format!(
                "undecodable answer of {} bytes: {e}",
                payload.len()
            ))
        })
    }

    fn lost(&self) -> CallError {
        CallError::Unreachable(format!("{}: connection lost", self.addr))
    }

    /// The current connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, String> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(self.dial().await?);
        *slot = Some(conn.clone());
        self.timeouts.store(0, Ordering::Relaxed);
        Ok(conn)
    }

    async fn drop_connection(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// Connects, says hello as a peer and checks the answer; starts the connection's tasks.
    async fn dial(&self) -> Result<Conn, String> {
        let addr = &self.addr;
        let stream = tokio::time::timeout(PEER_DIAL_TIMEOUT, self.transport.connect(addr))
            .await
            .map_err(|_| format!("{addr}: connect timed out"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut framed = Framed::new(stream, ClientCodec::new());
        let hello = Hello::new(Role::Peer {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
        })
        // A nonce only where it is used: a simulation without a secret draws no more.
        .with_nonce(match self.secret {
            Some(_) => dfs_net::random::nonce(),
            None => [0; 32],
        });
        let welcome = tokio::time::timeout(
            PEER_DIAL_TIMEOUT,
            dfs_auth::greet(&mut framed, hello, self.secret.as_ref()),
        )
        .await
        .map_err(|_| format!("{addr}: no answer to the hello"))?;
        match welcome {
            Ok(w) if w.cluster_id == self.cluster_id && w.node_id == self.target => {
                tracing::debug!(target = self.target, addr, "peer connected");
            }
            Ok(w) => {
                return Err(format!(
                    "{addr} is node {} of cluster {:016x}, not node {} of {:016x}",
                    w.node_id, w.cluster_id, self.target, self.cluster_id
                ));
            }
            Err(dfs_auth::GreetError::Refused(e)) => {
                return Err(format!("{addr} refused us: {e}"));
            }
            Err(e @ dfs_auth::GreetError::Unauthenticated(_)) => {
                tracing::warn!(target = self.target, addr, error = %e, "peer refused");
                return Err(format!("{addr}: {e}"));
            }
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        Ok(Conn::start(framed, self.target))
    }
}

/// The calls waiting for an answer on one connection.
#[derive(Debug, Default)]
struct Pending {
    /// The connection has ended: no more calls are taken.
    closed: bool,
    /// Ordered, so that closing wakes the callers in one order (a simulation replays).
    calls: BTreeMap<u64, oneshot::Sender<Bytes>>,
}

/// One live peer connection: its outbound queue and the calls waiting for answers. Dropping
/// the last reference stops its tasks and closes the socket.
#[derive(Debug)]
struct Conn {
    out: mpsc::Sender<ClientFrame>,
    pending: Arc<Mutex<Pending>>,
    tasks: [AbortHandle; 2],
}

impl Conn {
    fn start(framed: Framed<BoxStream, ClientCodec>, target: u64) -> Self {
        let (sink, stream) = framed.split();
        let (out, out_rx) = mpsc::channel(OUTBOUND_FRAMES_MAX);
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let writer = tokio::spawn(write_frames(sink, out_rx, pending.clone(), target));
        let reader = tokio::spawn(read_frames(stream, pending.clone(), target));
        Self {
            out,
            pending,
            tasks: [writer.abort_handle(), reader.abort_handle()],
        }
    }

    fn is_closed(&self) -> bool {
        self.pending.lock().closed || self.out.is_closed()
    }

    /// Registers call `id`: returns the receiver of its answer and a guard that forgets the
    /// call however it ends. `None` if the connection has ended.
    fn register(&self, id: u64) -> Option<(oneshot::Receiver<Bytes>, Forget)> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock();
        if pending.closed {
            return None;
        }
        pending.calls.insert(id, tx);
        Some((rx, Forget(self.pending.clone(), id)))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Forgets a call when dropped, so calls abandoned by a timeout leave nothing behind.
struct Forget(Arc<Mutex<Pending>>, u64);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.lock().calls.remove(&self.1);
    }
}

/// Ends a connection: no new calls, and every waiting call learns it is lost.
fn close(pending: &Mutex<Pending>) {
    let mut pending = pending.lock();
    pending.closed = true;
    pending.calls.clear();
}

async fn write_frames(
    mut sink: SplitSink<Framed<BoxStream, ClientCodec>, ClientFrame>,
    mut rx: mpsc::Receiver<ClientFrame>,
    pending: Arc<Mutex<Pending>>,
    target: u64,
) {
    while let Some(frame) = rx.recv().await {
        if let Err(e) = sink.feed(frame).await {
            tracing::debug!(target, error = %e, "writing to a peer failed");
            break;
        }
        if rx.is_empty()
            && let Err(e) = sink.flush().await
        {
            tracing::debug!(target, error = %e, "writing to a peer failed");
            break;
        }
    }
    close(&pending);
}

async fn read_frames(
    mut stream: SplitStream<Framed<BoxStream, ClientCodec>>,
    pending: Arc<Mutex<Pending>>,
    target: u64,
) {
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(ServerFrame::Peer(PeerMessage { id, payload })) => {
                // No caller: it gave up (timed out) and this answer is late.
                if let Some(tx) = pending.lock().calls.remove(&id) {
                    let _ = tx.send(payload);
                }
            }
            Ok(ServerFrame::Goodbye(e)) => {
                tracing::debug!(target, error = %e, "peer closed the connection");
                break;
            }
            Ok(other) => {
                let frame = match other {
                    ServerFrame::Welcome(_) => "welcome",
                    ServerFrame::Response(_) => "response",
                    ServerFrame::Chunk(_) => "chunk",
                    ServerFrame::StreamError { .. } => "stream error",
                    ServerFrame::Goodbye(_) | ServerFrame::Peer(_) => "peer",
                    ServerFrame::Challenge(_) => "challenge",
                };
                tracing::warn!(target, frame, "unexpected frame from a peer; closing");
                break;
            }
            Err(e) => {
                tracing::debug!(target, error = %e, "peer connection failed");
                break;
            }
        }
    }
    close(&pending);
}
