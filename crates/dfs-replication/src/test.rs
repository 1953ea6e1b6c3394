use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_cluster::ClusterMap;
use dfs_proto::{ErrorCode, OpTag, WriteAck};
use dfs_store::{Store, StoreConfig};

use crate::*;

pub(crate) async fn engine(dir: &std::path::Path) -> Arc<Engine> {
    let (store, _) = Store::open(StoreConfig::new(dir.join("store"))).expect("store opens");
    let members = std::collections::BTreeMap::from([(1, "127.0.0.1:1".to_owned())]);
    let map = ClusterMap::start(1, &members, 7, &dir.join("raft"))
        .await
        .expect("map starts");
    Engine::start(
        EngineConfig {
            node_id: 1,
            members: vec![Member {
                id: 1,
                addr: "127.0.0.1:1".into(),
            }],
            replication_factor: 1,
            body_chunk_timeout: Duration::from_secs(5),
            cluster_id: 7,
            timing: Timing::default(),
            transport: dfs_net::Tcp::shared(),
            secret: None,
        },
        Arc::new(store),
        map,
    )
    .await
    .expect("engine starts")
}

pub(crate) async fn read_all(e: &Engine, name: &str) -> Vec<u8> {
    let h = e.read(name, 0, None).await.expect("read starts");
    h.chunk(0, h.len as usize).await.expect("reads").to_vec()
}

pub(crate) fn tag(seq: u64) -> Option<OpTag> {
    Some(OpTag { client_id: 7, seq })
}

/// `body` written to `name` with `tag` and no condition.
async fn write_tagged(
    e: &Engine,
    mode: WriteMode,
    name: &str,
    body: &'static str,
    tag: Option<OpTag>,
) -> Result<WriteAck, EngineError> {
    e.write(
        mode,
        name,
        BodyStream::from_bytes(body),
        tag,
        Default::default(),
    )
    .await
}

#[tokio::test]
async fn every_operation_on_one_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let info = e.create("a/b.txt", tag(1)).await.expect("create");
    assert_eq!(
        (info.size, info.version, info.replicas.clone()),
        (0, 0, vec![1])
    );
    let err = e.create("a/b.txt", tag(2)).await.expect_err("exists");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    e.write(
        WriteMode::Append,
        "a/b.txt",
        BodyStream::from_bytes("hello "),
        tag(3),
        Default::default(),
    )
    .await
    .expect("append");
    let ack = e
        .write(
            WriteMode::Append,
            "a/b.txt",
            BodyStream::from_bytes("world"),
            tag(4),
            Default::default(),
        )
        .await
        .expect("append");
    assert_eq!((ack.version, ack.size), (2, 11));
    assert_eq!(read_all(&e, "a/b.txt").await, b"hello world");
    let part = e.read("a/b.txt", 6, Some(3)).await.expect("range");
    assert_eq!(&part.chunk(0, 100).await.expect("chunk")[..], b"wor");
    let past_end = e.read("a/b.txt", 100, None).await.expect("past end");
    assert_eq!(past_end.len, 0);
    e.write(
        WriteMode::Put,
        "a/b.txt",
        BodyStream::from_bytes("new"),
        tag(5),
        Default::default(),
    )
    .await
    .expect("put");
    assert_eq!(read_all(&e, "a/b.txt").await, b"new");
    let st = e.stat("a/b.txt").await.expect("stat");
    assert_eq!(
        (st.size, st.version, st.checksum),
        (3, 3, crc32c::crc32c(b"new"))
    );
    let (list, next) = e.list("a/", None, 10).await.expect("list");
    assert_eq!(list.len(), 1);
    assert!(next.is_none());
    assert_eq!(
        e.table(None, 10).await.expect("table").0[0].replicas,
        vec![1]
    );
    e.delete("a/b.txt", tag(6), Default::default())
        .await
        .expect("delete");
    assert_eq!(
        e.stat("a/b.txt").await.expect_err("gone").code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        e.delete("a/b.txt", tag(7), Default::default())
            .await
            .expect_err("gone")
            .code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        e.create("../x", None).await.expect_err("bad").code(),
        ErrorCode::InvalidName
    );
}

#[tokio::test]
async fn retried_writes_apply_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    for _ in 0..3 {
        e.write(
            WriteMode::Append,
            "f",
            BodyStream::from_bytes("x"),
            tag(1),
            Default::default(),
        )
        .await
        .expect("append");
    }
    assert_eq!(read_all(&e, "f").await, b"x");
    let again = e
        .write(
            WriteMode::Append,
            "f",
            BodyStream::from_bytes("x"),
            tag(1),
            Default::default(),
        )
        .await
        .expect("append");
    assert!(again.duplicate);
    // A retried create or delete answers like the first time.
    let first = e.create("g", tag(2)).await.expect("create");
    assert_eq!(
        e.create("g", tag(2)).await.expect("retry").file_id,
        first.file_id
    );
    e.delete("g", tag(3), Default::default())
        .await
        .expect("delete");
    e.delete("g", tag(3), Default::default())
        .await
        .expect("retried delete succeeds");
}

/// A write at an offset or a truncation answered `NotFound` keeps that answer: an attempt
/// of the same request that runs late, once a file of that name exists (the simulator's
/// seeds 146, 197, 202 and 290 found one stalled on a node without a lease), applies
/// nothing and answers `NotFound` too; a write it was never answered to applies.
#[tokio::test]
async fn a_write_answered_not_found_is_not_applied_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let write_at = |seq| write_tagged(&e, WriteMode::At { offset: 1 }, "late", "XY", tag(seq));
    let truncate = |seq| write_tagged(&e, WriteMode::Truncate { size: 1 }, "late", "", tag(seq));
    for answer in [write_at(20).await, truncate(21).await] {
        assert!(
            matches!(answer, Err(EngineError::NotFound(_))),
            "{answer:?}"
        );
    }
    write_tagged(&e, WriteMode::Put, "late", "abcd", None)
        .await
        .expect("put");
    for answer in [write_at(20).await, truncate(21).await] {
        assert!(
            matches!(answer, Err(EngineError::NotFound(_))),
            "a late attempt: {answer:?}"
        );
    }
    assert_eq!(read_all(&e, "late").await, b"abcd", "nothing applied late");
    let fresh = write_at(22).await.expect("a new write applies");
    assert_eq!((fresh.size, fresh.duplicate), (4, false));
    assert_eq!(read_all(&e, "late").await, b"aXYd");
    // The answer survives a restart: it is in the map.
    e.shutdown().await;
    drop(e);
    let e = engine(dir.path()).await;
    let again = write_tagged(&e, WriteMode::Truncate { size: 1 }, "late", "", tag(21)).await;
    assert!(matches!(again, Err(EngineError::NotFound(_))), "{again:?}");
    assert_eq!(read_all(&e, "late").await, b"aXYd");
}

/// A write's answer outlives any number of other clients' writes to its file (in CI a
/// client's append, its answer lost in a failover, was retried after another client had
/// appended 70 times, and was applied twice); a write its own client's many later writes
/// pushed out of the table is refused as of unknown outcome, never applied twice.
#[tokio::test]
async fn a_retry_after_many_writes_is_answered_or_refused_never_applied_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let append = |client_id, seq, data| {
        write_tagged(
            &e,
            WriteMode::Append,
            "busy",
            data,
            Some(OpTag { client_id, seq }),
        )
    };
    let first = append(3, 1, "x\n").await.expect("the first attempt");
    const OTHERS: u64 = 200;
    for seq in 1..=OTHERS {
        append(4, seq, "y\n")
            .await
            .expect("another client's append");
    }
    let retry = append(3, 1, "x\n").await.expect("the retry is answered");
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!((retry.version, retry.size), (first.version, first.size));
    let content = read_all(&e, "busy").await;
    assert_eq!(
        content.len() as u64,
        2 * (OTHERS + 1),
        "nothing applied twice"
    );
    assert_eq!(content.windows(2).filter(|w| w == b"x\n").count(), 1);

    // The busy client's first append was pushed out by its own later ones.
    let forgotten = append(4, 1, "y\n").await;
    assert!(
        matches!(&forgotten, Err(err) if err.code() == ErrorCode::OutcomeUnknown),
        "{forgotten:?}"
    );
    let newest = append(4, OTHERS, "y\n")
        .await
        .expect("its newest is answered");
    assert!(newest.duplicate, "{newest:?}");
    assert_eq!(read_all(&e, "busy").await, content, "nothing applied again");
    // A new write of that client applies.
    let next = append(4, OTHERS + 1, "y\n").await.expect("a new write");
    assert_eq!(
        (next.size, next.duplicate),
        (content.len() as u64 + 2, false)
    );
}

/// The retries that used to apply twice once a file was deleted in between: the map's
/// sessions answer them (they survive the node's restart, being part of the map).
#[tokio::test]
async fn retries_across_a_delete_apply_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    // A write applied, its answer lost; the file is deleted; the write is retried.
    e.write(
        WriteMode::Append,
        "w",
        BodyStream::from_bytes("once"),
        tag(10),
        Default::default(),
    )
    .await
    .expect("append");
    e.delete("w", tag(11), Default::default())
        .await
        .expect("delete");
    let retry = e
        .write(
            WriteMode::Append,
            "w",
            BodyStream::from_bytes("once"),
            tag(10),
            Default::default(),
        )
        .await
        .expect("retried append");
    assert!(retry.duplicate, "answered, not applied again");
    assert_eq!(retry.size, 4);
    assert!(
        matches!(e.stat("w").await, Err(EngineError::NotFound(_))),
        "the retry did not create the file again"
    );
    // A create, then a delete by someone else, then the create's retry: answered Ok, and
    // the file is not created again.
    let created = e.create("c", tag(12)).await.expect("create");
    e.delete("c", None, Default::default())
        .await
        .expect("someone else's delete");
    let retry = e.create("c", tag(12)).await.expect("retried create");
    assert_eq!(retry.file_id, created.file_id);
    assert!(matches!(e.stat("c").await, Err(EngineError::NotFound(_))));
    // A delete, a new file of the same name, then the delete's retry: answered Ok, and the
    // new file stays.
    e.write(
        WriteMode::Put,
        "d",
        BodyStream::from_bytes("old"),
        None,
        Default::default(),
    )
    .await
    .expect("put");
    e.delete("d", tag(13), Default::default())
        .await
        .expect("delete");
    e.write(
        WriteMode::Put,
        "d",
        BodyStream::from_bytes("new"),
        None,
        Default::default(),
    )
    .await
    .expect("put again");
    e.delete("d", tag(13), Default::default())
        .await
        .expect("retried delete");
    assert_eq!(read_all(&e, "d").await, b"new");
    // The answers survive a restart: they are in the map.
    e.shutdown().await;
    drop(e);
    let e = engine(dir.path()).await;
    let retry = e
        .write(
            WriteMode::Append,
            "w",
            BodyStream::from_bytes("once"),
            tag(10),
            Default::default(),
        )
        .await
        .expect("retried append after a restart");
    assert!(retry.duplicate);
    e.delete("d", tag(13), Default::default())
        .await
        .expect("retried delete after a restart");
    assert_eq!(read_all(&e, "d").await, b"new");
}

#[tokio::test]
async fn a_body_that_breaks_off_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    e.write(
        WriteMode::Append,
        "f",
        BodyStream::from_bytes("keep"),
        None,
        Default::default(),
    )
    .await
    .expect("append");
    for mode in [WriteMode::Append, WriteMode::Put] {
        let (body, tx) = BodyStream::streaming(Bytes::from_static(b"partial"));
        tx.send((Bytes::from_static(b"more"), false))
            .await
            .expect("queued");
        drop(tx); // the connection went away before the last chunk
        let err = e
            .write(mode, "f", body, None, Default::default())
            .await
            .expect_err("aborted");
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
        assert_eq!(read_all(&e, "f").await, b"keep");
    }
    let (body, tx) = BodyStream::streaming(Bytes::from_static(b"a"));
    let writer = tokio::spawn(async move {
        tx.send((Bytes::from_static(b"b"), false))
            .await
            .expect("queued");
        tx.send((Bytes::from_static(b"c"), true))
            .await
            .expect("queued");
    });
    e.write(WriteMode::Append, "f", body, None, Default::default())
        .await
        .expect("streamed");
    writer.await.expect("sender");
    assert_eq!(read_all(&e, "f").await, b"keepabc");
}

#[tokio::test]
async fn a_read_is_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    e.write(
        WriteMode::Put,
        "f",
        BodyStream::from_bytes("old"),
        None,
        Default::default(),
    )
    .await
    .expect("put");
    let h = e.read("f", 0, None).await.expect("read");
    e.write(
        WriteMode::Append,
        "f",
        BodyStream::from_bytes("!!"),
        None,
        Default::default(),
    )
    .await
    .expect("append");
    e.write(
        WriteMode::Put,
        "f",
        BodyStream::from_bytes("brand new"),
        None,
        Default::default(),
    )
    .await
    .expect("put");
    e.delete("f", None, Default::default())
        .await
        .expect("delete");
    assert_eq!(&h.chunk(0, 100).await.expect("old bytes")[..], b"old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_land_whole_and_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Arc::new(engine(dir.path()).await);
    let mut tasks = Vec::new();
    for i in 0..24u8 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let record = vec![b'a' + i; 100];
            e.write(
                WriteMode::Append,
                "log",
                BodyStream::from_bytes(record),
                None,
                Default::default(),
            )
            .await
            .expect("append");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let bytes = read_all(&e, "log").await;
    assert_eq!(bytes.len(), 2400);
    let mut seen: Vec<u8> = bytes
        .chunks(100)
        .map(|r| {
            assert!(r.iter().all(|b| *b == r[0]), "an append was interleaved");
            r[0]
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..24).map(|i| b'a' + i).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_map_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = engine(dir.path()).await;
        e.write(
            WriteMode::Append,
            "x/1",
            BodyStream::from_bytes("one"),
            None,
            Default::default(),
        )
        .await
        .expect("append");
        e.create("x/2", None).await.expect("create");
        e.create("y", None).await.expect("create");
        e.delete("y", None, Default::default())
            .await
            .expect("delete");
        e.shutdown().await;
    }
    let e = engine(dir.path()).await;
    let names: Vec<String> = e
        .list("", None, 10)
        .await
        .expect("list")
        .0
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["x/1", "x/2"]);
    assert_eq!(read_all(&e, "x/1").await, b"one");
}

#[tokio::test]
async fn pages_resume_where_they_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    for i in 0..7 {
        e.create(&format!("p/{i}"), None).await.expect("create");
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = e.list("p/", after.as_deref(), 3).await.expect("list");
        assert!(page.len() <= 3);
        names.extend(page.into_iter().map(|l| l.name));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("p/{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn start_up_removes_what_the_map_no_longer_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    e.write(
        WriteMode::Append,
        "kept",
        BodyStream::from_bytes("k"),
        None,
        Default::default(),
    )
    .await
    .expect("append");
    let gone = e.create("gone", None).await.expect("create");
    e.write(
        WriteMode::Put,
        "gone",
        BodyStream::from_bytes("g"),
        None,
        Default::default(),
    )
    .await
    .expect("put");
    // A crash between the map's delete and the store's: the map no longer lists the file.
    let command = dfs_cluster::MapCommand::DeleteFile {
        name: "gone".into(),
        file_id: gone.file_id,
    };
    e.map().propose(command).await.expect("committed");
    assert!(
        e.store().meta(gone.file_id).is_ok(),
        "the bytes are still there"
    );
    e.shutdown().await;
    drop(e);
    let e = engine(dir.path()).await;
    assert!(
        e.store().meta(gone.file_id).is_err(),
        "the leftover was removed"
    );
    assert_eq!(read_all(&e, "kept").await, b"k");
}

#[tokio::test]
async fn a_one_node_data_directory_is_adopted_by_a_new_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // What the one-node release left: files in the store, no consensus state.
        let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"))).expect("store");
        store.create(77, "old/file").expect("create");
        store.append(77, b"from before", None).expect("append");
    }
    let e = engine(dir.path()).await;
    assert_eq!(read_all(&e, "old/file").await, b"from before");
    assert_eq!(e.table(None, 10).await.expect("table").0[0].file_id, 77);
}

/// What a write that created its file and then failed leaves behind (its take-back lost
/// too) is not there for users until written, and a create may claim it.
#[tokio::test]
async fn a_file_a_failed_write_created_is_invisible_until_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let leftover = |name: &str, file_id| dfs_cluster::MapCommand::CreateFileForWrite {
        name: name.into(),
        file_id,
        replicas: vec![1],
    };
    e.map().propose(leftover("a", 41)).await.expect("committed");
    assert!(matches!(
        e.read("a", 0, None).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(e.stat("a").await, Err(EngineError::NotFound(_))));
    assert!(matches!(
        e.delete("a", None, Default::default()).await,
        Err(EngineError::NotFound(_))
    ));
    let (listed, _) = e.list("", None, 10).await.expect("list");
    assert!(listed.is_empty(), "listed: {listed:?}");
    // A create claims it: it exists now, empty.
    let created = e.create("a", tag(1)).await.expect("create claims it");
    assert_eq!(created.file_id, 41);
    assert_eq!(read_all(&e, "a").await, b"");
    assert_eq!(e.list("", None, 10).await.expect("list").0.len(), 1);
    assert!(matches!(
        e.create("a", None).await,
        Err(EngineError::AlreadyExists(_))
    ));
    // A write to such a leftover makes it exist, with what it wrote.
    e.map().propose(leftover("b", 42)).await.expect("committed");
    e.write(
        WriteMode::Append,
        "b",
        BodyStream::from_bytes("x"),
        None,
        Default::default(),
    )
    .await
    .expect("append");
    assert_eq!(read_all(&e, "b").await, b"x");
    assert!(matches!(
        e.create("b", None).await,
        Err(EngineError::AlreadyExists(_))
    ));
}

/// The repair planner (`background::plan_repairs`) on hand-made maps.
mod repair_plan {
    use std::collections::{BTreeSet, HashMap};
    use std::time::Duration;

    use dfs_cluster::{ClusterState, MapCommand, MapResponse};
    use dfs_placement::{NodeId, place};
    use tokio::time::Instant;

    use crate::background::{Repair, RepairKind, plan_repairs};

    const AFTER: Duration = Duration::from_secs(30);

    /// A map with nodes `1..=n` up.
    fn nodes(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=n {
            let up = MapCommand::NodeUp {
                id,
                addr: format!("127.0.0.1:{}", 6000 + id),
                incarnation: 1,
            };
            assert_eq!(s.apply(&up), MapResponse::Done);
        }
        s
    }

    fn create(s: &mut ClusterState, name: &str, file_id: u64, replicas: &[NodeId]) {
        let command = MapCommand::CreateFile {
            name: name.into(),
            file_id,
            replicas: replicas.to_vec(),
        };
        assert!(matches!(s.apply(&command), MapResponse::Created(_)));
    }

    fn down(s: &mut ClusterState, id: NodeId) {
        let command = MapCommand::NodeDown { id, incarnation: 1 };
        assert_eq!(s.apply(&command), MapResponse::Done);
    }

    /// The first name `f0`, `f1`, ... whose home placement over `members` (R = `r`) is
    /// `home`: rendezvous weights are fixed, so this is the same name on every run.
    fn name_with_home(members: &[NodeId], r: usize, home: &[NodeId]) -> String {
        let want: BTreeSet<NodeId> = home.iter().copied().collect();
        (0..10_000)
            .map(|i| format!("f{i}"))
            .find(|name| {
                let got: BTreeSet<NodeId> = place(name, members, r)
                    .expect("placed")
                    .into_iter()
                    .collect();
                got == want
            })
            .expect("some name has that home")
    }

    #[test]
    fn a_home_node_that_is_up_gets_its_file_back_at_once() {
        // N = 3, R = 2: node 3 died. Node 2 was down too and is back (it left the replica
        // set of `back` then), so `back` returns to it at once.
        let mut s = nodes(3);
        let back = name_with_home(&[1, 2, 3], 2, &[1, 2]);
        create(&mut s, &back, 10, &[1, 2]);
        down(&mut s, 2);
        let up_again = MapCommand::NodeUp {
            id: 2,
            addr: "127.0.0.1:6002".into(),
            incarnation: 2,
        };
        assert_eq!(s.apply(&up_again), MapResponse::Done);
        let mut since = HashMap::new();
        let plan = plan_repairs(&s, 1, 2, &mut since, Instant::now(), AFTER);
        assert_eq!(
            plan.repairs,
            [Repair {
                name: back,
                candidates: vec![2],
                kind: RepairKind::Home
            }]
        );
        assert_eq!((plan.short, plan.newly_short), (1, 1));
    }

    #[test]
    fn a_file_whose_home_is_down_waits_then_goes_to_the_best_live_node() {
        // N = 3, R = 2, node 3 dead: `orphan`'s home is {1, 3}, so only re-replication
        // can make it whole; it waits for the delay, counted from when this primary first
        // saw it short.
        let mut s = nodes(3);
        let orphan = name_with_home(&[1, 2, 3], 2, &[1, 3]);
        create(&mut s, &orphan, 11, &[1, 3]);
        create(&mut s, "whole", 12, &[1, 2]);
        create(&mut s, "not-mine", 13, &[2, 3]);
        down(&mut s, 3);
        let t0 = Instant::now();
        let mut since = HashMap::new();
        let plan = plan_repairs(&s, 1, 2, &mut since, t0, AFTER);
        assert_eq!(plan.repairs, []);
        assert_eq!((plan.short, plan.newly_short), (1, 1));
        assert_eq!(since.keys().copied().collect::<Vec<_>>(), [11]);

        let almost = t0 + AFTER - Duration::from_millis(1);
        let plan = plan_repairs(&s, 1, 2, &mut since, almost, AFTER);
        assert_eq!(plan.repairs, []);
        assert_eq!((plan.short, plan.newly_short), (1, 0));

        let plan = plan_repairs(&s, 1, 2, &mut since, t0 + AFTER, AFTER);
        assert_eq!(
            plan.repairs,
            [Repair {
                name: orphan.clone(),
                candidates: vec![2],
                kind: RepairKind::Elsewhere
            }]
        );

        // A fresh primary (no memory of when the file went short) starts its own count.
        let mut fresh = HashMap::new();
        let plan = plan_repairs(&s, 1, 2, &mut fresh, t0 + AFTER, AFTER);
        assert_eq!(plan.repairs, []);

        // Once whole again (the copy committed), the file is forgotten.
        let placement = s.files.get(&orphan).expect("placed").clone();
        let add = MapCommand::SetReplicas {
            name: orphan.clone(),
            file_id: 11,
            expected_epoch: placement.epoch,
            replicas: vec![1, 2],
        };
        assert!(matches!(s.apply(&add), MapResponse::Updated(_)));
        let plan = plan_repairs(&s, 1, 2, &mut since, t0 + AFTER, AFTER);
        assert_eq!((plan.repairs.len(), plan.short), (0, 0));
        assert!(since.is_empty());
    }

    #[test]
    fn candidates_are_the_live_nodes_not_holding_it_best_first_home_ones_before() {
        // N = 5, R = 3: nodes 4 and 5 died; `f` was on {1, 4, 5}.
        let mut s = nodes(5);
        let f = name_with_home(&[1, 2, 3, 4, 5], 3, &[1, 2, 4]);
        create(&mut s, &f, 20, &[1, 4, 5]);
        down(&mut s, 4);
        down(&mut s, 5);
        let t0 = Instant::now();
        let mut since = HashMap::new();
        // Node 2 is a home node and up: at once, and only onto home nodes.
        let plan = plan_repairs(&s, 1, 3, &mut since, t0, AFTER);
        assert_eq!(
            plan.repairs,
            [Repair {
                name: f.clone(),
                candidates: vec![2],
                kind: RepairKind::Home
            }]
        );
        // After the delay every live node not holding it is a candidate, node 2 first.
        let plan = plan_repairs(&s, 1, 3, &mut since, t0 + AFTER, AFTER);
        assert_eq!(plan.repairs.len(), 1);
        assert_eq!(plan.repairs[0].candidates, [2, 3]);
        assert_eq!(plan.repairs[0].kind, RepairKind::Home);
    }

    #[test]
    fn home_repairs_come_before_re_replication_and_nothing_is_planned_without_a_live_node() {
        // N = 3, R = 2.
        let mut s = nodes(3);
        let orphan = name_with_home(&[1, 2, 3], 2, &[1, 3]);
        let back = name_with_home(&[1, 2, 3], 2, &[1, 2]);
        create(&mut s, &orphan, 30, &[1, 3]);
        create(&mut s, &back, 31, &[1, 3]);
        down(&mut s, 3);
        let t0 = Instant::now();
        let mut since = HashMap::new();
        plan_repairs(&s, 1, 2, &mut since, t0, AFTER);
        let plan = plan_repairs(&s, 1, 2, &mut since, t0 + AFTER, AFTER);
        let kinds: Vec<(&str, RepairKind)> = plan
            .repairs
            .iter()
            .map(|r| (r.name.as_str(), r.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (back.as_str(), RepairKind::Home),
                (orphan.as_str(), RepairKind::Elsewhere)
            ]
        );
        // Node 2 dies too: no live node can take anything, however long the files wait.
        down(&mut s, 2);
        let plan = plan_repairs(&s, 1, 2, &mut since, t0 + AFTER * 2, AFTER);
        assert_eq!((plan.repairs.len(), plan.short), (0, 2));
        // A deleted file is forgotten.
        let delete = MapCommand::DeleteFile {
            name: orphan.clone(),
            file_id: 30,
        };
        assert!(matches!(s.apply(&delete), MapResponse::Deleted(_)));
        plan_repairs(&s, 1, 2, &mut since, t0 + AFTER * 2, AFTER);
        assert_eq!(since.keys().copied().collect::<Vec<_>>(), [31]);
    }
}
