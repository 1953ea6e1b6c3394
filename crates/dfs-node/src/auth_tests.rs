//! Only those who belong: client tokens and rights, the cluster secret between nodes, and
//! TLS, on real nodes over loopback.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dfs_auth::{ClusterSecret, Right, Side, TokenStore, TokensFile};
use dfs_client::{Client, ClientConfig, ClientError};
use dfs_cluster::{MapCommand, PeerNetwork};
use dfs_net::tls::{Tls, write_dev_certificates};
use dfs_proto::{
    ClientCodec, ClientFrame, ErrorCode, Hello, ListEntry, Role, ServerFrame, WireError,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::{LocalCluster, Node, NodeConfig};

const DEADLINE: Duration = Duration::from_secs(20);

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::new(text.as_bytes().to_vec()).expect("long enough")
}

/// A tokens file in `dir` with an admin, a reader and a writer limited to `logs/`; returns
/// the store and the three tokens.
fn tokens(dir: &Path) -> (Arc<TokenStore>, [String; 3]) {
    let path = dir.join("tokens.json");
    let mut file = TokensFile::default();
    let admin = file.add("admin", Right::ReadWrite, None).expect("add");
    let reader = file.add("reader", Right::Read, None).expect("add");
    let logs = file
        .add("logs", Right::ReadWrite, Some("logs/"))
        .expect("add");
    file.save(&path).expect("save");
    let store = Arc::new(TokenStore::open(&path).expect("open"));
    (store, [admin, reader, logs])
}

async fn client_with(addrs: Vec<String>, token: Option<&str>) -> Result<Client, ClientError> {
    let mut config = ClientConfig::new(addrs);
    config.token = token.map(str::to_owned);
    config.retry_deadline = Duration::from_secs(5);
    Client::with_config(config).await
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, ClientError>, code: ErrorCode, why: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.code(), code, "{e}");
            assert!(e.to_string().contains(why), "{e:?} does not say {why:?}");
        }
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_right_token_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, [admin, reader, logs]) = tokens(dir.path());
    let s = secret("a secret the three nodes share");
    let cluster = LocalCluster::start_with(dir.path(), 3, 2, |c| {
        c.secret = Some(s.clone());
        c.tokens = Some(store.clone());
    })
    .await
    .expect("cluster starts");
    let addrs = cluster.addrs();
    let admin_client = client_with(addrs.clone(), Some(&admin))
        .await
        .expect("admin connects");
    admin_client.append("a", "v1").await.expect("admin writes");
    admin_client
        .append("logs/x", "l1")
        .await
        .expect("admin writes");

    // No token, a wrong one, a removed one: refused at the hello.
    assert_code(
        client_with(addrs.clone(), None).await,
        ErrorCode::Unauthenticated,
        "requires an access token",
    );
    let mut wrong = admin.clone();
    let last = wrong.pop().expect("non-empty");
    wrong.push(if last == '0' { '1' } else { '0' });
    assert_code(
        client_with(addrs.clone(), Some(&wrong)).await,
        ErrorCode::Unauthenticated,
        "not valid",
    );
    assert_code(
        client_with(addrs.clone(), Some("admin")).await,
        ErrorCode::Unauthenticated,
        "not valid",
    );

    // Read-only: reads work through every node, every change is refused.
    for addr in &addrs {
        let c = client_with(vec![addr.clone()], Some(&reader))
            .await
            .expect("reader connects");
        assert_eq!(c.read("a", 0, None).await.expect("reader reads"), "v1");
        assert_code(
            c.append("a", "x").await,
            ErrorCode::PermissionDenied,
            "needs `read-write`",
        );
        assert_code(c.delete("a").await, ErrorCode::PermissionDenied, "reader");
        assert_code(c.create("new").await, ErrorCode::PermissionDenied, "reader");
        assert_code(
            c.put("a", "replaced").await,
            ErrorCode::PermissionDenied,
            "read-write",
        );
    }

    // Limited to logs/: inside works, outside is refused, listing outside too.
    let l = client_with(addrs.clone(), Some(&logs))
        .await
        .expect("logs connects");
    l.append("logs/x", "l2").await.expect("inside the prefix");
    assert_code(
        l.append("a", "x").await,
        ErrorCode::PermissionDenied,
        "\"logs/\"",
    );
    assert_code(
        l.read("a", 0, None).await,
        ErrorCode::PermissionDenied,
        "outside",
    );
    assert_code(l.delete("a").await, ErrorCode::PermissionDenied, "outside");
    assert_code(l.list("").await, ErrorCode::PermissionDenied, "outside");
    let listed: Vec<String> = l
        .list("logs/")
        .await
        .expect("list inside")
        .into_iter()
        .map(|e: ListEntry| e.name)
        .collect();
    assert_eq!(listed, ["logs/x"]);

    // Nothing the refused requests asked for happened.
    assert_eq!(admin_client.read("a", 0, None).await.expect("read"), "v1");
    assert_eq!(admin_client.stat("a").await.expect("stat").version, 1);
    assert_eq!(
        admin_client.read("logs/x", 0, None).await.expect("read"),
        "l1l2"
    );
    assert_code(admin_client.stat("new").await, ErrorCode::NotFound, "new");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_cannot_join_or_send_cluster_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = crate::local::free_ports(3).expect("ports");
    let members: Vec<dfs_replication::Member> = (1..=3u64)
        .zip(&ports)
        .map(|(id, port)| dfs_replication::Member {
            id,
            addr: format!("127.0.0.1:{port}"),
        })
        .collect();
    let good = secret("the cluster's own secret, shared");
    let bad = secret("some other cluster's secret....");
    let config = |id: u64, s: &ClusterSecret| {
        let mut c = NodeConfig::new(id, members.clone(), dir.path().join(format!("node-{id}")));
        c.replication_factor = Some(2);
        c.secret = Some(s.clone());
        c
    };
    let intruder = tokio::spawn(Node::start(config(3, &bad)));
    let (one, two) = tokio::join!(Node::start(config(1, &good)), Node::start(config(2, &good)));
    let (one, two) = (one.expect("node 1 starts"), two.expect("node 2 starts"));
    let client = client_with(vec![one.local_addr().to_string()], None)
        .await
        .expect("connects");
    for i in 0..6 {
        client
            .append(&format!("f{i}"), "x")
            .await
            .expect("two good nodes serve");
    }
    let status = client.status().await.expect("status");
    let three = status.nodes.iter().find(|n| n.id == 3).expect("listed");
    assert!(
        !three.up,
        "the node with another secret never joined: {three:?}"
    );
    // No file lives on it: it received no replication traffic.
    for i in 0..6 {
        let info = client.stat(&format!("f{i}")).await.expect("stat");
        assert!(!info.replicas.contains(&3), "{info:?}");
    }
    assert!(
        !intruder.is_finished() || intruder.await.expect("task").is_err(),
        "the node with another secret must not finish joining"
    );

    // Consensus traffic from outside, with the wrong secret or none, is refused: a
    // command that would take node 2 out of the cluster never applies.
    for s in [Some(bad.clone()), None] {
        let outsider = PeerNetwork::new(
            3,
            NodeConfig::new(3, members.clone(), "x").cluster_id(),
            dfs_net::Tcp::shared(),
        )
        .with_secret(s);
        let proposed = outsider
            .propose(
                1,
                &members[0].addr,
                MapCommand::NodeLost { id: 2 },
                Duration::from_secs(2),
            )
            .await;
        assert!(proposed.is_err(), "{proposed:?}");
    }
    let status = client.status().await.expect("status");
    assert!(
        status.nodes.iter().any(|n| n.id == 2 && n.up),
        "node 2 is still up: {status:?}"
    );
    one.shutdown().await;
    two.shutdown().await;
}

async fn framed(addr: std::net::SocketAddr) -> Framed<TcpStream, ClientCodec> {
    Framed::new(
        TcpStream::connect(addr).await.expect("connects"),
        ClientCodec::new(),
    )
}

async fn next(f: &mut Framed<TcpStream, ClientCodec>) -> ServerFrame {
    tokio::time::timeout(DEADLINE, f.next())
        .await
        .expect("answer in time")
        .expect("a frame")
        .expect("a valid frame")
}

#[tokio::test]
async fn a_replayed_peer_handshake_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = secret("the single node's cluster secret");
    let mut config = NodeConfig::single(dir.path(), "127.0.0.1:0");
    config.secret = Some(s.clone());
    let cluster_id = config.cluster_id();
    let node = Node::start(config).await.expect("starts");
    let role = Role::Peer {
        cluster_id,
        node_id: 2,
    };
    let context = dfs_auth::handshake::role_context(&role).expect("a peer's");
    let nonce = [7u8; 32];
    let hello = ClientFrame::Hello(Hello::new(role.clone()).with_nonce(nonce));

    // A genuine handshake, recorded.
    let mut f = framed(node.local_addr()).await;
    f.send(hello.clone()).await.expect("sent");
    let ServerFrame::Challenge(first) = next(&mut f).await else {
        panic!("a node with a secret challenges a peer")
    };
    assert!(s.verify(Side::Node, &context, &nonce, &first.nonce, &first.proof));
    let proof = s.proof(Side::Caller, &context, &nonce, &first.nonce);
    f.send(ClientFrame::Proof(proof)).await.expect("sent");
    assert!(matches!(next(&mut f).await, ServerFrame::Welcome(_)));
    drop(f);

    // The same frames again: a fresh challenge, which the recorded proof does not answer.
    let mut f = framed(node.local_addr()).await;
    f.send(hello.clone()).await.expect("sent");
    let ServerFrame::Challenge(second) = next(&mut f).await else {
        panic!("challenged again")
    };
    assert_ne!(second.nonce, first.nonce, "every challenge is fresh");
    f.send(ClientFrame::Proof(proof)).await.expect("sent");
    match next(&mut f).await {
        ServerFrame::Goodbye(WireError { code, message }) => {
            assert_eq!(code, ErrorCode::Unauthenticated, "{message}");
            assert!(message.contains("secret"), "{message}");
        }
        other => panic!("a replayed proof must be refused, got {other:?}"),
    }

    // A peer with no proof at all is refused too, and so is a forwarder.
    for role in [
        role,
        Role::Forwarder {
            cluster_id,
            node_id: 2,
        },
    ] {
        let mut f = framed(node.local_addr()).await;
        f.send(ClientFrame::Hello(Hello::new(role)))
            .await
            .expect("sent");
        assert!(matches!(next(&mut f).await, ServerFrame::Challenge(_)));
        f.send(ClientFrame::Proof([0; 32])).await.expect("sent");
        assert!(matches!(
            next(&mut f).await,
            ServerFrame::Goodbye(WireError {
                code: ErrorCode::Unauthenticated,
                ..
            })
        ));
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_clients_that_trust_its_ca_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir).expect("mkdir");
    let certs =
        write_dev_certificates(&tls_dir, &["127.0.0.1".to_owned()], false).expect("certificates");
    let tls = Tls::from_files(dfs_net::Tcp::shared(), &certs.node_files())
        .expect("node TLS")
        .into_shared();
    let s = secret("a secret for the TLS cluster...");
    let cluster = LocalCluster::start_with(dir.path(), 3, 2, |c| {
        c.transport = tls.clone();
        c.secret = Some(s.clone());
    })
    .await
    .expect("a TLS cluster starts");

    let mut config = ClientConfig::new(cluster.addrs());
    config.transport = Tls::from_files(dfs_net::Tcp::shared(), &certs.client_files())
        .expect("client TLS")
        .into_shared();
    let client = Client::with_config(config).await.expect("trusted client");
    for i in 0..4 {
        client
            .append(&format!("t{i}"), "over TLS")
            .await
            .expect("write over TLS");
    }
    for i in 0..4 {
        assert_eq!(
            client.read(&format!("t{i}"), 0, None).await.expect("read"),
            "over TLS"
        );
    }

    // A client trusting another CA, and a plain TCP client, get nowhere.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let other =
        write_dev_certificates(&other_dir, &["127.0.0.1".to_owned()], false).expect("other CA");
    let mut config = ClientConfig::new(cluster.addrs());
    config.retry_deadline = Duration::from_secs(1);
    config.transport = Tls::from_files(dfs_net::Tcp::shared(), &other.client_files())
        .expect("client TLS")
        .into_shared();
    match Client::with_config(config).await {
        Err(e) => assert!(e.to_string().contains("TLS"), "{e}"),
        Ok(_) => panic!("a client that does not trust the CA must be refused"),
    }
    let mut config = ClientConfig::new(cluster.addrs());
    config.retry_deadline = Duration::from_secs(1);
    assert!(
        Client::with_config(config).await.is_err(),
        "plain TCP to a TLS cluster"
    );
    cluster.shutdown().await;
}
