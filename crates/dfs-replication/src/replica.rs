//! A replica's side: the data messages other nodes send this one. Writes forwarded by a
//! file's primary are applied only at the epoch this node's map has for the file and only
//! on top of the version they follow; whole copies replace the local one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs_cluster::DataHandler;
use dfs_placement::Placement;
use dfs_store::{FileId, StoreError, WriteGuard};
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::engine::{QUICK_BYTES_MAX, Txn, blocking, quick, quick_if};
use crate::wire::{CopyState, DataReply, DataRpc, TransferKind, decode, encode};
use crate::{Engine, EngineError};

/// Most transfers open on one node at once.
const TRANSFERS_MAX: usize = 256;

/// A transfer idle this long is dropped (and its transaction undone).
pub(crate) const TRANSFER_IDLE_MAX: Duration = Duration::from_secs(30);

/// An open transfer: its store transaction, holding the file's write lock.
pub(crate) struct Staged {
    txn: Option<Txn>,
    kind: TransferKind,
    file_id: FileId,
    pub(crate) touched: Instant,
    _lock: WriteGuard<String>,
}

/// The engine as its peers' [`DataHandler`].
#[derive(Debug, Clone)]
pub struct DataService(pub Arc<Engine>);

impl DataHandler for DataService {
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let reply = match decode::<DataRpc>(&payload) {
                Ok(rpc) => self.0.serve_data(rpc).await,
                Err(why) => DataReply::Failed(why),
            };
            encode(&reply)
        })
    }
}

impl Engine {
    /// Answers one data message from another node.
    pub(crate) async fn serve_data(&self, rpc: DataRpc) -> DataReply {
        match rpc {
            DataRpc::Lease { from } => self.grant_lease(from).await,
            DataRpc::Role => DataReply::Role(self.role()),
            DataRpc::Begin {
                transfer,
                name,
                file_id,
                epoch,
                kind,
                data,
                last,
            } => {
                self.begin(transfer, name, file_id, epoch, kind, data, last)
                    .await
            }
            DataRpc::Chunk {
                transfer,
                data,
                last,
            } => self.chunk(transfer, data, last).await,
            DataRpc::Abort { transfer } => {
                self.transfers.lock().remove(&transfer);
                DataReply::Staged
            }
            DataRpc::Probe {
                name,
                file_id,
                epoch,
            } => self.probe(&name, file_id, epoch).await,
            DataRpc::Metas { files } => self.metas(files).await,
            DataRpc::Scrub => DataReply::Scrub(self.scrub_local().await),
        }
    }

    /// Sizes and versions of files this node is the primary of, for a listing: `None`
    /// for a copy damaged or lost here (left out of the listing). Refused (the listing is
    /// retried) unless this node holds a lease and is the primary of every one of them.
    pub(crate) async fn metas(&self, files: Vec<(String, FileId)>) -> DataReply {
        match self.try_metas(files).await {
            Ok(metas) => DataReply::Metas(metas),
            Err(e) => DataReply::Failed(e.to_string()),
        }
    }

    async fn try_metas(
        &self,
        files: Vec<(String, FileId)>,
    ) -> Result<Vec<Option<(u64, u64)>>, EngineError> {
        let me = self.config.node_id;
        // The lease first: once it is held, the map here has every change committed
        // before it was granted.
        self.wait_for_lease().await?;
        // One lookup per file asked for (a listing page holds at most a few hundred),
        // never a scan of the whole table.
        let primary_of_all = self.map.read(|s| {
            files.iter().all(|(name, id)| {
                s.files
                    .get(name)
                    .is_some_and(|p| p.file_id == *id && p.primary() == Some(me))
            })
        });
        let (names, ids): (std::collections::HashMap<FileId, String>, Vec<FileId>) = (
            files.iter().map(|(n, id)| (*id, n.clone())).collect(),
            files.iter().map(|(_, id)| *id).collect(),
        );
        if !primary_of_all {
            return Err(EngineError::Unavailable(format!(
                "node {me} is no longer the primary of every file asked for"
            )));
        }
        let found = ids
            .iter()
            .map(|id| match self.store.meta(*id) {
                Ok(m) => Ok(Some((m.size, m.version))),
                Err(StoreError::NotFound(_)) => Err(()),
                // Damaged here: left out of the listing.
                Err(_) => Ok(None),
            })
            .collect::<Vec<_>>();
        let mut metas = Vec::with_capacity(ids.len());
        for (id, found) in ids.into_iter().zip(found) {
            let meta = match found {
                Ok(meta) => meta,
                // No copy here yet: syncing the file decides what it holds (the empty
                // file never written, or an error if this node lost a written copy).
                Err(()) => {
                    let name = names.get(&id).map(String::as_str).unwrap_or_default();
                    self.drop_transfers_of(id);
                    let _lock = self.locks.write(name.to_owned()).await;
                    let placement = self.primary_placement(name).await?;
                    self.ensure_synced(name, &placement).await?;
                    let meta = self.local_meta(name, &placement).await?;
                    Some((meta.size, meta.version))
                }
            };
            metas.push(meta);
        }
        // As for a read: the sizes were taken under this node's lease.
        if !self.holds_lease() {
            return Err(EngineError::Unavailable(format!(
                "node {me}'s lease ran out while listing; try again"
            )));
        }
        Ok(metas)
    }

    /// The placement of `name` if this node's map has file `file_id` at exactly `epoch`
    /// (catching up with the leader first if it has an older one); otherwise the `Stale`
    /// answer to give.
    async fn placement_at(
        &self,
        name: &str,
        file_id: FileId,
        epoch: u64,
    ) -> Result<Placement, DataReply> {
        let current = |p: &Option<Placement>| {
            p.as_ref()
                .is_some_and(|p| p.file_id == file_id && p.epoch >= epoch)
        };
        let mut placement = self.map.lookup(name);
        if !current(&placement) && self.map.catch_up().await.is_ok() {
            placement = self.map.lookup(name);
        }
        match placement {
            Some(p) if p.file_id == file_id && p.epoch == epoch => Ok(p),
            Some(p) if p.file_id == file_id => Err(DataReply::Stale { epoch: p.epoch }),
            _ => Err(DataReply::Stale { epoch: 0 }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn begin(
        &self,
        transfer: u64,
        name: String,
        file_id: FileId,
        epoch: u64,
        kind: TransferKind,
        data: Bytes,
        last: bool,
    ) -> DataReply {
        let placement = match self.placement_at(&name, file_id, epoch).await {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let me = self.config.node_id;
        if placement.primary() == Some(me) {
            return DataReply::Failed("this node is the file's primary".into());
        }
        if matches!(kind, TransferKind::Write { .. }) && !placement.holds(me) {
            return DataReply::Stale { epoch };
        }
        if self.transfers.lock().len() >= TRANSFERS_MAX {
            return DataReply::Failed(format!("more than {TRANSFERS_MAX} transfers open"));
        }
        self.drop_transfers_of(file_id);
        let lock = self.locks.write(name.clone()).await;
        let store = self.store.clone();
        let opened = match &kind {
            TransferKind::Write {
                mode, base_version, ..
            } => {
                let (mode, base) = (*mode, *base_version);
                // Only making the copy (a create) syncs.
                let exists = store.meta(file_id).is_ok();
                quick_if(exists, move || {
                    let version = match store.meta(file_id) {
                        Ok(m) => m.version,
                        // A copy begins empty: made here by the first write after the create.
                        Err(StoreError::NotFound(_)) if base == 0 => {
                            match store.create(file_id, &name) {
                                Ok(m) => m.version,
                                Err(StoreError::AlreadyExists(_)) => store.meta(file_id)?.version,
                                Err(e) => return Err(e),
                            }
                        }
                        Err(StoreError::NotFound(_)) => {
                            return Ok(Err(DataReply::Behind { version: 0 }));
                        }
                        Err(e) => return Err(e),
                    };
                    if version != base {
                        return Ok(Err(DataReply::Behind { version }));
                    }
                    Ok(Ok(Txn::begin(&store, file_id, mode)?))
                })
                .await
            }
            TransferKind::Install { .. } => {
                blocking(move || Ok(Ok(Txn::Put(store.begin_install(file_id, &name)?)))).await
            }
        };
        let txn = match opened {
            Ok(Ok(txn)) => txn,
            Ok(Err(reply)) => return reply,
            Err(e) => return DataReply::Failed(e.to_string()),
        };
        let staged = Staged {
            txn: Some(txn),
            kind,
            file_id,
            touched: Instant::now(),
            _lock: lock,
        };
        self.advance(transfer, staged, data, last).await
    }

    async fn chunk(&self, transfer: u64, data: Bytes, last: bool) -> DataReply {
        let Some(staged) = self.transfers.lock().remove(&transfer) else {
            return DataReply::Failed(format!("no open transfer {transfer:x}"));
        };
        self.advance(transfer, staged, data, last).await
    }

    /// Writes `data` into the transfer, commits it if `last`, and keeps it open otherwise.
    async fn advance(
        &self,
        transfer: u64,
        mut staged: Staged,
        data: Bytes,
        last: bool,
    ) -> DataReply {
        let Some(mut txn) = staged.txn.take() else {
            return DataReply::Failed("transfer already finished".into());
        };
        if !last {
            let written = quick_if(data.len() <= QUICK_BYTES_MAX, move || {
                txn.write(&data)?;
                Ok(txn)
            })
            .await;
            match written {
                Ok(txn) => staged.txn = Some(txn),
                Err(e) => return DataReply::Failed(e.to_string()),
            }
            staged.touched = Instant::now();
            self.transfers.lock().insert(transfer, staged);
            return DataReply::Staged;
        }
        // The last chunk and the commit in one trip to the blocking pool.
        let id = staged.file_id;
        let committed = match staged.kind.clone() {
            TransferKind::Write { key, .. } => blocking(move || {
                txn.write(&data)?;
                txn.commit(key)
            })
            .await
            .map(|o| CopyState {
                version: o.version,
                size: o.size,
                checksum: o.checksum,
            }),
            TransferKind::Install { state } => {
                let Txn::Put(mut put) = txn else {
                    return DataReply::Failed("an install is a put".into());
                };
                let result = blocking(move || {
                    put.write(&data)?;
                    put.commit_install(state)
                })
                .await;
                if result.is_ok() {
                    self.installed.lock().insert(id, Instant::now());
                }
                result.map(|m| CopyState {
                    version: m.version,
                    size: m.size,
                    checksum: m.checksum,
                })
            }
        };
        drop(staged);
        match committed {
            Ok(copy) => DataReply::Committed(copy),
            Err(e) => DataReply::Failed(e.to_string()),
        }
    }

    /// This node's copy of a file, for a primary bringing its replicas in line.
    async fn probe(&self, name: &str, file_id: FileId, epoch: u64) -> DataReply {
        if let Err(reply) = self.placement_at(name, file_id, epoch).await {
            return reply;
        }
        self.drop_transfers_of(file_id);
        let _lock = self.locks.read(name.to_owned()).await;
        match quick(|| self.store.meta(file_id)) {
            Ok(m) => DataReply::Copy(Some(CopyState {
                version: m.version,
                size: m.size,
                checksum: m.checksum,
            })),
            Err(EngineError::Store(StoreError::NotFound(_))) => DataReply::Copy(None),
            Err(e) => DataReply::Failed(e.to_string()),
        }
    }

    /// Drops the open transfers into file `id`: a primary holds its file's lock for the
    /// whole of a write, so a new message about the file means they were abandoned (their
    /// primary died or was deposed mid-write); they would hold the file's lock here until
    /// they time out. Also called by this node before it acts as the file's primary: any
    /// transfer into it then comes from a deposed primary.
    pub(crate) fn drop_transfers_of(&self, id: FileId) {
        self.transfers.lock().retain(|_, s| s.file_id != id);
    }

    /// Drops transfers idle for over [`TRANSFER_IDLE_MAX`] (their primary is gone).
    pub(crate) fn reap_transfers(&self) {
        let now = Instant::now();
        self.transfers
            .lock()
            .retain(|_, s| now.duration_since(s.touched) < TRANSFER_IDLE_MAX);
    }
}
