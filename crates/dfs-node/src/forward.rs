//! Forwarding: a request for a file whose primary is another node is relayed to that node
//! over a connection of its own (`Role::Forwarder`), and the answer relayed back.
//!
//! ```text
//! client --Request{id 5}--> this node --Request{id 91}--> primary
//!        --Chunk{id 5}---->           --Chunk{id 91}---->
//!        <-Response{id 5}--           <-Response{id 91}--
//! ```
//!
//! The primary serves a forwarded request itself or refuses it (retryably); it never
//! forwards it again, so maps that disagree for a moment cannot bounce a request around.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dfs_auth::ClusterSecret;
use dfs_client::RawConnection;
use dfs_net::SharedTransport;
use dfs_proto::{
    Chunk, ClientFrame, ErrorCode, Hello, Op, Reply, Request, Response, Role, ServerFrame,
    WireError,
};
use dfs_replication::BodyStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Connections to other nodes for forwarding, one per address, opened on first use.
pub(crate) struct Upstreams {
    node_id: u64,
    cluster_id: u64,
    connect_timeout: Duration,
    reply_timeout: Duration,
    transport: SharedTransport,
    /// Proven to the node forwarded to, as peers prove it.
    secret: Option<ClusterSecret>,
    conns: Mutex<BTreeMap<String, RawConnection>>,
}

impl Upstreams {
    pub(crate) fn new(
        node_id: u64,
        cluster_id: u64,
        connect_timeout: Duration,
        reply_timeout: Duration,
        transport: SharedTransport,
        secret: Option<ClusterSecret>,
    ) -> Self {
        Self {
            node_id,
            cluster_id,
            connect_timeout,
            reply_timeout,
            transport,
            secret,
            conns: Mutex::new(BTreeMap::new()),
        }
    }

    /// The open connection to `addr`, or a new one.
    async fn get(&self, addr: &str) -> Result<RawConnection, String> {
        if let Some(conn) = self.conns.lock().get(addr).filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let role = Role::Forwarder {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
        };
        let nonce = match self.secret {
            Some(_) => dfs_net::random::nonce(),
            None => [0; 32],
        };
        let conn = RawConnection::open(
            self.transport.as_ref(),
            addr,
            Hello::new(role).with_nonce(nonce),
            self.secret.as_ref(),
            self.connect_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        self.conns.lock().insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Stops using `conn` for `addr` (it went silent): the next request dials again, and
    /// the connection closes once the requests still holding it give up.
    fn discard(&self, addr: &str, conn: &RawConnection) {
        let mut conns = self.conns.lock();
        if conns.get(addr).is_some_and(|c| c.same(conn)) {
            conns.remove(addr);
        }
    }
}

/// Relays request `id` (its `op`, and the rest of its body if it streams) to the node at
/// `addr`, and that node's answer back to `out` under `id`.
pub(crate) async fn forward(
    upstreams: &Upstreams,
    id: u64,
    op: Op,
    body: Option<BodyStream>,
    addr: &str,
    out: &mpsc::Sender<ServerFrame>,
) {
    let unavailable = |why: String| {
        ServerFrame::Response(Response {
            id,
            result: Err(WireError::new(
                ErrorCode::Unavailable,
                format!("forwarding to the file's primary at {addr}: {why}"),
            )),
        })
    };
    let conn = match upstreams.get(addr).await {
        Ok(conn) => conn,
        Err(why) => {
            let _ = out.send(unavailable(why)).await;
            return;
        }
    };
    let (up, mut replies) = conn.register();
    if let Err(e) = conn
        .send(ClientFrame::Request(Request { id: up, op }))
        .await
    {
        conn.forget(up);
        let _ = out.send(unavailable(e.to_string())).await;
        return;
    }
    let send_body = async {
        let Some(mut body) = body.filter(BodyStream::is_streaming) else {
            return;
        };
        // The first part went inline with the request.
        let _ = body.next().await;
        loop {
            let frame = match body.next().await {
                Ok(Some(data)) => ClientFrame::Chunk(Chunk {
                    id: up,
                    data,
                    last: false,
                }),
                Ok(None) => ClientFrame::Chunk(Chunk {
                    id: up,
                    data: Bytes::new(),
                    last: true,
                }),
                Err(_) => ClientFrame::Cancel { id: up },
            };
            let end = !matches!(&frame, ClientFrame::Chunk(c) if !c.last);
            if conn.send(frame).await.is_err() || end {
                return;
            }
        }
    };
    let relay = async {
        let mut started = false;
        loop {
            // A primary that sends nothing for this long is behind a dead connection (a
            // half-open socket never fails by itself): give up on it, and let the client
            // retry (its writes carry tags, so a retry is applied once).
            let next = tokio::time::timeout(upstreams.reply_timeout, replies.recv()).await;
            let next = match next {
                Ok(next) => next,
                Err(_) => {
                    upstreams.discard(addr, &conn);
                    tracing::warn!(
                        addr,
                        "no answer from the primary in time; dropping the connection"
                    );
                    None
                }
            };
            let Some(frame) = next else {
                let lost = "the connection was lost".to_owned();
                let frame = if started {
                    ServerFrame::StreamError {
                        id,
                        error: WireError::new(ErrorCode::Unavailable, lost),
                    }
                } else {
                    unavailable(lost)
                };
                let _ = out.send(frame).await;
                return;
            };
            let (frame, done) = match frame {
                ServerFrame::Response(r) => {
                    let more = matches!(r.result, Ok(Reply::ReadStart { .. }));
                    let frame = ServerFrame::Response(Response {
                        id,
                        result: r.result,
                    });
                    (frame, !more)
                }
                ServerFrame::Chunk(c) => {
                    let last = c.last;
                    let frame = ServerFrame::Chunk(Chunk {
                        id,
                        data: c.data,
                        last,
                    });
                    (frame, last)
                }
                ServerFrame::StreamError { error, .. } => {
                    (ServerFrame::StreamError { id, error }, true)
                }
                // Nothing else is routed to a request.
                _ => continue,
            };
            started = true;
            if out.send(frame).await.is_err() || done {
                return;
            }
        }
    };
    // Once the answer is complete (a refusal can come before the whole body), the rest of
    // the body is not sent on: the client's further chunks are dropped here.
    tokio::pin!(send_body, relay);
    tokio::select! {
        () = &mut relay => {}
        () = &mut send_body => relay.await,
    }
    conn.forget(up);
}
