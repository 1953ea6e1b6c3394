//! Three cluster-map rafts in one process, each with its own durable storage and its own
//! TCP listener, talking over the dfs peer protocol: a leader is elected, writes commit on
//! every node, two nodes of three still commit, one alone does not.
//!
//! Also: a node that joins after the log was compacted catches up by a snapshot sent in
//! chunks over the same transport.

mod common;

use common::{DEADLINE, wait_until};

use std::collections::BTreeMap;
use std::time::Duration;

use dfs_cluster::{
    ClusterState, MapCommand, MapReader, MapResponse, PeerNetwork, Raft, RaftReply, dispatch,
    open_storage, raft_config,
};
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const CLUSTER: u64 = 0xd5f5_0001;

/// One node: its raft, a reader of its map, and the listener serving its peers.
struct TestNode {
    id: u64,
    addr: String,
    raft: Raft,
    map: MapReader,
    accept: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(id: u64) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open_storage(dir.path()).await.expect("storage opens");
        let map = sm.reader();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let config = raft_config("three-nodes").expect("valid config");
        let raft = Raft::new(
            id,
            config,
            PeerNetwork::new(id, CLUSTER, dfs_net::Tcp::shared()),
            log,
            sm,
        )
        .await
        .expect("raft starts");
        let accept = tokio::spawn(common::accept_peers(listener, raft.clone(), id, CLUSTER));
        TestNode {
            id,
            addr,
            raft,
            map,
            accept,
            _dir: dir,
        }
    }

    /// Stops the node: its raft, its listener and every connection to it.
    async fn stop(&self) {
        self.raft.shutdown().await.expect("raft stops");
        self.accept.abort();
    }

    fn node(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }

    fn state(&self) -> ClusterState {
        self.map.read(|s| s.clone())
    }
}

/// The leader every one of `nodes` agrees on, once they agree.
async fn agreed_leader(nodes: &[&TestNode]) -> u64 {
    let mut leader = None;
    wait_until("a leader all agree on", || {
        let seen: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        leader = seen[0].filter(|l| seen.iter().all(|s| *s == Some(*l)));
        leader.is_some_and(|l| {
            nodes
                .iter()
                .any(|n| n.id == l && n.raft.metrics().borrow().state == ServerState::Leader)
        })
    })
    .await;
    leader.expect("a leader")
}

/// Proposes `command` through whichever of `nodes` leads, retrying while leadership moves
/// (a node that is not the leader refuses before appending, so a retry applies once).
async fn write(nodes: &[&TestNode], command: MapCommand) -> MapResponse {
    let start = tokio::time::Instant::now();
    loop {
        let leader = agreed_leader(nodes).await;
        let node = nodes
            .iter()
            .find(|n| n.id == leader)
            .expect("the leader is one of them");
        match node.raft.client_write(command.clone()).await {
            Ok(response) => return response.data,
            Err(e) if e.forward_to_leader().is_some() => {
                assert!(
                    start.elapsed() < DEADLINE,
                    "no leader took {command:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{command:?}: {e}"),
        }
    }
}

fn node_up(node: &TestNode) -> MapCommand {
    MapCommand::NodeUp {
        id: node.id,
        addr: node.addr.clone(),
        incarnation: 1,
    }
}

fn create(name: &str, file_id: u64, replicas: Vec<u64>) -> MapCommand {
    MapCommand::CreateFile {
        name: name.to_owned(),
        file_id,
        replicas,
    }
}

/// Waits until every node of `nodes` has applied the same map, and returns it.
async fn converged(nodes: &[&TestNode], what: &str) -> ClusterState {
    wait_until(what, || {
        let first = nodes[0].state();
        let same_log = nodes
            .iter()
            .all(|n| n.map.last_applied() == nodes[0].map.last_applied());
        same_log && nodes.iter().all(|n| n.state() == first)
    })
    .await;
    nodes[0].state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_replicate_and_refuse_a_minority() {
    let nodes = [
        TestNode::start(1).await,
        TestNode::start(2).await,
        TestNode::start(3).await,
    ];
    let all: Vec<&TestNode> = nodes.iter().collect();

    // The receiving side answers garbage with an error, whatever the raft's state.
    let answer = dispatch(&nodes[0].raft, b"\x07garbage").await;
    assert!(matches!(
        RaftReply::decode(&answer),
        Ok(RaftReply::Refused(_))
    ));

    let members: BTreeMap<u64, BasicNode> = nodes.iter().map(|n| (n.id, n.node())).collect();
    nodes[0]
        .raft
        .initialize(members)
        .await
        .expect("initialized");
    let leader = agreed_leader(&all).await;

    for node in &nodes {
        assert_eq!(write(&all, node_up(node)).await, MapResponse::Done);
    }
    let created = write(&all, create("dir/a", 11, vec![1, 2, 3])).await;
    assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    let state = converged(&all, "three nodes to apply the same map").await;
    assert_eq!(state.nodes.len(), 3);
    assert!(state.nodes.values().all(|n| n.up));
    assert_eq!(
        state.files.get("dir/a").map(|p| p.replicas.clone()),
        Some(vec![1, 2, 3])
    );

    // One follower stops: the other two still commit.
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    follower.stop().await;
    let two: Vec<&TestNode> = nodes.iter().filter(|n| n.id != follower.id).collect();
    let created = write(&two, create("dir/b", 12, vec![leader])).await;
    assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    let down = write(
        &two,
        MapCommand::NodeDown {
            id: follower.id,
            incarnation: 1,
        },
    )
    .await;
    assert_eq!(down, MapResponse::Done);
    let state = converged(&two, "the two remaining nodes to apply the same map").await;
    assert!(state.files.contains("dir/b"));
    assert_eq!(state.nodes.get(&follower.id).map(|n| n.up), Some(false));
    assert!(
        !follower.state().files.contains("dir/b"),
        "the stopped node saw nothing"
    );

    // The leader stops too: the one node left is a minority and commits nothing.
    let leader_node = two.iter().find(|n| n.id == leader).expect("the leader");
    let last = two.iter().find(|n| n.id != leader).expect("the last node");
    let term_before = last.raft.metrics().borrow().current_term;
    leader_node.stop().await;
    let applied_before = last.map.last_applied();
    // It notices the leader is gone and runs for election (a new term), and cannot win.
    wait_until("the last node to run for election", || {
        last.raft.metrics().borrow().current_term > term_before
    })
    .await;
    for attempt in 0..3 {
        let outcome = tokio::time::timeout(
            Duration::from_secs(1),
            last.raft.client_write(create("dir/c", 13, vec![last.id])),
        )
        .await;
        match outcome {
            Err(_) => {}     // no quorum: it never commits
            Ok(Err(_)) => {} // refused: not the leader
            Ok(Ok(r)) => panic!("attempt {attempt}: a minority committed a write: {r:?}"),
        }
    }
    assert_ne!(last.raft.metrics().borrow().state, ServerState::Leader);
    assert!(!last.state().files.contains("dir/c"));
    assert_eq!(last.map.last_applied(), applied_before);

    last.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_a_compacted_log_catches_up_by_snapshot() {
    let first = TestNode::start(1).await;
    let members: BTreeMap<u64, BasicNode> = [(1, first.node())].into();
    first.raft.initialize(members).await.expect("initialized");
    let one = [&first];
    agreed_leader(&one).await;
    assert_eq!(write(&one, node_up(&first)).await, MapResponse::Done);
    // Enough files that the snapshot spans several chunks of SNAPSHOT_CHUNK_BYTES.
    let name_bytes = 900;
    let files = 2 * dfs_cluster::SNAPSHOT_CHUNK_BYTES / name_bytes + 50;
    for i in 0..files as u64 {
        let name = format!("{i:0>width$}", width = name_bytes);
        let created = write(&one, create(&name, 100 + i, vec![1])).await;
        assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    }
    first.raft.trigger().snapshot().await.expect("snapshot");
    let applied = first.map.last_applied().expect("applied").index;
    wait_until("the snapshot", || {
        first
            .raft
            .metrics()
            .borrow()
            .snapshot
            .is_some_and(|s| s.index >= applied)
    })
    .await;
    first
        .raft
        .trigger()
        .purge_log(applied)
        .await
        .expect("purge");
    wait_until("the log purge", || {
        first
            .raft
            .metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index >= applied)
    })
    .await;

    // A new node can only get the early entries from the snapshot.
    let second = TestNode::start(2).await;
    first
        .raft
        .add_learner(2, second.node(), true)
        .await
        .expect("learner added");
    let both = [&first, &second];
    let state = converged(&both, "the learner to install the snapshot").await;
    assert_eq!(state.files.len(), files);
    assert!(
        second
            .raft
            .metrics()
            .borrow()
            .snapshot
            .is_some_and(|s| s.index >= applied),
        "the learner caught up by snapshot"
    );
    // And it follows the log after it.
    let created = write(&one, create("after", 7, vec![1])).await;
    assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    wait_until("the learner to follow the log", || {
        second.state().files.contains("after")
    })
    .await;

    first.stop().await;
    second.stop().await;
}
