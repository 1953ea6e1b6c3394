//! Valid messages of every kind, the seeds of the corpus: every [`ClientFrame`] and
//! [`ServerFrame`] variant (every [`Op`] and [`Reply`] among them), every [`RaftRpc`] and
//! [`RaftReply`] (every [`MapCommand`] and [`MapResponse`] among them) and every data-layer
//! message.
//!
//! The `*_kind` functions match exhaustively: a new variant does not compile until it is
//! named there, and the crate's tests fail until it has a sample here.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use dfs_cluster::{
    MapCommand, MapResponse, ProposeError, RaftReply, RaftRpc, RequestTag, TypeConfig,
};
use dfs_placement::Placement;
use dfs_proto::{
    BadCopy, Body, Challenge, Chunk, ClientFrame, ClusterStatus, Condition, ErrorCode, FileInfo,
    Hello, ListEntry, LockGrant, LockMode, NodeRole, NodeStatus, Op, OpTag, PeerMessage, Reply,
    Request, Response, Role, ScrubReport, ServerFrame, TableEntry, Welcome, WireError,
};
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::testing::log_id;
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use openraft::{
    BasicNode, Entry, EntryPayload, Membership, SnapshotMeta, SnapshotSegmentId, StoredMembership,
    Vote,
};

use crate::mutate::{frame, join_frames};

/// A sample: a name (unique within its kind of message) and the message.
pub type Named<T> = (String, T);

const TAG: OpTag = OpTag {
    client_id: 0x0123_4567_89ab_cdef,
    seq: 7,
};

fn body(data: &'static [u8], more: bool) -> Body {
    Body {
        data: Bytes::from_static(data),
        more,
    }
}

/// One request of every operation (some operations twice, with and without their options).
pub fn ops() -> Vec<Op> {
    let cond = Condition::fenced(9).with_version(4);
    vec![
        Op::Create {
            name: "docs/a.txt".into(),
            tag: Some(TAG),
        },
        Op::Append {
            name: "docs/a.txt".into(),
            body: body(b"hello ", false),
            tag: Some(TAG),
            cond: Condition::NONE,
        },
        Op::Append {
            name: "logs/big".into(),
            body: body(b"first chunk; more follow", true),
            tag: None,
            cond,
        },
        Op::Put {
            name: "docs/b.bin".into(),
            body: body(&[0, 1, 2, 255], false),
            tag: Some(TAG),
            cond: Condition::if_version(0),
        },
        Op::Read {
            name: "docs/a.txt".into(),
            offset: 6,
            len: Some(5),
        },
        Op::Read {
            name: "docs/a.txt".into(),
            offset: 0,
            len: None,
        },
        Op::Delete {
            name: "docs/a.txt".into(),
            tag: Some(TAG),
            cond,
        },
        Op::List {
            prefix: "docs/".into(),
            start_after: Some("docs/a.txt".into()),
            limit: 100,
        },
        Op::Stat {
            name: "docs/b.bin".into(),
        },
        Op::Table {
            start_after: None,
            limit: 512,
        },
        Op::Status,
        Op::Scrub,
        Op::Lock {
            name: "locks/x".into(),
            mode: LockMode::Exclusive,
            ttl_ms: 10_000,
            wait_ms: 0,
            tag: Some(TAG),
        },
        Op::Renew {
            lease: 3,
            tag: Some(TAG),
        },
        Op::Unlock {
            lease: 3,
            tag: None,
        },
        Op::Write {
            name: "docs/a.txt".into(),
            offset: 2,
            body: body(b"LLO", false),
            tag: Some(TAG),
            cond,
        },
        Op::Write {
            name: "logs/big".into(),
            offset: 1 << 40,
            body: body(b"first chunk; more follow", true),
            tag: None,
            cond: Condition::NONE,
        },
        Op::Truncate {
            name: "docs/a.txt".into(),
            size: 3,
            tag: Some(TAG),
            cond: Condition::fenced(9),
        },
    ]
}

/// The name of an operation's kind.
pub fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::Create { .. } => "create",
        Op::Append { .. } => "append",
        Op::Put { .. } => "put",
        Op::Read { .. } => "read",
        Op::Delete { .. } => "delete",
        Op::List { .. } => "list",
        Op::Stat { .. } => "stat",
        Op::Table { .. } => "table",
        Op::Status => "status",
        Op::Scrub => "scrub",
        Op::Lock { .. } => "lock",
        Op::Renew { .. } => "renew",
        Op::Unlock { .. } => "unlock",
        Op::Write { .. } => "write",
        Op::Truncate { .. } => "truncate",
    }
}

/// The hellos a node may receive: a client's, a peer's, a forwarder's, and a client's
/// with a wrong magic and version.
pub fn hellos() -> Vec<Named<Hello>> {
    let mut bad = Hello::new(Role::Client);
    bad.magic = u32::from_be_bytes(*b"HTTP");
    bad.version = 999;
    vec![
        ("client".into(), Hello::new(Role::Client)),
        (
            "client-token".into(),
            Hello::new(Role::Client).with_token(Some(format!("admin.{}", "ab".repeat(32)))),
        ),
        (
            "peer".into(),
            Hello::new(Role::Peer {
                cluster_id: 0xc1,
                node_id: 2,
            })
            .with_nonce([0x5a; 32]),
        ),
        (
            "forwarder".into(),
            Hello::new(Role::Forwarder {
                cluster_id: 0xc1,
                node_id: 3,
            }),
        ),
        ("bad-magic".into(), bad),
    ]
}

/// Every frame a client (or a peer) sends: every hello, a request of every operation, a
/// chunk, a cancel and a peer message.
pub fn client_frames() -> Vec<Named<ClientFrame>> {
    let mut out: Vec<Named<ClientFrame>> = hellos()
        .into_iter()
        .map(|(name, h)| (format!("hello-{name}"), ClientFrame::Hello(h)))
        .collect();
    for (id, op) in (1u64..).zip(ops()) {
        let name = format!("request-{}", op_kind(&op));
        out.push((name, ClientFrame::Request(Request { id, op })));
    }
    out.push((
        "chunk".into(),
        ClientFrame::Chunk(Chunk {
            id: 3,
            data: Bytes::from(vec![b'x'; 100]),
            last: true,
        }),
    ));
    out.push(("cancel".into(), ClientFrame::Cancel { id: 3 }));
    out.push(("proof".into(), ClientFrame::Proof([0xa5; 32])));
    let vote = RaftRpc::Vote(VoteRequest::new(Vote::new(1, 2), Some(log_id(1, 2, 10))));
    out.push((
        "peer".into(),
        ClientFrame::Peer(PeerMessage {
            id: 1,
            payload: Bytes::from(vote.encode().unwrap_or_default()),
        }),
    ));
    unique(out)
}

/// The name of a client frame's kind.
pub fn client_frame_kind(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello(_) => "hello",
        ClientFrame::Request(_) => "request",
        ClientFrame::Chunk(_) => "chunk",
        ClientFrame::Cancel { .. } => "cancel",
        ClientFrame::Peer(_) => "peer",
        ClientFrame::Proof(_) => "proof",
    }
}

fn file_info() -> FileInfo {
    FileInfo {
        name: "docs/a.txt".into(),
        file_id: 0xf00d,
        size: 11,
        version: 2,
        checksum: 0xdead_beef,
        replicas: vec![1, 2],
        modified_ms: 1_700_000_000_000,
    }
}

fn lock_grant() -> LockGrant {
    LockGrant {
        name: "locks/x".into(),
        mode: LockMode::Shared,
        lease: 3,
        token: 12,
        ttl_ms: 10_000,
    }
}

/// One answer of every kind.
pub fn replies() -> Vec<Reply> {
    vec![
        Reply::Created(file_info()),
        Reply::Written(dfs_proto::WriteAck {
            version: 3,
            size: 17,
            checksum: 0x0102_0304,
            duplicate: false,
        }),
        Reply::ReadStart {
            info: file_info(),
            offset: 0,
            len: 11,
        },
        Reply::Deleted,
        Reply::Listing {
            entries: vec![ListEntry {
                name: "docs/a.txt".into(),
                size: 11,
                version: 2,
            }],
            next: Some("docs/a.txt".into()),
        },
        Reply::Stat(file_info()),
        Reply::Table {
            entries: vec![TableEntry {
                name: "docs/a.txt".into(),
                file_id: 0xf00d,
                replicas: vec![1, 2],
                epoch: 4,
                replication_factor: 2,
            }],
            next: None,
        },
        Reply::Status(ClusterStatus {
            nodes: vec![
                NodeStatus {
                    id: 1,
                    addr: "127.0.0.1:7001".into(),
                    up: true,
                    role: NodeRole::Leader,
                    down_for_ms: None,
                },
                NodeStatus {
                    id: 2,
                    addr: "127.0.0.1:7002".into(),
                    up: false,
                    role: NodeRole::Unknown,
                    down_for_ms: Some(1500),
                },
            ],
            leader: Some(1),
            term: 3,
            replication_factor: 2,
            under_replicated: 1,
            rereplicate_after_ms: 30_000,
        }),
        Reply::Scrub(vec![ScrubReport {
            node: 1,
            files: 10,
            bytes: 4096,
            bad: vec![BadCopy {
                name: "docs/a.txt".into(),
                file_id: 0xf00d,
                replaced: false,
                action: "no other replica".into(),
            }],
            error: Some("node 2 did not answer".into()),
        }]),
        Reply::Locked(lock_grant()),
        Reply::Renewed(lock_grant()),
        Reply::Unlocked,
    ]
}

/// The name of an answer's kind.
pub fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Created(_) => "created",
        Reply::Written(_) => "written",
        Reply::ReadStart { .. } => "read-start",
        Reply::Deleted => "deleted",
        Reply::Listing { .. } => "listing",
        Reply::Stat(_) => "stat",
        Reply::Table { .. } => "table",
        Reply::Status(_) => "status",
        Reply::Scrub(_) => "scrub",
        Reply::Locked(_) => "locked",
        Reply::Renewed(_) => "renewed",
        Reply::Unlocked => "unlocked",
    }
}

/// Every frame a node sends: a welcome, a response of every kind and an error, a chunk, a
/// stream error, a goodbye and a peer answer.
pub fn server_frames() -> Vec<Named<ServerFrame>> {
    let mut out: Vec<Named<ServerFrame>> = vec![
        (
            "welcome".into(),
            ServerFrame::Welcome(Welcome {
                node_id: 1,
                cluster_id: 0xc1,
                version: dfs_proto::PROTOCOL_VERSION,
            }),
        ),
        (
            "challenge".into(),
            ServerFrame::Challenge(Challenge {
                nonce: [0x3c; 32],
                proof: [0xc3; 32],
            }),
        ),
    ];
    for (id, reply) in (1u64..).zip(replies()) {
        let name = format!("response-{}", reply_kind(&reply));
        out.push((
            name,
            ServerFrame::Response(Response {
                id,
                result: Ok(reply),
            }),
        ));
    }
    out.push((
        "response-error".into(),
        ServerFrame::Response(Response {
            id: 99,
            result: Err(WireError::new(
                ErrorCode::NotFound,
                "docs/zzz: no such file",
            )),
        }),
    ));
    out.push((
        "chunk".into(),
        ServerFrame::Chunk(Chunk {
            id: 3,
            data: Bytes::from_static(b"hello world"),
            last: true,
        }),
    ));
    out.push((
        "stream-error".into(),
        ServerFrame::StreamError {
            id: 3,
            error: WireError::new(ErrorCode::Corrupt, "checksum mismatch"),
        },
    ));
    out.push((
        "goodbye".into(),
        ServerFrame::Goodbye(WireError::new(
            ErrorCode::ProtocolMismatch,
            "a second hello",
        )),
    ));
    out.push((
        "peer".into(),
        ServerFrame::Peer(PeerMessage {
            id: 1,
            payload: Bytes::from(RaftReply::Standing(true).encode().unwrap_or_default()),
        }),
    ));
    unique(out)
}

/// The name of a server frame's kind.
pub fn server_frame_kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "welcome",
        ServerFrame::Response(_) => "response",
        ServerFrame::Chunk(_) => "chunk",
        ServerFrame::StreamError { .. } => "stream-error",
        ServerFrame::Goodbye(_) => "goodbye",
        ServerFrame::Peer(_) => "peer",
        ServerFrame::Challenge(_) => "challenge",
    }
}

fn encode_frame<T: serde::Serialize>(frame: &T) -> Vec<u8> {
    postcard::to_stdvec(frame).unwrap_or_default()
}

/// The `server_frames` target's seeds: every client frame, framed, and whole sessions (a
/// client's hello and streamed write; a peer's hello and messages).
pub fn server_frame_streams() -> Vec<Named<Vec<u8>>> {
    let frames = client_frames();
    let mut out: Vec<Named<Vec<u8>>> = frames
        .iter()
        .map(|(name, f)| (name.clone(), frame(&encode_frame(f))))
        .collect();
    let find = |name: &str| {
        frames
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| encode_frame(f))
            .unwrap_or_default()
    };
    out.push((
        "session-client".into(),
        join_frames(
            &[
                find("hello-client"),
                find("request-append-2"),
                find("chunk"),
                find("request-read"),
                find("cancel"),
            ],
            &[],
        ),
    ));
    out.push((
        "session-peer".into(),
        join_frames(&[find("hello-peer"), find("peer"), find("peer")], &[]),
    ));
    out
}

/// The `client_frames` target's seeds: every server frame, framed, and a whole session (a
/// welcome, a read's start and its chunks).
pub fn client_frame_streams() -> Vec<Named<Vec<u8>>> {
    let frames = server_frames();
    let mut out: Vec<Named<Vec<u8>>> = frames
        .iter()
        .map(|(name, f)| (name.clone(), frame(&encode_frame(f))))
        .collect();
    let find = |name: &str| {
        frames
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| encode_frame(f))
            .unwrap_or_default()
    };
    out.push((
        "session".into(),
        join_frames(
            &[
                find("welcome"),
                find("response-read-start"),
                find("chunk"),
                find("response-error"),
                find("goodbye"),
            ],
            &[],
        ),
    ));
    out
}

fn placement() -> Placement {
    Placement {
        file_id: 0xf00d,
        replicas: vec![1, 2],
        epoch: 4,
    }
}

const REQUEST: RequestTag = RequestTag {
    client_id: 0x0123_4567_89ab_cdef,
    seq: 8,
};

/// One map change of every kind.
pub fn map_commands() -> Vec<MapCommand> {
    let written = dfs_cluster::WriteResult {
        version: 2,
        size: 11,
        checksum: 0xdead_beef,
    };
    let create = MapCommand::CreateFile {
        name: "docs/a.txt".into(),
        file_id: 0xf00d,
        replicas: vec![1, 2],
    };
    vec![
        MapCommand::NodeUp {
            id: 2,
            addr: "127.0.0.1:7002".into(),
            incarnation: 3,
        },
        MapCommand::NodeDown {
            id: 2,
            incarnation: 3,
        },
        create.clone(),
        MapCommand::DeleteFile {
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
        },
        MapCommand::SetReplicas {
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            expected_epoch: 4,
            replicas: vec![2, 3],
        },
        MapCommand::DeleteFileWithWrites {
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            writes: vec![(REQUEST, written)],
        },
        MapCommand::DeleteFileAt {
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            epoch: 4,
        },
        MapCommand::Tagged {
            tag: REQUEST,
            command: Box::new(create),
        },
        MapCommand::CreateFileForWrite {
            name: "docs/b.bin".into(),
            file_id: 0xf00e,
            replicas: vec![2, 1],
        },
        MapCommand::ClaimFile {
            name: "docs/b.bin".into(),
            file_id: 0xf00e,
        },
        MapCommand::ConfirmExists {
            name: "docs/b.bin".into(),
            file_id: 0xf00e,
        },
        MapCommand::NodeLost { id: 3 },
        MapCommand::DeleteFileWithWritesAt {
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            epoch: 4,
            writes: vec![(REQUEST, written)],
        },
        MapCommand::ConfirmMissing {
            name: "docs/c".into(),
            invisible: Some(0xf00f),
        },
        MapCommand::AcquireLock {
            name: "locks/x".into(),
            mode: LockMode::Exclusive,
            ttl_ms: 10_000,
        },
        MapCommand::RenewLock { lease: 3 },
        MapCommand::ReleaseLock { lease: 3 },
        MapCommand::ExpireLock {
            lease: 3,
            renewals: 2,
        },
    ]
}

/// The name of a map change's kind.
pub fn map_command_kind(command: &MapCommand) -> &'static str {
    match command {
        MapCommand::NodeUp { .. } => "node-up",
        MapCommand::NodeDown { .. } => "node-down",
        MapCommand::CreateFile { .. } => "create-file",
        MapCommand::DeleteFile { .. } => "delete-file",
        MapCommand::SetReplicas { .. } => "set-replicas",
        MapCommand::DeleteFileWithWrites { .. } => "delete-file-with-writes",
        MapCommand::DeleteFileAt { .. } => "delete-file-at",
        MapCommand::Tagged { .. } => "tagged",
        MapCommand::CreateFileForWrite { .. } => "create-file-for-write",
        MapCommand::ClaimFile { .. } => "claim-file",
        MapCommand::ConfirmExists { .. } => "confirm-exists",
        MapCommand::NodeLost { .. } => "node-lost",
        MapCommand::DeleteFileWithWritesAt { .. } => "delete-file-with-writes-at",
        MapCommand::ConfirmMissing { .. } => "confirm-missing",
        MapCommand::AcquireLock { .. } => "acquire-lock",
        MapCommand::RenewLock { .. } => "renew-lock",
        MapCommand::ReleaseLock { .. } => "release-lock",
        MapCommand::ExpireLock { .. } => "expire-lock",
    }
}

/// One answer to a map change of every kind.
pub fn map_responses() -> Vec<MapResponse> {
    vec![
        MapResponse::Done,
        MapResponse::Created(placement()),
        MapResponse::AlreadyExists(placement()),
        MapResponse::Deleted(placement()),
        MapResponse::Updated(placement()),
        MapResponse::NotFound,
        MapResponse::Conflict(Some(placement())),
        MapResponse::Rejected("not a member".into()),
        MapResponse::Written(dfs_cluster::WriteResult {
            version: 2,
            size: 11,
            checksum: 0xdead_beef,
        }),
        MapResponse::Locked(lock_grant()),
        MapResponse::LockHeld(dfs_cluster::Held {
            exclusive: true,
            holders: 1,
        }),
        MapResponse::Released,
    ]
}

/// The name of a map answer's kind.
pub fn map_response_kind(response: &MapResponse) -> &'static str {
    match response {
        MapResponse::Done => "done",
        MapResponse::Created(_) => "created",
        MapResponse::AlreadyExists(_) => "already-exists",
        MapResponse::Deleted(_) => "deleted",
        MapResponse::Updated(_) => "updated",
        MapResponse::NotFound => "not-found",
        MapResponse::Conflict(_) => "conflict",
        MapResponse::Rejected(_) => "rejected",
        MapResponse::Written(_) => "written",
        MapResponse::Locked(_) => "locked",
        MapResponse::LockHeld(_) => "lock-held",
        MapResponse::Released => "released",
    }
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect();
    Membership::new(vec![nodes.keys().copied().collect::<BTreeSet<_>>()], nodes)
}

fn snapshot_meta() -> SnapshotMeta<u64, BasicNode> {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 1, 99)),
        last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), membership()),
        snapshot_id: "3-1-99-7".to_owned(),
    }
}

/// Every consensus request: append-entries (a heartbeat, and entries of every payload kind
/// with every map change), a vote, snapshot chunks, a forwarded proposal of every map
/// change, and the rest.
pub fn raft_rpcs() -> Vec<RaftRpc> {
    let mut entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 1, 2),
            payload: EntryPayload::Membership(membership()),
        },
    ];
    for (i, command) in (3u64..).zip(map_commands()) {
        entries.push(Entry {
            log_id: log_id(2, 1, i),
            payload: EntryPayload::Normal(command),
        });
    }
    let append = |entries| {
        RaftRpc::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 2)),
            leader_commit: Some(log_id(2, 1, 3)),
            entries,
        })
    };
    let chunk = |offset, data: Vec<u8>, done| {
        RaftRpc::InstallSnapshot(InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: snapshot_meta(),
            offset,
            data,
            done,
        })
    };
    let mut out = vec![
        append(Vec::new()),
        append(entries),
        RaftRpc::Vote(VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 1, 99)))),
        chunk(0, (0..=255).collect(), false),
        chunk(256, vec![1, 2, 3], true),
    ];
    out.extend(map_commands().into_iter().map(RaftRpc::Propose));
    out.extend([
        RaftRpc::ReadIndex,
        RaftRpc::Data(
            dfs_replication::fuzzing::samples()
                .into_iter()
                .next()
                .map(|(_, b)| b)
                .unwrap_or_default(),
        ),
        RaftRpc::Standing(2),
        RaftRpc::Readmit {
            node: 2,
            addr: "127.0.0.1:7002".into(),
            promote: true,
        },
    ]);
    out
}

/// The name of a consensus request's kind (its map change's, for a proposal).
pub fn raft_rpc_kind(rpc: &RaftRpc) -> String {
    match rpc {
        RaftRpc::AppendEntries(a) if a.entries.is_empty() => "heartbeat".into(),
        RaftRpc::AppendEntries(_) => "append-entries".into(),
        RaftRpc::Vote(_) => "vote".into(),
        RaftRpc::InstallSnapshot(_) => "install-snapshot".into(),
        RaftRpc::Propose(c) => format!("propose-{}", map_command_kind(c)),
        RaftRpc::ReadIndex => "read-index".into(),
        RaftRpc::Data(_) => "data".into(),
        RaftRpc::Standing(_) => "standing".into(),
        RaftRpc::Readmit { .. } => "readmit".into(),
    }
}

/// An error with a chain of sources, as openraft's `AnyError` keeps them.
#[derive(Debug)]
struct Chain(Option<Box<Chain>>);

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "read failed"
        } else {
            "disk gone"
        })
    }
}

impl std::error::Error for Chain {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// A storage failure as a peer's raft reports it: an error with `depth` sources in one
/// another.
pub fn storage_failure(depth: usize) -> RaftError<u64> {
    let chain = (1..depth).fold(Chain(None), |inner, _| Chain(Some(Box::new(inner))));
    let io = StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Read,
        AnyError::from_dyn(&chain, None),
    );
    RaftError::Fatal(Fatal::StorageError(StorageError::IO { source: io }))
}

/// Every consensus answer, errors included, and a proposal's answer of every kind.
pub fn raft_replies() -> Vec<RaftReply> {
    let mismatch = InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: SnapshotSegmentId {
            id: "3-1-99-7".into(),
            offset: 0,
        },
        got: SnapshotSegmentId {
            id: "3-1-99-7".into(),
            offset: 256,
        },
    });
    let mut out = vec![
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::Success)),
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(
            2, 1, 5,
        ))))),
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::Conflict)),
        RaftReply::AppendEntries(Ok(AppendEntriesResponse::HigherVote(Vote::new_committed(
            5, 3,
        )))),
        RaftReply::AppendEntries(Err(RaftError::Fatal(Fatal::Stopped))),
        RaftReply::AppendEntries(Err(storage_failure(2))),
        RaftReply::Vote(Ok(VoteResponse {
            vote: Vote::new(4, 2),
            vote_granted: true,
            last_log_id: Some(log_id(3, 1, 99)),
        })),
        RaftReply::InstallSnapshot(Ok(InstallSnapshotResponse {
            vote: Vote::new_committed(3, 1),
        })),
        RaftReply::InstallSnapshot(Err(RaftError::APIError(mismatch))),
        RaftReply::Refused("undecodable raft request".into()),
    ];
    out.extend(
        map_responses()
            .into_iter()
            .map(|r| RaftReply::Propose(Ok(r))),
    );
    out.extend([
        RaftReply::Propose(Err(ProposeError::NotLeader {
            leader: Some(2),
            addr: Some("127.0.0.1:7002".into()),
        })),
        RaftReply::Propose(Err(ProposeError::Failed("not committed".into()))),
        RaftReply::ReadIndex(Ok(42)),
        RaftReply::ReadIndex(Err(ProposeError::Unreachable("gone".into()))),
        RaftReply::Data(
            dfs_replication::fuzzing::samples()
                .into_iter()
                .last()
                .map(|(_, b)| b)
                .unwrap_or_default(),
        ),
        RaftReply::Standing(true),
        RaftReply::Readmit(Ok(())),
    ]);
    out
}

/// The name of a consensus answer's kind.
pub fn raft_reply_kind(reply: &RaftReply) -> String {
    match reply {
        RaftReply::AppendEntries(_) => "append-entries".into(),
        RaftReply::Vote(_) => "vote".into(),
        RaftReply::InstallSnapshot(_) => "install-snapshot".into(),
        RaftReply::Refused(_) => "refused".into(),
        RaftReply::Propose(Ok(r)) => format!("propose-{}", map_response_kind(r)),
        RaftReply::Propose(Err(_)) => "propose-error".into(),
        RaftReply::ReadIndex(_) => "read-index".into(),
        RaftReply::Data(_) => "data".into(),
        RaftReply::Standing(_) => "standing".into(),
        RaftReply::Readmit(_) => "readmit".into(),
    }
}

/// The `cluster_payloads` target's seeds: every consensus request and answer, encoded.
pub fn cluster_payloads() -> Vec<Named<Vec<u8>>> {
    let mut out: Vec<Named<Vec<u8>>> = Vec::new();
    for rpc in raft_rpcs() {
        out.push((
            format!("request-{}", raft_rpc_kind(&rpc)),
            rpc.encode().unwrap_or_default(),
        ));
    }
    for reply in raft_replies() {
        out.push((
            format!("answer-{}", raft_reply_kind(&reply)),
            reply.encode().unwrap_or_default(),
        ));
    }
    unique(out)
}

/// The `data_payloads` target's seeds: every data-layer request and answer, encoded.
pub fn data_payloads() -> Vec<Named<Vec<u8>>> {
    dfs_replication::fuzzing::samples()
}

/// The inputs generated for `target` (one of [`crate::TARGETS`]), named for their files:
/// the samples, then the regression inputs (named `regress-*`).
///
/// # Panics
/// On an unknown target.
pub fn seeds(target: &str) -> Vec<Named<Vec<u8>>> {
    let mut out = match target {
        crate::SERVER_FRAMES => server_frame_streams(),
        crate::CLIENT_FRAMES => client_frame_streams(),
        crate::CLUSTER_PAYLOADS => cluster_payloads(),
        crate::DATA_PAYLOADS => data_payloads(),
        other => panic!("no fuzz target {other:?}"),
    };
    out.extend(regressions(target));
    out
}

/// Inputs that once crashed a node, for `target`'s corpus.
pub fn regressions(target: &str) -> Vec<Named<Vec<u8>>> {
    match target {
        crate::CLUSTER_PAYLOADS => {
            // A proposal of 20,000 `Tagged` map changes nested in one another (60 KB): its
            // decode recursed once a level and overflowed the stack, aborting the node.
            // Refused since at `dfs_cluster::TAGGED_NESTING_MAX` levels.
            // One level: `[propose][tagged][client 1][seq 1]` + `[node-lost][node 1]`.
            let one = RaftRpc::Propose(MapCommand::Tagged {
                tag: RequestTag {
                    client_id: 1,
                    seq: 1,
                },
                command: Box::new(MapCommand::NodeLost { id: 1 }),
            })
            .encode()
            .unwrap_or_default();
            let (head, level, tail) = (&one[..1], &one[1..4], &one[4..]);
            let mut payload = head.to_vec();
            for _ in 0..20_000 {
                payload.extend_from_slice(level);
            }
            payload.extend_from_slice(tail);
            vec![
                ("regress-nested-tagged-proposal".into(), payload),
                (
                    "regress-nested-error-sources".into(),
                    nested_error_sources(20_000),
                ),
            ]
        }
        _ => Vec::new(),
    }
}

/// An append-entries answer whose storage error has `levels` sources nested in one another:
/// each `[no type][empty message][some source]` going in, `[no context][no backtrace]`
/// coming out. Its decode recursed once a level and overflowed the stack, aborting the node
/// (found by the stable fuzzer); refused since at `dfs_cluster::PAYLOAD_NESTING_MAX`.
pub fn nested_error_sources(levels: usize) -> Vec<u8> {
    let encode = |depth| {
        RaftReply::AppendEntries(Err(storage_failure_blank(depth)))
            .encode()
            .unwrap_or_default()
    };
    let (one, two) = (encode(1), encode(2));
    // The first error's source flag is where the two differ; the error starts 2 bytes
    // before it (its absent type and empty message).
    let Some(at) = one.iter().zip(&two).position(|(a, b)| a != b) else {
        return Vec::new();
    };
    let (head, tail) = one.split_at(at - 2);
    let mut payload = head.to_vec();
    for _ in 0..levels {
        payload.extend_from_slice(&[0, 0, 1]);
    }
    payload.extend_from_slice(&tail[..5]);
    for _ in 0..levels {
        payload.extend_from_slice(&[0, 0]);
    }
    payload.extend_from_slice(&tail[5..]);
    payload
}

/// [`storage_failure`] with empty messages, so each level encodes the same.
fn storage_failure_blank(depth: usize) -> RaftError<u64> {
    #[derive(Debug)]
    struct Blank(Option<Box<Blank>>);
    impl std::fmt::Display for Blank {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            Ok(())
        }
    }
    impl std::error::Error for Blank {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0
                .as_deref()
                .map(|c| c as &(dyn std::error::Error + 'static))
        }
    }
    let chain = (1..depth).fold(Blank(None), |inner, _| Blank(Some(Box::new(inner))));
    let io = StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Read,
        AnyError::from_dyn(&chain, None),
    );
    RaftError::Fatal(Fatal::StorageError(StorageError::IO { source: io }))
}

/// Numbers the second and later samples of a name, so names are unique.
fn unique<T>(mut samples: Vec<Named<T>>) -> Vec<Named<T>> {
    let mut seen = BTreeMap::<String, usize>::new();
    for (name, _) in &mut samples {
        let n = seen.entry(name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            name.push_str(&format!("-{n}"));
        }
    }
    samples
}
