//! The engine's background work: leases, failure detection on the map's leader, restoring
//! missing replicas, and removing copies the map no longer gives this node.

use std::sync::Arc;
use std::time::Duration;

use dfs_cluster::{MapCommand, MapRole};
use dfs_net::Transport;
use dfs_placement::{NodeId, Placement, place};
use dfs_store::StoreError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Engine;
use crate::engine::blocking;
use crate::wire::{DataReply, DataRpc};

/// How long a copy received as a whole is kept although the map does not list this node
/// for it yet (its primary commits the new placement right after the copy).
const INSTALL_GRACE: Duration = Duration::from_secs(60);
/// How often copies the map no longer gives this node are looked for.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(1);
/// How long the leader's probe of a silent node's port may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Starts the background tasks of `engine`; they hold it weakly and end with it.
pub(crate) fn spawn_all(engine: &Arc<Engine>) -> Vec<JoinHandle<()>> {
    let timing = engine.config.timing;
    vec![
        every(engine, timing.lease_renew, |e| async move {
            e.renew_lease().await
        }),
        every(engine, timing.lease_renew, |e| async move {
            e.watch_nodes().await
        }),
        every(engine, timing.repair_interval, |e| async move {
            e.repair().await
        }),
        every(
            engine,
            CLEANUP_INTERVAL,
            |e| async move { e.clean_up().await },
        ),
        Engine::spawn_scrubs(engine, timing.scrub_interval),
    ]
}

/// Runs `work` every `period` while the engine exists.
fn every<F, Fut>(engine: &Arc<Engine>, period: Duration, work: F) -> JoinHandle<()>
where
    F: Fn(Arc<Engine>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = weak.upgrade() else { break };
            work(engine).await;
        }
    })
}

impl Engine {
    /// Asks the map's leader for a lease (itself, if it leads). The lease runs from
    /// before the request was sent, and starts only once this node's map has applied
    /// what the leader had committed when it granted it.
    async fn renew_lease(&self) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let me = self.config.node_id;
        // Declared down while alive (silent too long, or its port looked closed): register
        // again. It left every replica set it shared; its files come back through repair.
        if self.map.read(|s| s.nodes.get(&me).map(|n| n.up)) == Some(false) {
            tracing::warn!(node = me, "the map has this node down; registering again");
            if let Err(e) = self.map.join().await {
                tracing::warn!(error = %e, "could not register again");
                return;
            }
        }
        let asked = Instant::now();
        let until = asked + self.config.timing.lease;
        let drops = self.lease.lock().drops;
        // Bounded by the lease itself: a hung leader must not keep this node from asking
        // the next one (which counts this node's silence from when it began to lead).
        let ask = async {
            match self.map.status().leader {
                Some(leader) if leader == me => self.map.read_index().await.is_ok(),
                Some(leader) => {
                    let rpc = DataRpc::Lease { from: me };
                    match self
                        .call_within(leader, &rpc, self.config.timing.lease)
                        .await
                    {
                        Ok(DataReply::Lease(index)) => {
                            self.map.wait_applied(index, until).await.is_ok()
                        }
                        _ => false,
                    }
                }
                None => false,
            }
        };
        let granted = tokio::time::timeout_at(until, ask).await.unwrap_or(false);
        if granted && !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let mut lease = self.lease.lock();
            // Dropped since this renewal asked: the grant may predate what made the node
            // drop it (see `Engine::propose`).
            if lease.drops == drops && lease.until.is_none_or(|l| l < until) {
                lease.until = Some(until);
            }
        }
    }

    /// On the leader: grants `from` its lease if this node still leads (confirmed with a
    /// quorum), and notes that `from` is alive.
    pub(crate) async fn grant_lease(&self, from: NodeId) -> DataReply {
        let asked = Instant::now();
        match self.map.read_index().await {
            Ok(index) => {
                self.heard.lock().insert(from, asked);
                DataReply::Lease(index)
            }
            Err(e) => DataReply::Failed(e.to_string()),
        }
    }

    /// On the leader: declares down the nodes that stopped asking for leases: at once if
    /// their port refuses connections (no process there holds a lease), otherwise after
    /// the failure timeout (their lease has surely run out by then).
    async fn watch_nodes(&self) {
        let me = self.config.node_id;
        let status = self.map.status();
        if status.role != MapRole::Leader || status.leader != Some(me) {
            self.heard.lock().clear();
            return;
        }
        // What was heard in an earlier term says nothing of leases granted since by other
        // leaders: silence counts from the start of this term's leadership.
        {
            let mut heard_term = self.heard_term.lock();
            if *heard_term != status.term {
                *heard_term = status.term;
                self.heard.lock().clear();
            }
        }
        let now = Instant::now();
        let timing = self.config.timing;
        let up: Vec<(NodeId, String, u64)> = self.map.read(|s| {
            s.nodes
                .iter()
                .filter(|(id, n)| n.up && **id != me)
                .map(|(id, n)| (*id, n.addr.clone(), n.incarnation))
                .collect()
        });
        for (node, addr, incarnation) in up {
            // A node never heard from since this node began to lead counts from then.
            let last = *self.heard.lock().entry(node).or_insert(now);
            let silent = now.duration_since(last);
            if silent < timing.probe_after {
                continue;
            }
            let down = silent >= timing.failure_timeout
                || refuses(self.config.transport.as_ref(), &addr).await;
            if !down {
                continue;
            }
            tracing::warn!(
                node,
                silent_ms = silent.as_millis() as u64,
                "declaring a node down"
            );
            // Named by incarnation: had the node restarted (registered again) since this
            // look at the map, it would have a fresh lease and must not be declared down.
            // Only as the leader of this term: a proposal left over from a term this node
            // lost must not be carried to the next leader, whose leases it knows nothing of.
            let command = MapCommand::NodeDown {
                id: node,
                incarnation,
            };
            match self.map.propose_as_leader(command).await {
                Ok(_) => {
                    self.heard.lock().remove(&node);
                }
                Err(e) => tracing::warn!(node, error = %e, "could not declare a node down"),
            }
        }
    }

    /// As primary: gives each file with fewer than R replicas back a node of its home (its
    /// rendezvous placement over every known node) that is up again, by copying the file
    /// to it and then adding it to the replica set.
    async fn repair(&self) {
        if !self.holds_lease() {
            return;
        }
        let me = self.config.node_id;
        let r = self.config.replication_factor;
        let wanted: Vec<(String, Placement, NodeId)> = self.map.read(|s| {
            let all: Vec<NodeId> = s.nodes.keys().copied().collect();
            s.files
                .iter()
                .filter(|(_, p)| p.primary() == Some(me) && p.replicas.len() < r)
                .filter_map(|(name, p)| {
                    let home = place(name, &all, r).ok()?;
                    let node = home
                        .into_iter()
                        .find(|n| !p.holds(*n) && s.nodes.get(n).is_some_and(|i| i.up))?;
                    Some((name.to_owned(), p.clone(), node))
                })
                .collect()
        });
        for (name, _, node) in wanted {
            if let Err(e) = self.add_replica(&name, node).await {
                tracing::debug!(name, node, error = %e, "could not restore a replica yet");
            }
        }
    }

    /// Copies `name` to `node` and adds it to the replica set, under the file's write lock
    /// (no write can slip between the copy and the new placement).
    async fn add_replica(&self, name: &str, node: NodeId) -> Result<(), crate::EngineError> {
        if let Some(p) = self.map.lookup(name) {
            self.redirect_unless_primary(&p)?;
            self.drop_transfers_of(p.file_id);
        }
        let _lock = self.locks.write(name.to_owned()).await;
        let placement = self.primary_placement(name).await?;
        if placement.holds(node) || placement.replicas.len() >= self.config.replication_factor {
            return Ok(());
        }
        self.ensure_synced(name, &placement).await?;
        self.install_to(node, name, &placement)
            .await
            .map_err(|o| crate::EngineError::Unavailable(format!("copy to node {node}: {o:?}")))?;
        let mut replicas = placement.replicas.clone();
        replicas.push(node);
        let command = MapCommand::SetReplicas {
            name: name.to_owned(),
            file_id: placement.file_id,
            expected_epoch: placement.epoch,
            replicas,
        };
        match self.propose(command).await? {
            dfs_cluster::MapResponse::Updated(p) => {
                self.synced.lock().insert(p.file_id, p.epoch);
                tracing::info!(name, node, epoch = p.epoch, "restored a replica");
                Ok(())
            }
            other => Err(crate::EngineError::Unavailable(format!(
                "the placement moved on: {other:?}"
            ))),
        }
    }

    /// Removes local copies of files the map does not give this node (deleted, or this
    /// node left their replica set), except copies received lately whose placement is still
    /// being committed. Never serves such a copy meanwhile: only a primary serves.
    async fn clean_up(&self) {
        self.reap_transfers();
        let me = self.config.node_id;
        let now = Instant::now();
        self.installed
            .lock()
            .retain(|_, at| now.duration_since(*at) < INSTALL_GRACE);
        for meta in self.store.files() {
            // Kept: copies the map gives this node, and (never served) copies of files
            // whose every listed replica is down, which may be the last copy left.
            let listed = |e: &Engine| {
                e.map.read(|s| {
                    s.files.get(&meta.name).is_some_and(|p| {
                        let down = |r: &NodeId| s.nodes.get(r).is_none_or(|n| !n.up);
                        p.file_id == meta.id && (p.holds(me) || p.replicas.iter().all(down))
                    })
                })
            };
            if listed(self) || self.installed.lock().contains_key(&meta.id) {
                continue;
            }
            let _lock = self.locks.write(meta.name.clone()).await;
            if listed(self) || self.installed.lock().contains_key(&meta.id) {
                continue;
            }
            let (store, id) = (self.store.clone(), meta.id);
            match blocking(move || store.delete(id)).await {
                Ok(()) | Err(crate::EngineError::Store(StoreError::NotFound(_))) => {
                    self.synced.lock().remove(&id);
                    tracing::info!(
                        name = meta.name,
                        file_id = id,
                        "removed a copy the map no longer gives this node"
                    );
                }
                Err(e) => tracing::debug!(name = meta.name, error = %e, "could not remove a copy"),
            }
        }
    }
}

/// Whether a connection to `addr` is refused (nothing listens there).
async fn refuses(transport: &dyn Transport, addr: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, transport.connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}
