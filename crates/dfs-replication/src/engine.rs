//! [`Engine`]: the operations of the data model on top of the map, the locks and the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_cluster::{ClusterMap, ClusterState, MapCommand, MapResponse, MapRole};
use dfs_placement::{NodeId, Placement, place};
use dfs_proto::{
    ClusterStatus, FileInfo, ListEntry, Name, NodeRole, NodeStatus, OpTag, TableEntry, WriteAck,
    validate_prefix,
};
use dfs_store::{
    DedupKey, FileId, FileMeta, LockManager, Snapshot, Store, StoreError, WriteOutcome,
};
use parking_lot::Mutex;

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
}

/// How a write changes a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Executes file operations for one node.
pub struct Engine {
    config: EngineConfig,
    store: Arc<Store>,
    map: ClusterMap,
    locks: LockManager<String>,
    recent: Mutex<RecentOps>,
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
    /// first: a store file the map does not list for this node is a leftover of a delete
    /// interrupted by a crash (the map commits first) and is removed, except when the map
    /// was created by this start, when the store's files are adopted into it (a data
    /// directory from the one-node release, which kept names only in the store).
    pub async fn start(
        config: EngineConfig,
        store: Arc<Store>,
        map: ClusterMap,
    ) -> Result<Self, EngineError> {
        if config.replication_factor == 0 || config.replication_factor > config.members.len() {
            return Err(EngineError::InvalidRequest(format!(
                "replication factor {} must be between 1 and the {} members",
                config.replication_factor,
                config.members.len()
            )));
        }
        let engine = Self {
            config,
            store,
            map,
            locks: LockManager::new(),
            recent: Mutex::new(RecentOps::default()),
        };
        engine.reconcile().await?;
        Ok(engine)
    }

    async fn reconcile(&self) -> Result<(), EngineError> {
        let me = self.config.node_id;
        for meta in self.store.files() {
            let listed = self.map.read(|s| {
                s.files
                    .get(&meta.name)
                    .is_some_and(|p| p.file_id == meta.id && p.holds(me))
            });
            if listed {
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

    /// Stops the engine's part of the cluster map.
    pub async fn shutdown(&self) {
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

    /// Creates an empty file.
    pub async fn create(&self, name: &str, tag: Option<OpTag>) -> Result<FileInfo, EngineError> {
        let name = Name::parse(name)?.into_string();
        let _lock = self.locks.write(name.clone()).await;
        if let Some(Recent::Created(info)) = tag.and_then(|t| self.recent.lock().get(t)) {
            return Ok(info);
        }
        if self.map.lookup(&name).is_some() {
            return Err(EngineError::AlreadyExists(name));
        }
        let (placement, meta) = self.create_locked(&name).await?;
        let info = self.info(&meta, &placement);
        if let Some(t) = tag {
            self.recent.lock().insert(t, Recent::Created(info.clone()));
        }
        Ok(info)
    }

    /// Appends to or replaces a file (creating it if missing), durable before it returns.
    pub async fn write(
        &self,
        mode: WriteMode,
        name: &str,
        mut body: BodyStream,
        tag: Option<OpTag>,
    ) -> Result<WriteAck, EngineError> {
        let name = Name::parse(name)?.into_string();
        let _lock = self.locks.write(name.clone()).await;
        let id = match self.map.lookup(&name) {
            Some(p) => self.local_meta(p.file_id, &name).await?.id,
            None => self.create_locked(&name).await?.0.file_id,
        };
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
        let store = self.store.clone();
        let outcome = if let Some(data) = body.take_single() {
            blocking(move || match mode {
                WriteMode::Append => store.append(id, &data, key),
                WriteMode::Put => store.put(id, &data, key),
            })
            .await?
        } else {
            self.stream_write(mode, id, body, key).await?
        };
        tracing::debug!(
            name,
            ?mode,
            version = outcome.version,
            size = outcome.size,
            "write applied"
        );
        Ok(ack(outcome, outcome.duplicate))
    }

    /// Streams a multi-chunk body into a store transaction, committed at the end.
    async fn stream_write(
        &self,
        mode: WriteMode,
        id: FileId,
        mut body: BodyStream,
        key: Option<DedupKey>,
    ) -> Result<WriteOutcome, EngineError> {
        let store = self.store.clone();
        let mut txn = blocking(move || match mode {
            WriteMode::Append => store.begin_append(id).map(Txn::Append),
            WriteMode::Put => store.begin_put(id).map(Txn::Put),
        })
        .await?;
        loop {
            let chunk = match body.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Dropping a transaction undoes it (truncate or remove a temp file).
                    tokio::task::spawn_blocking(move || drop(txn));
                    return Err(e);
                }
            };
            txn = blocking(move || {
                txn.write(&chunk)?;
                Ok(txn)
            })
            .await?;
        }
        blocking(move || txn.commit(key)).await
    }

    /// Starts a read: takes a snapshot under the file's shared lock and releases the lock,
    /// so a slow reader never holds up writers.
    pub async fn read(
        &self,
        name: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadHandle, EngineError> {
        let name = Name::parse(name)?.into_string();
        let lock = self.locks.read(name.clone()).await;
        let placement = self
            .map
            .lookup(&name)
            .ok_or_else(|| EngineError::NotFound(name.clone()))?;
        let id = self.local_meta(placement.file_id, &name).await?.id;
        let store = self.store.clone();
        let snapshot = blocking(move || store.snapshot(id)).await?;
        drop(lock);
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

    /// Deletes a file.
    pub async fn delete(&self, name: &str, tag: Option<OpTag>) -> Result<(), EngineError> {
        let name = Name::parse(name)?.into_string();
        let _lock = self.locks.write(name.clone()).await;
        if let Some(Recent::Deleted) = tag.and_then(|t| self.recent.lock().get(t)) {
            return Ok(());
        }
        let placement = self
            .map
            .lookup(&name)
            .ok_or_else(|| EngineError::NotFound(name.clone()))?;
        let id = placement.file_id;
        // The map's commit is the delete's linearization point; the bytes follow. A crash
        // in between leaves a file the map no longer lists, removed at the next start.
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

    /// Size, version, replicas and checksum of a file.
    pub async fn stat(&self, name: &str) -> Result<FileInfo, EngineError> {
        let name = Name::parse(name)?.into_string();
        let _lock = self.locks.read(name.clone()).await;
        let placement = self
            .map
            .lookup(&name)
            .ok_or_else(|| EngineError::NotFound(name.clone()))?;
        let meta = self.local_meta(placement.file_id, &name).await?;
        Ok(self.info(&meta, &placement))
    }

    /// A sorted page of the files whose names start with `prefix`.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ListEntry>, Option<String>), EngineError> {
        validate_prefix(prefix)?;
        let (rows, next) = self.page(prefix, start_after, limit);
        let store = self.store.clone();
        // Off the async threads: a file's metadata waits while a write to it syncs.
        let entries = blocking(move || {
            Ok(rows
                .into_iter()
                .filter_map(|(name, id, _)| {
                    let (size, version) = match store.meta(id) {
                        Ok(meta) => (meta.size, meta.version),
                        // Listed but never written here (its local file comes on demand).
                        Err(StoreError::NotFound(_)) => (0, 0),
                        // Damaged: left out, as it is never served.
                        Err(_) => return None,
                    };
                    Some(ListEntry {
                        name,
                        size,
                        version,
                    })
                })
                .collect())
        })
        .await?;
        Ok((entries, next))
    }

    /// A sorted page of the placement table.
    pub fn table(
        &self,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<TableEntry>, Option<String>) {
        let (rows, next) = self.page("", start_after, limit);
        let entries = rows
            .into_iter()
            .map(|(name, file_id, p)| TableEntry {
                name,
                file_id,
                replicas: p.replicas,
                epoch: p.epoch,
            })
            .collect();
        (entries, next)
    }

    /// The cluster as this node sees it: the members, which are up in the map, and the
    /// map's leader and term.
    pub fn status(&self) -> ClusterStatus {
        let me = self.config.node_id;
        let map = self.map.status();
        let up = self.map.read(|s| {
            s.nodes
                .iter()
                .map(|(id, n)| (*id, n.up))
                .collect::<std::collections::BTreeMap<_, _>>()
        });
        ClusterStatus {
            nodes: self
                .config
                .members
                .iter()
                .map(|m| NodeStatus {
                    id: m.id,
                    addr: m.addr.clone(),
                    up: up.get(&m.id).copied().unwrap_or(false),
                    role: if m.id == me {
                        match map.role {
                            MapRole::Leader => NodeRole::Leader,
                            MapRole::Follower => NodeRole::Follower,
                            MapRole::Candidate => NodeRole::Candidate,
                            MapRole::Other => NodeRole::Unknown,
                        }
                    } else if map.leader == Some(m.id) {
                        NodeRole::Leader
                    } else {
                        NodeRole::Unknown
                    },
                })
                .collect(),
            leader: map.leader,
            term: map.term,
            replication_factor: self.config.replication_factor as u32,
        }
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

    /// Places and creates a new file; the caller holds the name's write lock. The map
    /// commits first; the local file follows (and is created on demand if a crash came
    /// between the two, see [`Engine::local_meta`]).
    async fn create_locked(&self, name: &str) -> Result<(Placement, FileMeta), EngineError> {
        let up = self.map.read(ClusterState::up_nodes);
        let replicas = place(name, &up, self.config.replication_factor)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        // A fresh id for every create, so a re-created name is a new file.
        let file_id: FileId = rand::random::<u64>().max(1);
        let command = MapCommand::CreateFile {
            name: name.to_owned(),
            file_id,
            replicas,
        };
        let placement = match self.propose(command).await? {
            MapResponse::Created(p) => p,
            // Our own create, applied by an attempt whose answer was lost and then retried.
            MapResponse::AlreadyExists(p) if p.file_id == file_id => p,
            MapResponse::AlreadyExists(_) => return Err(EngineError::AlreadyExists(name.into())),
            other => return Err(EngineError::Internal(format!("create refused: {other:?}"))),
        };
        let meta = self.local_meta(placement.file_id, name).await?;
        Ok((placement, meta))
    }

    /// The local file for `id`, created empty if the map lists it but the store lacks it
    /// (a crash between the map's commit and the store's create).
    async fn local_meta(&self, id: FileId, name: &str) -> Result<FileMeta, EngineError> {
        let store = self.store.clone();
        let name = name.to_owned();
        blocking(move || match store.meta(id) {
            Err(StoreError::NotFound(_)) => match store.create(id, &name) {
                Err(StoreError::AlreadyExists(_)) => store.meta(id),
                other => other,
            },
            other => other,
        })
        .await
    }

    async fn propose(&self, command: MapCommand) -> Result<MapResponse, EngineError> {
        self.map
            .propose(command)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))
    }

    fn info(&self, meta: &FileMeta, placement: &Placement) -> FileInfo {
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

enum Txn {
    Append(dfs_store::AppendTxn),
    Put(dfs_store::PutTxn),
}

impl Txn {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match self {
            Txn::Append(t) => t.write(data),
            Txn::Put(t) => t.write(data),
        }
    }

    fn commit(self, key: Option<DedupKey>) -> Result<WriteOutcome, StoreError> {
        match self {
            Txn::Append(t) => t.commit(key),
            Txn::Put(t) => t.commit(key),
        }
    }
}

fn ack(outcome: WriteOutcome, duplicate: bool) -> WriteAck {
    WriteAck {
        version: outcome.version,
        size: outcome.size,
        checksum: outcome.checksum,
        duplicate,
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, EngineError>
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
