//! One multiplexed connection to one node: a writer task, a reader task that routes every
//! incoming frame to the request it answers, and a table of requests in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dfs_auth::{ClusterSecret, GreetError};
use dfs_net::{BoxStream, Transport};
use dfs_proto::{ClientCodec, ClientFrame, ErrorCode, Hello, ServerFrame, WireError};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::ClientError;

/// Frames queued for the socket; with chunks of 256 KiB this bounds a connection's send
/// buffer to 2 MiB.
const OUTBOUND_FRAMES_MAX: usize = 8;
/// Frames queued for one request (a read's chunks) before the reader waits for the caller.
pub(crate) const INBOUND_FRAMES_PER_REQUEST_MAX: usize = 8;

/// What a request's receiver gets: the node's frames for it, in order.
pub(crate) type Replies = mpsc::Receiver<ServerFrame>;

pub(crate) struct Connection {
    pub(crate) addr: String,
    out: mpsc::Sender<ClientFrame>,
    pending: Arc<Mutex<BTreeMap<u64, mpsc::Sender<ServerFrame>>>>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    /// The reader and writer tasks, stopped when the connection is dropped: a connection
    /// that went silent (a half-dead socket) is released once nobody uses it.
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connects over `transport`, says `hello` (proving `secret` if the node asks: a
    /// forwarding node), and starts the reader and writer tasks.
    pub(crate) async fn open(
        transport: &dyn Transport,
        addr: &str,
        hello: Hello,
        secret: Option<&ClusterSecret>,
        timeout: Duration,
    ) -> Result<Arc<Self>, ClientError> {
        let unavailable = |why: String| ClientError::Unavailable(format!("{addr}: {why}"));
        let stream = tokio::time::timeout(timeout, transport.connect(addr))
            .await
            .map_err(|_| unavailable("connect timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let mut framed = Framed::new(stream, ClientCodec::new());
        let welcome = tokio::time::timeout(timeout, dfs_auth::greet(&mut framed, hello, secret))
            .await
            .map_err(|_| unavailable("no answer to hello".into()))?;
        match welcome {
            Ok(w) => tracing::debug!(addr, node = w.node_id, "connected"),
            Err(GreetError::Refused(e)) => {
                return Err(if e.code.is_retryable() {
                    unavailable(e.message)
                } else {
                    ClientError::from(WireError::new(e.code, format!("{addr}: {}", e.message)))
                });
            }
            Err(GreetError::Unauthenticated(why)) => {
                return Err(ClientError::from(WireError::new(
                    ErrorCode::Unauthenticated,
                    format!("{addr}: {why}"),
                )));
            }
            Err(GreetError::Protocol(why)) => {
                return Err(ClientError::Protocol(format!("{addr}: {why}")));
            }
            Err(e @ (GreetError::Io(_) | GreetError::Closed)) => {
                return Err(unavailable(e.to_string()));
            }
        }

        let (sink, mut stream) = framed.split();
        let (out, out_rx) = mpsc::channel(OUTBOUND_FRAMES_MAX);
        let pending: Arc<Mutex<BTreeMap<u64, mpsc::Sender<ServerFrame>>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_frames(sink, out_rx, closed.clone()));
        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        let reader_addr = addr.to_owned();
        let reader = tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!(addr = reader_addr, error = %e, "connection failed");
                        break;
                    }
                };
                let id = match &frame {
                    ServerFrame::Response(r) => r.id,
                    ServerFrame::Chunk(c) => c.id,
                    ServerFrame::StreamError { id, .. } => *id,
                    ServerFrame::Goodbye(e) => {
                        tracing::debug!(addr = reader_addr, error = %e, "node closed the connection");
                        break;
                    }
                    ServerFrame::Welcome(_) | ServerFrame::Peer(_) | ServerFrame::Challenge(_) => {
                        break;
                    }
                };
                let route = reader_pending.lock().get(&id).cloned();
                if let Some(tx) = route
                    && tx.send(frame).await.is_err()
                {
                    // The caller gave up on this request; drop whatever else comes for it.
                    reader_pending.lock().remove(&id);
                }
            }
            reader_closed.store(true, Ordering::Release);
            // Dropping every route tells each waiting request the connection is gone.
            reader_pending.lock().clear();
        });
        Ok(Arc::new(Self {
            addr: addr.to_owned(),
            out,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            tasks: [writer.abort_handle(), reader.abort_handle()],
        }))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.out.is_closed()
    }

    /// Registers a new request id and returns it with the receiver of its replies.
    pub(crate) fn register(&self) -> (u64, Replies) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(INBOUND_FRAMES_PER_REQUEST_MAX);
        self.pending.lock().insert(id, tx);
        (id, rx)
    }

    /// Forgets a request (its replies, if any more come, are dropped).
    pub(crate) fn forget(&self, id: u64) {
        self.pending.lock().remove(&id);
    }

    /// Queues a frame for the socket, waiting while the queue is full.
    pub(crate) async fn send(&self, frame: ClientFrame) -> Result<(), ClientError> {
        self.out
            .send(frame)
            .await
            .map_err(|_| ClientError::Unavailable(format!("{}: connection closed", self.addr)))
    }
}

async fn write_frames(
    mut sink: futures::stream::SplitSink<Framed<BoxStream, ClientCodec>, ClientFrame>,
    mut rx: mpsc::Receiver<ClientFrame>,
    closed: Arc<AtomicBool>,
) {
    while let Some(frame) = rx.recv().await {
        if let Err(e) = sink.feed(frame).await {
            tracing::debug!(error = %e, "write failed");
            break;
        }
        if rx.is_empty()
            && let Err(e) = sink.flush().await
        {
            tracing::debug!(error = %e, "flush failed");
            break;
        }
    }
    closed.store(true, Ordering::Release);
}

/// An error for a connection that went away while a request waited.
pub(crate) fn lost(addr: &str) -> ClientError {
    ClientError::Unavailable(format!("{addr}: connection lost"))
}

/// Maps an error frame into the client's error.
pub(crate) fn from_wire(e: WireError) -> ClientError {
    if e.code == ErrorCode::Timeout {
        ClientError::Timeout(e.message)
    } else {
        ClientError::from(e)
    }
}

/// A raw multiplexed connection to one node: requests and chunks go out as frames, and each
/// request's frames come back on its own channel. What a node uses to forward its clients'
/// requests to the node that serves them; programs use [`Client`](crate::Client).
#[derive(Clone)]
pub struct RawConnection(Arc<Connection>);

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("addr", &self.0.addr)
            .finish_non_exhaustive()
    }
}

impl RawConnection {
    /// Connects to `addr` over `transport` and says `hello`, proving `secret` if the node
    /// asks for it (a node forwarding to another of its cluster), waiting at most `timeout`.
    pub async fn open(
        transport: &dyn Transport,
        addr: &str,
        hello: Hello,
        secret: Option<&ClusterSecret>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Connection::open(transport, addr, hello, secret, timeout)
            .await
            .map(Self)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Whether `self` and `other` are the same connection.
    pub fn same(&self, other: &RawConnection) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A new request id and the channel on which the frames answering it arrive (the
    /// channel closes if the connection is lost).
    pub fn register(&self) -> (u64, mpsc::Receiver<ServerFrame>) {
        self.0.register()
    }

    /// Forgets a request id (frames still coming for it are dropped).
    pub fn forget(&self, id: u64) {
        self.0.forget(id)
    }

    /// Queues a frame for the node, waiting while the queue is full.
    pub async fn send(&self, frame: ClientFrame) -> Result<(), ClientError> {
        self.0.send(frame).await
    }
}
