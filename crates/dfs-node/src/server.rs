//! [`Node`]: start-up, the accept loop and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dfs_cluster::ClusterMap;
use dfs_proto::{ErrorCode, ServerCodec, ServerFrame, WireError};
use dfs_replication::{Engine, EngineConfig};
use dfs_store::{Store, StoreConfig};
use futures::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::task::TaskTracker;

use crate::connection::serve_connection;
use crate::{Limits, NodeConfig, NodeError};

/// Connections being refused at once (each gets a short `Busy` goodbye); beyond this a
/// refused connection is just closed.
const REFUSALS_IN_FLIGHT_MAX: usize = 64;
/// Longest pause after a failed `accept` (for example when out of file descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What every connection of a node shares.
pub(crate) struct Context {
    pub(crate) engine: Arc<Engine>,
    pub(crate) limits: Limits,
    pub(crate) node_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) tracker: TaskTracker,
}

/// A running node. Dropping it without [`shutdown`](Node::shutdown) leaves it running
/// until the runtime ends.
#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    tracker: TaskTracker,
    grace: Duration,
}

impl Node {
    /// Opens (and recovers) the store, binds the node's address and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let me = config.validate()?.clone();
        let store_config = StoreConfig {
            dir: config.data_dir.join("store"),
            fsync: config.fsync,
        };
        // The store logs what its recovery found; a damaged file stays out of service.
        let (store, _report) = tokio::task::spawn_blocking(move || Store::open(store_config))
            .await
            .map_err(|e| NodeError::Config(format!("store task failed: {e}")))??;
        let listener = TcpListener::bind(&me.addr)
            .await
            .map_err(|source| NodeError::Listen {
                addr: me.addr.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: me.addr.clone(),
            source,
        })?;
        // With port 0 the member's address is only known now.
        let members: Vec<_> = config
            .members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if m.id == config.id {
                    m.addr = addr.to_string();
                }
                m
            })
            .collect();
        let map_members = members.iter().map(|m| (m.id, m.addr.clone())).collect();
        let map = ClusterMap::start(
            config.id,
            &map_members,
            config.cluster_id(),
            &config.data_dir.join("raft"),
        )
        .await?;
        let map_for_shutdown = map.clone();
        let engine = Engine::start(
            EngineConfig {
                node_id: config.id,
                members,
                replication_factor: config.effective_replication_factor(),
                body_chunk_timeout: config.limits.body_chunk_timeout,
            },
            Arc::new(store),
            map,
        )
        .await;
        let engine = match engine {
            Ok(e) => Arc::new(e),
            Err(e) => {
                // Release the map's storage so a retry in this process can open it.
                map_for_shutdown.shutdown().await;
                return Err(e.into());
            }
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let ctx = Arc::new(Context {
            engine: engine.clone(),
            limits: config.limits.clone(),
            node_id: config.id,
            cluster_id: config.cluster_id(),
            tracker: tracker.clone(),
        });
        let accept = tokio::spawn(accept_loop(listener, ctx, shutdown_rx));
        tracing::info!(node = config.id, %addr, data_dir = %config.data_dir.display(), "serving");
        Ok(Node {
            addr,
            engine,
            shutdown,
            accept,
            tracker,
            grace: config.limits.shutdown_grace,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's engine, for embedding programs that want to call it directly.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, closes every connection with a goodbye, and waits (up to the
    /// shutdown grace) for requests in progress to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tracker.len(),
                "requests still running after the shutdown grace"
            );
        }
        self.engine.shutdown().await;
        tracing::info!(addr = %self.addr, "stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(ctx.limits.connections_max));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx2 = ctx.clone();
                let shutdown = shutdown.clone();
                ctx.tracker.spawn(async move {
                    serve_connection(socket, peer, ctx2, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%peer, max = ctx.limits.connections_max, "connection limit reached");
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    let max = ctx.limits.connections_max;
                    tokio::spawn(async move {
                        refuse(socket, max).await;
                        drop(refusal);
                    });
                }
            }
        }
    }
    tracing::debug!("accept loop stopped");
}

/// Tells an over-limit client why it is closed, without waiting long for it.
async fn refuse(socket: TcpStream, max: usize) {
    let mut framed = Framed::new(socket, ServerCodec::new());
    let bye = ServerFrame::Goodbye(WireError::new(
        ErrorCode::Busy,
        format!("the node serves at most {max} connections; try again later"),
    ));
    let _ = tokio::time::timeout(Duration::from_secs(1), framed.send(bye)).await;
}
