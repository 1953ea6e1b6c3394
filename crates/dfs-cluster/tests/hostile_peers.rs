//! What a peer that passed the hello can send the cluster map: inputs the fuzzers
//! (`crates/dfs-fuzz`, `fuzz/`; see `FUZZING.md`) and their review found to crash a node,
//! kept as regression tests. Each must be answered or refused without a panic, an abort or
//! an allocation beyond what the peer sent.

use std::collections::BTreeMap;
use std::time::Duration;

use dfs_cluster::{
    ClusterMap, MapCommand, PAYLOAD_NESTING_MAX, RaftReply, RaftRpc, RequestTag, dispatch,
};
use openraft::error::{Fatal, RaftError};
use openraft::raft::InstallSnapshotRequest;
use openraft::testing::log_id;
use openraft::{
    AnyError, BasicNode, ErrorSubject, ErrorVerb, Membership, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};

/// A `Propose` payload of `levels` `Tagged` map changes nested in one another around a
/// `NodeLost`: three bytes a level.
fn nested_proposal(levels: usize) -> Vec<u8> {
    let tagged = |command| MapCommand::Tagged {
        tag: RequestTag {
            client_id: 1,
            seq: 1,
        },
        command: Box::new(command),
    };
    // `[propose][tagged][client 1][seq 1]` + `[node-lost][node 1]`: repeat the level.
    let one = RaftRpc::Propose(tagged(MapCommand::NodeLost { id: 1 }))
        .encode()
        .expect("encodes");
    let (head, level, tail) = (&one[..1], &one[1..4], &one[4..]);
    let mut payload = head.to_vec();
    for _ in 0..levels {
        payload.extend_from_slice(level);
    }
    payload.extend_from_slice(tail);
    let two = RaftRpc::Propose(tagged(tagged(MapCommand::NodeLost { id: 1 })));
    if levels == 2 {
        assert_eq!(
            payload,
            two.encode().expect("encodes"),
            "the level is not what it seems"
        );
    }
    payload
}

/// An error with a chain of `depth` sources, for openraft's `AnyError`.
#[derive(Debug)]
struct Chain(Option<Box<Chain>>);

impl std::fmt::Display for Chain {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Chain {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

fn storage_failure(depth: usize) -> RaftReply {
    let chain = (1..depth).fold(Chain(None), |inner, _| Chain(Some(Box::new(inner))));
    let io = StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Read,
        AnyError::from_dyn(&chain, None),
    );
    RaftReply::AppendEntries(Err(RaftError::Fatal(Fatal::StorageError(
        StorageError::IO { source: io },
    ))))
}

/// An append-entries answer carrying a storage error whose `AnyError` has `levels` sources
/// nested in one another: each `[no type][empty message][some source]` going in, each
/// `[no context][no backtrace]` coming out.
fn nested_storage_failure(levels: usize) -> Vec<u8> {
    let one = storage_failure(1).encode().expect("encodes");
    let two = storage_failure(2).encode().expect("encodes");
    // Where the two differ is where the first error's source begins: `[0, 0, 0]` (no
    // type, no message, no source) in one, `[0, 0, 1]` in the other.
    let at = one
        .iter()
        .zip(&two)
        .position(|(a, b)| a != b)
        .expect("they differ")
        - 2;
    let (head, tail) = (&one[..at], &one[at..]);
    let mut payload = head.to_vec();
    for _ in 0..levels {
        payload.extend_from_slice(&[0, 0, 1]);
    }
    payload.extend_from_slice(&tail[..5]);
    for _ in 0..levels {
        payload.extend_from_slice(&[0, 0]);
    }
    payload.extend_from_slice(&tail[5..]);
    if levels == 1 {
        assert_eq!(payload, two, "the level is not what it seems");
    }
    payload
}

/// Runs `f` on a thread with a small stack (a tokio worker's is 2 MiB): a decode that
/// recursed once per nesting level would overflow it and abort the test process.
fn on_a_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawns")
        .join()
        .expect("does not panic")
}

#[test]
fn deeply_nested_tagged_proposals_are_refused_without_overflowing_the_stack() {
    let _ = nested_proposal(2);
    // A few levels decode.
    assert!(matches!(
        RaftRpc::decode(&nested_proposal(8)),
        Ok(RaftRpc::Propose(MapCommand::Tagged { .. }))
    ));
    // 100,000 levels are 300 KB, well within a frame: their decode overflowed the stack
    // and aborted the node. Refused at the bound, at once.
    let deep = nested_proposal(100_000);
    assert!(on_a_small_stack(move || RaftRpc::decode(&deep).is_err()));
    let over = nested_proposal(PAYLOAD_NESTING_MAX);
    on_a_small_stack(move || {
        assert!(RaftRpc::decode(&over).is_err());
        assert!(RaftRpc::decode(&nested_proposal(1)).is_ok());
    });
}

#[test]
fn deeply_nested_error_sources_in_answers_are_refused_without_overflowing_the_stack() {
    // Found by the stable fuzzer (DFS_FUZZ_SEED=0x5eed, 5,000,000 inputs): openraft's
    // `AnyError` holds its source, another `AnyError`, so an answer nests without bound; a
    // node reads its peers' answers on a tokio worker.
    let _ = nested_storage_failure(1);
    assert_eq!(
        RaftReply::decode(&nested_storage_failure(4)).expect("a few levels decode"),
        storage_failure(5)
    );
    let deep = nested_storage_failure(100_000);
    assert!(on_a_small_stack(move || RaftReply::decode(&deep).is_err()));
}

fn members() -> BTreeMap<u64, String> {
    BTreeMap::from([(1, "127.0.0.1:1".to_owned())])
}

fn snapshot_chunk(offset: u64, data: Vec<u8>, done: bool) -> Vec<u8> {
    let nodes = BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:1"))]);
    let membership = Membership::new(vec![nodes.keys().copied().collect()], nodes);
    RaftRpc::InstallSnapshot(InstallSnapshotRequest {
        // A vote no local one outranks: openraft then takes the chunk.
        vote: Vote::new_committed(u64::MAX, 2),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(u64::MAX, 2, 1)),
            last_membership: StoredMembership::new(None, membership),
            snapshot_id: "hostile".to_owned(),
        },
        offset,
        data,
        done,
    })
    .encode()
    .expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_past_the_bytes_received_is_refused_without_allocating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = ClusterMap::start(1, &members(), 7, &dir.path().join("raft"))
        .await
        .expect("starts");
    // The first chunk of a snapshot, then one that claims to start a terabyte further on:
    // the snapshot buffer would grow (zero-filled) to the offset named, and the allocation
    // failure abort the node.
    let first = dispatch(map.raft(), &snapshot_chunk(0, vec![1, 2, 3], false)).await;
    assert!(matches!(
        RaftReply::decode(&first),
        Ok(RaftReply::InstallSnapshot(Ok(_)))
    ));
    for offset in [1u64 << 40, u64::MAX - 8, 4] {
        let far = dispatch(map.raft(), &snapshot_chunk(offset, vec![9; 8], false)).await;
        match RaftReply::decode(&far) {
            Ok(RaftReply::InstallSnapshot(Err(e))) => {
                assert!(e.to_string().contains("past the end"), "{e}")
            }
            other => panic!("offset {offset}: {other:?}"),
        }
    }
    // The stream goes on from where it is, and the map still serves.
    let next = dispatch(map.raft(), &snapshot_chunk(3, vec![4], false)).await;
    assert!(matches!(
        RaftReply::decode(&next),
        Ok(RaftReply::InstallSnapshot(Ok(_)))
    ));
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        dispatch(map.raft(), &RaftRpc::Standing(1).encode().expect("encodes")),
    )
    .await
    .expect("answers in time");
    assert!(matches!(
        RaftReply::decode(&reply),
        Ok(RaftReply::Standing(_))
    ));
    map.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_requests_in_the_receivers_own_name_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = ClusterMap::start(1, &members(), 7, &dir.path().join("raft"))
        .await
        .expect("starts");
    // The node leads with this vote; a request carrying it claims to come from the node
    // itself. openraft then acted as the leader and a follower of one term at once (its
    // core panicked in a debug build, and the map stopped for good).
    let own = map.raft().metrics().borrow().vote;
    let requests = [
        RaftRpc::AppendEntries(openraft::raft::AppendEntriesRequest {
            vote: own,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
        RaftRpc::Vote(openraft::raft::VoteRequest::new(own, None)),
        RaftRpc::InstallSnapshot(
            match RaftRpc::decode(&snapshot_chunk(0, vec![1], true)).expect("decodes") {
                RaftRpc::InstallSnapshot(mut r) => {
                    r.vote = own;
                    r
                }
                other => panic!("{other:?}"),
            },
        ),
    ];
    for rpc in requests {
        let answer = dispatch(map.raft(), &rpc.encode().expect("encodes")).await;
        match RaftReply::decode(&answer) {
            Ok(RaftReply::Refused(why)) => assert!(why.contains("receiving node"), "{why}"),
            other => panic!("{}: {other:?}", rpc.kind()),
        }
    }
    // The map is unharmed: it still commits.
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        map.propose(MapCommand::NodeLost { id: 9 }),
    )
    .await
    .expect("in time");
    assert!(done.is_ok(), "{done:?}");
    map.shutdown().await;
}
