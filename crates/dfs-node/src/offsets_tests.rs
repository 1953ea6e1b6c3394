//! Writes at an offset and truncations on a real three-node cluster over loopback: every
//! replica ends with the same bytes and checksum, retries apply once, and conditions
//! (fencing tokens, versions) refuse without changing anything.

use std::time::Duration;

use bytes::Bytes;
use dfs_client::{Client, ClientError};
use dfs_proto::{
    Body, ClientCodec, ClientFrame, Condition, ErrorCode, Hello, LockMode, Op, OpTag, Reply,
    Request, Role, ServerFrame, WriteAck,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::LocalCluster;

const DEADLINE: Duration = Duration::from_secs(20);

/// Every replica's copy of `name`: its bytes, version and recorded checksum (each checked
/// against its bytes).
fn copies(cluster: &LocalCluster, name: &str) -> Vec<(u64, Vec<u8>, u64, u32)> {
    let placement = cluster.nodes()[0]
        .engine()
        .map()
        .lookup(name)
        .expect("the map has the file");
    assert_eq!(
        placement.replicas.len(),
        cluster.nodes().len(),
        "every running node holds a replica"
    );
    cluster
        .nodes()
        .iter()
        .filter(|n| placement.replicas.contains(&n.engine().node_id()))
        .map(|n| {
            let store = n.engine().store();
            let meta = store.meta(placement.file_id).expect("a copy");
            let bytes = store.read(placement.file_id).expect("readable");
            assert_eq!(meta.checksum, crc32c::crc32c(&bytes), "recorded checksum");
            assert!(store.verify(placement.file_id).expect("verify"));
            (n.engine().node_id(), bytes, meta.version, meta.checksum)
        })
        .collect()
}

/// Checks that every replica holds exactly `want` at `version`.
fn assert_replicas(cluster: &LocalCluster, name: &str, want: &[u8], version: u64) {
    for (node, bytes, v, crc) in copies(cluster, name) {
        assert_eq!(bytes, want, "bytes on node {node}");
        assert_eq!(v, version, "version on node {node}");
        assert_eq!(crc, crc32c::crc32c(want), "checksum on node {node}");
    }
}

async fn cluster(dir: &std::path::Path) -> (LocalCluster, Client) {
    let cluster = LocalCluster::start(dir, 3, 3)
        .await
        .expect("cluster starts");
    let client = cluster.client().await.expect("client connects");
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_offsets_and_truncations_leave_every_replica_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, c) = cluster(dir.path()).await;
    c.append("f", "hello world").await.expect("append");
    let mut model = b"hello world".to_vec();
    type Change = Box<dyn Fn(&mut Vec<u8>)>;
    let steps: Vec<(&str, Change)> = vec![
        ("middle", Box::new(|m| m[6..11].copy_from_slice(b"WORLD"))),
        (
            "across the end",
            Box::new(|m| {
                m.truncate(9);
                m.extend_from_slice(b"LDS!");
            }),
        ),
        (
            "past the end",
            Box::new(|m| m.extend_from_slice(b"\0\0\0xy")),
        ),
        ("truncate down", Box::new(|m| m.truncate(5))),
        ("truncate up", Box::new(|m| m.resize(8, 0))),
        ("truncate to 0", Box::new(|m| m.clear())),
        (
            "into an empty file",
            Box::new(|m| m.extend_from_slice(b"\0\0abc")),
        ),
    ];
    for (version, (what, apply)) in (2u64..).zip(steps) {
        let ack = match what {
            "middle" => c.write_at("f", 6, "WORLD").await,
            "across the end" => c.write_at("f", 9, "LDS!").await,
            "past the end" => c.write_at("f", 16, "xy").await,
            "truncate down" => c.truncate("f", 5).await,
            "truncate up" => c.truncate("f", 8).await,
            "truncate to 0" => c.truncate("f", 0).await,
            _ => c.write_at("f", 2, "abc").await,
        }
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        apply(&mut model);
        assert_eq!(
            (ack.version, ack.size, ack.checksum, ack.duplicate),
            (version, model.len() as u64, crc32c::crc32c(&model), false),
            "{what}"
        );
        assert_replicas(&cluster, "f", &model, version);
        assert_eq!(c.read("f", 0, None).await.expect("read"), model, "{what}");
    }
    // Missing files are not created.
    let missing = c.write_at("nope", 0, "x").await.expect_err("missing");
    assert!(matches!(missing, ClientError::NotFound(_)), "{missing}");
    let missing = c.truncate("nope", 3).await.expect_err("missing");
    assert!(matches!(missing, ClientError::NotFound(_)), "{missing}");
    assert!(matches!(
        c.stat("nope").await,
        Err(ClientError::NotFound(_))
    ));
    // Too large: refused before anything is sent.
    let big = vec![1u8; dfs_proto::WRITE_BYTES_MAX + 1];
    let err = c.write_at("f", 0, big).await.expect_err("too large");
    assert_eq!(err.code(), ErrorCode::TooLarge);
    // The largest write there is, across many chunks, lands whole on every replica.
    let most: Vec<u8> = (0..dfs_proto::WRITE_BYTES_MAX)
        .map(|i| (i % 251) as u8)
        .collect();
    let ack = c
        .write_at("f", 1, most.clone())
        .await
        .expect("largest write");
    model.truncate(1);
    model.extend_from_slice(&most);
    assert_eq!(ack.size, model.len() as u64);
    assert_replicas(&cluster, "f", &model, ack.version);
    cluster.shutdown().await;
}

/// A client connection speaking the protocol by hand, to send one request with a chosen
/// tag through a chosen node.
async fn raw(addr: &str) -> Framed<TcpStream, ClientCodec> {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let mut f = Framed::new(stream, ClientCodec::new());
    f.send(ClientFrame::Hello(Hello::new(Role::Client)))
        .await
        .expect("hello");
    match tokio::time::timeout(DEADLINE, f.next()).await {
        Ok(Some(Ok(ServerFrame::Welcome(_)))) => f,
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn send(addr: &str, op: Op) -> WriteAck {
    let mut f = raw(addr).await;
    f.send(ClientFrame::Request(Request { id: 1, op }))
        .await
        .expect("request");
    match tokio::time::timeout(DEADLINE, f.next()).await {
        Ok(Some(Ok(ServerFrame::Response(r)))) => match r.result {
            Ok(Reply::Written(ack)) => ack,
            other => panic!("expected written, got {other:?}"),
        },
        other => panic!("expected a response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_at_or_truncate_is_applied_once_through_any_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, c) = cluster(dir.path()).await;
    c.append("f", "0123456789").await.expect("append");
    let addrs = cluster.addrs();
    let tag = |seq| {
        Some(OpTag {
            client_id: 0xfeed,
            seq,
        })
    };
    let write = |data: &'static str| Op::Write {
        name: "f".into(),
        offset: 8,
        body: Body {
            data: Bytes::from_static(data.as_bytes()),
            more: false,
        },
        tag: tag(1),
        cond: Condition::NONE,
    };
    let first = send(&addrs[0], write("ab")).await;
    assert_eq!((first.version, first.size, first.duplicate), (2, 10, false));
    // The same request again through each node (a retry after a lost answer, on the node
    // a failover moved to): answered with the first outcome, not applied again, even
    // with other bytes in it.
    for addr in &addrs {
        let again = send(addr, write("XYZ")).await;
        assert!(again.duplicate, "through {addr}");
        assert_eq!(
            (again.version, again.size, again.checksum),
            (2, 10, first.checksum)
        );
    }
    assert_replicas(&cluster, "f", b"01234567ab", 2);
    let truncate = Op::Truncate {
        name: "f".into(),
        size: 4,
        tag: tag(2),
        cond: Condition::NONE,
    };
    let cut = send(&addrs[1], truncate.clone()).await;
    assert_eq!((cut.version, cut.size, cut.duplicate), (3, 4, false));
    c.append("f", "++").await.expect("append");
    for addr in &addrs {
        let again = send(addr, truncate.clone()).await;
        assert!(again.duplicate, "through {addr}");
        assert_eq!((again.version, again.size), (3, 4));
    }
    assert_replicas(&cluster, "f", b"0123++", 4);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_or_truncate_retried_on_the_new_primary_after_failover_is_applied_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, c) = cluster(dir.path()).await;
    c.append("f", "0123456789").await.expect("append");
    let primary = cluster.nodes()[0]
        .engine()
        .map()
        .lookup("f")
        .expect("the map has the file")
        .replicas[0];
    let primary_addr = cluster.addrs()[primary as usize - 1].clone();
    let tag = |seq| {
        Some(OpTag {
            client_id: 0xbeef,
            seq,
        })
    };
    let write = Op::Write {
        name: "f".into(),
        offset: 2,
        body: Body {
            data: Bytes::from_static(b"ab"),
            more: false,
        },
        tag: tag(1),
        cond: Condition::NONE,
    };
    let truncate = Op::Truncate {
        name: "f".into(),
        size: 6,
        tag: tag(2),
        cond: Condition::NONE,
    };
    // Both applied by the primary, which then goes away: as if their answers were lost
    // with it, and the client retries them on whichever node took the file over.
    let wrote = send(&primary_addr, write.clone()).await;
    assert_eq!((wrote.version, wrote.size, wrote.duplicate), (2, 10, false));
    let cut = send(&primary_addr, truncate.clone()).await;
    assert_eq!((cut.version, cut.size, cut.duplicate), (3, 6, false));
    assert!(cluster.stop(primary).await, "node {primary} was running");

    // Another client writes over the same bytes through the new primary first.
    c.write_at("f", 0, "XYZW")
        .await
        .expect("a write after the failover");
    c.append("f", "++")
        .await
        .expect("an append after the failover");
    let now = cluster.nodes()[0]
        .engine()
        .map()
        .lookup("f")
        .expect("the map has the file");
    assert!(
        !now.replicas.contains(&primary),
        "node {primary} is gone, yet the file's replicas are {:?}",
        now.replicas
    );
    let want: &[u8] = b"XYZW45++";
    let version = 5;

    // The retries, through every node left: answered with the first outcomes, applied
    // neither again (the write would put "ab" back, the truncate would cut the "++").
    for addr in cluster.addrs() {
        for (what, op, first) in [("write", &write, &wrote), ("truncate", &truncate, &cut)] {
            let again = send(&addr, op.clone()).await;
            assert!(again.duplicate, "{what} retried through {addr}");
            assert_eq!(
                (again.version, again.size, again.checksum),
                (first.version, first.size, first.checksum),
                "{what} retried through {addr}"
            );
        }
    }
    assert_eq!(c.read("f", 0, None).await.expect("read"), want);
    assert_replicas(&cluster, "f", want, version);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_and_version_conditions_refuse_without_changing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, c) = cluster(dir.path()).await;
    c.append("f", "abcdef").await.expect("append");
    let ttl = Duration::from_secs(30);
    let old = c
        .lock("f", LockMode::Exclusive, ttl, Duration::ZERO)
        .await
        .expect("lock");
    c.unlock(old.lease).await.expect("unlock");
    let new = c
        .lock("f", LockMode::Exclusive, ttl, Duration::ZERO)
        .await
        .expect("lock again");
    assert!(new.token > old.token);
    // The old holder's token is fenced: both refused, nothing changed anywhere.
    let stale = Condition::fenced(old.token);
    let err = c
        .write_at_if("f", 1, "ZZ", stale)
        .await
        .expect_err("fenced");
    assert!(matches!(err, ClientError::Fenced(_)), "{err}");
    let err = c.truncate_if("f", 2, stale).await.expect_err("fenced");
    assert!(matches!(err, ClientError::Fenced(_)), "{err}");
    assert_replicas(&cluster, "f", b"abcdef", 1);
    // The current holder's token is accepted.
    let fresh = Condition::fenced(new.token);
    let ack = c
        .write_at_if("f", 1, "ZZ", fresh)
        .await
        .expect("current token");
    assert_eq!(ack.version, 2);
    let ack = c.truncate_if("f", 5, fresh).await.expect("current token");
    assert_eq!(ack.version, 3);
    assert_replicas(&cluster, "f", b"aZZde", 3);
    // A version condition: the wrong version is refused, the right one applies.
    let err = c
        .write_at_if("f", 0, "!", Condition::if_version(2))
        .await
        .expect_err("wrong version");
    assert!(matches!(err, ClientError::VersionMismatch(_)), "{err}");
    let err = c
        .truncate_if("f", 0, Condition::if_version(2))
        .await
        .expect_err("wrong version");
    assert!(matches!(err, ClientError::VersionMismatch(_)), "{err}");
    assert_replicas(&cluster, "f", b"aZZde", 3);
    c.write_at_if("f", 0, "!", Condition::if_version(3))
        .await
        .expect("right version");
    c.truncate_if("f", 2, Condition::if_version(4))
        .await
        .expect("right version");
    assert_replicas(&cluster, "f", b"!Z", 5);
    cluster.shutdown().await;
}
