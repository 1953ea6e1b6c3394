//! The peer transport without a real raft: encoding, the serving loop and the client, with a
//! stand-in for the raft behind the serving loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dfs_proto::{
    ClientCodec, ClientFrame, ErrorCode, NAME_BYTES_MAX, PEER_PAYLOAD_BYTES_MAX, PeerMessage,
    Request, Role, ServerCodec, ServerFrame, Welcome, WireError,
};
use futures::{SinkExt, StreamExt};
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError, SnapshotMismatch};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::testing::log_id;
use openraft::{
    BasicNode, Entry, EntryPayload, Membership, RaftNetwork, RaftNetworkFactory, SnapshotMeta,
    SnapshotSegmentId, StoredMembership, Vote,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::{Framed, FramedRead, FramedWrite};

use crate::peer::{RaftService, dispatch_with, serve_with};
use crate::{
    LOG_ENTRY_BYTES_MAX, MAX_PAYLOAD_ENTRIES, MapCommand, MapResponse, PEER_RPCS_IN_FLIGHT_MAX,
    PeerNetwork, ProposeError, RaftReply, RaftRpc, SNAPSHOT_CHUNK_BYTES, TypeConfig, raft_config,
};
use dfs_placement::Placement;

const CLUSTER: u64 = 0xc1u64;
const DEADLINE: Duration = Duration::from_secs(10);

/// Stands in for the raft: answers at once (or after `delay`), or fails if `fail`; counts
/// the calls in progress; a vote waits for a permit of `gate` when there is one.
#[derive(Clone, Default)]
struct Mock {
    delay: Duration,
    fail: bool,
    gate: Option<Arc<Semaphore>>,
    /// Takes no part in consensus (its admission closed).
    closed: bool,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Mock {
    async fn enter(&self) -> Running {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Running(self.running.clone())
    }
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RaftService for Mock {
    fn admitted(&self) -> bool {
        !self.closed
    }

    async fn append_entries(
        &self,
        _rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        let _running = self.enter().await;
        if self.fail {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        Ok(AppendEntriesResponse::Success)
    }

    async fn vote(&self, rpc: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        let _running = self.enter().await;
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await;
        }
        if self.fail {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        Ok(VoteResponse {
            vote: rpc.vote,
            vote_granted: true,
            last_log_id: rpc.last_log_id,
        })
    }

    async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        let _running = self.enter().await;
        if self.fail {
            let id = rpc.meta.snapshot_id.clone();
            return Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                SnapshotMismatch {
                    expect: SnapshotSegmentId {
                        id: id.clone(),
                        offset: 0,
                    },
                    got: SnapshotSegmentId {
                        id,
                        offset: rpc.offset,
                    },
                },
            )));
        }
        Ok(InstallSnapshotResponse { vote: rpc.vote })
    }

    /// Commits nothing: answers `Created` for a create, `Done` otherwise; when `fail`, says
    /// it does not lead and names node 3 at a made-up address.
    async fn propose(&self, command: MapCommand) -> Result<MapResponse, ProposeError> {
        let _running = self.enter().await;
        if self.fail {
            return Err(ProposeError::NotLeader {
                leader: Some(3),
                addr: Some("127.0.0.1:7003".into()),
            });
        }
        Ok(match command {
            MapCommand::CreateFile {
                file_id, replicas, ..
            } => MapResponse::Created(Placement {
                file_id,
                replicas,
                epoch: 1,
            }),
            _ => MapResponse::Done,
        })
    }
}

fn vote_request(term: u64) -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(term, 1), Some(log_id(term, 1, term * 10)))
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Membership::new(vec![nodes.keys().copied().collect::<BTreeSet<_>>()], nodes)
}

fn append_request(entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(u64::MAX, u64::MAX),
        prev_log_id: Some(log_id(u64::MAX, u64::MAX, u64::MAX)),
        leader_commit: Some(log_id(u64::MAX, u64::MAX, u64::MAX)),
        entries,
    }
}

fn snapshot_request(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 99)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), membership()),
            snapshot_id: "3-1-99-7".to_owned(),
        },
        offset: 0,
        data,
        done: true,
    }
}

/// The largest command there is: a file name of the maximum length, the greatest ids and a
/// long replica list.
fn largest_command(i: u64) -> MapCommand {
    MapCommand::SetReplicas {
        name: "n".repeat(NAME_BYTES_MAX),
        file_id: u64::MAX - i,
        expected_epoch: u64::MAX,
        replicas: vec![u64::MAX; 16],
    }
}

fn round_trip(rpc: &RaftRpc) -> RaftRpc {
    let bytes = rpc.encode().expect("encodes");
    let back = RaftRpc::decode(&bytes).expect("decodes");
    assert_eq!(back.encode().expect("encodes again"), bytes, "{rpc:?}");
    assert_eq!(format!("{back:?}"), format!("{rpc:?}"));
    back
}

#[test]
fn raft_rpcs_round_trip_through_postcard() {
    let entries = vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 1, 2),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(2, 3, 3),
            payload: EntryPayload::Normal(MapCommand::NodeUp {
                id: 3,
                addr: "10.0.0.3:7000".into(),
                incarnation: 4,
            }),
        },
        Entry {
            log_id: log_id(2, 3, 4),
            payload: EntryPayload::Normal(largest_command(0)),
        },
    ];
    round_trip(&RaftRpc::AppendEntries(append_request(entries)));
    round_trip(&RaftRpc::AppendEntries(append_request(Vec::new())));
    match round_trip(&RaftRpc::Vote(vote_request(7))) {
        RaftRpc::Vote(v) => assert_eq!(v, vote_request(7)),
        other => panic!("{other:?}"),
    }
    let snapshot = snapshot_request((0..=255).collect());
    match round_trip(&RaftRpc::InstallSnapshot(snapshot.clone())) {
        RaftRpc::InstallSnapshot(s) => assert_eq!(s, snapshot),
        other => panic!("{other:?}"),
    }
    match round_trip(&RaftRpc::Propose(largest_command(1))) {
        RaftRpc::Propose(c) => assert_eq!(c, largest_command(1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn raft_replies_round_trip_through_postcard() {
    let mismatch = InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: SnapshotSegmentId {
            id: "a".into(),
            offset: 0,
        },
        got: SnapshotSegmentId {
            id: "b".into(),
            offset: 5,
        },
    });
    let replies = [
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::Success)),
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(
            2, 1, 5,
        ))))),
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::Conflict)),
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::HigherVote(Vote::new(9, 2)))),
        RaftReply::AppendEntries(Err(RaftError::Fatal(Fatal::Stopped))),
        RaftReply::Vote(Ok(VoteResponse {
            vote: Vote::new(4, 2),
            vote_granted: false,
            last_log_id: None,
        })),
        RaftReply::Vote(Err(RaftError::Fatal(Fatal::Panicked))),
        RaftReply::InstallSnapshot(Ok(InstallSnapshotResponse {
            vote: Vote::new_committed(3, 1),
        })),
        RaftReply::InstallSnapshot(Err(RaftError::APIError(mismatch))),
        RaftReply::Refused("why".into()),
        RaftReply::Propose(Ok(MapResponse::Conflict(Some(Placement {
            file_id: 4,
            replicas: vec![3, 1],
            epoch: 2,
        })))),
        RaftReply::Propose(Err(ProposeError::NotLeader {
            leader: Some(2),
            addr: Some("10.0.0.2:7000".into()),
        })),
        RaftReply::Propose(Err(ProposeError::NotLeader {
            leader: None,
            addr: None,
        })),
        RaftReply::Propose(Err(ProposeError::Failed("no quorum".into()))),
    ];
    for reply in replies {
        let bytes = reply.encode().expect("encodes");
        assert_eq!(RaftReply::decode(&bytes).expect("decodes"), reply);
    }
}

#[tokio::test]
async fn garbage_payloads_get_a_refused_reply() {
    let mock = Mock::default();
    let valid = RaftRpc::Vote(vote_request(1)).encode().expect("encodes");
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 64],
        vec![100, 0, 0],                   // no such variant
        valid[..valid.len() - 1].to_vec(), // cut short
        vec![
            0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // bad varint
    ];
    for payload in garbage {
        let answer = dispatch_with(&mock, &payload).await;
        match RaftReply::decode(&answer) {
            Ok(RaftReply::Refused(why)) => assert!(why.contains("undecodable"), "{why}"),
            other => panic!("{payload:?}: {other:?}"),
        }
    }
    assert_eq!(
        mock.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the raft"
    );
    // A valid one does.
    let answer = dispatch_with(&mock, &valid).await;
    assert!(matches!(
        RaftReply::decode(&answer),
        Ok(RaftReply::Vote(Ok(v))) if v.vote_granted
    ));
}

/// A node waiting to be taken back after a disk loss answers no vote request and
/// acknowledges no entry; a proposal it still forwards.
#[tokio::test]
async fn a_node_not_admitted_answers_no_consensus_message() {
    let mock = Mock {
        closed: true,
        ..Mock::default()
    };
    let consensus = [
        RaftRpc::Vote(vote_request(5)),
        RaftRpc::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(5, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
    ];
    for rpc in consensus {
        let payload = rpc.encode().expect("encodes");
        match RaftReply::decode(&dispatch_with(&mock, &payload).await) {
            Ok(RaftReply::Refused(why)) => assert!(why.contains("taken back"), "{why}"),
            other => panic!("{}: {other:?}", rpc.kind()),
        }
    }
    assert_eq!(
        mock.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the raft"
    );
    let propose = RaftRpc::Propose(MapCommand::NodeLost { id: 3 });
    let answer = dispatch_with(&mock, &propose.encode().expect("encodes")).await;
    assert!(matches!(
        RaftReply::decode(&answer),
        Ok(RaftReply::Propose(Ok(MapResponse::Done)))
    ));
}

#[tokio::test]
async fn garbage_proposals_are_refused_and_never_reach_the_raft() {
    let mock = Mock::default();
    let command = MapCommand::CreateFile {
        name: "a/b".into(),
        file_id: 9,
        replicas: vec![1, 2],
    };
    let valid = RaftRpc::Propose(command).encode().expect("encodes");
    assert_eq!(valid[0], 3, "Propose is the fourth request kind");
    let mut wrong_tag = valid.clone();
    wrong_tag[1] = 0x7f; // no such command
    let garbage: Vec<Vec<u8>> = vec![
        vec![3],                           // a proposal of nothing
        valid[..valid.len() - 1].to_vec(), // cut short
        wrong_tag,
        vec![
            3, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // bad varint
        vec![3, 2, 0x20, b'a'],            // a name longer than the payload
        [valid.as_slice(), &[0]].concat(), // trailing bytes are ignored: a valid one
    ];
    let (last, garbage) = garbage.split_last().expect("cases");
    for payload in garbage {
        let answer = dispatch_with(&mock, payload).await;
        match RaftReply::decode(&answer) {
            Ok(RaftReply::Refused(why)) => assert!(why.contains("undecodable"), "{why}"),
            other => panic!("{payload:?}: {other:?}"),
        }
    }
    assert_eq!(
        mock.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the raft"
    );
    // Valid ones do, and come back with the raft's answer.
    for payload in [&valid, last] {
        let answer = dispatch_with(&mock, payload).await;
        assert!(
            matches!(
                RaftReply::decode(&answer),
                Ok(RaftReply::Propose(Ok(MapResponse::Created(p)))) if p.file_id == 9
            ),
            "{answer:?}"
        );
    }
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_full_append_entries_fits_in_a_frame() {
    let one = Entry {
        log_id: log_id(u64::MAX, u64::MAX, u64::MAX),
        payload: EntryPayload::<TypeConfig>::Normal(largest_command(0)),
    };
    let one_bytes = postcard::to_stdvec(&one).expect("encodes").len();
    assert!(one_bytes <= LOG_ENTRY_BYTES_MAX, "{one_bytes}");
    let entries = (0..MAX_PAYLOAD_ENTRIES)
        .map(|i| Entry {
            log_id: log_id(u64::MAX, u64::MAX, u64::MAX - i),
            payload: EntryPayload::Normal(largest_command(i)),
        })
        .collect();
    let rpc = RaftRpc::AppendEntries(append_request(entries));
    let len = rpc.encode().expect("encodes").len();
    assert!(len <= PEER_PAYLOAD_BYTES_MAX, "{len}");
    // With some room to spare for membership entries and larger addresses.
    assert!(len * 2 <= PEER_PAYLOAD_BYTES_MAX, "{len}");

    let chunk = RaftRpc::InstallSnapshot(snapshot_request(vec![0xff; SNAPSHOT_CHUNK_BYTES]));
    let len = chunk.encode().expect("encodes").len();
    assert!(len <= PEER_PAYLOAD_BYTES_MAX, "{len}");
}

#[test]
fn the_raft_config_is_valid() {
    let config = raft_config("test").expect("valid");
    assert_eq!(config.cluster_name, "test");
    assert_eq!(config.heartbeat_interval, 50);
    assert_eq!(
        (config.election_timeout_min, config.election_timeout_max),
        (300, 600)
    );
    assert_eq!(config.snapshot_max_chunk_size, 256 * 1024);
    assert_eq!(config.max_payload_entries, MAX_PAYLOAD_ENTRIES);
}

type ClientSide = Framed<tokio::io::DuplexStream, ClientCodec>;

/// A serving loop over an in-memory pipe, with the mock behind it.
fn serve_in_memory(mock: Mock) -> (ClientSide, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = tokio::io::duplex(4 * 1024 * 1024);
    let (read_half, write_half) = tokio::io::split(theirs);
    let server = tokio::spawn(serve_with(
        mock,
        FramedRead::new(read_half, ServerCodec::new()),
        FramedWrite::new(write_half, ServerCodec::new()),
    ));
    (Framed::new(ours, ClientCodec::new()), server)
}

async fn next_frame(f: &mut ClientSide) -> Option<ServerFrame> {
    tokio::time::timeout(DEADLINE, f.next())
        .await
        .expect("an answer in time")
        .map(|r| r.expect("a valid frame"))
}

fn peer_frame(id: u64, rpc: &RaftRpc) -> ClientFrame {
    ClientFrame::Peer(PeerMessage {
        id,
        payload: Bytes::from(rpc.encode().expect("encodes")),
    })
}

#[tokio::test]
async fn the_serving_loop_answers_by_id_and_refuses_other_frames() {
    let mock = Mock::default();
    let (mut f, server) = serve_in_memory(mock.clone());
    f.send(peer_frame(7, &RaftRpc::Vote(vote_request(7))))
        .await
        .expect("sent");
    f.send(peer_frame(
        8,
        &RaftRpc::AppendEntries(append_request(Vec::new())),
    ))
    .await
    .expect("sent");
    f.send(ClientFrame::Peer(PeerMessage {
        id: 9,
        payload: Bytes::from_static(b"\xff\xff"),
    }))
    .await
    .expect("sent");
    let mut answers = BTreeMap::new();
    for _ in 0..3 {
        match next_frame(&mut f).await {
            Some(ServerFrame::Peer(m)) => {
                answers.insert(m.id, RaftReply::decode(&m.payload).expect("decodes"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(&answers[&7], RaftReply::Vote(Ok(v)) if v.vote == Vote::new(7, 1)));
    assert!(matches!(
        &answers[&8],
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::Success))
    ));
    assert!(matches!(&answers[&9], RaftReply::Refused(_)));

    // A client request on a peer connection: goodbye, and the connection closes.
    f.send(ClientFrame::Request(Request {
        id: 1,
        op: dfs_proto::Op::Status,
    }))
    .await
    .expect("sent");
    match next_frame(&mut f).await {
        Some(ServerFrame::Goodbye(e)) => assert_eq!(e.code, ErrorCode::ProtocolMismatch),
        other => panic!("{other:?}"),
    }
    assert!(next_frame(&mut f).await.is_none());
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the loop ends")
        .expect("no panic");
}

#[tokio::test]
async fn the_serving_loop_bounds_the_calls_in_flight() {
    let gate = Arc::new(Semaphore::new(0));
    let mock = Mock {
        gate: Some(gate.clone()),
        ..Mock::default()
    };
    let (mut f, _server) = serve_in_memory(mock.clone());
    let n = PEER_RPCS_IN_FLIGHT_MAX as u64 * 3;
    for id in 0..n {
        f.send(peer_frame(id, &RaftRpc::Vote(vote_request(id + 1))))
            .await
            .expect("sent");
    }
    let waited = tokio::time::Instant::now();
    while mock.running.load(Ordering::SeqCst) < PEER_RPCS_IN_FLIGHT_MAX {
        assert!(waited.elapsed() < DEADLINE, "the calls never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give the loop a chance to (wrongly) start more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.most.load(Ordering::SeqCst), PEER_RPCS_IN_FLIGHT_MAX);
    gate.add_permits(n as usize);
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        match next_frame(&mut f).await {
            Some(ServerFrame::Peer(m)) => {
                let reply = RaftReply::decode(&m.payload).expect("decodes");
                assert!(
                    matches!(&reply, RaftReply::Vote(Ok(v)) if v.vote == Vote::new(m.id + 1, 1)),
                    "{reply:?}"
                );
                ids.insert(m.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ids, (0..n).collect());
    assert_eq!(mock.most.load(Ordering::SeqCst), PEER_RPCS_IN_FLIGHT_MAX);
}

/// A node stand-in on a real socket: accepts peer connections of `CLUSTER` as node
/// `node_id` (or refuses them with `refuse`), then serves them with the mock. Returns the
/// address and the connection tasks (abort them to cut the connections).
struct PeerServer {
    addr: String,
    accepted: Arc<AtomicUsize>,
    connections: Arc<parking_lot::Mutex<JoinSet<()>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl PeerServer {
    async fn start(mock: Mock, node_id: u64, refuse: Option<WireError>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(parking_lot::Mutex::new(JoinSet::new()));
        let (accepted2, connections2) = (accepted.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                let (mock, refuse) = (mock.clone(), refuse.clone());
                connections2.lock().spawn(async move {
                    let (r, w) = socket.into_split();
                    let mut reader = FramedRead::new(r, ServerCodec::new());
                    let mut writer = FramedWrite::new(w, ServerCodec::new());
                    match reader.next().await {
                        Some(Ok(ClientFrame::Hello(h)))
                            if matches!(
                                h.role,
                                Role::Peer {
                                    cluster_id: CLUSTER,
                                    ..
                                }
                            ) => {}
                        other => panic!("not a peer hello: {other:?}"),
                    }
                    if let Some(e) = refuse {
                        let _ = writer.send(ServerFrame::Goodbye(e)).await;
                        return;
                    }
                    let welcome = ServerFrame::Welcome(Welcome {
                        node_id,
                        cluster_id: CLUSTER,
                        version: dfs_proto::PROTOCOL_VERSION,
                    });
                    writer.send(welcome).await.expect("welcome sent");
                    serve_with(mock, reader, writer).await;
                });
            }
        });
        Self {
            addr,
            accepted,
            connections,
            _accept: accept,
        }
    }

    fn cut_connections(&self) {
        self.connections.lock().abort_all();
    }
}

fn option(ttl: Duration) -> RPCOption {
    RPCOption::new(ttl)
}

#[tokio::test]
async fn clients_share_one_connection_and_get_their_own_answers() {
    let mock = Mock::default();
    let server = PeerServer::start(mock.clone(), 2, None).await;
    let mut network = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared());
    let node = BasicNode::new(&server.addr);
    let mut calls = JoinSet::new();
    for term in 1..=20u64 {
        let mut client = network.new_client(2, &node).await;
        calls.spawn(async move {
            let answer = client
                .vote(vote_request(term), option(DEADLINE))
                .await
                .expect("answered");
            assert_eq!(answer.vote, Vote::new(term, 1));
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("no panic");
    }
    let mut client = network.new_client(2, &node).await;
    let ok = client
        .append_entries(append_request(Vec::new()), option(DEADLINE))
        .await
        .expect("answered");
    assert_eq!(ok, AppendEntriesResponse::Success);
    let ok = client
        .install_snapshot(snapshot_request(vec![1; 1000]), option(DEADLINE))
        .await
        .expect("answered");
    assert_eq!(ok.vote, Vote::new_committed(3, 1));
    assert_eq!(mock.calls.load(Ordering::SeqCst), 22);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1, "one connection");
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let mut client = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared())
        .new_client(2, &BasicNode::new(addr))
        .await;
    let e = client
        .vote(vote_request(1), option(DEADLINE))
        .await
        .expect_err("nobody there");
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
}

#[tokio::test]
async fn a_refused_hello_or_another_node_is_unreachable() {
    let refusing = PeerServer::start(
        Mock::default(),
        2,
        Some(WireError::new(
            ErrorCode::ProtocolMismatch,
            "not our cluster",
        )),
    )
    .await;
    let mut network = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared());
    let mut client = network.new_client(2, &BasicNode::new(&refusing.addr)).await;
    let e = client
        .vote(vote_request(1), option(DEADLINE))
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, RPCError::Unreachable(u) if u.to_string().contains("not our cluster")),
        "{e:?}"
    );

    // Node 3 answers at the address we think is node 2's.
    let other = PeerServer::start(Mock::default(), 3, None).await;
    let mut client = network.new_client(2, &BasicNode::new(&other.addr)).await;
    let e = client
        .vote(vote_request(1), option(DEADLINE))
        .await
        .expect_err("another node");
    assert!(
        matches!(&e, RPCError::Unreachable(u) if u.to_string().contains("is node 3")),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_remote_raft_error_comes_back_as_such() {
    let mock = Mock {
        fail: true,
        ..Mock::default()
    };
    let server = PeerServer::start(mock, 2, None).await;
    let mut client = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared())
        .new_client(2, &BasicNode::new(&server.addr))
        .await;
    match client.vote(vote_request(1), option(DEADLINE)).await {
        Err(RPCError::RemoteError(e)) => {
            assert_eq!(e.target, 2);
            assert_eq!(e.source, RaftError::Fatal(Fatal::Stopped));
        }
        other => panic!("{other:?}"),
    }
    match client
        .install_snapshot(snapshot_request(Vec::new()), option(DEADLINE))
        .await
    {
        Err(RPCError::RemoteError(e)) => {
            assert!(matches!(e.source, RaftError::APIError(_)), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_connection_stays_usable() {
    let slow = Mock {
        delay: Duration::from_millis(400),
        ..Mock::default()
    };
    let server = PeerServer::start(slow, 2, None).await;
    let mut client = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared())
        .new_client(2, &BasicNode::new(&server.addr))
        .await;
    let e = client
        .vote(vote_request(1), option(Duration::from_millis(100)))
        .await
        .expect_err("too slow");
    assert!(matches!(e, RPCError::Timeout(_)), "{e:?}");
    // The late answer is dropped; the next call gets its own.
    let answer = client
        .vote(vote_request(2), option(DEADLINE))
        .await
        .expect("answered");
    assert_eq!(answer.vote, Vote::new(2, 1));
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn calls_that_keep_timing_out_redial() {
    let slow = Mock {
        delay: Duration::from_millis(300),
        ..Mock::default()
    };
    let server = PeerServer::start(slow, 2, None).await;
    let mut client = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared())
        .new_client(2, &BasicNode::new(&server.addr))
        .await;
    for term in 1..=crate::TIMEOUTS_BEFORE_REDIAL as u64 {
        let e = client
            .vote(vote_request(term), option(Duration::from_millis(40)))
            .await
            .expect_err("too slow");
        assert!(matches!(e, RPCError::Timeout(_)), "{e:?}");
    }
    client
        .vote(vote_request(9), option(DEADLINE))
        .await
        .expect("answered");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2, "dialled again");
}

#[tokio::test]
async fn a_lost_connection_is_dialled_again() {
    let server = PeerServer::start(Mock::default(), 2, None).await;
    let mut client = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared())
        .new_client(2, &BasicNode::new(&server.addr))
        .await;
    client
        .vote(vote_request(1), option(DEADLINE))
        .await
        .expect("answered");
    server.cut_connections();
    // The first call after the cut may still find the old connection: it fails as
    // unreachable, and a later one dials again.
    let waited = tokio::time::Instant::now();
    loop {
        match client.vote(vote_request(2), option(DEADLINE)).await {
            Ok(answer) => {
                assert_eq!(answer.vote, Vote::new(2, 1));
                break;
            }
            Err(RPCError::Unreachable(_)) => {
                assert!(waited.elapsed() < DEADLINE, "never reconnected");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_forwarded_proposal_shares_the_raft_connection() {
    let mock = Mock::default();
    let server = PeerServer::start(mock.clone(), 2, None).await;
    let mut network = PeerNetwork::new(1, CLUSTER, dfs_net::Tcp::shared());
    let node = BasicNode::new(&server.addr);
    let mut client = network.new_client(2, &node).await;
    client
        .vote(vote_request(1), option(DEADLINE))
        .await
        .expect("answered");
    let create = MapCommand::CreateFile {
        name: "x".into(),
        file_id: 5,
        replicas: vec![2],
    };
    let answer = network
        .propose(2, &server.addr, create, DEADLINE)
        .await
        .expect("committed");
    assert!(
        matches!(&answer, MapResponse::Created(p) if p.file_id == 5),
        "{answer:?}"
    );
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1, "one connection");

    // A node that does not lead names the leader it knows.
    let refusing = PeerServer::start(
        Mock {
            fail: true,
            ..Mock::default()
        },
        3,
        None,
    )
    .await;
    let e = network
        .propose(
            3,
            &refusing.addr,
            MapCommand::NodeDown {
                id: 1,
                incarnation: 1,
            },
            DEADLINE,
        )
        .await
        .expect_err("not the leader");
    assert_eq!(
        e,
        ProposeError::NotLeader {
            leader: Some(3),
            addr: Some("127.0.0.1:7003".into())
        }
    );

    // Nobody listening: the outcome is unknown, not a refusal.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let e = network
        .propose(
            4,
            &gone,
            MapCommand::NodeDown {
                id: 1,
                incarnation: 1,
            },
            DEADLINE,
        )
        .await
        .expect_err("nobody there");
    assert!(matches!(e, ProposeError::Unreachable(_)), "{e:?}");
}
