//! The node in-process: every operation through the client library, and every kind of bad
//! input through raw sockets.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use dfs_client::{Client, ClientError};
use dfs_proto::{
    ClientCodec, ClientFrame, ErrorCode, Hello, MAGIC, Op, PeerMessage, Request, Role, ServerFrame,
};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::{Limits, Node, NodeConfig};

const DEADLINE: Duration = Duration::from_secs(20);

async fn start(dir: &std::path::Path, limits: Limits) -> Node {
    let mut config = NodeConfig::single(dir, "127.0.0.1:0");
    config.limits = limits;
    Node::start(config).await.expect("node starts")
}

async fn client(node: &Node) -> Client {
    Client::connect([node.local_addr().to_string()])
        .await
        .expect("client connects")
}

async fn raw(node: &Node) -> TcpStream {
    TcpStream::connect(node.local_addr())
        .await
        .expect("connects")
}

async fn framed_client(node: &Node) -> Framed<TcpStream, ClientCodec> {
    let mut f = Framed::new(raw(node).await, ClientCodec::new());
    f.send(ClientFrame::Hello(Hello::new(Role::Client)))
        .await
        .expect("hello sent");
    match next(&mut f).await {
        ServerFrame::Welcome(_) => f,
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn next(f: &mut Framed<TcpStream, ClientCodec>) -> ServerFrame {
    tokio::time::timeout(DEADLINE, f.next())
        .await
        .expect("answer in time")
        .expect("a frame")
        .expect("a valid frame")
}

/// Waits for the node's goodbye and checks its code and that its message says `why`.
async fn expect_goodbye(f: &mut Framed<TcpStream, ClientCodec>, code: ErrorCode, why: &str) {
    match next(f).await {
        ServerFrame::Goodbye(e) => {
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(why), "{}", e.message);
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
}

/// Reads from a raw socket until the node closes it; returns what it sent.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("node closes the connection in time")
        .expect("read");
    out
}

fn goodbye_code(bytes: &[u8]) -> ErrorCode {
    let mut buf = BytesMut::from(bytes);
    let mut codec = ClientCodec::new();
    match tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
        Ok(Some(ServerFrame::Goodbye(e))) => e.code,
        other => panic!("expected a goodbye, got {other:?}"),
    }
}

async fn still_serves(node: &Node) {
    let c = client(node).await;
    c.append("alive", "x").await.expect("node still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_through_the_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let c = client(&node).await;
    c.create("docs/a.txt").await.expect("create");
    assert!(matches!(
        c.create("docs/a.txt").await,
        Err(ClientError::AlreadyExists(_))
    ));
    c.append("docs/a.txt", "hello ").await.expect("append");
    let ack = c.append("docs/a.txt", "world").await.expect("append");
    assert_eq!((ack.size, ack.version), (11, 2));
    assert_eq!(
        &c.read("docs/a.txt", 0, None).await.expect("read")[..],
        b"hello world"
    );
    assert_eq!(
        &c.read("docs/a.txt", 6, Some(3)).await.expect("range")[..],
        b"wor"
    );
    c.put("docs/b.bin", vec![1u8, 2, 3])
        .await
        .expect("put creates");
    let st = c.stat("docs/b.bin").await.expect("stat");
    assert_eq!((st.size, st.version, st.replicas.clone()), (3, 1, vec![1]));
    assert_eq!(st.checksum, crc32c_of(&[1, 2, 3]));
    let names: Vec<_> = c
        .list("docs/")
        .await
        .expect("ls")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["docs/a.txt", "docs/b.bin"]);
    assert_eq!(c.table().await.expect("table").len(), 2);
    let status = c.status().await.expect("status");
    assert_eq!(status.nodes.len(), 1);
    assert!(status.nodes[0].up);
    c.delete("docs/a.txt").await.expect("delete");
    assert!(matches!(
        c.read("docs/a.txt", 0, None).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        c.delete("docs/a.txt").await,
        Err(ClientError::NotFound(_))
    ));
    node.shutdown().await;
}

fn crc32c_of(data: &[u8]) -> u32 {
    // CRC-32C (Castagnoli), bitwise: independent of the store's implementation.
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_stream_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let c = client(&node).await;
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let ack = c.put_stream("big", &data[..]).await.expect("streamed put");
    assert_eq!(ack.size, data.len() as u64);
    let mut out = Vec::new();
    let (info, n) = c
        .read_to("big", 0, None, &mut out)
        .await
        .expect("streamed read");
    assert_eq!((n, info.checksum), (data.len() as u64, crc32c_of(&data)));
    assert!(out == data, "bytes differ");
    // An in-memory body larger than one chunk also goes in chunks, as one append.
    let ack = c
        .append("big", Bytes::from(data.clone()))
        .await
        .expect("big append");
    assert_eq!(ack.size, 2 * data.len() as u64);
    let tail = c
        .read("big", data.len() as u64 - 10, Some(20))
        .await
        .expect("read");
    assert_eq!(&tail[..10], &data[data.len() - 10..]);
    assert_eq!(&tail[10..], &data[..10]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let mut f = framed_client(&node).await;
    for id in 1..=20u64 {
        let op = Op::Append {
            name: format!("p/{}", id % 4),
            body: dfs_proto::Body {
                data: Bytes::from(vec![b'a'; 10]),
                more: false,
            },
            tag: None,
            cond: Default::default(),
        };
        f.send(ClientFrame::Request(Request { id, op }))
            .await
            .expect("sent");
    }
    let mut ids = Vec::new();
    for _ in 0..20 {
        match next(&mut f).await {
            ServerFrame::Response(r) => {
                assert!(r.result.is_ok(), "{r:?}");
                ids.push(r.id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    ids.sort();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    let c = client(&node).await;
    assert_eq!(c.stat("p/0").await.expect("stat").size, 50);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_get_a_clear_error_naming_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    // Through a raw connection, since the library refuses bad names before sending.
    let mut f = framed_client(&node).await;
    let cases = [
        ("../x", "'..'"),
        ("/x", "must not start with '/'"),
        ("a//b", "no empty segment"),
        (".", "'.'"),
        ("a\u{7}b", "control characters"),
    ];
    let long = "x".repeat(1025);
    let cases = cases
        .iter()
        .map(|(n, r)| (n.to_string(), *r))
        .chain([(long, "at most 1024 bytes")]);
    for (id, (name, rule)) in (1u64..).zip(cases) {
        f.send(ClientFrame::Request(Request {
            id,
            op: Op::Create {
                name: name.clone(),
                tag: None,
            },
        }))
        .await
        .expect("sent");
        match next(&mut f).await {
            ServerFrame::Response(r) => {
                let e = r.result.expect_err("refused");
                assert_eq!(e.code, ErrorCode::InvalidName, "{name:?}");
                assert!(e.message.contains(rule), "{name:?}: {}", e.message);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_http_input_harm_nobody_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let bystander = client(&node).await;
    bystander.append("f", "before").await.expect("append");

    // An oversized length prefix: a clear TooLarge goodbye, then close.
    let mut s = raw(&node).await;
    s.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    assert_eq!(
        goodbye_code(&read_until_closed(&mut s).await),
        ErrorCode::TooLarge
    );

    // Garbage that frames but does not decode.
    let mut s = raw(&node).await;
    let mut buf = BytesMut::new();
    buf.put_u32(5);
    buf.put_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb]);
    s.write_all(&buf).await.expect("write");
    assert_eq!(
        goodbye_code(&read_until_closed(&mut s).await),
        ErrorCode::InvalidRequest
    );

    // A plain HTTP request gets an HTTP answer.
    let mut s = raw(&node).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("dfs protocol"));

    // A wrong magic or version: ProtocolMismatch.
    for hello in [
        Hello {
            magic: 0x1234,
            version: 1,
            ..Hello::new(Role::Client)
        },
        Hello {
            magic: MAGIC,
            version: 999,
            ..Hello::new(Role::Client)
        },
    ] {
        let mut f = Framed::new(raw(&node).await, ClientCodec::new());
        f.send(ClientFrame::Hello(hello)).await.expect("sent");
        match next(&mut f).await {
            ServerFrame::Goodbye(e) => assert_eq!(e.code, ErrorCode::ProtocolMismatch),
            other => panic!("unexpected {other:?}"),
        }
    }

    // A request before the hello, and a second hello.
    let mut f = Framed::new(raw(&node).await, ClientCodec::new());
    f.send(ClientFrame::Request(Request {
        id: 1,
        op: Op::Status,
    }))
    .await
    .expect("sent");
    assert!(
        matches!(next(&mut f).await, ServerFrame::Goodbye(e) if e.code == ErrorCode::ProtocolMismatch)
    );
    let mut f = framed_client(&node).await;
    f.send(ClientFrame::Hello(Hello::new(Role::Client)))
        .await
        .expect("sent");
    assert!(
        matches!(next(&mut f).await, ServerFrame::Goodbye(e) if e.code == ErrorCode::ProtocolMismatch)
    );

    // A peer message on a client connection.
    let mut f = framed_client(&node).await;
    f.send(ClientFrame::Peer(PeerMessage {
        id: 1,
        payload: Bytes::new(),
    }))
    .await
    .expect("sent");
    assert!(
        matches!(next(&mut f).await, ServerFrame::Goodbye(e) if e.code == ErrorCode::ProtocolMismatch && e.message.contains("peer"))
    );

    // A peer of another cluster is refused.
    let mut f = Framed::new(raw(&node).await, ClientCodec::new());
    f.send(ClientFrame::Hello(Hello::new(Role::Peer {
        cluster_id: 42,
        node_id: 2,
    })))
    .await
    .expect("sent");
    assert!(matches!(next(&mut f).await, ServerFrame::Goodbye(e) if e.message.contains("cluster")));

    // A truncated frame then close: nothing breaks.
    let mut s = raw(&node).await;
    s.write_all(&[0, 0, 0, 50, 1, 2]).await.expect("write");
    drop(s);

    bystander
        .append("f", " after")
        .await
        .expect("bystander unaffected");
    assert_eq!(
        &bystander.read("f", 0, None).await.expect("read")[..],
        b"before after"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_connections_do_not_block_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        hello_timeout: Duration::from_millis(500),
        // All from one address here, over its default limit (see limits_tests.rs).
        connections_per_address_max: 1024,
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(raw(&node).await);
    }
    still_serves(&node).await;
    // Silent connections are closed after the hello timeout.
    let mut s = idle.pop().expect("one");
    assert_eq!(
        goodbye_code(&read_until_closed(&mut s).await),
        ErrorCode::Timeout
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_with_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        connections_max: 3,
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(framed_client(&node).await);
    }
    let mut s = raw(&node).await;
    assert_eq!(
        goodbye_code(&read_until_closed(&mut s).await),
        ErrorCode::Busy
    );
    // A freed slot serves again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match Client::connect([node.local_addr().to_string()]).await {
            Ok(c) => {
                c.status().await.expect("served");
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("never served again: {e}"),
        }
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_body_is_not_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let c = client(&node).await;
    c.append("f", "keep").await.expect("append");
    let mut f = framed_client(&node).await;
    let op = Op::Append {
        name: "f".into(),
        body: dfs_proto::Body {
            data: Bytes::from_static(b"half"),
            more: true,
        },
        tag: None,
        cond: Default::default(),
    };
    f.send(ClientFrame::Request(Request { id: 9, op }))
        .await
        .expect("sent");
    f.send(ClientFrame::Cancel { id: 9 }).await.expect("sent");
    match next(&mut f).await {
        ServerFrame::Response(r) => assert_eq!(
            r.result.expect_err("abandoned").code,
            ErrorCode::InvalidRequest
        ),
        other => panic!("unexpected {other:?}"),
    }
    // And a connection that dies mid-body.
    let mut f = framed_client(&node).await;
    let op = Op::Put {
        name: "f".into(),
        body: dfs_proto::Body {
            data: Bytes::from_static(b"half"),
            more: true,
        },
        tag: None,
        cond: Default::default(),
    };
    f.send(ClientFrame::Request(Request { id: 1, op }))
        .await
        .expect("sent");
    drop(f);
    // The write lock is released once the node notices; then the old content is intact.
    assert_eq!(&c.read("f", 0, None).await.expect("read")[..], b"keep");
    c.append("f", "!").await.expect("file writable again");
    assert_eq!(&c.read("f", 0, None).await.expect("read")[..], b"keep!");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_and_releases_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let mut f = framed_client(&node).await;
    let c = client(&node).await;
    c.append("kept", "data").await.expect("append");
    node.shutdown().await;
    assert!(
        matches!(next(&mut f).await, ServerFrame::Goodbye(e) if e.code == ErrorCode::Unavailable)
    );
    // The store's lock is free again: a new node opens the same directory.
    let node = start(dir.path(), Limits::default()).await;
    let c = client(&node).await;
    assert_eq!(&c.read("kept", 0, None).await.expect("read")[..], b"data");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_stalled_mid_frame_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        frame_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    let mut f = framed_client(&node).await;
    // Half of a 100-byte frame, then nothing: a slow-loris sender.
    f.get_mut()
        .write_all(&[0, 0, 0, 100, 1, 2, 3])
        .await
        .expect("write");
    expect_goodbye(&mut f, ErrorCode::Timeout, "stalled").await;
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_but_a_busy_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    // A session that keeps sending requests outlives the idle timeout many times over
    // (a raw connection: the library would hide a close by reconnecting).
    let mut busy = framed_client(&node).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut id = 0;
    while tokio::time::Instant::now() < until {
        id += 1;
        busy.send(ClientFrame::Request(Request { id, op: Op::Status }))
            .await
            .expect("sent");
        match next(&mut busy).await {
            ServerFrame::Response(r) => assert_eq!(r.id, id),
            other => panic!("a busy session was closed: {other:?}"),
        }
    }
    // A silent one is told why and closed.
    let mut f = framed_client(&node).await;
    expect_goodbye(&mut f, ErrorCode::Timeout, "idle").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_finished_requests_are_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    let mut f = framed_client(&node).await;
    // Many writes announce a streamed body but are refused at once (bad name); their
    // chunks never come. The node must not keep them, nor count the line as busy forever.
    for id in 1..=200u64 {
        let op = Op::Append {
            name: "../refused".into(),
            body: dfs_proto::Body {
                data: Bytes::from_static(b"x"),
                more: true,
            },
            tag: None,
            cond: Default::default(),
        };
        f.send(ClientFrame::Request(Request { id, op }))
            .await
            .expect("sent");
        match next(&mut f).await {
            ServerFrame::Response(r) => {
                assert_eq!(r.result.expect_err("refused").code, ErrorCode::InvalidName);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    expect_goodbye(&mut f, ErrorCode::Timeout, "idle").await;
    node.shutdown().await;
}
