//! [`Engine`]: the operations of the data model on top of the map, the locks and the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use dfs_cluster::{
    ClusterMap, ClusterState, MapCommand, MapResponse, MapRole, PeerNetwork, RequestTag,
    WriteResult,
};
use dfs_net::SharedTransport;
use dfs_placement::{NodeId, Placement, place};
use dfs_proto::{
    ClusterStatus, Condition, FileInfo, ListEntry, Name, NodeRole, NodeStatus, OpTag, TableEntry,
    WriteAck, validate_prefix,
};
use dfs_store::{
    DedupKey, FileId, FileMeta, LockManager, Snapshot, Store, StoreError, WriteOutcome,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{BodyStream, EngineError};

/// Most take-backs of unknown outcome remembered (beyond, one is forgotten: a risk only
/// if its take-back commits after a write there, long after it was proposed).
const UNSURE_UNDOS_MAX: usize = 1024;

/// Largest file whose content a read of only part of it checks first (the whole file is
/// read once more for it); a read of a whole file is checked as it streams, at no cost.
pub const RANGE_CHECK_BYTES_MAX: u64 = 4 << 20;

/// How many times a create looks at its name before it gives up (each look after the first
/// on a map caught up with the leader, so one more is needed only if the name changed
/// again in between).
const CREATE_ATTEMPTS: usize = 4;

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
    /// The cluster's shared secret, proven in the hello of every peer connection.
    pub secret: Option<dfs_auth::ClusterSecret>,
}

/// The clocks of leases, failure detection and repair.
///
/// Safety needs `probe_after` and `failure_timeout > lease × (1 + clock drift) + margin`:
/// the leader declares a silent node down only once its lease (counted on its own clock
/// from before it asked) has surely run out. [`Engine::start`] refuses timings where either
/// is not above the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a granted lease lets a node act as primary, from when it asked.
    pub lease: Duration,
    /// How often a node renews its lease (and so tells the leader it lives).
    pub lease_renew: Duration,
    /// Silence after which the leader probes a node's port, and declares the node down at
    /// once if the connection is refused. Not shorter than a lease: a refusal does not
    /// prove that no process holds one (a firewall rule that rejects, or a simulated
    /// partition, refuses for a node that is alive and serving), so the probe only spares
    /// the wait from the lease's end to the failure timeout.
    pub probe_after: Duration,
    /// Silence after which the leader declares a node down even if its port answers.
    pub failure_timeout: Duration,
    /// How long a node waits for another's answer to one data message.
    pub peer_timeout: Duration,
    /// How often each primary looks for files missing a replica that can be restored.
    pub repair_interval: Duration,
    /// How often each node scrubs its copies (re-reads them and checks their checksums);
    /// the first scrub comes one interval after the start.
    pub scrub_interval: Duration,
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
            lease: Duration::from_millis(700),
            lease_renew: Duration::from_millis(150),
            probe_after: Duration::from_millis(750),
            failure_timeout: Duration::from_millis(3000),
            peer_timeout: Duration::from_secs(5),
            repair_interval: Duration::from_millis(500),
            scrub_interval: Duration::from_secs(24 * 3600),
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
    /// Write the body at `offset` of an existing file (at most
    /// [`WRITE_BYTES_MAX`](dfs_proto::WRITE_BYTES_MAX) bytes, held in memory until applied).
    At {
        /// Where the bytes go.
        offset: u64,
    },
    /// Set the size of an existing file (the body must be empty).
    Truncate {
        /// The new size.
        size: u64,
    },
}

impl WriteMode {
    /// Whether a write in this mode creates a missing file (append and put do; a write at
    /// an offset and a truncation answer `NotFound`).
    pub fn creates(self) -> bool {
        matches!(self, WriteMode::Append | WriteMode::Put)
    }
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
    /// Whether the range is the whole file, so that the checksum of the bytes sent can be
    /// compared with the file's ([`Engine::check_read`]) before the last chunk goes out.
    pub fn covers_file(&self) -> bool {
        self.offset == 0 && self.len == self.info.size
    }

    /// `crc` (CRC-32C, 0 for no bytes) extended by `data`.
    pub fn extend_checksum(crc: u32, data: &[u8]) -> u32 {
        crc32c::crc32c_append(crc, data)
    }

    /// The CRC-32C of the whole file as of the snapshot, read from it.
    async fn content_checksum(&self) -> Result<u32, EngineError> {
        let snapshot = self.snapshot.clone();
        let size = self.info.size;
        quick_if(size <= QUICK_BYTES_MAX as u64, move || {
            let mut buf = vec![0u8; (size as usize).min(64 << 10)];
            let (mut at, mut crc) = (0u64, 0u32);
            while at < size {
                let want = buf.len().min((size - at) as usize);
                match snapshot.read_at(at, &mut buf[..want])? {
                    0 => break,
                    n => {
                        crc = crc32c::crc32c_append(crc, &buf[..n]);
                        at += n as u64;
                    }
                }
            }
            Ok(crc)
        })
        .await
    }

    /// Reads up to `max` bytes of the range starting `done` bytes into it.
    pub async fn chunk(&self, done: u64, max: usize) -> Result<Bytes, EngineError> {
        let want = (self.len.saturating_sub(done)).min(max as u64) as usize;
        if want == 0 {
            return Ok(Bytes::new());
        }
        let snapshot = self.snapshot.clone();
        let at = self.offset + done;
        quick_if(want <= QUICK_BYTES_MAX, move || {
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
    /// Connections to the other nodes' data layers (apart from the map's).
    pub(crate) peers: PeerNetwork,
    /// Until when this node may act as a primary, and how many times the lease was
    /// dropped (a renewal asked for before a drop must not restore it).
    pub(crate) lease: Mutex<Lease>,
    /// Set when the node starts to shut down: it acts as primary no more.
    pub(crate) stopping: AtomicBool,
    /// Files whose replicas this node (as primary) has brought to its own copy, and at
    /// which epoch.
    pub(crate) synced: Mutex<HashMap<FileId, u64>>,
    /// Files (and the epoch) whose create, made by a write that then failed, this node
    /// tried to take back without hearing whether that committed.
    unsure_undos: Mutex<BTreeMap<FileId, u64>>,
    /// Held while this node scrubs: one scrub at a time.
    pub(crate) scrubbing: tokio::sync::Mutex<()>,
    /// Transfers from primaries in progress here.
    pub(crate) transfers: Mutex<BTreeMap<u64, crate::replica::Staged>>,
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
    /// On the map's leader: the deadlines of the lock leases.
    pub(crate) lock_clock: Mutex<dfs_cluster::LeaseClock>,
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
        let timing = config.timing;
        if timing.probe_after <= timing.lease || timing.failure_timeout <= timing.lease {
            return Err(EngineError::InvalidRequest(format!(
                "the port probe ({:?}) and the failure timeout ({:?}) must be longer than the \
                 lease ({:?}): a node is declared down only once its lease has run out",
                timing.probe_after, timing.failure_timeout, timing.lease
            )));
        }
        if config.replication_factor == 0 || config.replication_factor > config.members.len() {
            return Err(EngineError::InvalidRequest(format!(
                "replication factor {} must be between 1 and the {} members",
                config.replication_factor,
                config.members.len()
            )));
        }
        let peers = PeerNetwork::new(config.node_id, config.cluster_id, config.transport.clone())
            .with_secret(config.secret.clone());
        let engine = Arc::new(Self {
            config,
            store,
            map,
            locks: LockManager::new(),
            peers,
            lease: Mutex::new(Lease::default()),
            stopping: AtomicBool::new(false),
            synced: Mutex::new(HashMap::new()),
            unsure_undos: Mutex::new(BTreeMap::new()),
            scrubbing: tokio::sync::Mutex::new(()),
            transfers: Mutex::new(BTreeMap::new()),
            installed: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            heard_term: Mutex::new(0),
            short_since: Mutex::new(HashMap::new()),
            down_since: Mutex::new(HashMap::new()),
            lock_clock: Mutex::new(dfs_cluster::LeaseClock::new()),
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
        self.catch_up().await?;
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
        self.drop_lease();
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
    ///
    /// A tagged create is applied at most once: its retries (same tag) are answered what
    /// the first application did, by the map itself (see [`MapCommand::Tagged`]), even on
    /// another node and after the file was deleted again.
    ///
    /// `AlreadyExists` is answered only for a file that this node's map, caught up with
    /// the leader after the call began, still lists: a map that is behind may list a file
    /// deleted before the call. When the file seen is gone by then, the create looks again.
    pub async fn create(&self, name: &str, tag: Option<OpTag>) -> Result<FileInfo, EngineError> {
        let name = Name::parse(name)?.into_string();
        let _lock = self.locks.write(name.clone()).await;
        for attempt in 0..CREATE_ATTEMPTS {
            if attempt > 0 {
                // Look again on a map with every commit made before now.
                self.catch_up().await?;
            }
            if let Some(info) = self.create_attempt(&name, tag).await? {
                tracing::debug!(
                    node = self.config.node_id,
                    name,
                    file_id = info.file_id,
                    ?tag,
                    "created"
                );
                return Ok(info);
            }
            tracing::debug!(
                node = self.config.node_id,
                name,
                attempt,
                "the file a create found is gone; looking again"
            );
        }
        Err(EngineError::Unavailable(format!(
            "{name:?} keeps changing while it is created; try again"
        )))
    }

    /// One look at `name` for [`create`](Self::create): the new (or claimed) file,
    /// `AlreadyExists`, or `None` when the file it found is gone (look again).
    ///
    /// A tagged create answers only what a committed command of its tag answered (see
    /// [`MapCommand::Tagged`]): an attempt of the same request that commits late, after
    /// this answer, then changes nothing.
    async fn create_attempt(
        &self,
        name: &str,
        tag: Option<OpTag>,
    ) -> Result<Option<FileInfo>, EngineError> {
        let taken = match self.find(name).await? {
            // A file a write created and has not written yet does not exist for users: a
            // create claims it (it then exists, empty) unless that write landed meanwhile.
            Some(p) if self.is_unwritten(p.file_id) => p,
            // Untagged, an existing name fails at once; tagged, only the map can say
            // whether this request made it.
            Some(p) if tag.is_none() => return self.created_before(name, p.file_id).await,
            _ => match self.create_locked(name, false, tag).await? {
                (placement, true) => return Ok(Some(empty_info(name.to_owned(), &placement))),
                (p, false) => {
                    if let Some(answer) = self.saved_answer(name, tag) {
                        return answer;
                    }
                    p
                }
            },
        };
        if self.is_unwritten(taken.file_id) {
            return self.claim(name, &taken, tag).await;
        }
        match tag {
            None => Err(EngineError::AlreadyExists(name.to_owned())),
            // Unwritten when the map applied the create, claimed since: look again.
            Some(_) => Ok(None),
        }
    }

    /// What the map remembers answering request `tag` (a create), if anything.
    fn saved_answer(
        &self,
        name: &str,
        tag: Option<OpTag>,
    ) -> Option<Result<Option<FileInfo>, EngineError>> {
        let tag = request_tag(tag?);
        match self.map.read(|s| s.sessions.get(tag).cloned())? {
            MapResponse::Created(p) => Some(Ok(Some(empty_info(name.to_owned(), &p)))),
            MapResponse::AlreadyExists(_) => Some(Err(EngineError::AlreadyExists(name.to_owned()))),
            _ => None,
        }
    }

    /// Whether file `id` was created by a write and not claimed by a create since (see
    /// [`ClusterState::unwritten`]): it exists for users only once written.
    pub(crate) fn is_unwritten(&self, id: FileId) -> bool {
        self.map.read(|s| s.unwritten.contains(&id))
    }

    /// A create of a name whose file a write created: if that file's primary has not
    /// written it, the create claims it (it now exists, empty); if it has, the name
    /// exists already (tagged, confirmed through the map). `None`: the file is gone, or
    /// changed meanwhile (look again).
    async fn claim(
        &self,
        name: &str,
        placement: &Placement,
        tag: Option<OpTag>,
    ) -> Result<Option<FileInfo>, EngineError> {
        let id = placement.file_id;
        let row = [(name.to_owned(), id, placement.clone())];
        let command = match self.metas_of(&row).await?.first() {
            // Written: it exists, if the map still has it.
            Some(Some((_, version))) if *version > 0 => match tag {
                None => return self.created_before(name, id).await,
                Some(_) => MapCommand::ConfirmExists {
                    name: name.to_owned(),
                    file_id: id,
                },
            },
            Some(Some(_)) => MapCommand::ClaimFile {
                name: name.to_owned(),
                file_id: id,
            },
            _ => {
                self.catch_up().await?;
                if self.map.lookup(name).is_none_or(|p| p.file_id != id) {
                    return Ok(None);
                }
                return Err(EngineError::Unavailable(format!(
                    "the primary of {name:?} has no copy to look at; try again"
                )));
            }
        };
        match self.propose(tagged(tag, command)).await? {
            // Claimed (or, a retry, what the first attempt created).
            MapResponse::Created(p) => Ok(Some(empty_info(name.to_owned(), &p))),
            MapResponse::AlreadyExists(p) => match self.saved_answer(name, tag) {
                Some(answer) => answer,
                None if tag.is_none() && !self.is_unwritten(p.file_id) => {
                    Err(EngineError::AlreadyExists(name.to_owned()))
                }
                None => Ok(None),
            },
            // Deleted, or created anew, meanwhile.
            _ => Ok(None),
        }
    }

    /// The answer to an untagged create that found file `seen` under `name` on a map that
    /// may be behind: `AlreadyExists` if the map, caught up with the leader, still lists
    /// `seen` (it existed then, within the call); `None` if `seen` is gone (look again).
    async fn created_before(
        &self,
        name: &str,
        seen: FileId,
    ) -> Result<Option<FileInfo>, EngineError> {
        self.catch_up().await?;
        match self.map.lookup(name) {
            Some(p) if p.file_id == seen => Err(EngineError::AlreadyExists(name.to_owned())),
            _ => Ok(None),
        }
    }

    /// Brings this node's map up to every commit made before the call.
    async fn catch_up(&self) -> Result<(), EngineError> {
        self.map
            .catch_up()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))
    }

    /// Appends to or replaces a file (creating it if missing), writes at an offset or
    /// truncates it ([`WriteMode::At`], [`WriteMode::Truncate`]: `NotFound` if missing), on
    /// every replica before it returns. On a node that is not the file's primary this fails with
    /// [`EngineError::Redirect`] before taking any of the body.
    ///
    /// The write is applied only if `cond` holds (see [`Condition`]), checked after a
    /// retry of a write already applied was answered.
    pub async fn write(
        &self,
        mode: WriteMode,
        name: &str,
        body: BodyStream,
        tag: Option<OpTag>,
        cond: Condition,
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
        // Applied before to a file since deleted (its answer lost): answered, not applied
        // again. This map has that delete: it shows no file of this name, or a newer one.
        // Or answered `NotFound` before: that answer stands.
        if let Some(answer) = self.answered_before(&name, tag) {
            return answer;
        }
        let (placement, created) = match self.map.lookup(&name) {
            Some(p) => (p, false),
            // Deleted while this write waited for the lock: a write creates a missing file.
            None if mode.creates() => self.create_locked(&name, true, None).await?,
            None => return self.write_missing(&name, None, tag).await,
        };
        // The create may have waited long for its commit: another attempt of this write,
        // applied meanwhile to a file since deleted, shows in the map that applied it.
        if created && let Some(answer) = self.answered_before(&name, tag) {
            self.undo_create(&name, placement.file_id, placement.epoch)
                .await;
            return answer;
        }
        self.redirect_unless_primary(&placement)?;
        let placement = self.fence_undo(&name, placement).await?;
        let written = self
            .write_locked(mode, &name, &placement, created, body, Asked { tag, cond })
            .await;
        if written.is_err() && created {
            self.undo_create(&name, placement.file_id, placement.epoch)
                .await;
        }
        written
    }

    /// The answer to write `tag` if the map's sessions hold one: it was applied to a file
    /// since deleted (its ack), or it was answered `NotFound` ([`write_missing`]).
    ///
    /// This node's map only moves forward, so a look after this attempt found the file
    /// (and found it written) sees an answer committed before that file was created.
    ///
    /// [`write_missing`]: Self::write_missing
    fn answered_before(
        &self,
        name: &str,
        tag: Option<OpTag>,
    ) -> Option<Result<WriteAck, EngineError>> {
        let tag = request_tag(tag?);
        let saved = self.map.read(|s| s.sessions.get(tag).cloned())?;
        write_answer(name, saved)
    }

    /// The answer to a write at an offset or a truncation of a name that holds no file
    /// (or only `invisible`, one a write created and has not written): `NotFound`.
    /// Tagged, the answer is committed through the map first
    /// ([`MapCommand::ConfirmMissing`]) and is this request's for good: an attempt of it
    /// that runs late, after a file of this name is created (stalled on a node that lost
    /// its lease, say), finds it in the sessions and applies nothing. The map answers the
    /// ack instead if this very request was applied to a file since deleted, and asks for
    /// another try if the name holds a file now.
    async fn write_missing(
        &self,
        name: &str,
        invisible: Option<FileId>,
        tag: Option<OpTag>,
    ) -> Result<WriteAck, EngineError> {
        if tag.is_none() {
            return Err(EngineError::NotFound(name.to_owned()));
        }
        let command = MapCommand::ConfirmMissing {
            name: name.to_owned(),
            invisible,
        };
        let answer = self.propose(tagged(tag, command)).await?;
        // Under the file's lock: a later attempt here must see the answer in this map.
        self.catch_up().await?;
        tracing::debug!(
            node = self.config.node_id,
            name,
            ?answer,
            "write to a missing name"
        );
        write_answer(name, answer).unwrap_or_else(|| {
            Err(EngineError::Unavailable(format!(
                "{name:?} was created while it was written; try again"
            )))
        })
    }

    /// The write itself, under the file's lock, at `placement` (this node its primary);
    /// `created`: this write just created the file.
    async fn write_locked(
        &self,
        mode: WriteMode,
        name: &str,
        placement: &Placement,
        created: bool,
        body: BodyStream,
        asked: Asked,
    ) -> Result<WriteAck, EngineError> {
        let Asked { tag, cond } = asked;
        let id = if created {
            // Created under this lock and never written: no replica needs asking.
            self.make_empty_copy(name, placement.file_id).await?;
            self.synced
                .lock()
                .insert(placement.file_id, placement.epoch);
            placement.file_id
        } else {
            self.ensure_synced(name, placement).await?
        };
        let key = tag.map(|t| DedupKey {
            client_id: t.client_id,
            seq: t.seq,
        });
        if let Some(key) = key {
            let store = self.store.clone();
            if let Some(saved) = quick(move || store.dedup_lookup(id, key))? {
                tracing::debug!(name, ?key, "duplicate write answered from the dedup table");
                return Ok(ack(saved, true));
            }
        }
        if !mode.creates() && self.is_unwritten(id) && self.local_version(id).await? == 0 {
            // Created by a write that has not written it: not there for users.
            return self.write_missing(name, Some(id), tag).await;
        }
        // An attempt of this write answered before, while the file did not exist or was
        // not written (this map has it now: see `answered_before`), is not applied late.
        if let Some(answer) = self.answered_before(name, tag) {
            return answer;
        }
        if !cond.is_none() {
            let version = if created {
                0
            } else {
                self.local_version(id).await?
            };
            self.check_condition(name, cond, version).await?;
        }
        let outcome = self
            .replicated_write(name, placement, mode, body, key)
            .await?;
        tracing::debug!(
            node = self.config.node_id,
            name,
            file_id = placement.file_id,
            epoch = placement.epoch,
            ?mode,
            version = outcome.version,
            size = outcome.size,
            "write applied"
        );
        Ok(ack(outcome, outcome.duplicate))
    }

    /// Takes back the create of a write that failed, so that the failed write leaves
    /// nothing behind (its retry then creates the file again, once). Conditional on the
    /// file's first epoch: if the answer is lost, the take-back may still commit later, so
    /// the file is noted in `unsure_undos` and its epoch is moved on before anything is
    /// written to it here again (see [`fence_undo`](Self::fence_undo)); a take-back
    /// committed after that removes nothing.
    async fn undo_create(&self, name: &str, file_id: FileId, epoch: u64) {
        let command = MapCommand::DeleteFileAt {
            name: name.to_owned(),
            file_id,
            epoch,
        };
        match self.propose(command).await {
            Ok(MapResponse::Deleted(_)) => {
                self.synced.lock().remove(&file_id);
                let store = self.store.clone();
                if let Err(e) = blocking(move || store.delete(file_id)).await {
                    tracing::debug!(name, error = %e, "local copy left for the clean-up");
                }
                tracing::debug!(name, file_id, "a failed write took back its create");
            }
            Ok(other) => tracing::debug!(name, ?other, "nothing to take back"),
            Err(e) => {
                tracing::warn!(name, error = %e, "the take-back of a failed write's create may still commit");
                let mut unsure = self.unsure_undos.lock();
                if unsure.len() >= UNSURE_UNDOS_MAX
                    && let Some(&oldest) = unsure.keys().next()
                {
                    unsure.remove(&oldest);
                }
                unsure.insert(file_id, epoch);
            }
        }
    }

    /// Before a write to a file whose take-back may still commit: moves the file to its
    /// next epoch (same replicas), so that the take-back, conditional on the old epoch,
    /// can no longer remove what this write adds. Returns the placement to write at.
    async fn fence_undo(&self, name: &str, placement: Placement) -> Result<Placement, EngineError> {
        if self.unsure_undos.lock().get(&placement.file_id) != Some(&placement.epoch) {
            return Ok(placement);
        }
        let command = MapCommand::SetReplicas {
            name: name.to_owned(),
            file_id: placement.file_id,
            expected_epoch: placement.epoch,
            replicas: placement.replicas.clone(),
        };
        let response = self.propose(command).await?;
        self.unsure_undos.lock().remove(&placement.file_id);
        match response {
            MapResponse::Updated(p) => Ok(p),
            other => Err(EngineError::Unavailable(format!(
                "{name:?} changed while a failed write's create was taken back ({other:?}); try again"
            ))),
        }
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
        let handle = ReadHandle {
            info,
            offset,
            len,
            snapshot: Arc::new(snapshot),
        };
        // Part of a small file: the whole is checked first (a whole file is checked as it
        // streams; part of a larger one is not, see ARCHITECTURE.md, "Not done yet").
        if !handle.covers_file() && handle.info.size <= RANGE_CHECK_BYTES_MAX {
            let crc = handle.content_checksum().await?;
            self.check_read(&handle, crc).await?;
        }
        Ok(handle)
    }

    /// Compares `crc`, the checksum of the bytes of a whole-file read, with the file's.
    /// A copy that does not match is never served: this node takes it out of service
    /// (as the scrub does: it leaves the replica set, another replica serves the file and
    /// repair installs a good copy here) and the read fails, with `Unavailable` (try
    /// again: another replica serves it now) or, if no other replica holds the file,
    /// `Corrupt`.
    pub async fn check_read(&self, handle: &ReadHandle, crc: u32) -> Result<(), EngineError> {
        if crc == handle.info.checksum {
            return Ok(());
        }
        let (name, id) = (&handle.info.name, handle.info.file_id);
        tracing::warn!(
            name,
            file_id = id,
            "a read found this node's copy damaged (its content does not match its checksum)"
        );
        match self.take_out_of_service(name, id).await {
            Some(bad) if bad.replaced => Err(EngineError::Unavailable(format!(
                "this node's copy of {name:?} is damaged and was taken out of service ({}); \
                 try again",
                bad.action
            ))),
            other => Err(EngineError::Store(StoreError::Corrupt {
                id,
                reason: match other {
                    Some(bad) => format!("its content does not match its checksum; {}", bad.action),
                    None => "its content does not match its checksum".into(),
                },
            })),
        }
    }

    /// Deletes a file, on its primary (elsewhere: [`EngineError::Redirect`]). The map's
    /// commit is the linearization point; the replicas drop their copies when they see it.
    ///
    /// A tagged delete is applied at most once, and answers only what a committed command
    /// of its tag answered: a retry whose first attempt deleted the file is answered `Ok`
    /// (not `NotFound`), and an attempt that runs late, after a retry was answered, deletes
    /// nothing (a file created since included).
    ///
    /// The delete is applied only if `cond` holds (see [`Condition`]).
    pub async fn delete(
        &self,
        name: &str,
        tag: Option<OpTag>,
        cond: Condition,
    ) -> Result<(), EngineError> {
        let name = Name::parse(name)?.into_string();
        let Some(placement) = self.find(&name).await? else {
            // `find` found nothing even on the leader.
            return self.missing(&name, None, tag).await;
        };
        if placement.replicas.is_empty() {
            return self.delete_lost(&name, &placement, tag).await;
        }
        self.redirect_unless_primary(&placement)?;
        self.drop_transfers_of(placement.file_id);
        let _lock = self.locks.write(name.clone()).await;
        let placement = match self.primary_placement(&name).await {
            Err(EngineError::NotFound(_)) => return self.missing(&name, None, tag).await,
            other => other?,
        };
        let id = placement.file_id;
        if self.is_unwritten(id) && self.local_version(id).await? == 0 {
            // Created by a write that has not written it: not there for users.
            return self.missing(&name, Some(id), tag).await;
        }
        if !cond.is_none() {
            let version = self.local_version(id).await?;
            self.check_condition(&name, cond, version).await?;
        }
        // The file's recent writes go into the map's sessions with the delete: a write
        // applied here whose answer was lost is answered, not applied again to a new
        // file, when it is retried after the delete.
        let store = self.store.clone();
        let writes = blocking(move || match store.dedup_entries(id) {
            Err(StoreError::NotFound(_)) => Ok(Vec::new()),
            other => other,
        })
        .await?
        .into_iter()
        .map(|(key, outcome)| {
            let tag = RequestTag {
                client_id: key.client_id,
                seq: key.seq,
            };
            let result = WriteResult {
                version: outcome.version,
                size: outcome.size,
                checksum: outcome.checksum,
            };
            (tag, result)
        })
        .collect();
        // A crash after the commit leaves copies the map no longer lists, removed by the
        // clean-up (or at the next start).
        let command = tagged(
            tag,
            MapCommand::DeleteFileWithWritesAt {
                name: name.clone(),
                file_id: id,
                epoch: placement.epoch,
                writes,
            },
        );
        let response = self.propose(command).await?;
        tracing::debug!(
            node = self.config.node_id,
            name,
            file_id = id,
            ?response,
            "delete committed"
        );
        match response {
            // This file, or (a retry) the one the first attempt deleted.
            MapResponse::Deleted(p) if p.file_id != id => return Ok(()),
            MapResponse::Deleted(_) => {}
            // Another primary took the file over meanwhile (its writes are not all here).
            MapResponse::Conflict(Some(p)) if p.file_id == id => {
                return Err(EngineError::Unavailable(format!(
                    "{name:?} moved to another primary during the delete; try again"
                )));
            }
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
        .await
    }

    /// Deletes a file no replica holds (its only one lost its disk), from any node: there
    /// is no copy, nor any write of it, to take care of.
    async fn delete_lost(
        &self,
        name: &str,
        placement: &Placement,
        tag: Option<OpTag>,
    ) -> Result<(), EngineError> {
        let command = MapCommand::DeleteFileWithWritesAt {
            name: name.to_owned(),
            file_id: placement.file_id,
            epoch: placement.epoch,
            writes: Vec::new(),
        };
        match self.propose(tagged(tag, command)).await? {
            MapResponse::Deleted(_) => Ok(()),
            MapResponse::NotFound => Err(EngineError::NotFound(name.to_owned())),
            other => Err(EngineError::Unavailable(format!(
                "{name:?} changed while it was deleted ({other:?}); try again"
            ))),
        }
    }

    /// The version of this node's copy of file `id` (0 if it has none).
    pub(crate) async fn local_version(&self, id: FileId) -> Result<u64, EngineError> {
        match self.store.meta(id) {
            Ok(meta) => Ok(meta.version),
            Err(StoreError::NotFound(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The answer to a delete that found no file under `name` (or only `invisible`, one
    /// a write created and has not written): `NotFound`; tagged, through the map
    /// ([`MapCommand::ConfirmMissing`]), which answers `Ok` instead if this very request (a
    /// retry) deleted the file before, and makes `NotFound` this request's answer for good.
    async fn missing(
        &self,
        name: &str,
        invisible: Option<FileId>,
        tag: Option<OpTag>,
    ) -> Result<(), EngineError> {
        let answer = match tag {
            None => MapResponse::NotFound,
            Some(_) => {
                let command = MapCommand::ConfirmMissing {
                    name: name.to_owned(),
                    invisible,
                };
                self.propose(tagged(tag, command)).await?
            }
        };
        tracing::debug!(
            node = self.config.node_id,
            name,
            ?answer,
            "delete of a missing name"
        );
        match answer {
            MapResponse::Deleted(_) => Ok(()),
            MapResponse::NotFound => Err(EngineError::NotFound(name.to_owned())),
            _ => Err(EngineError::Unavailable(format!(
                "{name:?} was created while it was deleted; try again"
            ))),
        }
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
        let snapshot = quick(move || store.snapshot(id))?;
        if snapshot.meta().version == 0 && self.is_unwritten(id) {
            // Created by a write that has not written it: not there for users.
            return Err(EngineError::NotFound(name.to_owned()));
        }
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
        self.catch_up().await?;
        let (rows, next) = self.page(prefix, start_after, limit);
        let metas = self.metas_of(&rows).await?;
        let entries = rows
            .into_iter()
            .zip(metas)
            .filter_map(|((name, id, _), meta)| {
                let (size, version) = meta?;
                // Left out: a file a write created and has not written yet.
                if version == 0 && self.is_unwritten(id) {
                    return None;
                }
                Some(ListEntry {
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
        self.catch_up().await?;
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
        tag: Option<OpTag>,
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
        let file_id: FileId = dfs_net::random::next_u64().max(1);
        let command = tagged(
            tag,
            if for_write {
                MapCommand::CreateFileForWrite {
                    name: name.to_owned(),
                    file_id,
                    replicas,
                }
            } else {
                MapCommand::CreateFile {
                    name: name.to_owned(),
                    file_id,
                    replicas,
                }
            },
        );
        let created = match self.propose(command).await {
            Err(e) => Err(e),
            // Ours (or, for a retried tagged create, the first attempt's).
            Ok(MapResponse::Created(p)) => Ok((p, true)),
            // Our own create, applied by an attempt whose answer was lost and then retried.
            Ok(MapResponse::AlreadyExists(p)) if p.file_id == file_id => Ok((p, true)),
            Ok(MapResponse::AlreadyExists(p)) => Ok((p, false)),
            Ok(other) => Err(EngineError::Internal(format!("create refused: {other:?}"))),
        };
        if for_write && created.is_err() {
            // The create may have committed although its answer was lost: the write that
            // made it fails, so it must leave nothing behind.
            self.undo_create(name, file_id, 1).await;
        }
        created
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
        let id = placement.file_id;
        match quick(|| self.store.meta(id)) {
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

    /// Commits `command` to the map. When that fails, the command may still have
    /// committed without this node's map showing it yet (a delete of a file it serves, a
    /// new replica set): the node then drops its lease, and serves nothing until a new
    /// one, granted once its map has caught up with the leader.
    pub(crate) async fn propose(&self, command: MapCommand) -> Result<MapResponse, EngineError> {
        match self.map.propose(command).await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.drop_lease();
                Err(EngineError::Unavailable(e.to_string()))
            }
        }
    }

    /// Stops acting as a primary until the next lease, and keeps a renewal asked for
    /// before now from restoring this one.
    pub(crate) fn drop_lease(&self) {
        let mut lease = self.lease.lock();
        lease.until = None;
        lease.drops += 1;
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
    /// A write at an offset or a truncation: the body gathered in memory (bounded by
    /// [`dfs_proto::WRITE_BYTES_MAX`]) and applied by one store call at commit, so that
    /// it lands whole or not at all.
    Buffered {
        store: Store,
        id: FileId,
        change: Change,
        data: Vec<u8>,
    },
}

/// What a buffered transaction does at commit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// Writes the bytes at this offset.
    At(u64),
    /// Sets the size (no bytes).
    Truncate(u64),
}

impl Txn {
    /// Opens the transaction of a write in `mode` to this node's copy of file `id`. A put
    /// to an empty copy is an append to it: it has nothing to replace, so it writes in
    /// place (one sync) instead of through a temp file and a rename; the outcome is the
    /// same (content, version + 1, checksum, dedup entry). The caller holds the file's
    /// write lock, so the copy stays empty until the transaction owns it.
    pub(crate) fn begin(store: &Store, id: FileId, mode: WriteMode) -> Result<Txn, StoreError> {
        match mode {
            WriteMode::Put if store.meta(id)?.size > 0 => store.begin_put(id).map(Txn::Put),
            WriteMode::Put | WriteMode::Append => store.begin_append(id).map(Txn::Append),
            WriteMode::At { offset } => Txn::buffered(store, id, Change::At(offset)),
            WriteMode::Truncate { size } => Txn::buffered(store, id, Change::Truncate(size)),
        }
    }

    fn buffered(store: &Store, id: FileId, change: Change) -> Result<Txn, StoreError> {
        store.meta(id)?;
        Ok(Txn::Buffered {
            store: store.clone(),
            id,
            change,
            data: Vec::new(),
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Txn::Append(t) => t.write(bytes),
            Txn::Put(t) => t.write(bytes),
            Txn::Buffered { change, data, .. } => {
                let max = match change {
                    Change::Truncate(_) => 0,
                    Change::At(_) => dfs_proto::WRITE_BYTES_MAX,
                };
                if data.len().saturating_add(bytes.len()) > max {
                    return Err(StoreError::OutOfRange(format!(
                        "a {} carries at most {max} bytes",
                        if max == 0 {
                            "truncation"
                        } else {
                            "write at an offset"
                        }
                    )));
                }
                data.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    pub(crate) fn commit(self, key: Option<DedupKey>) -> Result<WriteOutcome, StoreError> {
        match self {
            Txn::Append(t) => t.commit(key),
            Txn::Put(t) => t.commit(key),
            Txn::Buffered {
                store,
                id,
                change,
                data,
            } => match change {
                Change::Truncate(size) => store.truncate(id, size, key),
                Change::At(offset) => store.write_at(id, offset, &data, key),
            },
        }
    }
}

/// A write's answer saved in the map's sessions: its ack if it was applied to a file since
/// deleted, `NotFound` if it was answered so.
fn write_answer(name: &str, saved: MapResponse) -> Option<Result<WriteAck, EngineError>> {
    match saved {
        MapResponse::Written(w) => {
            tracing::debug!(
                name,
                "duplicate write of a deleted file answered from the map"
            );
            let outcome = WriteOutcome {
                version: w.version,
                size: w.size,
                checksum: w.checksum,
                duplicate: true,
            };
            Some(Ok(ack(outcome, true)))
        }
        MapResponse::NotFound => {
            tracing::debug!(
                name,
                "a write answered NotFound before is answered so again"
            );
            Some(Err(EngineError::NotFound(name.to_owned())))
        }
        _ => None,
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

/// Runs blocking store work off the async threads (inline in a simulation: see
/// `dfs_net::blocking`).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    dfs_net::blocking::run(f)
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(EngineError::from)
}

/// The most bytes of file I/O (a read or a write into the page cache, never an fsync)
/// that [`quick`] runs on the calling task.
pub(crate) const QUICK_BYTES_MAX: usize = 64 << 10;

/// Runs store work that does not wait on the disk (a lookup in memory, opening a file, a
/// read or write of at most [`QUICK_BYTES_MAX`] bytes through the page cache) on the
/// calling task. Handing it to the blocking pool would cost two thread switches (a wake
/// and a park on each side), more than the work itself: on a two-core machine they were
/// most of the CPU time of a small write. Work that syncs stays on [`blocking`].
pub(crate) fn quick<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, EngineError> {
    f().map_err(EngineError::from)
}

/// [`quick`] when `small`, else [`blocking`].
pub(crate) async fn quick_if<T, F>(small: bool, f: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    if small { quick(f) } else { blocking(f).await }
}

/// This node's lease: until when it may act as a primary, and how many times it was
/// dropped.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    pub(crate) until: Option<Instant>,
    pub(crate) drops: u64,
}

/// What a create answers: the new file, empty.
fn empty_info(name: String, placement: &Placement) -> FileInfo {
    FileInfo {
        name,
        file_id: placement.file_id,
        size: 0,
        version: 0,
        checksum: crc32c_empty(),
        replicas: placement.replicas.clone(),
        modified_ms: 0,
    }
}

/// A client request's retry identity and condition.
#[derive(Debug, Clone, Copy)]
struct Asked {
    tag: Option<OpTag>,
    cond: Condition,
}

/// `command` on behalf of client request `tag`, if any: applied at most once.
pub(crate) fn tagged(tag: Option<OpTag>, command: MapCommand) -> MapCommand {
    match tag {
        Some(tag) => MapCommand::Tagged {
            tag: request_tag(tag),
            command: Box::new(command),
        },
        None => command,
    }
}

fn request_tag(tag: OpTag) -> RequestTag {
    RequestTag {
        client_id: tag.client_id,
        seq: tag.seq,
    }
}
