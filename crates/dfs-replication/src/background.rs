//! The engine's background work: leases, failure detection on the map's leader, restoring
//! missing replicas, and removing copies the map no longer gives this node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dfs_cluster::{ClusterState, MapCommand, MapRole};
use dfs_net::Transport;
use dfs_placement::{FileId, NodeId, place};
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
/// Most copies a primary tries in one repair round (one at a time): a node that died with
/// many files is made up for a few files per round, so the copies do not flood the network
/// or hold many files' locks, and a round ends soon enough to see a home node that returns.
pub(crate) const REPAIR_COPIES_PER_ROUND: usize = 8;

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
        every(engine, crate::locking::LOCK_EXPIRY_TICK, |e| async move {
            e.expire_locks().await
        }),
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

    /// On the leader: declares down the nodes that stopped asking for leases, once their
    /// lease has surely run out: after `probe_after` if their port refuses connections (a
    /// process that died), otherwise after the failure timeout.
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

    /// As primary: gives each file with fewer than R replicas a new one. A node of the
    /// file's home (its rendezvous placement over every known node) that is up again gets it
    /// back at once; once the file has been short for [`Timing::rereplicate_after`] with no
    /// home node up to take it, the best-ranked live node not holding it gets it (rendezvous
    /// over the up nodes). Each copy is made under the file's write lock and committed with
    /// `SetReplicas` at the epoch it was made at (see `add_replica`); at most
    /// [`REPAIR_COPIES_PER_ROUND`] are tried per round, home nodes first, one at a time, so a
    /// dead node's many files are copied a few at a time rather than all at once.
    ///
    /// "Short for longer than" is measured here, on the primary, with `Engine::short_since`:
    /// the map records no time (its commands are pure), and a local clock only errs on the
    /// late side (a new primary starts counting anew), never on the unsafe one; adding a
    /// replica is safe at any time anyway.
    ///
    /// [`Timing::rereplicate_after`]: crate::Timing::rereplicate_after
    async fn repair(&self) {
        let now = Instant::now();
        self.note_down_nodes(now);
        let me = self.config.node_id;
        let r = self.config.replication_factor;
        let after = self.config.timing.rereplicate_after;
        let plan = self.map.read(|s| {
            let mut short_since = self.short_since.lock();
            plan_repairs(s, me, r, &mut short_since, now, after)
        });
        if plan.newly_short > 0 {
            tracing::info!(
                newly_short = plan.newly_short,
                short = plan.short,
                rereplicate_after_ms = after.as_millis() as u64,
                "files of this primary have fewer than R = {r} replicas: a home node that is \
                 up gets them back at once, another live node once short for longer than \
                 the delay"
            );
        }
        if plan.repairs.is_empty() || !self.holds_lease() {
            return;
        }
        let elsewhere = plan
            .repairs
            .iter()
            .filter(|p| p.kind == RepairKind::Elsewhere)
            .count();
        if elsewhere > 0 {
            // Every round while a copy keeps failing: at debug, the successes are at info.
            tracing::debug!(
                short = plan.short,
                overdue = elsewhere,
                this_round = elsewhere
                    .min(REPAIR_COPIES_PER_ROUND.saturating_sub(plan.repairs.len() - elsewhere)),
                "re-replicating files short of a replica onto other live nodes"
            );
        }
        let (mut tried, mut copied) = (0usize, 0usize);
        'files: for repair in &plan.repairs {
            for &node in &repair.candidates {
                if tried >= REPAIR_COPIES_PER_ROUND {
                    break 'files;
                }
                tried += 1;
                match self.add_replica(&repair.name, node, repair.kind).await {
                    Ok(()) => {
                        copied += 1;
                        break;
                    }
                    Err(e) => tracing::debug!(
                        name = repair.name,
                        node,
                        kind = repair.kind.as_str(),
                        error = %e,
                        "could not restore a replica yet"
                    ),
                }
            }
        }
        if copied > 0 {
            // Progress: how many of this primary's files are still short after the round.
            let left = self.map.read(|s| {
                s.files
                    .iter()
                    .filter(|(_, p)| p.primary() == Some(me) && p.replicas.len() < r)
                    .count()
            });
            tracing::info!(copied, tried, still_short = left, "repair round done");
        }
    }

    /// Notes which nodes the map has down, and returns how long this node has seen each of
    /// them down (from the first call that found it down; a node that is up again is
    /// forgotten).
    pub(crate) fn note_down_nodes(&self, now: Instant) -> HashMap<NodeId, Duration> {
        let down: Vec<NodeId> = self.map.read(|s| {
            s.nodes
                .iter()
                .filter(|(_, n)| !n.up)
                .map(|(id, _)| *id)
                .collect()
        });
        let mut since = self.down_since.lock();
        since.retain(|id, _| down.contains(id));
        down.into_iter()
            .map(|id| {
                let at = *since.entry(id).or_insert(now);
                (id, now.saturating_duration_since(at))
            })
            .collect()
    }

    /// Copies `name` to `node` and adds it to the replica set, under the file's write lock
    /// (no write can slip between the copy and the new placement). `kind` says why, for the
    /// log.
    async fn add_replica(
        &self,
        name: &str,
        node: NodeId,
        kind: RepairKind,
    ) -> Result<(), crate::EngineError> {
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
                tracing::info!(
                    name,
                    node,
                    kind = kind.as_str(),
                    epoch = p.epoch,
                    replicas = ?p.replicas,
                    "restored a replica"
                );
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
    ///
    /// A copy received lately (or found at start-up for a file whose replica set does not
    /// list this node) waits out its grace only while the map could still list this node
    /// for it: once the map has the file gone, or whole (R replicas) without this node, no
    /// pending `SetReplicas` can add it (a replica is added only to a set of fewer than R,
    /// named by its epoch, and the epoch has moved on since), so the copy goes at once.
    /// This is how a node that returns after its files were re-replicated elsewhere drops
    /// its stale copies within a clean-up round or two.
    async fn clean_up(&self) {
        self.reap_transfers();
        let me = self.config.node_id;
        let r = self.config.replication_factor;
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
            let awaited = |e: &Engine| {
                e.installed.lock().contains_key(&meta.id)
                    && e.map.read(|s| {
                        s.files
                            .get(&meta.name)
                            .is_some_and(|p| p.file_id == meta.id && p.replicas.len() < r)
                    })
            };
            if listed(self) || awaited(self) {
                continue;
            }
            let _lock = self.locks.write(meta.name.clone()).await;
            if listed(self) || awaited(self) {
                continue;
            }
            self.installed.lock().remove(&meta.id);
            let (store, id) = (self.store.clone(), meta.id);
            match blocking(move || store.delete(id)).await {
                Ok(()) | Err(crate::EngineError::Store(StoreError::NotFound(_))) => {
                    self.synced.lock().remove(&id);
                    tracing::info!(
                        node = self.config.node_id,
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

/// Why a replica is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepairKind {
    /// Back onto a node of the file's home placement that is up again.
    Home,
    /// Onto another live node: the file has been short for longer than
    /// `Timing::rereplicate_after` with no home node up to take it.
    Elsewhere,
}

impl RepairKind {
    fn as_str(self) -> &'static str {
        match self {
            RepairKind::Home => "home",
            RepairKind::Elsewhere => "elsewhere",
        }
    }
}

/// One file a repair round should give a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// The file.
    pub(crate) name: String,
    /// The nodes to copy it to, best first (the first that takes it is enough).
    pub(crate) candidates: Vec<NodeId>,
    /// Why.
    pub(crate) kind: RepairKind,
}

/// What a repair round does, decided from the map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepairPlan {
    /// The files to give a replica: every `Home` one first, then the `Elsewhere` ones
    /// (each group in name order).
    pub(crate) repairs: Vec<Repair>,
    /// Files of this primary with fewer than R replicas.
    pub(crate) short: usize,
    /// Of those, the ones first seen short in this round.
    pub(crate) newly_short: usize,
}

/// Decides which of the files whose primary is `me` get a new replica, and where (see
/// `Engine::repair`). Keeps `short_since` (when each file was first seen short) up to
/// date: files that are whole again, gone, or no longer `me`'s leave it. Pure apart from
/// `short_since`, so it is tested on hand-made maps.
pub(crate) fn plan_repairs(
    state: &ClusterState,
    me: NodeId,
    r: usize,
    short_since: &mut HashMap<FileId, Instant>,
    now: Instant,
    rereplicate_after: Duration,
) -> RepairPlan {
    let all: Vec<NodeId> = state.nodes.keys().copied().collect();
    let up = state.up_nodes();
    let mut plan = RepairPlan::default();
    let mut still_short = HashSet::new();
    let mut elsewhere = Vec::new();
    for (name, p) in state.files.iter() {
        if p.primary() != Some(me) || p.replicas.len() >= r {
            continue;
        }
        plan.short += 1;
        still_short.insert(p.file_id);
        let since = *short_since.entry(p.file_id).or_insert_with(|| {
            plan.newly_short += 1;
            now
        });
        // Every up node, best first. Rendezvous weights do not depend on who else is a
        // member, so the up nodes of the home placement (the best R of all) come first.
        let Ok(ranked) = place(name, &up, up.len()) else {
            continue;
        };
        let home = place(name, &all, r).unwrap_or_default();
        let free = ranked.into_iter().filter(|n| !p.holds(*n));
        if now.saturating_duration_since(since) >= rereplicate_after {
            let candidates: Vec<NodeId> = free.collect();
            match candidates.first() {
                Some(first) if home.contains(first) => plan.repairs.push(Repair {
                    name: name.to_owned(),
                    candidates,
                    kind: RepairKind::Home,
                }),
                Some(_) => elsewhere.push(Repair {
                    name: name.to_owned(),
                    candidates,
                    kind: RepairKind::Elsewhere,
                }),
                None => {}
            }
        } else {
            let candidates: Vec<NodeId> = free.filter(|n| home.contains(n)).collect();
            if !candidates.is_empty() {
                plan.repairs.push(Repair {
                    name: name.to_owned(),
                    candidates,
                    kind: RepairKind::Home,
                });
            }
        }
    }
    short_since.retain(|id, _| still_short.contains(id));
    plan.repairs.extend(elsewhere);
    plan
}

/// Whether a connection to `addr` is refused (nothing listens there).
async fn refuses(transport: &dyn Transport, addr: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, transport.connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}
