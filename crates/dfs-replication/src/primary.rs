//! The primary's side of replication: checking that this node may act as a file's
//! primary, bringing the other replicas to its copy once per epoch, forwarding writes to
//! them and dropping replicas that fail.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use dfs_cluster::{MapCommand, MapResponse};
use dfs_placement::{NodeId, Placement};
use dfs_proto::CHUNK_BYTES_MAX;
use dfs_store::{DedupKey, FileId, InstallState, StoreError, WriteOutcome};
use futures::future::join_all;
use tokio::time::Instant;

use crate::engine::{QUICK_BYTES_MAX, Txn, blocking, quick, quick_if};
use crate::wire::{CopyState, DataReply, DataRpc, TransferKind, decode, encode};
use crate::{BodyStream, Engine, EngineError, WriteMode};

/// What became of one replica during a forwarded write or a sync.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It holds the same copy as the primary.
    Same,
    /// It could not be reached or failed: it leaves the replica set.
    Failed(String),
    /// Its copy is not the primary's: it gets a whole copy.
    Behind,
    /// It knows a newer placement: the primary acts on an old map.
    Stale,
}

impl Engine {
    /// `Err(Redirect)` unless this node is the primary at `placement`.
    pub(crate) fn redirect_unless_primary(&self, placement: &Placement) -> Result<(), EngineError> {
        match placement.primary() {
            Some(p) if p == self.config.node_id => Ok(()),
            Some(p) => {
                let addr = self
                    .node_addr(p)
                    .ok_or_else(|| EngineError::Unavailable(format!("no address for node {p}")))?;
                Err(EngineError::Redirect { node: p, addr })
            }
            None => Err(EngineError::Unavailable(
                "no replica holds the file: its only copy was on a disk that was lost (delete it)"
                    .into(),
            )),
        }
    }

    /// The placement of `name` (whose lock the caller holds) if this node may act as its
    /// primary now: the map names it, and it holds a lease (waiting a little for one).
    pub(crate) async fn primary_placement(&self, name: &str) -> Result<Placement, EngineError> {
        self.wait_for_lease().await?;
        let placement = self
            .map
            .lookup(name)
            .ok_or_else(|| EngineError::NotFound(name.to_owned()))?;
        self.redirect_unless_primary(&placement)?;
        Ok(placement)
    }

    /// Waits up to one lease period for this node to hold a lease.
    pub(crate) async fn wait_for_lease(&self) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.config.timing.lease;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(EngineError::Unavailable("the node is shutting down".into()));
            }
            if self.holds_lease() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Unavailable(
                    "this node holds no lease from the cluster map's leader".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether this node's lease is valid now.
    pub(crate) fn holds_lease(&self) -> bool {
        self.lease
            .lock()
            .until
            .is_some_and(|until| Instant::now() < until)
    }

    /// The address of node `id` in the map (or the configuration).
    pub(crate) fn node_addr(&self, id: NodeId) -> Option<String> {
        self.map
            .read(|s| s.nodes.get(&id).map(|n| n.addr.clone()))
            .or_else(|| {
                self.config
                    .members
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| m.addr.clone())
            })
    }

    /// Sends one data message to node `to` and decodes its answer.
    pub(crate) async fn call(&self, to: NodeId, rpc: &DataRpc) -> Result<DataReply, String> {
        self.call_within(to, rpc, self.config.timing.peer_timeout)
            .await
    }

    /// [`call`](Self::call), waiting at most `ttl` for the answer.
    pub(crate) async fn call_within(
        &self,
        to: NodeId,
        rpc: &DataRpc,
        ttl: std::time::Duration,
    ) -> Result<DataReply, String> {
        let addr = self
            .node_addr(to)
            .ok_or_else(|| format!("no address for node {to}"))?;
        let answer = self
            .peers
            .call_data(to, &addr, encode(rpc), ttl)
            .await
            .map_err(|e| e.to_string())?;
        decode(&answer)
    }

    /// Makes every other replica hold this primary's copy of `name` at `placement` (once
    /// per epoch; the caller holds the name's write lock) and returns the file id. A
    /// replica that cannot be reached leaves the replica set.
    pub(crate) async fn ensure_synced(
        &self,
        name: &str,
        placement: &Placement,
    ) -> Result<FileId, EngineError> {
        let id = placement.file_id;
        if self.synced.lock().get(&id) == Some(&placement.epoch) {
            return Ok(id);
        }
        let local = quick(|| match self.store.meta(id) {
            Ok(meta) => Ok(Some(meta)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })?;
        let others = self.others(placement);
        let probes = others.iter().map(|&node| async move {
            let probe = DataRpc::Probe {
                name: name.to_owned(),
                file_id: id,
                epoch: placement.epoch,
            };
            (node, self.call(node, &probe).await)
        });
        let replies = join_all(probes).await;
        let meta = match local {
            Some(meta) => meta,
            // No copy here: the file was never written, or this node lost its copy. Every
            // acknowledged write is on every replica of the current set, so if no other
            // replica has a written copy either, the file is the empty one never written.
            None => {
                let written = replies.iter().find_map(|(node, reply)| match reply {
                    Ok(DataReply::Copy(Some(c))) if c.version > 0 || c.size > 0 => {
                        Some((*node, c.version))
                    }
                    _ => None,
                });
                let silent = replies.iter().find_map(|(node, reply)| match reply {
                    Ok(DataReply::Copy(_)) => None,
                    other => Some((*node, format!("{other:?}"))),
                });
                if let Some((node, why)) = silent {
                    return Err(EngineError::Unavailable(format!(
                        "this node has no copy of {name:?} and cannot tell whether it was \
                         written: node {node} did not say ({why})"
                    )));
                }
                if let Some((node, version)) = written {
                    return Err(EngineError::Unavailable(format!(
                        "this node has lost its copy of {name:?} (node {node} has version \
                         {version}); it must be restored before the file is served"
                    )));
                }
                self.make_empty_copy(name, id).await?
            }
        };
        let mine = CopyState {
            version: meta.version,
            size: meta.size,
            checksum: meta.checksum,
        };
        let outcomes = replies
            .into_iter()
            .map(|(node, reply)| {
                let outcome = match reply {
                    Ok(DataReply::Copy(Some(copy))) if copy == mine => Outcome::Same,
                    // A copy not made yet equals an empty file never written (the first
                    // write makes it).
                    Ok(DataReply::Copy(None)) if mine.version == 0 && mine.size == 0 => {
                        Outcome::Same
                    }
                    Ok(DataReply::Copy(_)) => Outcome::Behind,
                    other => classify(other),
                };
                (node, outcome)
            })
            .collect();
        let outcomes = self.install_where_behind(name, placement, outcomes).await;
        self.settle(name, placement, &outcomes).await?;
        tracing::debug!(
            node = self.config.node_id,
            name,
            epoch = placement.epoch,
            replicas = ?placement.replicas,
            "replicas in sync"
        );
        Ok(id)
    }

    /// Applies a client's write here and on every other replica (in parallel), then makes
    /// sure each replica either has it or has left the replica set. The caller holds the
    /// name's write lock and has synced the replicas at `placement`.
    pub(crate) async fn replicated_write(
        &self,
        name: &str,
        placement: &Placement,
        mode: WriteMode,
        mut body: BodyStream,
        key: Option<DedupKey>,
    ) -> Result<WriteOutcome, EngineError> {
        let id = placement.file_id;
        let others = self.others(placement);
        let meta = self.local_meta(name, placement).await?;
        let transfer = dfs_net::random::next_u64();
        let kind = TransferKind::Write {
            mode,
            base_version: meta.version,
            key,
        };
        let mut failed: Vec<(NodeId, Outcome)> = Vec::new();
        let mut live: Vec<NodeId> = others.clone();
        let store = self.store.clone();
        let mut txn = Some(quick(move || Txn::begin(&store, id, mode))?);
        let mut first = true;
        let mut pending = body.next().await;
        loop {
            let done = matches!(pending, Ok(None));
            let data = match pending {
                Ok(Some(data)) => data,
                Ok(None) => Bytes::new(),
                Err(e) => {
                    self.abort_transfers(&live, transfer).await;
                    if let Some(txn) = txn.take() {
                        // Ended before the file's lock is let go: the next write finds
                        // the writer slot free.
                        let _ = dfs_net::blocking::run(move || drop(txn)).await;
                    }
                    return Err(e);
                }
            };
            // The next chunk is awaited only once this one is on its way, so the body is
            // never read further than one chunk ahead of the replicas.
            let (last, next) = if done {
                (true, Ok(None))
            } else {
                let next = body.next().await;
                (matches!(next, Ok(None)), next)
            };
            let rpc = if first {
                DataRpc::Begin {
                    transfer,
                    name: name.to_owned(),
                    file_id: id,
                    epoch: placement.epoch,
                    kind: kind.clone(),
                    data: data.clone(),
                    last,
                }
            } else {
                DataRpc::Chunk {
                    transfer,
                    data: data.clone(),
                    last,
                }
            };
            first = false;
            let mut local_txn = txn.take().expect("the transaction is put back every round");
            let local = quick_if(data.len() <= QUICK_BYTES_MAX, move || {
                local_txn.write(&data)?;
                Ok(local_txn)
            });
            let remote = join_all(live.iter().map(|&node| {
                let rpc = &rpc;
                async move { (node, self.call(node, rpc).await) }
            }));
            let (local, remote) = tokio::join!(local, remote);
            let local = match local {
                Ok(local) => local,
                Err(e) => {
                    // The replicas may have taken this chunk (or committed, on the last):
                    // undo what can be undone, and sync them again before the next write.
                    self.abort_transfers(&live, transfer).await;
                    self.synced.lock().remove(&id);
                    return Err(e);
                }
            };
            txn = Some(local);
            for (node, reply) in remote {
                match reply {
                    Ok(DataReply::Staged) if !last => {}
                    Ok(DataReply::Committed(_)) if last => {}
                    other => {
                        live.retain(|n| *n != node);
                        failed.push((node, classify(other)));
                    }
                }
            }
            if last {
                break;
            }
            pending = next;
        }
        let local_txn = txn.take().expect("the transaction is put back every round");
        let outcome = blocking(move || local_txn.commit(key)).await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // The replicas may have applied what this node could not: bring them back
                // to this copy before the next write.
                self.synced.lock().remove(&id);
                return Err(e);
            }
        };
        let mut outcomes: Vec<(NodeId, Outcome)> =
            live.into_iter().map(|n| (n, Outcome::Same)).collect();
        outcomes.extend(failed);
        let outcomes = self.install_where_behind(name, placement, outcomes).await;
        self.settle(name, placement, &outcomes).await?;
        Ok(outcome)
    }

    /// Sends a whole copy to every replica whose outcome is `Behind`; the others keep
    /// their outcome.
    async fn install_where_behind(
        &self,
        name: &str,
        placement: &Placement,
        outcomes: Vec<(NodeId, Outcome)>,
    ) -> Vec<(NodeId, Outcome)> {
        let mut settled = Vec::with_capacity(outcomes.len());
        for (node, outcome) in outcomes {
            let outcome = match outcome {
                Outcome::Behind => match self.install_to(node, name, placement).await {
                    Ok(()) => Outcome::Same,
                    Err(o) => o,
                },
                other => other,
            };
            settled.push((node, outcome));
        }
        settled
    }

    /// Copies this node's whole copy of `name` to `node` (a replica, or a node about to
    /// become one), chunk by chunk from a snapshot.
    pub(crate) async fn install_to(
        &self,
        node: NodeId,
        name: &str,
        placement: &Placement,
    ) -> Result<(), Outcome> {
        let id = placement.file_id;
        let store = self.store.clone();
        let (snapshot, dedup) =
            blocking(move || Ok((store.snapshot(id)?, store.dedup_entries(id)?)))
                .await
                .map_err(|e| Outcome::Failed(format!("reading the local copy: {e}")))?;
        let meta = snapshot.meta().clone();
        let transfer = dfs_net::random::next_u64();
        let snapshot = std::sync::Arc::new(snapshot);
        let mut offset = 0u64;
        loop {
            let want = (meta.size - offset).min(CHUNK_BYTES_MAX as u64) as usize;
            let snap = snapshot.clone();
            let data = blocking(move || {
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    match snap.read_at(offset + filled as u64, &mut buf[filled..])? {
                        0 => {
                            return Err(StoreError::Corrupt {
                                id,
                                reason: "content ends early".into(),
                            });
                        }
                        n => filled += n,
                    }
                }
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(|e| Outcome::Failed(format!("reading the local copy: {e}")))?;
            let last = offset + want as u64 >= meta.size;
            let rpc = if offset == 0 {
                DataRpc::Begin {
                    transfer,
                    name: name.to_owned(),
                    file_id: id,
                    epoch: placement.epoch,
                    kind: TransferKind::Install {
                        state: InstallState {
                            version: meta.version,
                            modified_ms: meta.modified_ms,
                            dedup: dedup.clone(),
                        },
                    },
                    data,
                    last,
                }
            } else {
                DataRpc::Chunk {
                    transfer,
                    data,
                    last,
                }
            };
            offset += want as u64;
            match self.call(node, &rpc).await {
                Ok(DataReply::Staged) if !last => {}
                Ok(DataReply::Committed(copy)) if last && copy.checksum == meta.checksum => {
                    tracing::info!(
                        name,
                        node,
                        version = meta.version,
                        "copied a file to a replica"
                    );
                    return Ok(());
                }
                other => {
                    self.abort_transfers(&[node], transfer).await;
                    return Err(match classify(other) {
                        Outcome::Behind | Outcome::Same => {
                            Outcome::Failed("the copy does not match after install".into())
                        }
                        o => o,
                    });
                }
            }
        }
    }

    /// Ends with every replica either holding this primary's copy or out of the replica
    /// set: proposes the removal of those that failed. Records the epoch the replicas are
    /// in sync at, or forgets it (and fails) if that cannot be made sure.
    async fn settle(
        &self,
        name: &str,
        placement: &Placement,
        outcomes: &[(NodeId, Outcome)],
    ) -> Result<(), EngineError> {
        let id = placement.file_id;
        let same: Vec<NodeId> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Same))
            .map(|(n, _)| *n)
            .collect();
        let failed: Vec<(NodeId, &Outcome)> = outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::Same))
            .map(|(n, o)| (*n, o))
            .collect();
        if failed.is_empty() {
            self.synced.lock().insert(id, placement.epoch);
            return Ok(());
        }
        self.synced.lock().remove(&id);
        if failed.iter().any(|(_, o)| matches!(o, Outcome::Stale)) {
            // Another node changed the placement; the map here is behind. Whoever is the
            // primary now syncs the replicas before serving.
            let _ = self.map.catch_up().await;
            return Err(EngineError::Unavailable(format!(
                "the placement of {name:?} changed; try again"
            )));
        }
        for (node, outcome) in &failed {
            let why = match outcome {
                Outcome::Failed(why) => why.as_str(),
                _ => "its copy could not be brought in line",
            };
            tracing::warn!(
                name,
                node,
                why,
                "a replica failed; removing it from the file"
            );
        }
        let keep: Vec<NodeId> = placement
            .replicas
            .iter()
            .copied()
            .filter(|r| !failed.iter().any(|(n, _)| n == r))
            .collect();
        let command = MapCommand::SetReplicas {
            name: name.to_owned(),
            file_id: id,
            expected_epoch: placement.epoch,
            replicas: keep,
        };
        let me = self.config.node_id;
        let now = match self.propose(command).await? {
            MapResponse::Updated(p) => p,
            // The placement changed meanwhile (a node was declared down): fine if it is
            // still ours and holds no replica that lacks the write.
            MapResponse::Conflict(Some(p)) if p.file_id == id => p,
            other => {
                return Err(EngineError::Unavailable(format!(
                    "could not drop the failed replicas of {name:?}: {other:?}"
                )));
            }
        };
        let covered =
            now.primary() == Some(me) && now.replicas.iter().all(|r| *r == me || same.contains(r));
        if !covered {
            return Err(EngineError::Unavailable(format!(
                "a replica of {name:?} failed and the placement moved on; try again"
            )));
        }
        self.synced.lock().insert(id, now.epoch);
        Ok(())
    }

    /// Tells `nodes` to drop an open transfer (best effort: an abandoned one times out).
    async fn abort_transfers(&self, nodes: &[NodeId], transfer: u64) {
        let rpc = DataRpc::Abort { transfer };
        join_all(nodes.iter().map(|&n| {
            let rpc = &rpc;
            async move {
                let _ = self.call(n, rpc).await;
            }
        }))
        .await;
    }

    /// The replicas of `placement` other than this node.
    fn others(&self, placement: &Placement) -> Vec<NodeId> {
        let me = self.config.node_id;
        placement
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != me)
            .collect()
    }

    /// Sizes and versions for a page of a listing: from this node's copies where it is
    /// the primary, from the primaries otherwise (one message per node). `None` for a
    /// file whose copy is damaged on its primary (left out of the listing).
    ///
    /// # Errors
    ///
    /// `Unavailable` if a primary does not answer (during a failover): the listing is
    /// retried rather than showing sizes that may be stale.
    pub(crate) async fn metas_of(
        &self,
        rows: &[(String, FileId, Placement)],
    ) -> Result<Vec<Option<(u64, u64)>>, EngineError> {
        let mut by_node: std::collections::BTreeMap<NodeId, Vec<usize>> = Default::default();
        for (i, (_, _, p)) in rows.iter().enumerate() {
            // A file with no replica (its only one lost its disk) has no meta to give.
            if let Some(primary) = p.primary() {
                by_node.entry(primary).or_default().push(i);
            }
        }
        let asks = by_node.into_iter().map(|(node, idx)| async move {
            let files = idx
                .iter()
                .map(|&i| (rows[i].0.clone(), rows[i].1))
                .collect();
            let reply = if node == self.config.node_id {
                Ok(self.metas(files).await)
            } else {
                self.call(node, &DataRpc::Metas { files }).await
            };
            (node, idx, reply)
        });
        let mut metas = vec![None; rows.len()];
        for (node, idx, reply) in join_all(asks).await {
            match reply {
                Ok(DataReply::Metas(found)) if found.len() == idx.len() => {
                    for (i, m) in idx.into_iter().zip(found) {
                        metas[i] = m;
                    }
                }
                other => {
                    return Err(EngineError::Unavailable(format!(
                        "node {node}, the primary of {} listed files, did not answer: {other:?}",
                        idx.len()
                    )));
                }
            }
        }
        Ok(metas)
    }
}

/// The outcome of a replica's answer that is not a success.
fn classify(reply: Result<DataReply, String>) -> Outcome {
    match reply {
        Ok(DataReply::Stale { .. }) => Outcome::Stale,
        Ok(DataReply::Behind { .. }) => Outcome::Behind,
        Ok(DataReply::Failed(why)) => Outcome::Failed(why),
        Ok(other) => Outcome::Failed(format!("unexpected answer {other:?}")),
        Err(why) => Outcome::Failed(why),
    }
}
