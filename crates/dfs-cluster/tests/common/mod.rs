//! The peer side of a node for the cluster tests: the handshake `dfs-node` does, then the
//! raft's traffic.

use std::time::Duration;

use dfs_cluster::{PeerService, serve_peer};
use dfs_proto::{
    ClientFrame, ErrorCode, MAGIC, PROTOCOL_VERSION, Role, ServerCodec, ServerFrame, Welcome,
    WireError,
};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

/// Bound on every wait of these tests; far above what a slow machine needs.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Time a connecting peer has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's side of the handshake, as dfs-node does it: a `Role::Peer` hello of
/// `cluster` gets a `Welcome`, then the connection is the raft's. Aborting this task drops
/// the connection tasks with it.
pub async fn accept_peers(
    listener: TcpListener,
    service: impl Into<PeerService>,
    id: u64,
    cluster: u64,
) {
    let service = service.into();
    let mut connections = JoinSet::new();
    while let Ok((socket, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(socket, service.clone(), id, cluster));
    }
}

async fn serve_connection(socket: TcpStream, service: PeerService, id: u64, cluster: u64) {
    let _ = socket.set_nodelay(true);
    let (read_half, write_half) = socket.into_split();
    let mut reader = FramedRead::new(read_half, ServerCodec::new());
    let mut writer = FramedWrite::new(write_half, ServerCodec::new());
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(ClientFrame::Hello(h)))) => h,
        _ => return,
    };
    let ok = hello.magic == MAGIC
        && hello.version == PROTOCOL_VERSION
        && matches!(hello.role, Role::Peer { cluster_id, .. } if cluster_id == cluster);
    if !ok {
        let bye = WireError::new(ErrorCode::ProtocolMismatch, "not a peer of this cluster");
        let _ = writer.send(ServerFrame::Goodbye(bye)).await;
        return;
    }
    let welcome = ServerFrame::Welcome(Welcome {
        node_id: id,
        cluster_id: cluster,
        version: PROTOCOL_VERSION,
    });
    if writer.send(welcome).await.is_err() {
        return;
    }
    serve_peer(service, reader, writer).await;
}

/// Waits until `done` holds, polling; fails the test after [`DEADLINE`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
