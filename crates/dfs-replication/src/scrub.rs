//! Scrubbing: every copy on a node re-read and checked against its checksum, and each bad
//! copy replaced by a good one from another replica.
//!
//! A node that finds its copy of a file damaged takes it out of service under the file's
//! lock: it leaves the file's replica set (`SetReplicas` without it, at the next epoch; if
//! it was the primary, the next replica becomes primary and syncs the others to its own
//! copy) and removes the damaged copy. The file's primary then restores the replica with a
//! whole, good copy, as it does for a node that returns (see `background.rs`, `repair`).
//! A file with no other replica cannot be repaired; the scrub says so.
//!
//! Scrubs run every [`Timing::scrub_interval`](crate::Timing) on each node, and on demand
//! for the whole cluster ([`Engine::scrub_cluster`], `dfs-client scrub`).

use std::time::Duration;

use dfs_cluster::{MapCommand, MapResponse};
use dfs_placement::{FileId, NodeId};
use dfs_proto::{BadCopy, ScrubReport};
use dfs_store::StoreError;

use crate::Engine;
use crate::engine::blocking;
use crate::wire::{DataReply, DataRpc};

/// How long a node waits for another node's scrub (it reads every copy there).
const SCRUB_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// What checking one copy found.
enum Check {
    Good,
    Bad(String),
    Gone,
}

impl Engine {
    /// Scrubs every node that is up, this one included; one report per node of the map,
    /// in node order (a node down or not answering gets a report with its `error`).
    pub async fn scrub_cluster(&self) -> Vec<ScrubReport> {
        let me = self.config.node_id;
        let nodes: Vec<(NodeId, bool)> = self
            .map
            .read(|s| s.nodes.iter().map(|(id, n)| (*id, n.up)).collect());
        let asks = nodes.into_iter().map(|(node, up)| async move {
            if node == me {
                return self.scrub_local().await;
            }
            let failed = |why: String| ScrubReport {
                node,
                files: 0,
                bytes: 0,
                bad: Vec::new(),
                error: Some(why),
            };
            if !up {
                return failed("the node is down".into());
            }
            match self
                .call_within(node, &DataRpc::Scrub, SCRUB_REPLY_TIMEOUT)
                .await
            {
                Ok(DataReply::Scrub(report)) => report,
                Ok(other) => failed(format!("unexpected answer: {other:?}")),
                Err(why) => failed(why),
            }
        });
        futures::future::join_all(asks).await
    }

    /// Checks every copy the map gives this node against its checksum, one at a time, and
    /// takes each bad one out of service (see the module docs). One scrub runs at a time
    /// on a node; another waits for it.
    pub async fn scrub_local(&self) -> ScrubReport {
        let _one = self.scrubbing.lock().await;
        let me = self.config.node_id;
        let mut report = ScrubReport {
            node: me,
            files: 0,
            bytes: 0,
            bad: Vec::new(),
            error: None,
        };
        for meta in self.store.files() {
            let listed = self.map.read(|s| {
                s.files
                    .get(&meta.name)
                    .is_some_and(|p| p.file_id == meta.id && p.holds(me))
            });
            if !listed {
                continue;
            }
            match self.check(meta.id).await {
                Check::Gone => continue,
                Check::Good => {}
                Check::Bad(why) => {
                    tracing::warn!(
                        name = meta.name,
                        file_id = meta.id,
                        why,
                        "scrub found a damaged copy"
                    );
                    if let Some(bad) = self.take_out_of_service(&meta.name, meta.id).await {
                        report.bad.push(bad);
                    }
                }
            }
            report.files += 1;
            report.bytes += meta.size;
        }
        tracing::info!(
            files = report.files,
            bytes = report.bytes,
            bad = report.bad.len(),
            "scrub done"
        );
        report
    }

    /// Re-reads copy `id` and compares its checksum.
    async fn check(&self, id: FileId) -> Check {
        let store = self.store.clone();
        match blocking(move || store.verify(id)).await {
            Ok(true) => Check::Good,
            Ok(false) => Check::Bad("its content does not match its checksum".into()),
            Err(crate::EngineError::Store(StoreError::NotFound(_))) => Check::Gone,
            Err(e) => Check::Bad(e.to_string()),
        }
    }

    /// Takes this node's damaged copy of `name` out of service, under the file's lock;
    /// `None` if, checked again under the lock, there is nothing to do (the copy was
    /// replaced meanwhile, or the file moved on).
    pub(crate) async fn take_out_of_service(&self, name: &str, id: FileId) -> Option<BadCopy> {
        let me = self.config.node_id;
        let _lock = self.locks.write(name.to_owned()).await;
        let placement = self.map.lookup(name)?;
        if placement.file_id != id || !placement.holds(me) {
            return None;
        }
        if let Check::Good | Check::Gone = self.check(id).await {
            return None;
        }
        let bad = |replaced: bool, action: String| {
            Some(BadCopy {
                name: name.to_owned(),
                file_id: id,
                replaced,
                action,
            })
        };
        let others: Vec<NodeId> = placement
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != me)
            .collect();
        if others.is_empty() {
            return bad(
                false,
                "no other replica holds the file: it cannot be repaired".into(),
            );
        }
        let command = MapCommand::SetReplicas {
            name: name.to_owned(),
            file_id: id,
            expected_epoch: placement.epoch,
            replicas: others,
        };
        match self.propose(command).await {
            Ok(MapResponse::Updated(p)) => {
                self.synced.lock().remove(&id);
                let store = self.store.clone();
                if let Err(e) = blocking(move || store.delete(id)).await {
                    tracing::warn!(name, error = %e, "could not remove a damaged copy");
                }
                let serves = p.primary().unwrap_or(0);
                bad(
                    true,
                    format!(
                        "left the replica set (node {serves} serves the file); a good copy \
                         is installed here by repair"
                    ),
                )
            }
            Ok(other) => bad(
                false,
                format!("the placement moved on ({other:?}); the next scrub retries"),
            ),
            Err(e) => bad(false, format!("could not leave the replica set: {e}")),
        }
    }

    /// Scrubs this node every `period` (not at start), while the engine exists.
    pub(crate) fn spawn_scrubs(
        engine: &std::sync::Arc<Engine>,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else { break };
                engine.scrub_local().await;
            }
        })
    }
}
