//! [`Engine`]: the operations of the data model on top of the map, the locks and the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use dfs_cluster::{ClusterMap, ClusterState, MapCommand, MapResponse, MapRole, PeerNetwork};
use dfs_net::SharedTransport;
use dfs_placement::{NodeId, Placement, place};
use dfs_proto::{
    ClusterStatus, FileInfo, ListEntry, Name, NodeRole, NodeStatus, OpTag, TableEntry, WriteAck,
    validate_prefix,
};
use dfs_store::{
    DedupKey, FileId, FileMeta, LockManager, Snapshot, Store, StoreError, WriteOutcome,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{BodyStream, EngineError};

/// Most create/delete results remembered for retries (writes keep theirs in the store,
/// per file). A retry older than this many newer creates and deletes is applied again.
const RECENT_OPS_MAX: usize = 4096;

/// A member of the cluster as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Where it serves clients and peers.
    pub addr: String,
}

/// What an engine needs to know about its cluster.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node.
    pub node_id: NodeId,
    /// Every member, this node included.
    pub members: Vec<Member>,
    /// Replicas per new file (1..=members).
    pub replication_factor: usize,
    /// How long to wait for each chunk of a streamed body.
    pub body_chunk_timeout: Duration,
    /// The cluster's id (in the hello of the engine's peer connections).
    pub cluster_id: u64,
    /// Leases and failure detection.
    pub timing: Timing,
    /// What the engine's peer connections (and the leader's port probes) are made with.
    pub transport: SharedTransport,
}

/// The clocks of leases, failure detection and repair.
///
/// Safety needs `failure_timeout > lease × (1 + clock drift) + margin`: the leader declares
/// a silent node down only once its lease (counted on its own clock from before it asked)
/// has surely run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a granted lease lets a node act as primary, from when it asked.
    pub lease: Duration,
    /// How often a node renews its lease (and so tells the leader it lives).
    pub lease_renew: Duration,
    /// Silence after which the leader probes a node's port: a refused connection means
    /// no process listens there (and none holds a lease), so the node is declared down at
    /// once.
    pub probe_after: Duration,
    /// Silence after which the leader declares a node down even if its port answers.
    pub failure_timeout: Duration,
    /// How long a node waits for another's answer to one data message.
    pub peer_timeout: Duration,
    /// How often each primary looks for files missing a replica that can be restored.
    pub repair_interval: Duration,
    /// How long a file may run with fewer than R replicas, while none of its home nodes
    /// (its rendezvous placement over every member) is up to take it back, before its
    /// primary copies it to another live node (`--rereplicate-after`).
    ///
    /// Counted on the file's primary, from the first repair round in which that primary
    /// saw the file short: a node that becomes primary later (a failover) starts its own
    /// count, which only delays the copy. A home node that is up gets the file back at
    /// once, whatever this says.
    pub rereplicate_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(1000),
            lease_renew: Duration::from_millis(200),
            probe_after: Duration::from_millis(300),
            failure_timeout: Duration::from_millis(3000),
            peer_timeout: Duration::from_secs(5),
            repair_interval: Duration::from_millis(500),
            rereplicate_after: Duration::from_secs(30),
        }
    }
}

/// How a write changes a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteMode {
    /// Add the body at the end.
    Append,
    /// Replace the content with the body.
    Put,
}

/// A read in progress: a consistent snapshot of the file and the range to send.
#[derive(Debug, Clone)]
pub struct ReadHandle {
    /// The file as of the snapshot.
    pub info: FileInfo,
    /// First byte to send.
    pub offset: u64,
    /// Bytes to send.
    pub len: u64,
    snapshot: Arc<Snapshot>,
}

impl ReadHandle {
    /// Reads up to `max` bytes of the range starting `done` bytes into it.
    pub async fn chunk(&self, done: u64, max: usize) -> Result<Bytes, EngineError> {
        let want = (self.len.saturating_sub(done)).min(max as u64) as usize;
        if want == 0 {
            return Ok(Bytes::new());
        }
        let snapshot = self.snapshot.clone();
        let at = self.offset + done;
        blocking(move || {
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match snapshot.read_at(at + filled as u64, &mut buf[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled < want {
                return Err(StoreError::Corrupt {
                    id: snapshot.meta().id,
                    reason: format!("content ends {} bytes early", want - filled),
                });
            }
            Ok(Bytes::from(buf))
        })
        .await
    }
}

/// Executes file operations for one node: as the primary of a file it orders, applies and
/// forwards them; as another replica it applies what the primary forwards; elsewhere it
/// names the primary to forward to ([`EngineError::Redirect`]).
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) map: ClusterMap,
    pub(crate) locks: LockManager<String>,
    recent: Mutex<RecentOps>,
    /// Connections to the other nodes' data layers (apart from the map's).
    pub(crate) peers: PeerNetwork,
    /// Until when this node may act as a primary.
    pub(crate) lease: Mutex<Option<Instant>>,
    /// Set when the node starts to shut down: it acts as primary no more.
    pub(crate) stopping: AtomicBool,
    /// Files whose replicas this node (as primary) has brought to its own copy, and at
    /// which epoch.
    pub(crate) synced: Mutex<HashMap<FileId, u64>>,
    /// Transfers from primaries in progress here.
    pub(crate) transfers: Mutex<HashMap<u64, crate::replica::Staged>>,
    /// Whole copies received lately, and at start-up the copies of live files whose
    /// replica sets do not list this node: kept for a grace period, as the map may be about
    /// to list this node for them.
    pub(crate) installed: Mutex<HashMap<FileId, Instant>>,
    /// On the leader: when each node last asked for its lease, in term `heard_term`.
    pub(crate) heard: Mutex<HashMap<NodeId, Instant>>,
    /// The map term `heard` was collected in.
    pub(crate) heard_term: Mutex<u64>,
    /// As primary: the files with fewer than R replicas, and when this node first saw each
    /// of them short (see [`Timing::rereplicate_after`]). Kept by the repair rounds: a file
    /// leaves it once it is whole again, deleted, or no longer this node's.
    pub(crate) short_since: Mutex<HashMap<FileId, Instant>>,
    /// The nodes the map has down, and since when this node has seen each one down (for
    /// `status`).
    pub(crate) down_since: Mutex<HashMap<NodeId, Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node_id", &self.config.node_id)
            .field("files", &self.map.read(|s| s.files.len()))
            .finish()
    }
}

impl Engine {
    /// An engine over `store` and the cluster `map`. Brings the store in line with the map
    /// first: a store file whose id the map no longer has is a leftover of a delete
    /// interrupted by a crash (the map commits first) and is removed (a copy of a live file
    /// whose replica set does not list this node is left to the clean-up), except when the map
    /// was created by this start, when the store's files are adopted into it (a data
    /// directory from the one-node release, which kept names only in the store).
    ///
    /// Then starts the background work: renewing the lease, on the leader watching the
    /// other nodes, restoring missing replicas of the files this node is primary of, and
    /// removing copies the map no longer gives this node.
    pub async fn start(
        config: EngineConfig,
        store: Arc<Store>,
        map: ClusterMap,
    ) -> Result<Arc<Self>, EngineError> {
        if config.replication_factor == 0 || config.replication_factor > config.members.len() {
            return Err(EngineError::InvalidRequest(format!(
                "replication factor {} must be between 1 and the {} members",
                config.replication_factor,
                config.members.len()
            )));
        }
        let peers = PeerNetwork::new(config.node_id, config.cluster_id, config.transport.clone());
        let engine = Arc::new(Self {
            config,
            store,
            map,
            locks: LockManager::new(),
            recent: Mutex::new(RecentOps::default()),
            peers,
            lease: Mutex::new(None),
            stopping: AtomicBool::new(false),
            synced: Mutex::new(HashMap::new()),
            transfers: Mutex::new(HashMap::new()),
            installed: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            heard_term: Mutex::new(0),
            short_since: Mutex::new(HashMap::new()),
            down_since: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        engine.reconcile().await?;
        let tasks = crate::background::spawn_all(&engine);
        *engine.tasks.lock() = tasks;
        Ok(engine)
    }

    async fn reconcile(&self) -> Result<(), EngineError> {
        // Decide on a map with every change committed so far: one that is behind would
        // take a newly created file for a deleted one.
        self.map
            .catch_up()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let me = self.config.node_id;
        for meta in self.store.files() {
            let (exists, listed) = self.map.read(|s| match s.files.get(&meta.name) {
                Some(p) if p.file_id == meta.id => (true, p.holds(me)),
                _ => (false, false),
            });
            if listed {
                continue;
            }
            if exists {
                // The file lives on but not here: this node left its replica set, or it
                // was being added to it (a whole copy arrived, the new placement is not
                // committed yet). The clean-up removes it if it is still not listed after
                // the grace period.
                self.installed
                    .lock()
                    .insert(meta.id, tokio::time::Instant::now());
                continue;
            }
            if self.map.freshly_initialized() && self.map.lookup(&meta.name).is_none() {
                let adopt = MapCommand::CreateFile {
                    name: meta.name.clone(),
                    file_id: meta.id,
                    replicas: vec![me],
                };
                self.propose(adopt).await?;
                tracing::info!(
                    name = meta.name,
                    "adopted a stored file into the cluster map"
                );
            } else {
                let store = self.store.clone();
                let id = meta.id;
                blocking(move || store.delete(id)).await?;
                tracing::info!(
                    name = meta.name,
                    file_id = id,
                    "removed a file the map no longer lists"
                );
            }
        }
        Ok(())
    }

    /// Stops acting as a primary (call before the node stops listening, so that a node
    /// whose port refuses connections holds no lease).
    pub fn begin_shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        *self.lease.lock() = None;
    }

    /// Stops the background work and the engine's part of the cluster map.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.transfers.lock().clear();
        self.map.shutdown().await;
    }

    /// The cluster map this engine uses.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The store under this engine.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Creates an empty file: commits its entry (a fresh file id, replicas by rendezvous
    /// hashing over the nodes that are up) to the map, on any node. The replicas make
    /// their empty local copy when the first write reaches them.
    pub async fn create(&self, name: &str, tag: Option<OpTag>) -> Result<FileInfo, EngineError> {
        let name = Name::parse(name)?.into_string();
        let _lock = self.locks.write(name.clone()).await;
        if let Some(Recent::Created(info)) = tag.and_then(|t| self.recent.lock().get(t)) {
            return Ok(info);
        }
        if self.find(&name).await?.is_some() {
            return Err(EngineError::AlreadyExists(name));
        }
        let placement = match self.create_locked(&name, false).await? {
            (placement, true) => placement,
            (_, false) => return Err(EngineError::AlreadyExists(name)),
        };
        let info = FileInfo {
            name: name.clone(),
            file_id: placement.file_id,
            size: 0,
            version: 0,
            checksum: crc32c_empty(),
            replicas: placement.replicas.clone(),
            modified_ms: 0,
        };
        if let Some(t) = tag {
            self.recent.lock().insert(t, Recent::Created(info.clone()));
        }
        Ok(info)
    }

    /// Appends to or replaces a file (creating it if missing), on every replica before it
    /// returns. On a node that is not the file's primary this fails with
    /// [`EngineError::Redirect`] before taking any of the body.
    pub async fn write(
        &self,
        mode: WriteMode,
        name: &str,
        body: BodyStream,
        tag: Option<OpTag>,
    ) -> Result<WriteAck, EngineError> {
        let name = Name::parse(name)?.into_string();
        if let Some(placement) = self.find(&name).await? {
            self.redirect_unless_primary(&placement)?;
            self.drop_transfers_of(placement.file_id);
        }
        // One hold of the lock from a create through the write: nobody sees the file
        // created but not yet written.
        let _lock = self.locks.write(name.clone()).await;
        self.wait_for_lease().await?;
        let placement = match self.map.lookup(&name) {
            Some(p) => p,
            // Deleted while this write waited for the lock: a write creates a missing file.
            None => self.create_locked(&name, true).await?.0,
        };
        self.redirect_unless_primary(&placement)?;
        let id = self.ensure_synced(&name, &placement).await?;
        let key = tag.map(|t| DedupKey {
            client_id: t.client_id,
            seq: t.seq,
        });
        if let Some(key) = key {
            let store = self.store.clone();
            if let Some(saved) = blocking(move || store.dedup_lookup(id, key)).await? {
                tracing::debug!(name, ?key, "duplicate write answered from the dedup table");
                return Ok(ack(saved, true));
            }
        }
        let outcome = self
            .replicated_write(&name, &placement, mode, body, key)
            .await?;
        tracing::debug!(
            name,
            ?mode,
            version = outcome.version,
            size = outcome.size,
            "write applied"
        );
        Ok(ack(outcome, outcome.duplicate))
    }

    /// Starts a read on the file's primary: takes a snapshot under the file's shared lock
    /// and releases the lock, so a slow reader never holds up writers. Elsewhere fails with
    /// [`EngineError::Redirect`].
    pub async fn read(
        &self,
        name: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadHandle, EngineError> {
        let name = Name::parse(name)?.into_string();
        let (placement, snapshot) = self.primary_snapshot(&name).await?;
        let info = self.info(snapshot.meta(), &placement);
        let offset = offset.min(info.size);
        let len = len.unwrap_or(u64::MAX).min(info.size - offset);
        Ok(ReadHandle {
            info,
            offset,
            len,
            snapshot: Arc::new(snapshot),
        })
    }

    /// Deletes a file, on its primary (elsewhere: [`EngineError::Redirect`]). The map's
    /// commit is the linearization point; the replicas drop their copies when they see it.
    pub async fn delete(&self, name: &str, tag: Option<OpTag>) -> Result<(), EngineError> {
        let name = Name::parse(name)?.into_string();
        if let Some(Recent::Deleted) = tag.and_then(|t| self.recent.lock().get(t)) {
            return Ok(());
        }
        let placement = self
            .find(&name)
            .await?
            .ok_or_else(|| EngineError::NotFound(name.clone()))?;
        self.redirect_unless_primary(&placement)?;
        self.drop_transfers_of(placement.file_id);
        let _lock = self.locks.write(name.clone()).await;
        let placement = self.primary_placement(&name).await?;
        let id = placement.file_id;
        // A crash after the commit leaves copies the map no longer lists, removed by the
        // clean-up (or at the next start).
        let command = MapCommand::DeleteFile {
            name: name.clone(),
            file_id: id,
        };
        match self.propose(command).await? {
            MapResponse::Deleted(_) => {}
            MapResponse::NotFound | MapResponse::Conflict(_) => {
                return Err(EngineError::NotFound(name));
            }
            other => return Err(EngineError::Internal(format!("delete refused: {other:?}"))),
        }
        self.synced.lock().remove(&id);
        let store = self.store.clone();
        blocking(move || match store.delete(id) {
            Err(StoreError::NotFound(_)) => Ok(()),
            other => other,
        })
        .await?;
        if let Some(t) = tag {
            self.recent.lock().insert(t, Recent::Deleted);
        }
        Ok(())
    }

    /// Size, version, replicas and checksum of a file, from its primary (elsewhere:
    /// [`EngineError::Redirect`]).
    pub async fn stat(&self, name: &str) -> Result<FileInfo, EngineError> {
        let name = Name::parse(name)?.into_string();
        let (placement, snapshot) = self.primary_snapshot(&name).await?;
        Ok(self.info(snapshot.meta(), &placement))
    }

    /// Where an operation on `name` is served: `None` here (this node is its primary, or
    /// the file does not exist: a write then creates it with this node as primary), or the
    /// address of its primary. A missing file is never created here, but by the write
    /// itself, under the lock it writes under.
    pub async fn route(&self, name: &str) -> Result<Option<String>, EngineError> {
        let name = Name::parse(name)?.into_string();
        let placement = match self.find(&name).await? {
            Some(p) => p,
            // Served here: the write creates its file with this node as primary.
            None => return Ok(None),
        };
        match self.redirect_unless_primary(&placement) {
            Ok(()) => Ok(None),
            Err(EngineError::Redirect { addr, .. }) => Ok(Some(addr)),
            Err(e) => Err(e),
        }
    }

    /// The placement of `name` with every change committed before the call visible: the
    /// local map if it has the name, else the local map once caught up with the leader.
    pub(crate) async fn find(&self, name: &str) -> Result<Option<Placement>, EngineError> {
        if let Some(p) = self.map.lookup(name) {
            return Ok(Some(p));
        }
        self.map
            .linearizable_lookup(name)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))
    }

    /// A snapshot of `name` taken on its primary under the shared lock.
    async fn primary_snapshot(&self, name: &str) -> Result<(Placement, Snapshot), EngineError> {
        let placement = self
            .find(name)
            .await?
            .ok_or_else(|| EngineError::NotFound(name.to_owned()))?;
        self.redirect_unless_primary(&placement)?;
        self.drop_transfers_of(placement.file_id);
        let synced = |p: &Placement| self.synced.lock().get(&p.file_id) == Some(&p.epoch);
        // Syncing needs the write lock; a read then takes the shared one (a few tries, in
        // case the placement moves in between).
        let mut tries = 0;
        let (_lock, placement) = loop {
            let placement = self.primary_placement(name).await?;
            if !synced(&placement) {
                let _lock = self.locks.write(name.to_owned()).await;
                let placement = self.primary_placement(name).await?;
                self.ensure_synced(name, &placement).await?;
            }
            let lock = self.locks.read(name.to_owned()).await;
            let placement = self.primary_placement(name).await?;
            if synced(&placement) {
                break (lock, placement);
            }
            tries += 1;
            if tries >= 3 {
                return Err(EngineError::Unavailable(format!(
                    "the placement of {name:?} keeps changing; try again"
                )));
            }
        };
        let (store, id) = (self.store.clone(), placement.file_id);
        let snapshot = blocking(move || store.snapshot(id)).await?;
        // The read takes effect at the snapshot, which must be taken under this node's
        // lease: once it has run out, another node may have become the primary.
        if !self.holds_lease() {
            return Err(EngineError::Unavailable(
                "this node's lease ran out during the read; try again".into(),
            ));
        }
        Ok((placement, snapshot))
    }

    /// A sorted page of the files whose names start with `prefix`.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ListEntry>, Option<String>), EngineError> {
        validate_prefix(prefix)?;
        self.map
            .catch_up()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let (rows, next) = self.page(prefix, start_after, limit);
        let metas = self.metas_of(&rows).await?;
        let entries = rows
            .into_iter()
            .zip(metas)
            .filter_map(|((name, _, _), meta)| {
                meta.map(|(size, version)| ListEntry {
                    name,
                    size,
                    version,
                })
            })
            .collect();
        Ok((entries, next))
    }

    /// A sorted page of the placement table, with every change committed before the call.
    pub async fn table(
        &self,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TableEntry>, Option<String>), EngineError> {
        self.map
            .catch_up()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let (rows, next) = self.page("", start_after, limit);
        let replication_factor = self.config.replication_factor as u32;
        let entries = rows
            .into_iter()
            .map(|(name, file_id, p)| TableEntry {
                name,
                file_id,
                replicas: p.replicas,
                epoch: p.epoch,
                replication_factor,
            })
            .collect();
        Ok((entries, next))
    }

    /// The cluster as this node sees it: the members, which are up in the map (and for how
    /// long this node has seen each down one down), each one's role in the map's consensus
    /// group (asked of it; `unknown` if it does not answer), the map's leader and term, and
    /// how many files have fewer than R replicas.
    pub async fn status(&self) -> ClusterStatus {
        let me = self.config.node_id;
        let r = self.config.replication_factor;
        let map = self.map.status();
        let (up, under_replicated) = self.map.read(|s| {
            let up = s
                .nodes
                .iter()
                .map(|(id, n)| (*id, n.up))
                .collect::<std::collections::BTreeMap<_, _>>();
            let short = s.files.iter().filter(|(_, p)| p.replicas.len() < r).count();
            (up, short as u64)
        });
        let down_for = self.note_down_nodes(Instant::now());
        let roles = futures::future::join_all(self.config.members.iter().map(|m| async move {
            if m.id == me {
                return node_role(map.role);
            }
            match self.call(m.id, &crate::wire::DataRpc::Role).await {
                Ok(crate::wire::DataReply::Role(role)) => role,
                _ => NodeRole::Unknown,
            }
        }))
        .await;
        ClusterStatus {
            nodes: self
                .config
                .members
                .iter()
                .zip(roles)
                .map(|(m, role)| NodeStatus {
                    id: m.id,
                    addr: self.node_addr(m.id).unwrap_or_else(|| m.addr.clone()),
                    up: up.get(&m.id).copied().unwrap_or(false),
                    role,
                    down_for_ms: down_for
                        .get(&m.id)
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                })
                .collect(),
            leader: map.leader,
            term: map.term,
            replication_factor: r as u32,
            under_replicated,
            rereplicate_after_ms: u64::try_from(self.config.timing.rereplicate_after.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// This node's role in the map's consensus group.
    pub(crate) fn role(&self) -> NodeRole {
        node_role(self.map.status().role)
    }

    /// A sorted page of `(name, file id, placement)` for names starting with `prefix` after
    /// `start_after`, and the name to resume after if more remain.
    fn page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, FileId, Placement)>, Option<String>) {
        self.map.read(|s| {
            // One extra entry tells whether another page follows.
            let mut rows: Vec<_> = s
                .files
                .page(prefix, start_after, limit + 1)
                .into_iter()
                .map(|(name, p)| (name.to_owned(), p.file_id, p.clone()))
                .collect();
            let next = if rows.len() > limit {
                rows.truncate(limit);
                rows.last().map(|(name, _, _)| name.clone())
            } else {
                None
            };
            (rows, next)
        })
    }

    /// Places a new file and commits it to the map; the caller holds the name's write
    /// lock. Returns its placement and whether this call created it (`false`: another node
    /// created the name first, and this is that file).
    ///
    /// For a write that creates its file (`for_write`), this node is made the primary, so
    /// the write follows the create under the lock already held: nobody can see the file
    /// between the two, empty although the write has not failed.
    async fn create_locked(
        &self,
        name: &str,
        for_write: bool,
    ) -> Result<(Placement, bool), EngineError> {
        let up = self.map.read(ClusterState::up_nodes);
        let mut replicas = place(name, &up, self.config.replication_factor)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        if for_write {
            self.wait_for_lease().await?;
            let me = self.config.node_id;
            replicas.retain(|n| *n != me);
            replicas.insert(0, me);
            replicas.truncate(self.config.replication_factor);
        }
        // A fresh id for every create, so a re-created name is a new file.
        let file_id: FileId = rand::random::<u64>().max(1);
        let command = MapCommand::CreateFile {
            name: name.to_owned(),
            file_id,
            replicas,
        };
        match self.propose(command).await? {
            MapResponse::Created(p) => Ok((p, true)),
            // Our own create, applied by an attempt whose answer was lost and then retried.
            MapResponse::AlreadyExists(p) if p.file_id == file_id => Ok((p, true)),
            MapResponse::AlreadyExists(p) => Ok((p, false)),
            other => Err(EngineError::Internal(format!("create refused: {other:?}"))),
        }
    }

    /// The local copy of file `id` as a primary at `placement` serves it, once synced. A
    /// copy missing here is made empty only while the file can hold nothing else: at its
    /// first epoch (the map commits a create before any replica makes its copy); later,
    /// the sync decides (see `ensure_synced`), so a copy missing then is an error.
    pub(crate) async fn local_meta(
        &self,
        name: &str,
        placement: &Placement,
    ) -> Result<FileMeta, EngineError> {
        let store = self.store.clone();
        let id = placement.file_id;
        match blocking(move || store.meta(id)).await {
            Err(EngineError::Store(StoreError::NotFound(_))) if placement.epoch == 1 => {
                self.make_empty_copy(name, id).await
            }
            Err(EngineError::Store(StoreError::NotFound(_))) => Err(EngineError::Unavailable(
                format!("this node has no copy of {name:?}; a replica must restore it"),
            )),
            other => other,
        }
    }

    /// Makes this node's copy of file `id` the empty file never written (keeping one
    /// that exists).
    pub(crate) async fn make_empty_copy(
        &self,
        name: &str,
        id: FileId,
    ) -> Result<FileMeta, EngineError> {
        let store = self.store.clone();
        let name = name.to_owned();
        blocking(move || match store.create(id, &name) {
            Err(StoreError::AlreadyExists(_)) => store.meta(id),
            other => other,
        })
        .await
    }

    pub(crate) async fn propose(&self, command: MapCommand) -> Result<MapResponse, EngineError> {
        self.map
            .propose(command)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))
    }

    pub(crate) fn info(&self, meta: &FileMeta, placement: &Placement) -> FileInfo {
        FileInfo {
            name: meta.name.clone(),
            file_id: meta.id,
            size: meta.size,
            version: meta.version,
            checksum: meta.checksum,
            replicas: placement.replicas.clone(),
            modified_ms: meta.modified_ms,
        }
    }
}

pub(crate) enum Txn {
    Append(dfs_store::AppendTxn),
    Put(dfs_store::PutTxn),
}

impl Txn {
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match self {
            Txn::Append(t) => t.write(data),
            Txn::Put(t) => t.write(data),
        }
    }

    pub(crate) fn commit(self, key: Option<DedupKey>) -> Result<WriteOutcome, StoreError> {
        match self {
            Txn::Append(t) => t.commit(key),
            Txn::Put(t) => t.commit(key),
        }
    }
}

pub(crate) fn ack(outcome: WriteOutcome, duplicate: bool) -> WriteAck {
    WriteAck {
        version: outcome.version,
        size: outcome.size,
        checksum: outcome.checksum,
        duplicate,
    }
}

fn node_role(role: MapRole) -> NodeRole {
    match role {
        MapRole::Leader => NodeRole::Leader,
        MapRole::Follower => NodeRole::Follower,
        MapRole::Candidate => NodeRole::Candidate,
        MapRole::Other => NodeRole::Unknown,
    }
}

/// The checksum of no bytes.
fn crc32c_empty() -> u32 {
    // CRC-32C of the empty string.
    0
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("store task failed: {e}")))?
        .map_err(EngineError::from)
}

/// The saved result of a create or delete, for answering its retries.
#[derive(Debug, Clone)]
enum Recent {
    Created(FileInfo),
    Deleted,
}

/// A bounded memory of recent create/delete results by tag, oldest dropped first.
#[derive(Debug, Default)]
struct RecentOps {
    results: HashMap<OpTag, Recent>,
    order: VecDeque<OpTag>,
}

impl RecentOps {
    fn get(&self, tag: OpTag) -> Option<Recent> {
        self.results.get(&tag).cloned()
    }

    fn insert(&mut self, tag: OpTag, result: Recent) {
        if self.results.insert(tag, result).is_none() {
            self.order.push_back(tag);
        }
        while self.order.len() > RECENT_OPS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.results.remove(&old);
            }
        }
    }
}
