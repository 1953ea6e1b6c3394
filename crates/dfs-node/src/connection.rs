//! One connection: the hello, then a client session with pipelined requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dfs_auth::{ClusterSecret, Grant, Side};
use dfs_cluster::PeerService;
use dfs_net::BoxStream;
use dfs_proto::{
    CHUNK_BYTES_MAX, Challenge, Chunk, ClientFrame, ErrorCode, Hello, MAGIC, Op, PAGE_ENTRIES_MAX,
    PROTOCOL_VERSION, ProtoError, Reply, Request, Response, Role, ServerCodec, ServerFrame,
    Welcome, WireError,
};
use dfs_replication::{BodyStream, BodyTx, Engine, EngineError, ReadHandle, WriteMode};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::forward::forward;
use crate::server::Context;

/// Frames queued for one connection's socket.
const OUTBOUND_FRAMES_MAX: usize = 16;

/// What a plain-HTTP client gets instead of silence.
const HTTP_REFUSAL_BODY: &str = "this port speaks the dfs protocol, not HTTP: use dfs-client\r\n";

fn http_refusal() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{HTTP_REFUSAL_BODY}",
        HTTP_REFUSAL_BODY.len()
    )
}

/// The reading half keeps its codec reachable, to tell a stalled frame from an idle line.
type Reader = FramedRead<ReadHalf<BoxStream>, ServerCodec>;
type Writer = FramedWrite<WriteHalf<BoxStream>, ServerCodec>;

#[tracing::instrument(name = "conn", skip_all, fields(node = ctx.node_id, %peer))]
pub(crate) async fn serve_connection(
    secured: BoxFuture<'static, std::io::Result<BoxStream>>,
    peer: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The transport's handshake (TLS), bounded like the hello that follows it.
    let socket = tokio::select! {
        _ = shutdown.changed() => return,
        secured = tokio::time::timeout(ctx.limits.hello_timeout, secured) => match secured {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "transport handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("no transport handshake within the hello timeout");
                return;
            }
        },
    };
    let (read_half, write_half) = tokio::io::split(socket);
    // A client's frames, the hello first, are held to the request limit; another node's
    // connection is lifted to the protocol's once its hello says so (`node_frames`).
    let mut reader = FramedRead::new(
        read_half,
        ServerCodec::with_max(ctx.limits.request_bytes_max),
    );
    let mut conn = FramedWrite::new(write_half, ServerCodec::new());
    let first = tokio::select! {
        _ = shutdown.changed() => return,
        first = tokio::time::timeout(ctx.limits.hello_timeout, reader.next()) => first,
    };
    let hello = match first {
        Err(_) => {
            let msg = format!("no hello within {:?}", ctx.limits.hello_timeout);
            return goodbye(&mut conn, &ctx, ErrorCode::Timeout, msg).await;
        }
        Ok(None) => return,
        Ok(Some(Err(ProtoError::FrameTooLarge { len, .. }))) if looks_like_http(len) => {
            tracing::debug!("refused an HTTP request");
            let socket = conn.get_mut();
            let _ = tokio::time::timeout(
                ctx.limits.write_timeout,
                socket.write_all(http_refusal().as_bytes()),
            )
            .await;
            let _ = socket.shutdown().await;
            return;
        }
        Ok(Some(Err(e))) => return goodbye(&mut conn, &ctx, code_of(&e), e.to_string()).await,
        Ok(Some(Ok(ClientFrame::Hello(h)))) => h,
        Ok(Some(Ok(_))) => {
            let msg = "the first frame must be a hello".to_owned();
            return goodbye(&mut conn, &ctx, ErrorCode::ProtocolMismatch, msg).await;
        }
    };
    if hello.magic != MAGIC || hello.version != PROTOCOL_VERSION {
        let msg = format!(
            "this node speaks dfs protocol {PROTOCOL_VERSION} (magic {MAGIC:#x}); \
             the hello said version {} with magic {:#x}",
            hello.version, hello.magic
        );
        return goodbye(&mut conn, &ctx, ErrorCode::ProtocolMismatch, msg).await;
    }
    let (forwarded, grant) = match &hello.role {
        Role::Client => match &ctx.tokens {
            None => (false, Grant::everything()),
            Some(tokens) => match tokens.authenticate(hello.token.as_deref()) {
                Ok(grant) => (false, grant),
                Err(e) => {
                    tracing::info!(error = %e, "refused a client");
                    let msg = e.to_string();
                    return goodbye(&mut conn, &ctx, ErrorCode::Unauthenticated, msg).await;
                }
            },
        },
        Role::Peer { cluster_id, .. } | Role::Forwarder { cluster_id, .. }
            if *cluster_id != ctx.cluster_id =>
        {
            let msg = format!(
                "this node belongs to cluster {:016x}, not {cluster_id:016x}",
                ctx.cluster_id
            );
            return goodbye(&mut conn, &ctx, ErrorCode::ProtocolMismatch, msg).await;
        }
        Role::Peer { node_id, .. } | Role::Forwarder { node_id, .. } => {
            if let Some(secret) = &ctx.secret
                && let Err(why) = challenge(&mut reader, &mut conn, &ctx, &hello, secret).await
            {
                tracing::warn!(
                    caller = node_id,
                    why,
                    "refused a peer: cluster-secret handshake failed"
                );
                return goodbye(&mut conn, &ctx, ErrorCode::Unauthenticated, why).await;
            }
            node_frames(&mut reader);
            if let Role::Peer { node_id, .. } = hello.role {
                if send_with_timeout(&mut conn, &ctx, welcome(&ctx))
                    .await
                    .is_ok()
                {
                    tracing::debug!(peer = node_id, "peer connected");
                    // The map's consensus and the data layer's traffic; ends when the peer
                    // leaves.
                    let service = PeerService::for_map(&ctx.map, ctx.data.clone());
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = dfs_cluster::serve_peer(service, reader, conn) => {}
                    }
                }
                return;
            }
            // A forwarding node checked its client's rights before forwarding.
            (true, Grant::everything())
        }
    };
    // A client session begins once the node has joined its cluster.
    let mut ready = ctx.engine.clone();
    let wait = async {
        match ready.wait_for(Option::is_some).await {
            Ok(engine) => engine.as_ref().cloned(),
            Err(_) => None,
        }
    };
    let engine = tokio::select! {
        _ = shutdown.changed() => return,
        engine = tokio::time::timeout(STARTING_WAIT_MAX, wait) => engine.ok().flatten(),
    };
    let Some(engine) = engine else {
        let msg = "the node is still joining its cluster; try again".to_owned();
        return goodbye(&mut conn, &ctx, ErrorCode::Unavailable, msg).await;
    };
    if send_with_timeout(&mut conn, &ctx, welcome(&ctx))
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(forwarded, "client connected");
    let session = Session {
        ctx,
        engine,
        forwarded,
        grant,
    };
    serve_client(reader, conn, Arc::new(session), shutdown).await;
    tracing::debug!("client disconnected");
}

/// Lifts a connection from another node of the cluster to the protocol's frame limit: raft
/// and replication messages are built up to it, and a forwarded request is re-framed with
/// an id of its own, so it may be a little longer than the client's frame was. Called right
/// after the hello, when the codec is between frames (what it has buffered stays read).
fn node_frames(reader: &mut Reader) {
    *reader.decoder_mut() = ServerCodec::new();
}

/// How long a client's hello waits for a starting node to join its cluster.
const STARTING_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

fn welcome(ctx: &Context) -> ServerFrame {
    ServerFrame::Welcome(Welcome {
        node_id: ctx.node_id,
        cluster_id: ctx.cluster_id,
        version: PROTOCOL_VERSION,
    })
}

/// What a client session's requests share.
struct Session {
    ctx: Arc<Context>,
    engine: Arc<Engine>,
    /// Requests forwarded by another node: served here or refused, never forwarded on.
    forwarded: bool,
    /// What the client's token allows (everything on a node without tokens, and for a
    /// forwarding node, which checked its own client's).
    grant: Grant,
}

/// The node's side of the cluster-secret handshake with a peer or forwarder whose `hello`
/// carried its nonce: sends the challenge (the node's nonce and proof), then checks the
/// caller's proof. `Err` says why the caller is refused.
async fn challenge(
    reader: &mut Reader,
    conn: &mut Writer,
    ctx: &Context,
    hello: &Hello,
    secret: &ClusterSecret,
) -> Result<(), String> {
    let Some(context) = dfs_auth::handshake::role_context(&hello.role) else {
        return Err("a client has no cluster secret to prove".into());
    };
    let nonce = dfs_net::random::nonce();
    let proof = secret.proof(Side::Node, &context, &hello.nonce, &nonce);
    let challenge = ServerFrame::Challenge(Challenge { nonce, proof });
    send_with_timeout(conn, ctx, challenge)
        .await
        .map_err(|()| "the caller does not take our challenge".to_owned())?;
    match tokio::time::timeout(ctx.limits.hello_timeout, reader.next()).await {
        Ok(Some(Ok(ClientFrame::Proof(p))))
            if secret.verify(Side::Caller, &context, &hello.nonce, &nonce, &p) =>
        {
            Ok(())
        }
        Ok(Some(Ok(ClientFrame::Proof(_)))) => Err(
            "the proof of the cluster secret is wrong: is this node started with the \
             cluster's --secret-file?"
                .into(),
        ),
        Ok(Some(Ok(_))) => Err("the answer to the challenge must be a proof".into()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(None) => Err("closed during the challenge".into()),
        Err(_) => Err(format!("no proof within {:?}", ctx.limits.hello_timeout)),
    }
}

/// Reads frames and dispatches requests until the client leaves, errs, idles or the node
/// shuts down.
async fn serve_client(
    mut stream: Reader,
    mut sink: Writer,
    session: Arc<Session>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = session.ctx.clone();
    let (out, mut out_rx) = mpsc::channel::<ServerFrame>(OUTBOUND_FRAMES_MAX);
    let write_timeout = ctx.limits.write_timeout;
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            let last = matches!(frame, ServerFrame::Goodbye(_));
            if !matches!(
                tokio::time::timeout(write_timeout, sink.feed(frame)).await,
                Ok(Ok(()))
            ) {
                tracing::debug!("client does not take our frames; closing");
                return;
            }
            if (last || out_rx.is_empty())
                && !matches!(
                    tokio::time::timeout(write_timeout, sink.flush()).await,
                    Ok(Ok(()))
                )
            {
                return;
            }
            if last {
                break;
            }
        }
        let _ = tokio::time::timeout(write_timeout, sink.close()).await;
    });

    let max = ctx.limits.requests_in_flight_max;
    let in_flight = Arc::new(Semaphore::new(max));
    // Ordered, so that ending the connection ends the bodies in one order (a simulation
    // replays).
    let mut bodies: BTreeMap<u64, BodyTx> = BTreeMap::new();
    let bye = |code, msg: String| ServerFrame::Goodbye(WireError::new(code, msg));
    // Wake up at this interval to check for a stalled frame and for idleness.
    let tick = ctx.limits.frame_timeout.min(ctx.limits.idle_timeout);
    let mut idle_for = std::time::Duration::ZERO;
    let mut stalled = false;
    loop {
        let next = tokio::select! {
            _ = shutdown.changed() => {
                let _ = out.send(bye(ErrorCode::Unavailable, "the node is shutting down".into())).await;
                break;
            }
            next = tokio::time::timeout(tick, stream.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                let partial = !stream.read_buffer().is_empty() || stream.decoder().is_mid_frame();
                if partial {
                    // Partial at two checks in a row: the frame had at least a whole tick.
                    if stalled {
                        let msg =
                            format!("a frame stalled for over {:?}", ctx.limits.frame_timeout);
                        let _ = out.send(bye(ErrorCode::Timeout, msg)).await;
                        break;
                    }
                    stalled = true;
                    continue;
                }
                stalled = false;
                forget_finished(&mut bodies);
                if in_flight.available_permits() < max || !bodies.is_empty() {
                    idle_for = std::time::Duration::ZERO;
                    continue;
                }
                idle_for += tick;
                if idle_for >= ctx.limits.idle_timeout {
                    let msg = format!("idle for {:?}", ctx.limits.idle_timeout);
                    let _ = out.send(bye(ErrorCode::Timeout, msg)).await;
                    break;
                }
                continue;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "bad frame");
                let _ = out.send(bye(code_of(&e), e.to_string())).await;
                break;
            }
            Ok(Some(Ok(frame))) => {
                (idle_for, stalled) = (std::time::Duration::ZERO, false);
                frame
            }
        };
        match frame {
            ClientFrame::Request(req) => {
                let id = req.id;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    let msg = format!("more than {max} requests in flight on one connection");
                    let _ = out.send(error_response(id, ErrorCode::Busy, msg)).await;
                    continue;
                };
                let body = match req.op.body() {
                    Some(b) if b.more => {
                        // A body's entry outlives its request until its last chunk comes:
                        // drop those whose request has ended, so the map stays bounded.
                        if bodies.len() >= max {
                            forget_finished(&mut bodies);
                        }
                        if bodies.len() >= max {
                            let msg = format!("more than {max} bodies streaming on one connection");
                            let _ = out.send(error_response(id, ErrorCode::Busy, msg)).await;
                            continue;
                        }
                        if bodies.contains_key(&id) {
                            let msg = format!("request id {id} is already streaming a body");
                            let _ = out
                                .send(error_response(id, ErrorCode::InvalidRequest, msg))
                                .await;
                            continue;
                        }
                        let (body, tx) = BodyStream::streaming(b.data.clone());
                        bodies.insert(id, tx);
                        Some(body.with_chunk_timeout(ctx.limits.body_chunk_timeout))
                    }
                    Some(b) => Some(BodyStream::from_bytes(b.data.clone())),
                    None => None,
                };
                let (session, out2) = (session.clone(), out.clone());
                ctx.tracker.spawn(async move {
                    handle_request(&session, req, body, &out2).await;
                    drop(permit);
                });
            }
            ClientFrame::Chunk(Chunk { id, data, last }) => {
                // Chunks of a request that already ended (refused early, or cancelled)
                // are dropped.
                if let Some(tx) = bodies.get(&id) {
                    let failed = tx.send((data, last)).await.is_err();
                    if last || failed {
                        bodies.remove(&id);
                    }
                }
            }
            ClientFrame::Cancel { id } => {
                // Dropping the sender ends the body early: the write is abandoned.
                bodies.remove(&id);
            }
            ClientFrame::Hello(_) => {
                let _ = out
                    .send(bye(ErrorCode::ProtocolMismatch, "a second hello".into()))
                    .await;
                break;
            }
            ClientFrame::Peer(_) | ClientFrame::Proof(_) => {
                let msg = "peer messages on a client connection".into();
                let _ = out.send(bye(ErrorCode::ProtocolMismatch, msg)).await;
                break;
            }
        }
    }
    drop(bodies);
    drop(out);
    // Requests still running hold their own senders; the writer ends after their replies.
    let _ = writer.await;
}

async fn handle_request(
    session: &Session,
    req: Request,
    body: Option<BodyStream>,
    out: &mpsc::Sender<ServerFrame>,
) {
    let Request { id, op } = req;
    if let Err(e) = session.grant.check(&op) {
        tracing::debug!(id, token = session.grant.name, error = %e, "request denied");
        let _ = out
            .send(error_response(
                id,
                ErrorCode::PermissionDenied,
                e.to_string(),
            ))
            .await;
        return;
    }
    let engine = &session.engine;
    // An operation on one file goes to the file's primary.
    let routed = match &op {
        Op::Append { name, .. }
        | Op::Put { name, .. }
        | Op::Read { name, .. }
        | Op::Delete { name, .. }
        | Op::Write { name, .. }
        | Op::Truncate { name, .. }
        | Op::Stat { name } => Some(name),
        _ => None,
    };
    if let Some(name) = routed
        && !session.forwarded
    {
        match engine.route(name).await {
            Ok(None) => {}
            Ok(Some(addr)) => {
                return forward(&session.ctx.upstreams, id, op, body, &addr, out).await;
            }
            Err(e) => {
                log_error(id, &e);
                let _ = out.send(error_response(id, e.code(), e.to_string())).await;
                return;
            }
        }
    }
    let body = || body.unwrap_or_else(|| BodyStream::from_bytes(Bytes::new()));
    let page = |limit: u32| limit.clamp(1, PAGE_ENTRIES_MAX) as usize;
    let result: Result<Reply, EngineError> = match op {
        Op::Create { name, tag } => engine.create(&name, tag).await.map(Reply::Created),
        Op::Append {
            name, tag, cond, ..
        } => engine
            .write(WriteMode::Append, &name, body(), tag, cond)
            .await
            .map(Reply::Written),
        Op::Put {
            name, tag, cond, ..
        } => engine
            .write(WriteMode::Put, &name, body(), tag, cond)
            .await
            .map(Reply::Written),
        Op::Write {
            name,
            offset,
            tag,
            cond,
            ..
        } => engine
            .write(WriteMode::At { offset }, &name, body(), tag, cond)
            .await
            .map(Reply::Written),
        Op::Truncate {
            name,
            size,
            tag,
            cond,
        } => engine
            .write(WriteMode::Truncate { size }, &name, body(), tag, cond)
            .await
            .map(Reply::Written),
        Op::Read { name, offset, len } => {
            return stream_read(engine, id, &name, offset, len, out).await;
        }
        Op::Delete { name, tag, cond } => engine
            .delete(&name, tag, cond)
            .await
            .map(|()| Reply::Deleted),
        Op::List {
            prefix,
            start_after,
            limit,
        } => engine
            .list(&prefix, start_after.as_deref(), page(limit))
            .await
            .map(|(entries, next)| Reply::Listing { entries, next }),
        Op::Stat { name } => engine.stat(&name).await.map(Reply::Stat),
        Op::Table { start_after, limit } => engine
            .table(start_after.as_deref(), page(limit))
            .await
            .map(|(entries, next)| Reply::Table { entries, next }),
        Op::Status => Ok(Reply::Status(engine.status().await)),
        Op::Scrub => Ok(Reply::Scrub(engine.scrub_cluster().await)),
        // Lock leases are served by any node: each is a change of the cluster map.
        Op::Lock {
            name,
            mode,
            ttl_ms,
            wait_ms,
            tag,
        } => engine
            .lock(
                &name,
                mode,
                ttl_ms,
                std::time::Duration::from_millis(wait_ms),
                tag,
            )
            .await
            .map(Reply::Locked),
        Op::Renew { lease, tag } => engine.renew(lease, tag).await.map(Reply::Renewed),
        Op::Unlock { lease, tag } => engine.unlock(lease, tag).await.map(|()| Reply::Unlocked),
    };
    if let Err(e) = &result {
        log_error(id, e);
    }
    let result = result.map_err(|e| e.to_wire());
    let _ = out
        .send(ServerFrame::Response(Response { id, result }))
        .await;
}

/// Answers a read with `ReadStart` and then the bytes, chunk by chunk, from a snapshot.
async fn stream_read(
    engine: &Engine,
    id: u64,
    name: &str,
    offset: u64,
    len: Option<u64>,
    out: &mpsc::Sender<ServerFrame>,
) {
    let handle = match engine.read(name, offset, len).await {
        Ok(h) => h,
        Err(e) => {
            log_error(id, &e);
            let _ = out.send(error_response(id, e.code(), e.to_string())).await;
            return;
        }
    };
    let start = Reply::ReadStart {
        info: handle.info.clone(),
        offset: handle.offset,
        len: handle.len,
    };
    if out
        .send(ServerFrame::Response(Response {
            id,
            result: Ok(start),
        }))
        .await
        .is_err()
    {
        return;
    }
    let mut done = 0u64;
    // A whole file's bytes are checked against its checksum before the last chunk goes
    // out: a damaged copy ends the stream with an error, never with `last`.
    let mut crc = 0u32;
    loop {
        let mut data = handle.chunk(done, CHUNK_BYTES_MAX).await;
        if let Ok(d) = &data {
            done += d.len() as u64;
            if handle.covers_file() {
                crc = ReadHandle::extend_checksum(crc, d);
                if done >= handle.len
                    && let Err(e) = engine.check_read(&handle, crc).await
                {
                    data = Err(e);
                }
            }
        }
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                log_error(id, &e);
                let _ = out
                    .send(ServerFrame::StreamError {
                        id,
                        error: e.to_wire(),
                    })
                    .await;
                return;
            }
        };
        let last = done >= handle.len;
        // The bounded queue makes a slow reader slow us, not fill our memory.
        if out
            .send(ServerFrame::Chunk(Chunk { id, data, last }))
            .await
            .is_err()
            || last
        {
            return;
        }
    }
}

/// Forgets the bodies whose request has ended (its receiving side is gone).
fn forget_finished(bodies: &mut BTreeMap<u64, BodyTx>) {
    bodies.retain(|_, tx| !tx.is_closed());
}

fn log_error(id: u64, e: &EngineError) {
    match e.code() {
        ErrorCode::Internal | ErrorCode::Corrupt => {
            tracing::error!(id, error = %e, "request failed")
        }
        _ => tracing::debug!(id, error = %e, "request refused"),
    }
}

fn error_response(id: u64, code: ErrorCode, message: String) -> ServerFrame {
    ServerFrame::Response(Response {
        id,
        result: Err(WireError::new(code, message)),
    })
}

async fn goodbye(conn: &mut Writer, ctx: &Context, code: ErrorCode, message: String) {
    tracing::debug!(?code, message, "closing connection");
    let _ = send_with_timeout(
        conn,
        ctx,
        ServerFrame::Goodbye(WireError::new(code, message)),
    )
    .await;
}

async fn send_with_timeout(conn: &mut Writer, ctx: &Context, frame: ServerFrame) -> Result<(), ()> {
    match tokio::time::timeout(ctx.limits.write_timeout, conn.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn code_of(e: &ProtoError) -> ErrorCode {
    match e {
        ProtoError::FrameTooLarge { .. } => ErrorCode::TooLarge,
        ProtoError::Malformed(_) | ProtoError::Truncated(_) => ErrorCode::InvalidRequest,
        ProtoError::Io(_) => ErrorCode::Internal,
    }
}

/// Whether a length prefix is really the start of an HTTP request line.
fn looks_like_http(len: usize) -> bool {
    let Ok(len) = u32::try_from(len) else {
        return false;
    };
    let head = len.to_be_bytes();
    [
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
    ]
    .iter()
    .any(|m| head == **m)
}
