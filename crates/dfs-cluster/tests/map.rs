//! A one-member cluster map: start, commit, restart from disk.

use std::collections::BTreeMap;

use dfs_cluster::{ClusterMap, MapCommand, MapResponse, MapRole};

fn members(addr: &str) -> BTreeMap<u64, String> {
    BTreeMap::from([(1, addr.to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_member_map_commits_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft_dir = dir.path().join("raft");
    let map = ClusterMap::start(1, &members("127.0.0.1:1"), 7, &raft_dir)
        .await
        .expect("starts");
    assert!(map.freshly_initialized());
    let status = map.status();
    assert_eq!((status.leader, status.role), (Some(1), MapRole::Leader));
    assert!(status.term >= 1);
    let create = MapCommand::CreateFile {
        name: "a/b".into(),
        file_id: 42,
        replicas: vec![1],
    };
    assert!(matches!(
        map.propose(create.clone()).await.expect("commits"),
        MapResponse::Created(_)
    ));
    assert!(matches!(
        map.propose(create).await.expect("commits"),
        MapResponse::AlreadyExists(_)
    ));
    assert_eq!(map.lookup("a/b").map(|p| p.file_id), Some(42));
    assert_eq!(map.read(|s| s.nodes[&1].incarnation), 1);
    map.shutdown().await;
    drop(map);

    let map = ClusterMap::start(1, &members("127.0.0.1:1"), 7, &raft_dir)
        .await
        .expect("restarts on the same storage");
    assert!(!map.freshly_initialized());
    assert_eq!(
        map.lookup("a/b").map(|p| p.file_id),
        Some(42),
        "the file survived"
    );
    assert_eq!(
        map.read(|s| s.nodes[&1].incarnation),
        2,
        "a new incarnation"
    );
    assert!(map.read(|s| s.nodes[&1].up));
    map.shutdown().await;
}
