//! Three `ClusterMap`s in one process, each with its own storage directory and TCP
//! listener, started at once with the same member list: they form one group, register,
//! forward proposals from followers to the leader, survive the leader's loss, take the old
//! leader back from its storage, and refuse writes once only a minority is left.

mod common;

use common::{DEADLINE, wait_until};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dfs_cluster::{
    ClusterError, ClusterMap, DataSlot, MapCommand, MapResponse, MapRole, PROPOSE_TIMEOUT,
    PeerService,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const CLUSTER: u64 = 0xd5f5_0003;

/// One running node: its map and the listener serving its peers.
struct TestNode {
    id: u64,
    map: ClusterMap,
    accept: JoinHandle<()>,
}

impl TestNode {
    /// Opens node `id`'s map from `dir` and serves its peers on `listener`; `join` is
    /// left to the caller.
    async fn open(
        id: u64,
        members: &BTreeMap<u64, String>,
        dir: &Path,
        listener: TcpListener,
    ) -> TestNode {
        let map = ClusterMap::open(id, members, CLUSTER, dir)
            .await
            .expect("the map opens");
        let accept = tokio::spawn(common::accept_peers(
            listener,
            PeerService::for_map(&map, DataSlot::default()),
            id,
            CLUSTER,
        ));
        TestNode { id, map, accept }
    }

    /// Stops the node: its raft (waiting for the storage to be free), its listener and
    /// every connection to it.
    async fn stop(self) {
        self.map.shutdown().await;
        assert!(
            self.map.storage_release().is_released(),
            "the storage is free"
        );
        self.accept.abort();
        let _ = self.accept.await;
    }

    fn role(&self) -> MapRole {
        self.map.status().role
    }
}

/// Binds `addr` again (the old listener of a stopped node may take a moment to close).
async fn rebind(addr: &str) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                assert!(start.elapsed() < DEADLINE, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The leader every one of `nodes` agrees on, once they agree and it says it leads.
async fn agreed_leader(nodes: &[&TestNode]) -> u64 {
    let mut leader = None;
    wait_until("a leader all agree on", || {
        let seen: Vec<Option<u64>> = nodes.iter().map(|n| n.map.status().leader).collect();
        leader = seen[0].filter(|l| seen.iter().all(|s| *s == Some(*l)));
        leader.is_some_and(|l| {
            nodes
                .iter()
                .any(|n| n.id == l && n.role() == MapRole::Leader)
        })
    })
    .await;
    leader.expect("a leader")
}

fn create(name: &str, file_id: u64, replicas: Vec<u64>) -> MapCommand {
    MapCommand::CreateFile {
        name: name.to_owned(),
        file_id,
        replicas,
    }
}

/// Binds a listener per node and returns them with the member list they make.
async fn listeners(ids: &[u64]) -> (Vec<TcpListener>, BTreeMap<u64, String>) {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in ids {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        members.insert(*id, listener.local_addr().expect("addr").to_string());
        listeners.push(listener);
    }
    (listeners, members)
}

fn dirs(root: &Path, ids: &[u64]) -> Vec<PathBuf> {
    ids.iter()
        .map(|id| root.join(format!("node{id}")))
        .collect()
}

/// Opens nodes 1, 2 and 3 under `root` (none joined yet): the nodes, their directories
/// and the member list.
async fn open_three(root: &Path) -> (Vec<TestNode>, Vec<PathBuf>, BTreeMap<u64, String>) {
    let ids = [1, 2, 3];
    let dirs = dirs(root, &ids);
    let (listeners, members) = listeners(&ids).await;
    let mut nodes = Vec::new();
    for ((id, dir), listener) in ids.iter().zip(&dirs).zip(listeners) {
        nodes.push(TestNode::open(*id, &members, dir, listener).await);
    }
    (nodes, dirs, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_maps_start_together_forward_fail_over_and_refuse_a_minority() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, dirs, members) = open_three(root.path()).await;
    // All three join at once; each registers through whoever leads.
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        nodes[0].map.join(),
        nodes[1].map.join(),
        nodes[2].map.join()
    );
    assert!(nodes.iter().all(|n| n.map.freshly_initialized()));
    for joined in [a, b, c] {
        joined.expect("joined");
    }
    let join_time = started.elapsed();
    let all: Vec<&TestNode> = nodes.iter().collect();
    let leader = agreed_leader(&all).await;
    wait_until(
        "every map to show the three nodes up, incarnation 1",
        || {
            nodes.iter().all(|n| {
                n.map.read(|s| {
                    s.nodes.len() == 3 && s.nodes.values().all(|i| i.up && i.incarnation == 1)
                })
            })
        },
    )
    .await;
    for n in &nodes {
        let addrs: BTreeMap<u64, String> = n.map.read(|s| {
            s.nodes
                .iter()
                .map(|(id, i)| (*id, i.addr.clone()))
                .collect()
        });
        assert_eq!(addrs, members, "node {} records every address", n.id);
        assert_eq!(n.map.status().members, members);
    }

    // A follower's proposal is forwarded to the leader and commits everywhere.
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    assert_ne!(follower.role(), MapRole::Leader);
    let created = follower
        .map
        .propose(create("dir/a", 11, vec![1, 2, 3]))
        .await
        .expect("forwarded and committed");
    assert!(
        matches!(&created, MapResponse::Created(p) if p.file_id == 11),
        "{created:?}"
    );
    wait_until("every node to apply dir/a", || {
        nodes.iter().all(|n| n.map.lookup("dir/a").is_some())
    })
    .await;
    // Proposed again (as after a lost answer): refused as a duplicate, same file.
    let again = follower
        .map
        .propose(create("dir/a", 11, vec![1, 2, 3]))
        .await
        .expect("committed");
    assert!(
        matches!(&again, MapResponse::AlreadyExists(p) if p.file_id == 11),
        "{again:?}"
    );

    // Linearizable reads: on the leader, and on a follower through the leader's read
    // index; a read index itself is the leader's alone (a follower names it).
    let leader_node = nodes.iter().find(|n| n.id == leader).expect("the leader");
    let read = leader_node.map.linearizable_lookup("dir/a").await;
    assert_eq!(read.expect("read").map(|p| p.file_id), Some(11));
    let read = follower.map.linearizable_lookup("dir/a").await;
    assert_eq!(
        read.expect("a follower's read").map(|p| p.file_id),
        Some(11)
    );
    match follower.map.read_index().await {
        Err(ClusterError::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
        other => panic!("a follower's read index: {other:?}"),
    }

    // The leader stops: the other two elect one of them and still commit, including
    // through the node that was a follower all along.
    let old_leader = leader;
    let index = nodes
        .iter()
        .position(|n| n.id == old_leader)
        .expect("leader");
    nodes.remove(index).stop().await;
    let two: Vec<&TestNode> = nodes.iter().collect();
    let new_leader = agreed_leader(&two).await;
    assert_ne!(new_leader, old_leader);
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("while-down/{i}");
        let created = n
            .map
            .propose(create(&name, 20 + i as u64, vec![n.id]))
            .await
            .expect("two of three commit");
        assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    }
    wait_until("the survivors to apply both files", || {
        nodes.iter().all(|n| n.map.read(|s| s.files.len()) == 3)
    })
    .await;

    // The old leader comes back from its storage: it registers anew and catches up.
    let listener = rebind(&members[&old_leader]).await;
    let dir = &dirs[(old_leader - 1) as usize];
    let back = TestNode::open(old_leader, &members, dir, listener).await;
    assert!(!back.map.freshly_initialized());
    back.map.join().await.expect("rejoined");
    nodes.push(back);
    wait_until(
        "every node to apply the old leader's new incarnation",
        || {
            nodes.iter().all(|n| {
                n.map
                    .read(|s| s.nodes.get(&old_leader).map(|i| (i.up, i.incarnation)))
                    == Some((true, 2))
            })
        },
    )
    .await;
    let back = nodes.last().expect("the old leader");
    wait_until(
        "the old leader to see what was created while it was down",
        || back.map.lookup("while-down/0").is_some() && back.map.lookup("while-down/1").is_some(),
    )
    .await;
    assert_eq!(back.map.lookup("dir/a").map(|p| p.file_id), Some(11));

    // Two of three stop, leaving the leader alone: it accepts no write (it cannot reach a
    // quorum), and says so within the deadline.
    let all: Vec<&TestNode> = nodes.iter().collect();
    let last_id = agreed_leader(&all).await;
    let mut down = Vec::new();
    while let Some(i) = nodes.iter().position(|n| n.id != last_id) {
        down.push(nodes.remove(i));
    }
    for n in down {
        n.stop().await;
    }
    let last = nodes.pop().expect("the last node");
    let files_before = last.map.read(|s| s.files.len());
    let started = Instant::now();
    let outcome = last.map.propose(create("dir/c", 30, vec![last_id])).await;
    let waited = started.elapsed();
    match outcome {
        Err(ClusterError::Timeout { waited, last }) => {
            assert!(
                waited < PROPOSE_TIMEOUT + Duration::from_secs(1),
                "{waited:?}: {last}"
            );
            assert!(last.contains("no quorum"), "{last}");
        }
        other => panic!("a minority took a write: {other:?}"),
    }
    assert!(
        waited < PROPOSE_TIMEOUT + Duration::from_secs(2),
        "the failure took {waited:?}"
    );
    assert!(last.map.lookup("dir/c").is_none());
    assert_eq!(last.map.read(|s| s.files.len()), files_before);
    last.stop().await;
    eprintln!("three joined in {join_time:?}; the minority failed after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_empty_storage_joins_a_formed_group_by_its_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let ids = [1, 2, 3];
    let dirs = dirs(root.path(), &ids);
    let (mut listeners, members) = listeners(&ids).await;
    let late_listener = listeners.pop().expect("three");

    // Two of three form the group (a quorum) and commit.
    let mut nodes = Vec::new();
    for ((id, dir), listener) in ids.iter().zip(&dirs).zip(listeners) {
        nodes.push(TestNode::open(*id, &members, dir, listener).await);
    }
    let (a, b) = tokio::join!(nodes[0].map.join(), nodes[1].map.join());
    a.expect("joined");
    b.expect("joined");
    let created = nodes[1]
        .map
        .propose(create("early", 1, vec![1, 2]))
        .await
        .expect("committed");
    assert!(matches!(created, MapResponse::Created(_)), "{created:?}");

    // The third starts later on an empty directory: it initializes like the others did
    // (the same first entry) or is refused as a group member already, and either way
    // receives the log and registers.
    let late = TestNode::open(3, &members, &dirs[2], late_listener).await;
    late.map.join().await.expect("the late node joins");
    assert!(late.map.freshly_initialized(), "it never ran: no disk loss");
    wait_until("the late node to apply the log", || {
        late.map.lookup("early").is_some()
            && late
                .map
                .read(|s| s.nodes.len() == 3 && s.up_nodes() == [1, 2, 3])
    })
    .await;
    nodes.push(late);
    let all: Vec<&TestNode> = nodes.iter().collect();
    agreed_leader(&all).await;
    for n in nodes {
        n.stop().await;
    }
}

/// A member that lost its storage (its disk) is not taken for a new one: the others' maps
/// record it, so it waits, voting for nobody, until the leader has made it a learner and
/// moved its files away; then it receives the log and becomes a voter again, and counts
/// in the quorum as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_lost_its_storage_is_taken_back_as_a_learner_then_a_voter() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, dirs, members) = open_three(root.path()).await;
    let (a, b, c) = tokio::join!(
        nodes[0].map.join(),
        nodes[1].map.join(),
        nodes[2].map.join()
    );
    for joined in [a, b, c] {
        joined.expect("joined");
    }
    for command in [create("shared", 1, vec![3, 1]), create("alone", 2, vec![3])] {
        let created = nodes[0].map.propose(command).await.expect("committed");
        assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    }

    // Node 3 stops and its disk is lost: an empty directory at the same address.
    let lost = nodes.pop().expect("three");
    lost.stop().await;
    std::fs::remove_dir_all(&dirs[2]).expect("wipe");
    std::fs::create_dir_all(&dirs[2]).expect("recreate");
    let listener = rebind(&members[&3]).await;
    let back = TestNode::open(3, &members, &dirs[2], listener).await;
    back.map.join().await.expect("taken back");
    assert!(!back.map.freshly_initialized(), "not a new group");

    // Out of the file it shared, and of its only file (whose content is gone).
    let placement = |name: &str| back.map.lookup(name).map(|p| (p.replicas, p.epoch));
    assert_eq!(placement("shared"), Some((vec![1], 2)));
    assert_eq!(placement("alone"), Some((vec![], 2)), "lost with the disk");
    let status = nodes[0].map.status();
    assert_eq!(
        status.voters,
        [1, 2, 3].into_iter().collect(),
        "a voter again: {status:?}"
    );

    // It counts in the quorum: with node 1 gone, nodes 2 and 3 still commit.
    let first = nodes.remove(0);
    first.stop().await;
    let created = back
        .map
        .propose(create("after", 3, vec![2, 3]))
        .await
        .expect("two of three commit");
    assert!(matches!(created, MapResponse::Created(_)), "{created:?}");
    for n in nodes {
        n.stop().await;
    }
    back.stop().await;
}
