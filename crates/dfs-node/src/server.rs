//! [`Node`]: start-up, the accept loop and shutdown.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dfs_auth::{ClusterSecret, TokenStore};
use dfs_cluster::MapOptions;
use dfs_cluster::{ClusterMap, DataSlot};
use dfs_net::{BoxStream, Listener};
use dfs_proto::{ErrorCode, ServerCodec, ServerFrame, WireError};
use dfs_replication::{DataService, Engine, EngineConfig};
use dfs_store::{Store, StoreConfig};
use futures::SinkExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::task::TaskTracker;

use crate::connection::serve_connection;
use crate::{Limits, NodeConfig, NodeError};

/// Connections being refused at once (each gets a short `Busy` goodbye); beyond this a
/// refused connection is just closed.
const REFUSALS_IN_FLIGHT_MAX: usize = 64;
/// Longest pause after a failed `accept` (for example when out of file descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning about refused connections per this interval; the next one says
/// how many were refused meanwhile.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What every connection of a node shares.
pub(crate) struct Context {
    /// The engine, once the node has joined its cluster (client sessions wait for it).
    pub(crate) engine: watch::Receiver<Option<Arc<Engine>>>,
    /// The map, whose raft is served to peers from the start.
    pub(crate) map: ClusterMap,
    /// The data layer served to peers, once the engine exists.
    pub(crate) data: DataSlot,
    /// Connections to other nodes for forwarding requests.
    pub(crate) upstreams: crate::forward::Upstreams,
    pub(crate) limits: Limits,
    pub(crate) node_id: u64,
    pub(crate) cluster_id: u64,
    /// The cluster's secret, which peers and forwarders must prove (none: not asked).
    pub(crate) secret: Option<ClusterSecret>,
    /// The access tokens clients must present (none: every client may do everything).
    pub(crate) tokens: Option<Arc<TokenStore>>,
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
            group_commit: config.group_commit,
        };
        // The store logs what its recovery found; a damaged file stays out of service.
        let (store, _report) = dfs_net::blocking::run(move || Store::open(store_config))
            .await
            .map_err(|e| NodeError::Config(e.to_string()))??;
        let listener =
            config
                .transport
                .bind(&me.addr)
                .await
                .map_err(|source| NodeError::Listen {
                    addr: me.addr.clone(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: me.addr.clone(),
            source,
        })?;
        // With port 0 the member's address is only known now; otherwise it stays as
        // configured (a host name, or a simulated host, resolves only that way).
        let port_zero = me
            .addr
            .rsplit_once(':')
            .is_some_and(|(_, port)| port == "0");
        let members: Vec<_> = config
            .members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if m.id == config.id && port_zero {
                    m.addr = addr.to_string();
                }
                m
            })
            .collect();
        let map_members = members.iter().map(|m| (m.id, m.addr.clone())).collect();
        // Open the map and serve peers first: a group of several members elects a leader,
        // and this node receives the log, only once the members talk to each other.
        let map = ClusterMap::open_with(
            config.id,
            &map_members,
            config.cluster_id(),
            &config.data_dir.join("raft"),
            &MapOptions {
                transport: config.transport.clone(),
                election_timeout_ms: config.election_timeout_ms,
                secret: config.secret.clone(),
            },
        )
        .await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready, ready_rx) = watch::channel(None);
        let tracker = TaskTracker::new();
        let data = DataSlot::default();
        let ctx = Arc::new(Context {
            engine: ready_rx,
            map: map.clone(),
            data: data.clone(),
            upstreams: crate::forward::Upstreams::new(
                config.id,
                config.cluster_id(),
                config.limits.forward_connect_timeout,
                config.limits.forward_reply_timeout,
                config.transport.clone(),
                config.secret.clone(),
            ),
            limits: config.limits.clone(),
            node_id: config.id,
            cluster_id: config.cluster_id(),
            secret: config.secret.clone(),
            tokens: config.tokens.clone(),
            tracker: tracker.clone(),
        });
        let accept = tokio::spawn(accept_loop(listener, ctx, shutdown_rx));
        let started = async {
            map.join().await?;
            let engine = Engine::start(
                EngineConfig {
                    node_id: config.id,
                    members,
                    replication_factor: config.effective_replication_factor(),
                    body_chunk_timeout: config.limits.body_chunk_timeout,
                    cluster_id: config.cluster_id(),
                    timing: config.timing,
                    transport: config.transport.clone(),
                    secret: config.secret.clone(),
                },
                Arc::new(store),
                map.clone(),
            )
            .await?;
            Ok::<_, NodeError>(engine)
        };
        let engine = match started.await {
            Ok(engine) => engine,
            Err(e) => {
                let _ = shutdown.send(true);
                let _ = accept.await;
                // Release the map's storage so a retry in this process can open it.
                map.shutdown().await;
                return Err(e);
            }
        };
        data.set(Arc::new(DataService(engine.clone())));
        let _ = ready.send(Some(engine.clone()));
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

    /// Waits until the node can no longer take part in the cluster because its cluster
    /// map stopped on a fatal error (its raft log could not be written, for example), and
    /// answers why. A program running the node should then shut it down and exit with an
    /// error, so that a supervisor restarts it; `dfs-server` does.
    pub async fn failed(&self) -> String {
        self.engine.map().stopped().await
    }

    /// The node's engine, for embedding programs that want to call it directly.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting, closes every connection with a goodbye, and waits (up to the
    /// shutdown grace) for requests in progress to finish.
    pub async fn shutdown(self) {
        // No lease first: a node whose port refuses connections must not act as primary.
        self.engine.begin_shutdown();
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
    listener: Box<dyn Listener>,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(ctx.limits.connections_max));
    let per_address = Arc::new(PerAddress::new(ctx.limits.connections_per_address_max));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
    let mut warnings = RefusalWarnings::default();
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
        // The address's slot first: a connection refused for the total holds neither.
        let admitted = match per_address.clone().try_acquire(peer.ip()) {
            None => Err(Refusal::PerAddress),
            Some(slot) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Ok((slot, permit)),
                Err(_) => Err(Refusal::Total),
            },
        };
        match admitted {
            Ok((slot, permit)) => {
                let ctx2 = ctx.clone();
                let shutdown = shutdown.clone();
                // A TLS handshake, if any, runs on the connection's task, not here.
                let secured = listener.secure(socket);
                ctx.tracker.spawn(async move {
                    serve_connection(secured, peer, ctx2, shutdown).await;
                    drop(permit);
                    drop(slot);
                });
            }
            Err(why) => {
                let message = match why {
                    Refusal::Total => format!(
                        "the node serves at most {} connections; try again later",
                        ctx.limits.connections_max
                    ),
                    Refusal::PerAddress => format!(
                        "the node serves at most {} connections per source address, and {} \
                         has that many open; try again later",
                        ctx.limits.connections_per_address_max,
                        peer.ip()
                    ),
                };
                warnings.refused(peer, &message);
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    let secured = listener.secure(socket);
                    tokio::spawn(async move {
                        refuse(secured, message).await;
                        drop(refusal);
                    });
                }
            }
        }
    }
    tracing::debug!("accept loop stopped");
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The node has [`Limits::connections_max`] connections open.
    Total,
    /// The source address has [`Limits::connections_per_address_max`] open.
    PerAddress,
}

/// Open connections per source IP address. Only addresses with a connection open have an
/// entry (one at zero is removed), so it holds at most [`Limits::connections_max`] of them.
struct PerAddress {
    max: usize,
    open: Mutex<BTreeMap<IpAddr, usize>>,
}

impl PerAddress {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` if it has the most it may.
    fn try_acquire(self: Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // An IPv4 client of a dual-stack socket shows as `::ffff:a.b.c.d`: the same host.
        let ip = ip.to_canonical();
        {
            let mut open = self.open.lock();
            let n = open.get(&ip).copied().unwrap_or(0);
            if n >= self.max {
                return None;
            }
            open.insert(ip, n + 1);
        }
        Some(AddressSlot { table: self, ip })
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().len()
    }
}

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Warns about refused connections at most once per [`REFUSAL_WARNING_INTERVAL`], so a
/// flood of them makes a few log lines, not one each.
#[derive(Default)]
struct RefusalWarnings {
    last: Option<Instant>,
    /// Refused since the last warning, unreported.
    unreported: u64,
}

impl RefusalWarnings {
    /// Counts a refusal, and warns unless it did so less than the interval ago; answers
    /// whether it warned.
    fn refused(&mut self, peer: SocketAddr, why: &str) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < REFUSAL_WARNING_INTERVAL)
        {
            self.unreported += 1;
            return false;
        }
        tracing::warn!(
            %peer,
            refused_since_last_warning = self.unreported,
            "refused a connection: {why}"
        );
        self.last = Some(now);
        self.unreported = 0;
        true
    }
}

/// Tells an over-limit client why it is closed, without waiting long for it.
async fn refuse(secured: BoxFuture<'static, std::io::Result<BoxStream>>, message: String) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let Ok(socket) = secured.await else { return };
        let mut framed = Framed::new(socket, ServerCodec::new());
        let bye = ServerFrame::Goodbye(WireError::new(ErrorCode::Busy, message));
        let _ = framed.send(bye).await;
    })
    .await;
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn address_slots_are_counted_per_ip_and_forgotten_at_zero() {
        let table = Arc::new(PerAddress::new(2));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = table.clone().try_acquire(a).expect("first");
        // The same host over IPv6's mapped form counts as the same address.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        let a2 = table.clone().try_acquire(mapped).expect("second");
        assert!(table.clone().try_acquire(a).is_none(), "third refused");
        let b1 = table.clone().try_acquire(b).expect("another address");
        assert_eq!(table.addresses(), 2);
        drop(a1);
        let a3 = table.clone().try_acquire(a).expect("a freed slot");
        drop((a2, a3, b1));
        assert_eq!(table.addresses(), 0, "no entry outlives its connections");
    }

    #[test]
    fn a_flood_of_refusals_makes_one_warning_per_interval() {
        let mut warnings = RefusalWarnings::default();
        let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
        assert!(warnings.refused(peer, "first"));
        for _ in 0..1000 {
            assert!(!warnings.refused(peer, "flood"));
        }
        assert_eq!(warnings.unreported, 1000);
        // An interval later, the next refusal warns again (and reports the count).
        let earlier = warnings
            .last
            .and_then(|t| t.checked_sub(REFUSAL_WARNING_INTERVAL));
        warnings.last = earlier;
        assert!(warnings.refused(peer, "later"));
        assert_eq!(warnings.unreported, 0);
    }
}
