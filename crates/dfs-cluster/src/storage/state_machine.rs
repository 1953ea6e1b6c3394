//! The cluster map's state machine and its snapshot (`snapshot` in the storage directory).
//!
//! `apply` changes memory only; the durable form of the map is the last snapshot plus the
//! log after it (openraft re-applies that part at start, up to the committed log id saved by
//! the [`LogStore`](super::LogStore)). A snapshot is written atomically: `snapshot.tmp`,
//! fsync, rename over `snapshot`, fsync of the directory. See [`open_storage`](crate::open_storage) for
//! the byte format.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{DirLock, SnapshotBytes, StoreError, blocking};
use crate::{ClusterState, MapResponse, TypeConfig};

/// The snapshot's file name in the storage directory.
pub(super) const SNAPSHOT_FILE: &str = "snapshot";
/// Where a snapshot is written before it is renamed over [`SNAPSHOT_FILE`].
pub(super) const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
/// First bytes of the snapshot file.
const SNAPSHOT_MAGIC: &[u8; 8] = b"dfs-snap";
/// Version of the snapshot file's framing (magic, version, CRC, length, body).
const SNAPSHOT_FILE_FORMAT: u32 = 1;
/// Magic, version, CRC-32C and body length.
const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 4 + 8;
/// Version of the snapshot data (the first field of its postcard encoding). Format 1
/// (before the map kept [`Sessions`](crate::Sessions)) is still read.
const SNAPSHOT_DATA_FORMAT: u32 = 3;

type Membership = StoredMembership<u64, BasicNode>;
type Meta = SnapshotMeta<u64, BasicNode>;

/// What the state machine holds: the map and how far the log has been applied to it.
#[derive(Debug, Default)]
struct SmData {
    state: ClusterState,
    last_applied: Option<LogId<u64>>,
    last_membership: Membership,
}

/// The snapshot data, borrowed to encode (after the format number).
#[derive(Serialize)]
struct SnapshotDataRef<'a> {
    last_applied: &'a Option<LogId<u64>>,
    last_membership: &'a Membership,
    state: &'a ClusterState,
}

/// The snapshot data, decoded (after the format number). Same fields and order as
/// [`SnapshotDataRef`].
#[derive(Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId<u64>>,
    last_membership: Membership,
    state: ClusterState,
}

/// Snapshot data of format 1: the map without its sessions.
#[derive(Deserialize)]
struct SnapshotDataV1 {
    last_applied: Option<LogId<u64>>,
    last_membership: Membership,
    state: ClusterStateV1,
}

/// [`ClusterState`] as format 1 encoded it.
#[derive(Deserialize)]
struct ClusterStateV1 {
    nodes: std::collections::BTreeMap<dfs_placement::NodeId, crate::NodeInfo>,
    files: dfs_placement::PlacementTable,
}

/// Snapshot data of format 2: the map without its locks.
#[derive(Deserialize)]
struct SnapshotDataV2 {
    last_applied: Option<LogId<u64>>,
    last_membership: Membership,
    state: ClusterStateV2,
}

/// [`ClusterState`] as format 2 encoded it.
#[derive(Deserialize)]
struct ClusterStateV2 {
    nodes: std::collections::BTreeMap<dfs_placement::NodeId, crate::NodeInfo>,
    files: dfs_placement::PlacementTable,
    sessions: crate::Sessions,
    unwritten: std::collections::BTreeSet<dfs_placement::FileId>,
}

/// Encodes the data of a snapshot of `sm`: postcard of the format number then the fields.
fn encode_data(sm: &SmData) -> Result<Vec<u8>, StoreError> {
    let data = SnapshotDataRef {
        last_applied: &sm.last_applied,
        last_membership: &sm.last_membership,
        state: &sm.state,
    };
    postcard::to_stdvec(&(SNAPSHOT_DATA_FORMAT, data)).map_err(StoreError::Encode)
}

fn decode_data(bytes: &[u8]) -> Result<SmData, StoreError> {
    let bad = |e: postcard::Error| StoreError::Decode(format!("snapshot data: {e}"));
    let (format, rest) = postcard::take_from_bytes::<u32>(bytes).map_err(bad)?;
    match format {
        SNAPSHOT_DATA_FORMAT => {
            let data: SnapshotData = postcard::from_bytes(rest).map_err(bad)?;
            Ok(SmData {
                state: data.state,
                last_applied: data.last_applied,
                last_membership: data.last_membership,
            })
        }
        2 => {
            let v2: SnapshotDataV2 = postcard::from_bytes(rest).map_err(bad)?;
            Ok(SmData {
                state: ClusterState {
                    nodes: v2.state.nodes,
                    files: v2.state.files,
                    sessions: v2.state.sessions,
                    unwritten: v2.state.unwritten,
                    locks: Default::default(),
                },
                last_applied: v2.last_applied,
                last_membership: v2.last_membership,
            })
        }
        1 => {
            let v1: SnapshotDataV1 = postcard::from_bytes(rest).map_err(bad)?;
            Ok(SmData {
                state: ClusterState {
                    nodes: v1.state.nodes,
                    files: v1.state.files,
                    sessions: Default::default(),
                    unwritten: Default::default(),
                    locks: Default::default(),
                },
                last_applied: v1.last_applied,
                last_membership: v1.last_membership,
            })
        }
        other => Err(StoreError::Decode(format!(
            "snapshot data format {other}, this build reads {SNAPSHOT_DATA_FORMAT}"
        ))),
    }
}

/// Encodes the snapshot file: header then postcard of `(meta, data)`.
fn encode_file(meta: &Meta, data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let body = postcard::to_stdvec(&(meta, data)).map_err(StoreError::Encode)?;
    let mut file = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
    file.extend_from_slice(SNAPSHOT_MAGIC);
    file.extend_from_slice(&SNAPSHOT_FILE_FORMAT.to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&body);
    Ok(file)
}

fn decode_file(bytes: &[u8]) -> Result<(Meta, Vec<u8>), StoreError> {
    let bad = |why: String| StoreError::Decode(format!("{SNAPSHOT_FILE}: {why}"));
    let Some((header, body)) = bytes.split_at_checked(SNAPSHOT_HEADER_BYTES) else {
        return Err(bad(format!(
            "{} bytes, shorter than its header",
            bytes.len()
        )));
    };
    let (magic, rest) = header.split_at(8);
    let (version, rest) = rest.split_at(4);
    let (crc, len) = rest.split_at(4);
    if magic != SNAPSHOT_MAGIC {
        return Err(bad("not a dfs snapshot (bad magic)".into()));
    }
    let version = u32::from_le_bytes(version.try_into().map_err(|_| bad("header".into()))?);
    if version != SNAPSHOT_FILE_FORMAT {
        return Err(bad(format!(
            "file format {version}, this build reads {SNAPSHOT_FILE_FORMAT}"
        )));
    }
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad("header".into()))?);
    let len = u64::from_le_bytes(len.try_into().map_err(|_| bad("header".into()))?);
    if len != body.len() as u64 {
        return Err(bad(format!(
            "body of {} bytes, the header says {len}",
            body.len()
        )));
    }
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    postcard::from_bytes(body).map_err(|e| bad(e.to_string()))
}

/// Writes `bytes` as `dir/snapshot` atomically and durably: temp file, fsync, rename,
/// directory fsync.
fn write_snapshot_file(dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    let path = dir.join(SNAPSHOT_FILE);
    let mut file =
        File::create(&tmp).map_err(StoreError::io(format!("create {}", tmp.display())))?;
    file.write_all(bytes)
        .map_err(StoreError::io(format!("write {}", tmp.display())))?;
    file.sync_all()
        .map_err(StoreError::io(format!("fsync {}", tmp.display())))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(StoreError::io(format!(
        "rename {} to {}",
        tmp.display(),
        path.display()
    )))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!("fsync {}", dir.display())))
}

/// Reads `dir/snapshot`, if there is one.
fn read_snapshot_file(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode_file(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("read {}", path.display()))(e)),
    }
}

/// The cluster map's raft state machine: openraft's [`RaftStateMachine`], and its own
/// [`RaftSnapshotBuilder`].
///
/// Made by [`open_storage`](super::open_storage), loaded from the last snapshot. Clones
/// share the same state (openraft uses a clone as the snapshot builder); hand
/// [`reader`](Self::reader)s to the rest of the node.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("dir", &self.shared.dir)
            .field("last_applied", &self.reader().last_applied())
            .finish_non_exhaustive()
    }
}

struct Shared {
    dir: PathBuf,
    data: Arc<RwLock<SmData>>,
    /// Serializes snapshot file writes (taken on blocking threads only) and holds the last
    /// log id of the snapshot on disk, so an older snapshot never replaces a newer one.
    persisted: Mutex<Option<LogId<u64>>>,
    /// Makes snapshot ids unique within a run.
    builds: AtomicU64,
    /// Held while any store of the directory is alive.
    _lock: Arc<DirLock>,
}

/// A cheap, cloneable read handle on the cluster map as applied on this node.
///
/// Reads take a short read lock; never call it from code that would hold it across an
/// `.await` (the closure given to [`read`](Self::read) is synchronous, so it cannot).
#[derive(Clone)]
pub struct MapReader {
    data: Arc<RwLock<SmData>>,
}

impl std::fmt::Debug for MapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapReader")
            .field("last_applied", &self.last_applied())
            .finish_non_exhaustive()
    }
}

impl MapReader {
    /// Runs `f` on the current map and returns what it returns. `f` runs under the read
    /// lock: keep it short, and do not call this reader (or anything that applies to the
    /// map) from inside it.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.data.read().state)
    }

    /// The id of the last log entry applied to the map (or included in the snapshot it was
    /// loaded from); `None` before anything was applied.
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        self.data.read().last_applied
    }
}

impl StateMachineStore {
    /// Opens the state machine in `dir` (blocking): removes a leftover `snapshot.tmp`, then
    /// loads `snapshot` if there is one.
    pub(super) fn open(dir: &Path, lock: Arc<DirLock>) -> Result<StateMachineStore, StoreError> {
        let tmp = dir.join(SNAPSHOT_TMP_FILE);
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(path = %tmp.display(), "removed an unfinished snapshot"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("remove {}", tmp.display()))(e)),
        }
        let (data, persisted) = match read_snapshot_file(dir)? {
            Some((meta, bytes)) => {
                let data = decode_data(&bytes)?;
                check_meta(&meta, &data)?;
                tracing::info!(snapshot = %meta, "loaded the cluster map snapshot");
                (data, meta.last_log_id)
            }
            None => (SmData::default(), None),
        };
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                data: Arc::new(RwLock::new(data)),
                persisted: Mutex::new(persisted),
                builds: AtomicU64::new(0),
                _lock: lock,
            }),
        })
    }

    /// A read handle on the map, for the rest of the node.
    pub fn reader(&self) -> MapReader {
        MapReader {
            data: self.shared.data.clone(),
        }
    }

    /// Persists a snapshot (blocking), unless the one on disk is newer. Returns whether it
    /// was written.
    fn persist(shared: &Shared, meta: &Meta, data: &[u8]) -> Result<bool, StoreError> {
        let bytes = encode_file(meta, data)?;
        let mut persisted = shared.persisted.lock();
        if *persisted > meta.last_log_id {
            return Ok(false);
        }
        write_snapshot_file(&shared.dir, &bytes)?;
        *persisted = meta.last_log_id;
        Ok(true)
    }
}

/// Checks that a snapshot's metadata agrees with its data.
fn check_meta(meta: &Meta, data: &SmData) -> Result<(), StoreError> {
    if meta.last_log_id != data.last_applied || meta.last_membership != data.last_membership {
        return Err(StoreError::Decode(format!(
            "snapshot {meta} does not match its data (last applied {:?})",
            data.last_applied
        )));
    }
    Ok(())
}

fn snapshot_error(meta: Option<&Meta>, e: StoreError, write: bool) -> StorageError<u64> {
    let signature = meta.map(|m| m.signature());
    if write {
        StorageIOError::write_snapshot(signature, &e).into()
    } else {
        StorageIOError::read_snapshot(signature, &e).into()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Encodes the map with `last_applied` and the membership, persists it as `snapshot`
    /// (atomically, fsynced) and returns it.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, data) = {
            let sm = self.shared.data.read();
            let data = encode_data(&sm)
                .map_err(|e| StorageError::from(StorageIOError::read_state_machine(&e)))?;
            let build = self.shared.builds.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match sm.last_applied {
                Some(l) => format!(
                    "{}-{}-{}-{build}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("none-{build}"),
            };
            let meta = Meta {
                last_log_id: sm.last_applied,
                last_membership: sm.last_membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        let shared = self.shared.clone();
        let (meta, data, written) = blocking(move || {
            let written = Self::persist(&shared, &meta, &data)?;
            Ok((meta, data, written))
        })
        .await
        .map_err(|e| snapshot_error(None, e, true))?;
        if written {
            tracing::info!(snapshot = %meta, bytes = data.len(), "cluster map snapshot built");
        } else {
            tracing::info!(snapshot = %meta, "cluster map snapshot built; a newer one is on disk already");
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotBytes::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let sm = self.shared.data.read();
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    /// Applies each entry: a normal one through [`ClusterState::apply`], a membership one is
    /// recorded, a blank one does nothing; one response per entry ([`MapResponse::Done`] for
    /// the non-normal ones). Memory only: see [`open_storage`](crate::open_storage) for durability.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MapResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = self.shared.data.write();
        let mut out = Vec::new();
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MapResponse::Done,
                EntryPayload::Normal(command) => sm.state.apply(&command),
                EntryPayload::Membership(membership) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    MapResponse::Done
                }
            };
            out.push(response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotBytes>, StorageError<u64>> {
        Ok(Box::new(SnapshotBytes::default()))
    }

    /// Checks the received data against `meta`, persists it as `snapshot` (atomically,
    /// fsynced), then replaces the map with it.
    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotBytes>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let data = decode_data(&bytes).map_err(|e| snapshot_error(Some(meta), e, false))?;
        check_meta(meta, &data).map_err(|e| snapshot_error(Some(meta), e, false))?;
        let shared = self.shared.clone();
        let owned_meta = meta.clone();
        blocking(move || {
            let bytes = encode_file(&owned_meta, &bytes)?;
            let mut persisted = shared.persisted.lock();
            write_snapshot_file(&shared.dir, &bytes)?;
            *persisted = owned_meta.last_log_id;
            Ok(())
        })
        .await
        .map_err(|e| snapshot_error(Some(meta), e, true))?;
        *self.shared.data.write() = data;
        tracing::info!(snapshot = %meta, "cluster map snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let dir = self.shared.dir.clone();
        let snapshot = blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(|e| snapshot_error(None, e, false))?;
        Ok(snapshot.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(SnapshotBytes::new(data)),
        }))
    }
}

#[cfg(test)]
mod format_test {
    use super::*;
    use crate::MapCommand;

    /// A map as format 1 wrote it (before sessions) still reads back.
    #[test]
    fn format_1_snapshot_data_still_reads() {
        let mut state = ClusterState::default();
        state.apply(&MapCommand::NodeUp {
            id: 1,
            addr: "127.0.0.1:7000".into(),
            incarnation: 1,
        });
        state.apply(&MapCommand::CreateFile {
            name: "a".into(),
            file_id: 5,
            replicas: vec![1],
        });
        let membership = Membership::default();
        let v1 = postcard::to_stdvec(&(
            1u32,
            None::<LogId<u64>>,
            &membership,
            (&state.nodes, &state.files),
        ))
        .expect("encode");
        let data = decode_data(&v1).expect("format 1 decodes");
        assert_eq!(data.state, state);
        let v2 = encode_data(&data).expect("encode");
        assert_eq!(decode_data(&v2).expect("format 2 decodes").state, state);
    }
}
