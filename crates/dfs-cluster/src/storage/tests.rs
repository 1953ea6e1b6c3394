//! Tests of the raft storage: openraft's own suite, durability across a reopen, and the
//! state machine's agreement with `ClusterState::apply`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, Membership, RaftLogReader,
    RaftSnapshotBuilder, StorageError, StorageHelper, StoredMembership, Vote,
};
use tempfile::TempDir;

use super::state_machine::SNAPSHOT_FILE;
use super::{LogStore, SnapshotBytes, StateMachineStore, open_storage};
use crate::{ClusterError, ClusterState, MAX_PAYLOAD_ENTRIES, MapCommand, MapResponse, TypeConfig};

/// Opens storage in a fresh temporary directory, kept alive by the returned guard.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().expect("a temporary directory");
        let (log, sm) = open_storage(dir.path())
            .await
            .expect("storage opens in an empty directory");
        Ok((dir, log, sm))
    }
}

/// openraft's storage test suite. It runs its own runtimes, hence a plain `#[test]`.
#[test]
fn openraft_suite() {
    Suite::test_all(TempStoreBuilder).expect("openraft's storage suite passes");
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload,
    }
}

fn up(id: u64) -> MapCommand {
    MapCommand::NodeUp {
        id,
        addr: format!("127.0.0.1:{}", 7000 + id),
        incarnation: 1,
    }
}

fn commands() -> Vec<MapCommand> {
    vec![
        up(1),
        up(2),
        up(3),
        MapCommand::CreateFile {
            name: "a".into(),
            file_id: 10,
            replicas: vec![1, 2],
        },
        MapCommand::CreateFile {
            name: "b".into(),
            file_id: 11,
            replicas: vec![9],
        },
        MapCommand::NodeDown {
            id: 2,
            incarnation: 1,
        },
        MapCommand::SetReplicas {
            name: "a".into(),
            file_id: 10,
            expected_epoch: 1,
            replicas: vec![1, 3],
        },
        MapCommand::DeleteFile {
            name: "a".into(),
            file_id: 10,
        },
        MapCommand::CreateFile {
            name: "c".into(),
            file_id: 12,
            replicas: vec![3, 1],
        },
        // Lock leases are map state too: they persist and travel in snapshots.
        MapCommand::AcquireLock {
            name: "c".into(),
            mode: dfs_proto::LockMode::Exclusive,
            ttl_ms: 5000,
        },
        MapCommand::RenewLock { lease: 1 },
        MapCommand::AcquireLock {
            name: "b".into(),
            mode: dfs_proto::LockMode::Shared,
            ttl_ms: 5000,
        },
    ]
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:7001"))]);
    Membership::new(vec![BTreeSet::from([1])], nodes)
}

/// Entry 1 is a membership, entry 2 blank, then one normal entry per command.
fn log_of(commands: &[MapCommand]) -> Vec<Entry<TypeConfig>> {
    let mut log = vec![
        entry(1, EntryPayload::Membership(membership())),
        entry(2, EntryPayload::Blank),
    ];
    for (i, c) in commands.iter().enumerate() {
        log.push(entry(i as u64 + 3, EntryPayload::Normal(c.clone())));
    }
    log
}

/// The map and responses of applying `commands` directly.
fn applied_directly(commands: &[MapCommand]) -> (ClusterState, Vec<MapResponse>) {
    let mut state = ClusterState::default();
    let responses = commands.iter().map(|c| state.apply(c)).collect();
    (state, responses)
}

async fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    open_storage(dir).await.expect("storage opens")
}

#[tokio::test]
async fn applying_entries_matches_applying_commands() {
    let dir = TempDir::new().expect("a temporary directory");
    let (_log, mut sm) = open(dir.path()).await;
    let commands = commands();
    let log = log_of(&commands);

    // Applied in two batches, as openraft may.
    let mut responses = sm.apply(log[..4].to_vec()).await.expect("apply");
    responses.extend(sm.apply(log[4..].to_vec()).await.expect("apply"));

    let (state, direct) = applied_directly(&commands);
    assert_eq!(responses.len(), log.len(), "one response per entry");
    assert_eq!(responses[..2], [MapResponse::Done, MapResponse::Done]);
    assert_eq!(responses[2..], direct);
    let reader = sm.reader();
    assert_eq!(reader.read(|s| s.clone()), state);
    assert_eq!(reader.last_applied(), Some(log_id(1, 1, log.len() as u64)));
    let (applied, members) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, reader.last_applied());
    assert_eq!(
        members,
        StoredMembership::new(Some(log_id(1, 1, 1)), membership())
    );
}

#[tokio::test]
async fn install_snapshot_replaces_the_state() {
    let dir_a = TempDir::new().expect("a temporary directory");
    let dir_b = TempDir::new().expect("a temporary directory");
    let commands = commands();
    let (_log_a, mut sm_a) = open(dir_a.path()).await;
    sm_a.apply(log_of(&commands)).await.expect("apply");
    let built = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build a snapshot");

    {
        let (_log_b, mut sm_b) = open(dir_b.path()).await;
        // B holds something else before the install.
        sm_b.apply([entry(1, EntryPayload::Normal(up(7)))])
            .await
            .expect("apply");
        let mut received = sm_b.begin_receiving_snapshot().await.expect("begin");
        *received = SnapshotBytes::new(built.snapshot.clone().into_inner());
        sm_b.install_snapshot(&built.meta, received)
            .await
            .expect("install");

        let (state, _) = applied_directly(&commands);
        assert_eq!(sm_b.reader().read(|s| s.clone()), state);
        assert_eq!(sm_b.reader().last_applied(), built.meta.last_log_id);
        assert_eq!(
            sm_b.applied_state().await.expect("applied state"),
            (built.meta.last_log_id, built.meta.last_membership.clone())
        );
        let current = sm_b
            .get_current_snapshot()
            .await
            .expect("read the snapshot")
            .expect("a snapshot");
        assert_eq!(current.meta, built.meta);
    }

    // The installed snapshot is what B starts from after a restart.
    let (_log_b, sm_b) = open(dir_b.path()).await;
    assert_eq!(
        sm_b.reader().read(|s| s.clone()),
        sm_a.reader().read(|s| s.clone())
    );
    assert_eq!(sm_b.reader().last_applied(), built.meta.last_log_id);
}

#[tokio::test]
async fn install_snapshot_refuses_data_that_does_not_match_its_meta() {
    let dir = TempDir::new().expect("a temporary directory");
    let (_log, mut sm) = open(dir.path()).await;
    sm.apply(log_of(&commands())).await.expect("apply");
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build a snapshot");
    let mut meta = built.meta.clone();
    meta.last_log_id = Some(log_id(9, 9, 99));
    let garbage = Box::new(SnapshotBytes::new(vec![1, 2, 3]));
    assert!(sm.install_snapshot(&built.meta, garbage).await.is_err());
    assert!(sm.install_snapshot(&meta, built.snapshot).await.is_err());
    assert_eq!(
        sm.reader().last_applied(),
        built.meta.last_log_id,
        "state kept"
    );
}

#[tokio::test]
async fn everything_persisted_is_back_after_a_reopen() {
    let dir = TempDir::new().expect("a temporary directory");
    let commands = commands();
    let log = log_of(&commands);
    let last = log.len() as u64;
    let vote = Vote::new_committed(3, 1);
    let committed = Some(log_id(1, 1, last - 1));
    let snapshot_at = 5; // entries 1..=5 are in the snapshot
    let built = {
        let (mut log_store, mut sm) = open(dir.path()).await;
        log_store
            .blocking_append(log.clone())
            .await
            .expect("append");
        log_store.save_vote(&vote).await.expect("save vote");
        log_store
            .save_committed(committed)
            .await
            .expect("save committed");
        log_store.purge(log_id(1, 1, 2)).await.expect("purge");
        sm.apply(log[..snapshot_at].to_vec()).await.expect("apply");
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build a snapshot");
        // Applied after the snapshot: memory only, so lost at the restart, then re-applied.
        sm.apply(log[snapshot_at..].to_vec()).await.expect("apply");

        // While open, the directory cannot be opened again.
        let again = open_storage(dir.path()).await;
        assert!(
            matches!(again, Err(ClusterError::StorageLocked { .. })),
            "second open: {again:?}"
        );
        built
    };

    let (mut log_store, mut sm) = open(dir.path()).await;
    assert_eq!(log_store.read_vote().await.expect("read vote"), Some(vote));
    assert_eq!(
        log_store.read_committed().await.expect("read committed"),
        committed
    );
    assert_eq!(
        log_store.get_log_state().await.expect("log state"),
        LogState {
            last_purged_log_id: Some(log_id(1, 1, 2)),
            last_log_id: Some(log_id(1, 1, last)),
        }
    );
    let entries = log_store
        .try_get_log_entries(0..)
        .await
        .expect("read entries");
    assert_eq!(entries, log[2..]);

    // The state machine starts from the snapshot.
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read the snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());
    let reader = sm.reader();
    assert_eq!(
        reader.last_applied(),
        Some(log_id(1, 1, snapshot_at as u64))
    );
    let (at_snapshot, _) = applied_directly(&commands[..snapshot_at - 2]);
    assert_eq!(reader.read(|s| s.clone()), at_snapshot);

    // openraft's start-up re-applies the log after the snapshot up to the committed id.
    let initial = StorageHelper::new(&mut log_store, &mut sm)
        .get_initial_state()
        .await
        .expect("initial state");
    assert_eq!(initial.committed, committed);
    assert_eq!(reader.last_applied(), committed);
    let (at_committed, _) = applied_directly(&commands[..commands.len() - 1]);
    assert_eq!(reader.read(|s| s.clone()), at_committed);
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_at_open() {
    let dir = TempDir::new().expect("a temporary directory");
    {
        let (_log, mut sm) = open(dir.path()).await;
        sm.apply(log_of(&commands())).await.expect("apply");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build a snapshot");
    }
    let path = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).expect("read the snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).expect("write the snapshot");
    let opened = open_storage(dir.path()).await;
    assert!(
        matches!(opened, Err(ClusterError::Storage { .. })),
        "open: {opened:?}"
    );
}

#[tokio::test]
async fn limited_reads_are_bounded() {
    let dir = TempDir::new().expect("a temporary directory");
    let (mut log_store, _sm) = open(dir.path()).await;
    let n = MAX_PAYLOAD_ENTRIES * 2;
    log_store
        .blocking_append((1..=n).map(|i| entry(i, EntryPayload::Blank)))
        .await
        .expect("append");
    let mut reader = log_store.get_log_reader().await;
    let got = reader
        .limited_get_log_entries(1, n + 1)
        .await
        .expect("read");
    assert_eq!(got.len() as u64, MAX_PAYLOAD_ENTRIES);
    assert_eq!(got[0].log_id, log_id(1, 1, 1));
    assert_eq!(
        reader.try_get_log_entries(5..=7).await.expect("read").len(),
        3
    );
    let last: Option<LogId<u64>> = log_store
        .get_log_state()
        .await
        .expect("log state")
        .last_log_id;
    assert_eq!(last, Some(log_id(1, 1, n)));
    log_store
        .truncate(log_id(1, 1, 10))
        .await
        .expect("truncate");
    assert_eq!(
        log_store
            .get_log_state()
            .await
            .expect("log state")
            .last_log_id,
        Some(log_id(1, 1, 9))
    );
}
