//! The abuse limits of [`Limits`], each through a running node: connections per source
//! address, request size, requests in flight, and the configuration's checks. (The hello,
//! idle and stalled-frame timeouts and the total connection limit are in `test.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dfs_client::Client;
use dfs_proto::{
    CHUNK_BYTES_MAX, ClientCodec, ClientFrame, Condition, ErrorCode, FRAME_BYTES_MAX, Hello,
    NAME_BYTES_MAX, Name, Op, OpTag, PeerMessage, Request, Role, ServerFrame,
};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::{Encoder, Framed};

use crate::{Limits, Node, NodeConfig, NodeError, REQUEST_BYTES_MIN};

const DEADLINE: Duration = Duration::from_secs(20);

type Conn = Framed<TcpStream, ClientCodec>;

async fn start(dir: &std::path::Path, limits: Limits) -> Node {
    let mut config = NodeConfig::single(dir, "127.0.0.1:0");
    config.limits = limits;
    Node::start(config).await.expect("node starts")
}

/// A TCP connection to `node` from the source address `from` (any port). Linux routes all
/// of 127.0.0.0/8 over loopback, so `127.0.0.2` is a second host for the node.
async fn connect_from(node: &Node, from: [u8; 4]) -> Conn {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("binds the source address");
    let stream = socket.connect(node.local_addr()).await.expect("connects");
    Framed::new(stream, ClientCodec::new())
}

async fn next(f: &mut Conn) -> ServerFrame {
    tokio::time::timeout(DEADLINE, f.next())
        .await
        .expect("answer in time")
        .expect("a frame")
        .expect("a valid frame")
}

/// Says hello as `role` and returns the cluster id of the node's welcome.
async fn hello(f: &mut Conn, role: Role) -> u64 {
    f.send(ClientFrame::Hello(Hello::new(role)))
        .await
        .expect("hello sent");
    match next(f).await {
        ServerFrame::Welcome(w) => w.cluster_id,
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn client_from(node: &Node, from: [u8; 4]) -> Conn {
    let mut f = connect_from(node, from).await;
    hello(&mut f, Role::Client).await;
    f
}

/// Waits for the node's goodbye, checks its code and that its message says `why`, and
/// returns the message.
async fn expect_goodbye(f: &mut Conn, code: ErrorCode, why: &str) -> String {
    match next(f).await {
        ServerFrame::Goodbye(e) => {
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(why), "{}", e.message);
            e.message
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
}

/// Sends request `id` and returns its answer.
async fn call(f: &mut Conn, id: u64, op: Op) -> Result<(), dfs_proto::WireError> {
    f.send(ClientFrame::Request(Request { id, op }))
        .await
        .expect("sent");
    match next(f).await {
        ServerFrame::Response(r) => {
            assert_eq!(r.id, id);
            r.result.map(drop)
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

fn append(name: &str, data: &'static [u8]) -> Op {
    Op::Append {
        name: name.into(),
        body: dfs_proto::Body {
            data: Bytes::from_static(data),
            more: false,
        },
        tag: None,
        cond: Condition::NONE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_from_one_address_are_capped_while_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        connections_per_address_max: 4,
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(client_from(&node, [127, 0, 0, 1]).await);
    }
    // The fifth from the same address is told why, before any hello.
    let mut refused = connect_from(&node, [127, 0, 0, 1]).await;
    let why = expect_goodbye(
        &mut refused,
        ErrorCode::Busy,
        "4 connections per source address",
    )
    .await;
    assert!(why.contains("127.0.0.1 has that many open"), "{why}");

    // Another address is welcomed and served meanwhile.
    let mut other = client_from(&node, [127, 0, 0, 2]).await;
    call(&mut other, 1, append("f", b"from another host"))
        .await
        .expect("served");
    // The held connections are served too.
    call(&mut held[0], 1, Op::Status).await.expect("served");

    // Once one closes, the address may connect again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut again = loop {
        let mut f = connect_from(&node, [127, 0, 0, 1]).await;
        // A refused connection may be reset under the hello: that is a refusal too.
        let answer = match f.send(ClientFrame::Hello(Hello::new(Role::Client))).await {
            Ok(()) => tokio::time::timeout(DEADLINE, f.next())
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        match answer {
            Some(Ok(ServerFrame::Welcome(_))) => break f,
            Some(Ok(ServerFrame::Goodbye(e))) if e.code != ErrorCode::Busy => {
                panic!("unexpected goodbye: {e:?}")
            }
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a closed connection's slot was never given back"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    call(&mut again, 2, append("f", b" and back"))
        .await
        .expect("served");
    node.shutdown().await;
}

/// The longest valid name: 1024 bytes in segments of at most 255.
fn longest_name() -> String {
    let segment = "n".repeat(200);
    let name = format!("{0}/{0}/{0}/{0}/{0}/{1}", segment, "t".repeat(19));
    assert_eq!(name.len(), NAME_BYTES_MAX);
    Name::parse(&name).expect("a valid name");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_request_limit_gets_too_large_and_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        request_bytes_max: REQUEST_BYTES_MIN,
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;

    // The largest request the client library makes (a whole chunk under the longest name,
    // every optional field set, the longest ids) fits the smallest limit.
    let biggest = ClientFrame::Request(Request {
        id: u64::MAX,
        op: Op::Put {
            name: longest_name(),
            body: dfs_proto::Body {
                data: Bytes::from(vec![7u8; CHUNK_BYTES_MAX]),
                more: false,
            },
            tag: Some(OpTag {
                client_id: u64::MAX,
                seq: u64::MAX,
            }),
            cond: Condition {
                fence: None,
                if_version: Some(0),
            },
        },
    });
    let mut encoded = BytesMut::new();
    ClientCodec::new()
        .encode(biggest.clone(), &mut encoded)
        .expect("encodes");
    assert!(
        encoded.len() - 4 <= REQUEST_BYTES_MIN,
        "{} bytes",
        encoded.len()
    );
    let mut f = client_from(&node, [127, 0, 0, 1]).await;
    f.send(biggest).await.expect("sent");
    match next(&mut f).await {
        ServerFrame::Response(r) => assert!(r.result.is_ok(), "{r:?}"),
        other => panic!("expected the put's answer, got {other:?}"),
    }

    // A frame over the limit (yet under the protocol's): a TooLarge goodbye naming the
    // limit, decided on the length prefix before any of the body is buffered. (Only the
    // prefix is sent: bytes the node never reads would make its close a reset, which may
    // overtake the goodbye.)
    let over = u32::try_from(REQUEST_BYTES_MIN + 1).expect("fits");
    f.get_mut()
        .write_all(&over.to_be_bytes())
        .await
        .expect("sent");
    expect_goodbye(
        &mut f,
        ErrorCode::TooLarge,
        &format!("{}-byte limit", REQUEST_BYTES_MIN),
    )
    .await;
    // Even as the first frame, in place of the hello.
    let mut f = connect_from(&node, [127, 0, 0, 1]).await;
    f.get_mut()
        .write_all(&over.to_be_bytes())
        .await
        .expect("sent");
    expect_goodbye(&mut f, ErrorCode::TooLarge, "limit").await;

    // The cluster's own nodes keep the protocol's limit: a forwarded request over the
    // client limit is read (and refused for its name), a peer message is answered.
    let oversized = Op::Create {
        name: "x".repeat(REQUEST_BYTES_MIN + 1000),
        tag: None,
    };
    let mut f = connect_from(&node, [127, 0, 0, 1]).await;
    let cluster_id = hello(&mut f, Role::Client).await;
    drop(f);
    let mut f = connect_from(&node, [127, 0, 0, 1]).await;
    hello(
        &mut f,
        Role::Forwarder {
            cluster_id,
            node_id: 2,
        },
    )
    .await;
    let e = call(&mut f, 5, oversized).await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidName, "{}", e.message);
    let mut f = connect_from(&node, [127, 0, 0, 1]).await;
    hello(
        &mut f,
        Role::Peer {
            cluster_id,
            node_id: 2,
        },
    )
    .await;
    // 0xff bytes decode as no raft request: the answer is a refusal, with the same id.
    let payload = Bytes::from(vec![0xffu8; FRAME_BYTES_MAX / 2]);
    f.send(ClientFrame::Peer(PeerMessage { id: 77, payload }))
        .await
        .expect("sent");
    match next(&mut f).await {
        ServerFrame::Peer(m) => assert_eq!(m.id, 77),
        other => panic!("expected a peer answer, got {other:?}"),
    }

    // Everyone else is still served.
    let c = Client::connect([node.local_addr().to_string()])
        .await
        .expect("client connects");
    c.append("alive", "x").await.expect("node still serves");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_limit_get_busy_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        requests_in_flight_max: 1,
        ..Limits::default()
    };
    let node = start(dir.path(), limits).await;
    let mut f = client_from(&node, [127, 0, 0, 1]).await;
    // A write whose body is still streaming stays in flight until its last chunk.
    let op = Op::Append {
        name: "f".into(),
        body: dfs_proto::Body {
            data: Bytes::from_static(b"one "),
            more: true,
        },
        tag: None,
        cond: Condition::NONE,
    };
    f.send(ClientFrame::Request(Request { id: 1, op }))
        .await
        .expect("sent");
    let e = call(&mut f, 2, Op::Status).await.expect_err("busy");
    assert_eq!(e.code, ErrorCode::Busy, "{}", e.message);
    assert!(
        e.message.contains("more than 1 requests in flight"),
        "{}",
        e.message
    );
    // The last chunk ends the first request; its permit then serves the next one.
    f.send(ClientFrame::Chunk(dfs_proto::Chunk {
        id: 1,
        data: Bytes::from_static(b"two"),
        last: true,
    }))
    .await
    .expect("sent");
    match next(&mut f).await {
        ServerFrame::Response(r) => {
            assert_eq!(r.id, 1);
            assert!(r.result.is_ok(), "{r:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The permit is given back once the request's task ends, just after its answer.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut id = 3;
    loop {
        match call(&mut f, id, Op::Status).await {
            Ok(()) => break,
            Err(e) if e.code == ErrorCode::Busy && tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("never served again: {}", e.message),
        }
        id += 1;
    }
    node.shutdown().await;
}

#[test]
fn the_configuration_refuses_unusable_limits() {
    let config = |limits: Limits| {
        let mut c = NodeConfig::single("/nonexistent", "127.0.0.1:0");
        c.limits = limits;
        c
    };
    let message = |limits: Limits| match config(limits).validate() {
        Err(NodeError::Config(m)) => m,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    assert!(config(Limits::default()).validate().is_ok());
    for ok in [REQUEST_BYTES_MIN, FRAME_BYTES_MAX] {
        let limits = Limits {
            request_bytes_max: ok,
            ..Limits::default()
        };
        assert!(config(limits).validate().is_ok(), "{ok}");
    }
    let m = message(Limits {
        request_bytes_max: CHUNK_BYTES_MAX,
        ..Limits::default()
    });
    assert!(
        m.contains("--max-request-bytes") && m.contains("too small"),
        "{m}"
    );
    assert!(m.contains(&REQUEST_BYTES_MIN.to_string()), "{m}");
    let m = message(Limits {
        request_bytes_max: FRAME_BYTES_MAX + 1,
        ..Limits::default()
    });
    assert!(m.contains("frame limit"), "{m}");
    let m = message(Limits {
        connections_per_address_max: 0,
        ..Limits::default()
    });
    assert!(m.contains("--max-connections-per-address 0"), "{m}");
    let m = message(Limits {
        connections_max: usize::MAX,
        ..Limits::default()
    });
    assert!(m.contains("--max-connections"), "{m}");
    let m = message(Limits {
        requests_in_flight_max: 0,
        ..Limits::default()
    });
    assert!(m.contains("--max-requests-in-flight"), "{m}");
    let m = message(Limits {
        frame_timeout: Duration::ZERO,
        ..Limits::default()
    });
    assert!(m.contains("--frame-timeout"), "{m}");
}
