//! The cluster map's data and the commands that change it: pure and deterministic (no
//! clock, no randomness, no I/O), so every node that applies the same log holds the same
//! map.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dfs_placement::{FileId, NodeId, Placement, PlacementTable};
use dfs_proto::{LockGrant, LockMode};
use serde::{Deserialize, Serialize};

use crate::locks::{Held, Locks};

/// What the map knows about one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where it serves clients and peers.
    pub addr: String,
    /// Whether it is considered alive (a node marked down holds no primary role).
    pub up: bool,
    /// Bumped every time the node registers after a start, so a restarted node is told
    /// apart from its previous run.
    pub incarnation: u64,
}

/// The replicated cluster map: membership and the placement table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Every node that ever registered.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Every file: name -> file id, replicas (primary first) and epoch.
    pub files: PlacementTable,
    /// What recent [`MapCommand::Tagged`] commands did, to answer their retries.
    pub sessions: Sessions,
    /// Files created by a write ([`MapCommand::CreateFileForWrite`]) and not claimed by a
    /// create since: such a file exists for users only once its primary's copy has been
    /// written (version 1 or more), so that a write that creates its file takes effect
    /// whole, or not at all if it fails.
    pub unwritten: BTreeSet<FileId>,
    /// The lock leases and fencing tokens.
    pub locks: Locks,
}

/// Names one client request, the same on each of its retries: the client's random id and
/// its request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestTag {
    /// The client's id, random per client.
    pub client_id: u64,
    /// The request's number within that client.
    pub seq: u64,
}

/// How many tagged results the map remembers (oldest forgotten first). A retry comes
/// within seconds of its first attempt; this covers thousands of creates and deletes a
/// second for longer than any client retries.
pub const SESSIONS_MAX: usize = 16_384;

/// The results of the most recent tagged commands that changed the map, so that a
/// retried create or delete whose first attempt was applied (its answer lost) is answered
/// what that attempt did instead of being applied again: exactly-once map changes (the
/// client session table of Raft's dissertation, §6.3), part of the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    results: BTreeMap<RequestTag, MapResponse>,
    order: VecDeque<RequestTag>,
}

impl Sessions {
    /// What the command tagged `tag` did, if it changed the map and is still remembered.
    pub fn get(&self, tag: RequestTag) -> Option<&MapResponse> {
        self.results.get(&tag)
    }

    /// How many results are remembered.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether no result is remembered.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    fn insert(&mut self, tag: RequestTag, response: MapResponse) {
        if self.results.insert(tag, response).is_none() {
            self.order.push_back(tag);
        }
        while self.order.len() > SESSIONS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.results.remove(&old);
            }
        }
    }
}

/// A change to the map, proposed through the consensus log. Append variants at the end only:
/// the log keeps them encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    /// A node (re)started: it is up, at `addr`, in a new incarnation.
    NodeUp {
        /// The node.
        id: NodeId,
        /// Its address.
        addr: String,
        /// Its new incarnation (must be greater than the one recorded).
        incarnation: u64,
    },
    /// A node is declared down: it is marked down and removed from the replicas of every
    /// file it shares with another replica (the epoch of each such file is bumped, and the
    /// next replica becomes its primary). A file whose only replica it is keeps it: that
    /// file is unavailable until the node returns.
    NodeDown {
        /// The node.
        id: NodeId,
        /// The incarnation the proposer saw silent: a node that restarted meanwhile (a
        /// newer incarnation) is not declared down (`Rejected`).
        incarnation: u64,
    },
    /// A new file, on replicas chosen by the proposer.
    CreateFile {
        /// The file's name.
        name: String,
        /// A fresh id.
        file_id: FileId,
        /// Its replicas, primary first.
        replicas: Vec<NodeId>,
    },
    /// Removes a file, only if the name still refers to `file_id` (a delete racing a
    /// re-create of the same name cannot remove the new file).
    DeleteFile {
        /// The file's name.
        name: String,
        /// The id the deleter saw.
        file_id: FileId,
    },
    /// Changes a file's replica set (failover, re-replication), only if the file is still
    /// `file_id` at `expected_epoch`; bumps the epoch.
    SetReplicas {
        /// The file's name.
        name: String,
        /// The id the proposer saw.
        file_id: FileId,
        /// The epoch the proposer saw.
        expected_epoch: u64,
        /// The new replicas, primary first.
        replicas: Vec<NodeId>,
    },
    /// [`DeleteFile`](Self::DeleteFile), also remembering in the
    /// [`Sessions`] what the file's recent writes did (its dedup table): a write applied
    /// to this file whose answer was lost, retried after the delete, is answered that
    /// instead of being applied again to a new file of the same name.
    DeleteFileWithWrites {
        /// The file's name.
        name: String,
        /// The id the deleter saw.
        file_id: FileId,
        /// The results of the file's recent writes, by request.
        writes: Vec<(RequestTag, WriteResult)>,
    },
    /// Removes a file only if the name still refers to `file_id` at `epoch` and the file
    /// is still [`unwritten`](ClusterState::unwritten) (no create claimed it): a primary
    /// taking back the create of a write that failed. Should this commit late, after the
    /// primary gave up waiting, it cannot remove the file once its epoch has moved on
    /// (the primary moves it before it writes there again).
    DeleteFileAt {
        /// The file's name.
        name: String,
        /// The id the proposer created.
        file_id: FileId,
        /// The epoch the proposer saw.
        epoch: u64,
    },
    /// [`CreateFile`](Self::CreateFile) for a write to a missing file: the file is listed
    /// in [`ClusterState::unwritten`] until a create claims it (or it is deleted).
    CreateFileForWrite {
        /// The file's name.
        name: String,
        /// A fresh id.
        file_id: FileId,
        /// Its replicas, primary first (the creating node first).
        replicas: Vec<NodeId>,
    },
    /// A create of a name whose file is `unwritten` and whose primary's copy was found
    /// unwritten: the file now exists, empty (`Created`). Only while it is still that
    /// file and unwritten; otherwise `AlreadyExists` or `NotFound`.
    ClaimFile {
        /// The file's name.
        name: String,
        /// The id the claimer saw.
        file_id: FileId,
    },
    /// `command` on behalf of client request `tag`: applied at most once. If a command
    /// with this tag was answered before, that answer is given again and nothing changes.
    /// Remembered are the results that changed the map (`Created`, `Deleted`, `Updated`)
    /// and the final answers of creates: `AlreadyExists` for a file that is not
    /// [`unwritten`](ClusterState::unwritten), or from [`ConfirmExists`](Self::ConfirmExists).
    /// Other results are not remembered (a retry may still apply): a delete that found
    /// nothing, a create that found an unwritten file (its proposer claims it next).
    ///
    /// So the answer a client receives for a create is the first committed one of its
    /// tag, and an attempt that commits late, after a retry was answered, changes nothing.
    Tagged {
        /// The request.
        tag: RequestTag,
        /// What it asks (not itself `Tagged`).
        command: Box<MapCommand>,
    },
    /// A create's answer that the name exists, for a name whose file a write created and
    /// whose primary's copy the proposer found written: `AlreadyExists` if the name still
    /// refers to `file_id`, else `NotFound` or `Conflict`. Changes nothing; tagged, it makes
    /// the answer the request's (see [`Tagged`](Self::Tagged)).
    ConfirmExists {
        /// The file's name.
        name: String,
        /// The id the proposer found written.
        file_id: FileId,
    },
    /// A node lost its disk (its copies and its consensus storage; it is being taken
    /// back, see `ClusterMap`, "Disk loss"): it is marked down and removed from every
    /// replica set, as by [`NodeDown`](Self::NodeDown) but whatever its incarnation, and
    /// also from the files whose only replica it is: those are left with no replica (at
    /// their next epoch), their content lost. Such a file answers `Unavailable` until it
    /// is deleted; it is never taken for one created and never written (served empty).
    NodeLost {
        /// The node.
        id: NodeId,
    },
    /// [`DeleteFileWithWrites`](Self::DeleteFileWithWrites) only if the file is still
    /// `file_id` at `epoch` (else `Conflict`): `writes` then holds every write applied to
    /// the file, as its primary at that epoch (the only node that writes at it) read them
    /// under the file's lock. A primary that was replaced meanwhile lacks the writes of its
    /// successor, and a delete with its list would forget them.
    DeleteFileWithWritesAt {
        /// The file's name.
        name: String,
        /// The id the deleter saw.
        file_id: FileId,
        /// The epoch the deleter was primary at.
        epoch: u64,
        /// The results of the file's recent writes, by request.
        writes: Vec<(RequestTag, WriteResult)>,
    },
    /// A delete's answer that the name does not exist: `NotFound` if the name refers to
    /// no file, or to `invisible`, a file a write created that the proposer found
    /// unwritten and that is still [`unwritten`](ClusterState::unwritten); else `Conflict`.
    /// Changes nothing; tagged, it makes the answer the request's (see
    /// [`Tagged`](Self::Tagged)).
    ConfirmMissing {
        /// The file's name.
        name: String,
        /// The unwritten file the name may refer to.
        invisible: Option<FileId>,
    },
    /// Grants a lock lease on `name` ([`MapResponse::Locked`]), or answers who holds it
    /// in a conflicting mode ([`MapResponse::LockHeld`]); see [`Locks`].
    AcquireLock {
        /// The name locked.
        name: String,
        /// Shared or exclusive.
        mode: LockMode,
        /// The lease's time to live, in milliseconds.
        ttl_ms: u64,
    },
    /// Renews a lease ([`MapResponse::Locked`] with its grant), or `NotFound`.
    RenewLock {
        /// The lease.
        lease: u64,
    },
    /// Releases a lease (`Released`), or `NotFound`.
    ReleaseLock {
        /// The lease.
        lease: u64,
    },
    /// The map leader found a lease's ttl passed since it saw it renewed `renewals` times:
    /// released (`Released`) unless renewed since (`Conflict(None)`), or `NotFound`.
    ExpireLock {
        /// The lease.
        lease: u64,
        /// The renewals the leader saw.
        renewals: u64,
    },
}

/// The outcome of applying a [`MapCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapResponse {
    /// A membership command took effect.
    Done,
    /// The file was created with this placement.
    Created(Placement),
    /// The name exists already (with this placement); nothing changed.
    AlreadyExists(Placement),
    /// The file was removed; this was its placement.
    Deleted(Placement),
    /// The replica set changed; this is the new placement.
    Updated(Placement),
    /// No such file (or node); nothing changed.
    NotFound,
    /// The file is not what the proposer saw (another id or epoch); nothing changed.
    Conflict(Option<Placement>),
    /// The command is invalid (the message says why); nothing changed.
    Rejected(String),
    /// Only in [`Sessions`]: what a write to a file since deleted did.
    Written(WriteResult),
    /// A lock lease was granted or renewed.
    Locked(LockGrant),
    /// The lock is held in a conflicting mode; nothing changed.
    LockHeld(Held),
    /// A lease was released or expired.
    Released,
}

/// What an acknowledged write did to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The file's version after the write.
    pub version: u64,
    /// Its size after the write.
    pub size: u64,
    /// Its content checksum (CRC-32C) after the write.
    pub checksum: u32,
}

impl ClusterState {
    /// Applies one command. Deterministic: the same state and command give the same result
    /// on every node.
    pub fn apply(&mut self, command: &MapCommand) -> MapResponse {
        match command {
            MapCommand::Tagged { tag, command } => {
                if let Some(saved) = self.sessions.get(*tag) {
                    return saved.clone();
                }
                if matches!(**command, MapCommand::Tagged { .. }) {
                    return MapResponse::Rejected("a tagged command cannot be tagged again".into());
                }
                let response = self.apply(command);
                let answered = match &response {
                    MapResponse::Created(_)
                    | MapResponse::Deleted(_)
                    | MapResponse::Updated(_)
                    | MapResponse::Locked(_)
                    | MapResponse::Released => true,
                    MapResponse::AlreadyExists(p) => {
                        matches!(**command, MapCommand::ConfirmExists { .. })
                            || !self.unwritten.contains(&p.file_id)
                    }
                    // A delete's answer (the older delete commands' is not remembered).
                    MapResponse::NotFound => matches!(
                        **command,
                        MapCommand::DeleteFileWithWritesAt { .. }
                            | MapCommand::ConfirmMissing { .. }
                    ),
                    _ => false,
                };
                if answered {
                    self.sessions.insert(*tag, response.clone());
                }
                response
            }
            MapCommand::NodeUp {
                id,
                addr,
                incarnation,
            } => {
                if let Some(old) = self.nodes.get(id)
                    && old.incarnation >= *incarnation
                {
                    return MapResponse::Rejected(format!(
                        "node {id} is already at incarnation {}",
                        old.incarnation
                    ));
                }
                self.nodes.insert(
                    *id,
                    NodeInfo {
                        addr: addr.clone(),
                        up: true,
                        incarnation: *incarnation,
                    },
                );
                MapResponse::Done
            }
            MapCommand::NodeDown { id, incarnation } => match self.nodes.get_mut(id) {
                Some(node) if node.incarnation != *incarnation => MapResponse::Rejected(format!(
                    "node {id} is at incarnation {}, not {incarnation}",
                    node.incarnation
                )),
                Some(node) => {
                    node.up = false;
                    self.leave_replica_sets(*id, false);
                    MapResponse::Done
                }
                None => MapResponse::NotFound,
            },
            MapCommand::NodeLost { id } => match self.nodes.get_mut(id) {
                Some(node) => {
                    node.up = false;
                    self.leave_replica_sets(*id, true);
                    MapResponse::Done
                }
                None => MapResponse::NotFound,
            },
            MapCommand::CreateFile {
                name,
                file_id,
                replicas,
            } => {
                if let Some(existing) = self.files.get(name) {
                    return MapResponse::AlreadyExists(existing.clone());
                }
                if let Err(why) = self.check_replicas(replicas) {
                    return MapResponse::Rejected(why);
                }
                let placement = Placement {
                    file_id: *file_id,
                    replicas: replicas.clone(),
                    epoch: 1,
                };
                match self.files.insert(name.clone(), placement.clone()) {
                    Ok(()) => MapResponse::Created(placement),
                    Err(e) => MapResponse::Rejected(e.to_string()),
                }
            }
            MapCommand::DeleteFileWithWrites {
                name,
                file_id,
                writes,
            } => {
                let response = self.apply(&MapCommand::DeleteFile {
                    name: name.clone(),
                    file_id: *file_id,
                });
                if matches!(response, MapResponse::Deleted(_)) {
                    for (tag, write) in writes {
                        self.sessions.insert(*tag, MapResponse::Written(*write));
                    }
                }
                response
            }
            MapCommand::CreateFileForWrite {
                name,
                file_id,
                replicas,
            } => {
                let response = self.apply(&MapCommand::CreateFile {
                    name: name.clone(),
                    file_id: *file_id,
                    replicas: replicas.clone(),
                });
                if matches!(response, MapResponse::Created(_)) {
                    self.unwritten.insert(*file_id);
                }
                response
            }
            MapCommand::ClaimFile { name, file_id } => match self.files.get(name) {
                Some(p) if p.file_id == *file_id && self.unwritten.remove(file_id) => {
                    MapResponse::Created(p.clone())
                }
                Some(p) => MapResponse::AlreadyExists(p.clone()),
                None => MapResponse::NotFound,
            },
            MapCommand::DeleteFileWithWritesAt {
                name,
                file_id,
                epoch,
                writes,
            } => match self.files.get(name) {
                Some(p) if p.file_id == *file_id && p.epoch == *epoch => {
                    self.apply(&MapCommand::DeleteFileWithWrites {
                        name: name.clone(),
                        file_id: *file_id,
                        writes: writes.clone(),
                    })
                }
                // Another primary since: not an answer, the delete is tried again there.
                Some(p) if p.file_id == *file_id => MapResponse::Conflict(Some(p.clone())),
                // The file the deleter saw is gone (the name may be another's now).
                _ => MapResponse::NotFound,
            },
            MapCommand::ConfirmMissing { name, invisible } => match self.files.get(name) {
                None => MapResponse::NotFound,
                Some(p) if Some(p.file_id) == *invisible && self.unwritten.contains(&p.file_id) => {
                    MapResponse::NotFound
                }
                Some(p) => MapResponse::Conflict(Some(p.clone())),
            },
            MapCommand::ConfirmExists { name, file_id } => match self.files.get(name) {
                Some(p) if p.file_id == *file_id => MapResponse::AlreadyExists(p.clone()),
                Some(p) => MapResponse::Conflict(Some(p.clone())),
                None => MapResponse::NotFound,
            },
            MapCommand::DeleteFileAt {
                name,
                file_id,
                epoch,
            } => match self.files.get(name) {
                Some(p)
                    if p.file_id == *file_id
                        && p.epoch == *epoch
                        && self.unwritten.contains(file_id) =>
                {
                    self.apply(&MapCommand::DeleteFile {
                        name: name.clone(),
                        file_id: *file_id,
                    })
                }
                Some(p) => MapResponse::Conflict(Some(p.clone())),
                None => MapResponse::NotFound,
            },
            MapCommand::DeleteFile { name, file_id } => match self.files.get(name) {
                None => MapResponse::NotFound,
                Some(p) if p.file_id != *file_id => MapResponse::Conflict(Some(p.clone())),
                Some(_) => match self.files.remove(name) {
                    Ok(p) => {
                        self.unwritten.remove(file_id);
                        MapResponse::Deleted(p)
                    }
                    Err(_) => MapResponse::NotFound,
                },
            },
            MapCommand::AcquireLock { name, mode, ttl_ms } => {
                match self.locks.acquire(name, *mode, *ttl_ms) {
                    Ok(Ok(grant)) => MapResponse::Locked(grant),
                    Ok(Err(held)) => MapResponse::LockHeld(held),
                    Err(why) => MapResponse::Rejected(why),
                }
            }
            MapCommand::RenewLock { lease } => match self.locks.renew(*lease) {
                Some(grant) => MapResponse::Locked(grant),
                None => MapResponse::NotFound,
            },
            MapCommand::ReleaseLock { lease } => match self.locks.release(*lease) {
                true => MapResponse::Released,
                false => MapResponse::NotFound,
            },
            MapCommand::ExpireLock { lease, renewals } => {
                match self.locks.expire(*lease, *renewals) {
                    Some(true) => MapResponse::Released,
                    Some(false) => MapResponse::Conflict(None),
                    None => MapResponse::NotFound,
                }
            }
            MapCommand::SetReplicas {
                name,
                file_id,
                expected_epoch,
                replicas,
            } => {
                let Some(current) = self.files.get(name).cloned() else {
                    return MapResponse::NotFound;
                };
                if current.file_id != *file_id || current.epoch != *expected_epoch {
                    return MapResponse::Conflict(Some(current));
                }
                if let Err(why) = self.check_replicas(replicas) {
                    return MapResponse::Rejected(why);
                }
                // A node joins a replica set only while up: one declared down after its
                // copy was made may have missed what followed.
                let down = replicas
                    .iter()
                    .find(|r| !current.holds(**r) && self.nodes.get(r).is_some_and(|n| !n.up));
                if let Some(r) = down {
                    return MapResponse::Rejected(format!("node {r} is down"));
                }
                let updated = Placement {
                    file_id: *file_id,
                    replicas: replicas.clone(),
                    epoch: current.epoch + 1,
                };
                self.files.replace(name.clone(), updated.clone());
                MapResponse::Updated(updated)
            }
        }
    }

    /// Removes node `id` from every replica set it shares, bumping each such file's
    /// epoch (the next replica becomes primary); with `sole`, also from the files whose
    /// only replica it is, which are left with none.
    fn leave_replica_sets(&mut self, id: NodeId, sole: bool) {
        let changed: Vec<(String, Placement)> = self
            .files
            .iter()
            .filter(|(_, p)| p.holds(id) && (sole || p.replicas.len() > 1))
            .map(|(name, p)| {
                let replicas = p.replicas.iter().copied().filter(|r| *r != id).collect();
                let placement = Placement {
                    file_id: p.file_id,
                    replicas,
                    epoch: p.epoch + 1,
                };
                (name.to_owned(), placement)
            })
            .collect();
        for (name, placement) in changed {
            self.files.replace(name, placement);
        }
    }

    /// The nodes that are up, in id order.
    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up)
            .map(|(id, _)| *id)
            .collect()
    }

    fn check_replicas(&self, replicas: &[NodeId]) -> Result<(), String> {
        if replicas.is_empty() {
            return Err("a file needs at least one replica".into());
        }
        for (i, r) in replicas.iter().enumerate() {
            if replicas[..i].contains(r) {
                return Err(format!("node {r} appears twice among the replicas"));
            }
            if !self.nodes.contains_key(r) {
                return Err(format!("node {r} is not a member"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn up(id: NodeId, incarnation: u64) -> MapCommand {
        MapCommand::NodeUp {
            id,
            addr: format!("127.0.0.1:{}", 6000 + id),
            incarnation,
        }
    }

    fn three() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            assert_eq!(s.apply(&up(id, 1)), MapResponse::Done);
        }
        s
    }

    fn create(name: &str, file_id: FileId, replicas: &[NodeId]) -> MapCommand {
        MapCommand::CreateFile {
            name: name.into(),
            file_id,
            replicas: replicas.to_vec(),
        }
    }

    #[test]
    fn tagged_lock_commands_answer_their_retries_the_first_answer() {
        let mut s = three();
        let tag = RequestTag {
            client_id: 5,
            seq: 1,
        };
        let acquire = MapCommand::Tagged {
            tag,
            command: Box::new(MapCommand::AcquireLock {
                name: "f".into(),
                mode: LockMode::Exclusive,
                ttl_ms: 1000,
            }),
        };
        let MapResponse::Locked(first) = s.apply(&acquire) else {
            panic!("granted");
        };
        // The retry is its own grant again, not "held" (by itself) nor a second lease.
        assert_eq!(s.apply(&acquire), MapResponse::Locked(first.clone()));
        assert_eq!(s.locks.leases().count(), 1);
        let other = MapCommand::AcquireLock {
            name: "f".into(),
            mode: LockMode::Shared,
            ttl_ms: 1000,
        };
        assert!(matches!(s.apply(&other), MapResponse::LockHeld(_)));
        let release = MapCommand::Tagged {
            tag: RequestTag {
                client_id: 5,
                seq: 2,
            },
            command: Box::new(MapCommand::ReleaseLock { lease: first.lease }),
        };
        assert_eq!(s.apply(&release), MapResponse::Released);
        assert_eq!(s.apply(&release), MapResponse::Released, "a retried unlock");
        assert_eq!(
            s.apply(&MapCommand::ReleaseLock { lease: first.lease }),
            MapResponse::NotFound
        );
        assert_eq!(
            s.apply(&MapCommand::ExpireLock {
                lease: first.lease,
                renewals: 0
            }),
            MapResponse::NotFound
        );
        assert!(matches!(s.apply(&other), MapResponse::Locked(_)));
    }

    #[test]
    fn membership() {
        let mut s = three();
        assert_eq!(s.up_nodes(), [1, 2, 3]);
        assert_eq!(
            s.apply(&MapCommand::NodeDown {
                id: 2,
                incarnation: 1
            }),
            MapResponse::Done
        );
        assert_eq!(s.up_nodes(), [1, 3]);
        assert!(
            matches!(s.apply(&up(2, 1)), MapResponse::Rejected(_)),
            "same incarnation"
        );
        assert_eq!(s.apply(&up(2, 2)), MapResponse::Done);
        assert_eq!(s.up_nodes(), [1, 2, 3]);
        // Silent in incarnation 1, but it restarted meanwhile: it stays up.
        assert!(
            matches!(
                s.apply(&MapCommand::NodeDown {
                    id: 2,
                    incarnation: 1
                }),
                MapResponse::Rejected(_)
            ),
            "a restarted node is not declared down for its old incarnation"
        );
        assert_eq!(s.up_nodes(), [1, 2, 3]);
        assert_eq!(
            s.apply(&MapCommand::NodeDown {
                id: 9,
                incarnation: 1
            }),
            MapResponse::NotFound
        );
    }

    #[test]
    fn a_node_down_leaves_the_replica_sets_it_shares() {
        let mut s = three();
        s.apply(&create("shared", 1, &[1, 2]));
        s.apply(&create("second", 2, &[2, 1]));
        s.apply(&create("alone", 3, &[1]));
        s.apply(&create("other", 4, &[2, 3]));
        assert_eq!(
            s.apply(&MapCommand::NodeDown {
                id: 1,
                incarnation: 1
            }),
            MapResponse::Done
        );
        let at = |name: &str| s.files.get(name).map(|p| (p.replicas.clone(), p.epoch));
        assert_eq!(
            at("shared"),
            Some((vec![2], 2)),
            "node 2 is the primary now"
        );
        assert_eq!(at("second"), Some((vec![2], 2)));
        assert_eq!(at("alone"), Some((vec![1], 1)), "its only replica stays");
        assert_eq!(at("other"), Some((vec![2, 3], 1)), "untouched");
    }

    #[test]
    fn a_lost_node_leaves_every_replica_set_and_its_sole_files_move_on() {
        let mut s = three();
        s.apply(&create("shared", 1, &[3, 1]));
        s.apply(&create("alone", 2, &[3]));
        s.apply(&create("other", 3, &[1, 2]));
        assert_eq!(s.apply(&MapCommand::NodeLost { id: 3 }), MapResponse::Done);
        let at = |name: &str| s.files.get(name).map(|p| (p.replicas.clone(), p.epoch));
        assert_eq!(at("shared"), Some((vec![1], 2)));
        assert_eq!(at("alone"), Some((vec![], 2)), "lost: no replica holds it");
        assert_eq!(at("other"), Some((vec![1, 2], 1)), "untouched");
        assert_eq!(s.up_nodes(), [1, 2]);
        assert_eq!(
            s.apply(&MapCommand::NodeLost { id: 9 }),
            MapResponse::NotFound
        );
    }

    #[test]
    fn create_and_delete_are_guarded_by_file_id() {
        let mut s = three();
        let MapResponse::Created(p) = s.apply(&create("a", 10, &[1, 2])) else {
            panic!("not created");
        };
        assert_eq!((p.file_id, p.epoch), (10, 1));
        assert!(
            matches!(s.apply(&create("a", 11, &[2, 3])), MapResponse::AlreadyExists(p) if p.file_id == 10)
        );
        // A delete of an older incarnation of the name does not remove the new file.
        let stale = MapCommand::DeleteFile {
            name: "a".into(),
            file_id: 9,
        };
        assert!(matches!(s.apply(&stale), MapResponse::Conflict(_)));
        let del = MapCommand::DeleteFile {
            name: "a".into(),
            file_id: 10,
        };
        assert!(matches!(s.apply(&del), MapResponse::Deleted(p) if p.file_id == 10));
        assert_eq!(s.apply(&del), MapResponse::NotFound);
        assert!(matches!(
            s.apply(&create("b", 12, &[1, 1])),
            MapResponse::Rejected(_)
        ));
        assert!(matches!(
            s.apply(&create("b", 12, &[1, 7])),
            MapResponse::Rejected(_)
        ));
        assert!(matches!(
            s.apply(&create("b", 12, &[])),
            MapResponse::Rejected(_)
        ));
    }

    #[test]
    fn replica_changes_bump_the_epoch_and_need_the_current_one() {
        let mut s = three();
        s.apply(&create("f", 5, &[1, 2]));
        let change = |epoch, replicas: &[NodeId]| MapCommand::SetReplicas {
            name: "f".into(),
            file_id: 5,
            expected_epoch: epoch,
            replicas: replicas.to_vec(),
        };
        assert!(
            matches!(s.apply(&change(1, &[2])), MapResponse::Updated(p) if p.epoch == 2 && p.replicas == [2])
        );
        assert!(
            matches!(s.apply(&change(1, &[2, 3])), MapResponse::Conflict(_)),
            "stale epoch"
        );
        assert!(matches!(s.apply(&change(2, &[2, 3])), MapResponse::Updated(p) if p.epoch == 3));
        assert_eq!(
            s.files.get("f").map(|p| p.replicas.clone()),
            Some(vec![2, 3])
        );
        // Node 1 goes down after a copy was made for it: it cannot join the replica set.
        s.apply(&MapCommand::NodeDown {
            id: 1,
            incarnation: 1,
        });
        assert!(
            matches!(s.apply(&change(3, &[2, 3, 1])), MapResponse::Rejected(_)),
            "a down node is not added"
        );
        assert!(
            matches!(s.apply(&change(3, &[2])), MapResponse::Updated(_)),
            "removals need no up check"
        );
    }

    #[test]
    fn apply_is_deterministic() {
        let commands = [
            up(1, 1),
            up(2, 1),
            create("x", 1, &[1, 2]),
            MapCommand::NodeDown {
                id: 1,
                incarnation: 1,
            },
            MapCommand::SetReplicas {
                name: "x".into(),
                file_id: 1,
                expected_epoch: 1,
                replicas: vec![2],
            },
            create("y", 2, &[2]),
            MapCommand::DeleteFile {
                name: "x".into(),
                file_id: 1,
            },
        ];
        let run = || {
            let mut s = ClusterState::default();
            let out: Vec<_> = commands.iter().map(|c| s.apply(c)).collect();
            (s, out)
        };
        assert_eq!(run(), run());
    }

    fn tag(seq: u64) -> RequestTag {
        RequestTag { client_id: 7, seq }
    }

    fn tagged(seq: u64, command: MapCommand) -> MapCommand {
        MapCommand::Tagged {
            tag: tag(seq),
            command: Box::new(command),
        }
    }

    fn delete(name: &str, file_id: FileId) -> MapCommand {
        MapCommand::DeleteFile {
            name: name.into(),
            file_id,
        }
    }

    fn for_write(name: &str, file_id: FileId) -> MapCommand {
        MapCommand::CreateFileForWrite {
            name: name.into(),
            file_id,
            replicas: vec![1, 2],
        }
    }

    fn take_back(name: &str, file_id: FileId, epoch: u64) -> MapCommand {
        MapCommand::DeleteFileAt {
            name: name.into(),
            file_id,
            epoch,
        }
    }

    #[test]
    fn a_retried_tagged_create_is_answered_what_its_first_attempt_did() {
        let mut s = three();
        let first = s.apply(&tagged(1, create("a", 10, &[1, 2])));
        assert!(matches!(&first, MapResponse::Created(p) if p.file_id == 10));
        // Deleted by someone else meanwhile: the retry (another fresh id) still answers the
        // first attempt's create, and does not create the file again.
        assert!(matches!(s.apply(&delete("a", 10)), MapResponse::Deleted(_)));
        assert_eq!(s.apply(&tagged(1, create("a", 11, &[1, 2]))), first);
        assert!(s.files.get("a").is_none(), "the retry created nothing");
        // Another request creates anew.
        assert!(matches!(
            s.apply(&tagged(2, create("a", 12, &[1, 2]))),
            MapResponse::Created(p) if p.file_id == 12
        ));
    }

    #[test]
    fn a_retried_tagged_delete_answers_deleted_and_spares_a_newer_file() {
        let mut s = three();
        s.apply(&create("a", 10, &[1, 2]));
        let first = s.apply(&tagged(5, delete("a", 10)));
        assert!(matches!(&first, MapResponse::Deleted(p) if p.file_id == 10));
        s.apply(&create("a", 11, &[2, 3]));
        assert_eq!(s.apply(&tagged(5, delete("a", 11))), first);
        assert_eq!(s.files.get("a").map(|p| p.file_id), Some(11));
    }

    #[test]
    fn a_create_answered_already_exists_is_not_applied_by_a_late_attempt() {
        let mut s = three();
        s.apply(&create("a", 10, &[1, 2]));
        // The retry, answered first: the name exists.
        assert!(matches!(
            s.apply(&tagged(1, create("a", 11, &[1, 2]))),
            MapResponse::AlreadyExists(p) if p.file_id == 10
        ));
        s.apply(&delete("a", 10));
        // The first attempt commits late, after the delete: it gets the same answer and
        // creates nothing.
        assert!(matches!(
            s.apply(&tagged(1, create("a", 12, &[1, 2]))),
            MapResponse::AlreadyExists(p) if p.file_id == 10
        ));
        assert!(s.files.get("a").is_none());
    }

    #[test]
    fn a_create_that_finds_an_unwritten_file_is_not_answered_until_confirmed() {
        let mut s = three();
        s.apply(&for_write("a", 10));
        // Not an answer: the proposer asks the primary next, then claims or confirms.
        assert!(matches!(
            s.apply(&tagged(1, create("a", 11, &[1, 2]))),
            MapResponse::AlreadyExists(_)
        ));
        assert!(s.sessions.get(tag(1)).is_none());
        let confirm = |file_id| MapCommand::ConfirmExists {
            name: "a".into(),
            file_id,
        };
        assert_eq!(
            s.apply(&tagged(1, confirm(9))),
            MapResponse::Conflict(s.files.get("a").cloned()),
            "another file"
        );
        assert!(s.sessions.get(tag(1)).is_none());
        assert!(matches!(
            s.apply(&tagged(1, confirm(10))),
            MapResponse::AlreadyExists(p) if p.file_id == 10
        ));
        assert!(matches!(
            s.sessions.get(tag(1)),
            Some(MapResponse::AlreadyExists(_))
        ));
        // A late attempt of the same request creates nothing once the name is free.
        s.apply(&delete("a", 10));
        assert!(matches!(
            s.apply(&tagged(1, create("a", 12, &[1, 2]))),
            MapResponse::AlreadyExists(_)
        ));
        assert!(s.files.get("a").is_none());
    }

    #[test]
    fn a_delete_answered_not_found_is_not_applied_by_a_late_attempt() {
        let mut s = three();
        let missing = MapCommand::ConfirmMissing {
            name: "a".into(),
            invisible: None,
        };
        assert_eq!(s.apply(&tagged(1, missing.clone())), MapResponse::NotFound);
        // The name is created since; the first attempt of that delete, which saw the new
        // file, commits late: it gets the same answer and deletes nothing.
        s.apply(&create("a", 10, &[1, 2]));
        let late = MapCommand::DeleteFileWithWritesAt {
            name: "a".into(),
            file_id: 10,
            epoch: 1,
            writes: Vec::new(),
        };
        assert_eq!(s.apply(&tagged(1, late)), MapResponse::NotFound);
        assert!(s.files.get("a").is_some());
        // Present, the name is not confirmed missing (unless by an unwritten file).
        assert!(matches!(
            s.apply(&tagged(2, missing)),
            MapResponse::Conflict(_)
        ));
        s.apply(&for_write("b", 11));
        let invisible = MapCommand::ConfirmMissing {
            name: "b".into(),
            invisible: Some(11),
        };
        assert_eq!(s.apply(&tagged(3, invisible)), MapResponse::NotFound);
        // A delete of a file gone from the name answers NotFound, remembered too.
        let gone = MapCommand::DeleteFileWithWritesAt {
            name: "a".into(),
            file_id: 9,
            epoch: 1,
            writes: Vec::new(),
        };
        assert_eq!(s.apply(&tagged(4, gone)), MapResponse::NotFound);
        assert_eq!(s.sessions.get(tag(4)), Some(&MapResponse::NotFound));
    }

    #[test]
    fn results_that_changed_nothing_are_not_remembered() {
        let mut s = three();
        assert_eq!(s.apply(&tagged(1, delete("a", 10))), MapResponse::NotFound);
        s.apply(&create("a", 10, &[1, 2]));
        // The retry of a delete that found nothing may still apply.
        assert!(matches!(
            s.apply(&tagged(1, delete("a", 10))),
            MapResponse::Deleted(_)
        ));
        assert!(matches!(
            s.apply(&tagged(3, tagged(4, delete("a", 10)))),
            MapResponse::Rejected(_)
        ));
    }

    #[test]
    fn sessions_are_bounded() {
        let mut s = three();
        for seq in 0..(SESSIONS_MAX as u64 + 10) {
            s.apply(&tagged(seq, create(&format!("f{seq}"), seq + 1, &[1])));
        }
        assert_eq!(s.sessions.len(), SESSIONS_MAX);
        assert!(s.sessions.get(tag(0)).is_none(), "the oldest is forgotten");
        assert!(s.sessions.get(tag(SESSIONS_MAX as u64 + 9)).is_some());
    }

    #[test]
    fn a_delete_keeps_the_results_of_the_files_writes() {
        let mut s = three();
        s.apply(&create("a", 10, &[1, 2]));
        let write = WriteResult {
            version: 3,
            size: 12,
            checksum: 99,
        };
        let command = MapCommand::DeleteFileWithWrites {
            name: "a".into(),
            file_id: 10,
            writes: vec![(tag(8), write)],
        };
        assert!(matches!(s.apply(&command), MapResponse::Deleted(_)));
        assert_eq!(s.sessions.get(tag(8)), Some(&MapResponse::Written(write)));
        // Only at the deleter's epoch: a replaced primary lacks its successor's writes.
        s.apply(&create("b", 11, &[1, 2]));
        s.apply(&MapCommand::NodeDown {
            id: 1,
            incarnation: 1,
        });
        let at = |epoch| MapCommand::DeleteFileWithWritesAt {
            name: "b".into(),
            file_id: 11,
            epoch,
            writes: vec![(tag(10), write)],
        };
        assert!(matches!(s.apply(&at(1)), MapResponse::Conflict(Some(p)) if p.epoch == 2));
        assert!(
            matches!(
                s.apply(&MapCommand::Tagged {
                    tag: tag(10),
                    command: Box::new(at(1))
                }),
                MapResponse::Conflict(_)
            ),
            "not an answer, not remembered"
        );
        assert!(s.sessions.get(tag(10)).is_none());
        assert!(matches!(s.apply(&at(2)), MapResponse::Deleted(_)));
        assert_eq!(s.sessions.get(tag(10)), Some(&MapResponse::Written(write)));
        // A delete that did not happen keeps nothing.
        let stale = MapCommand::DeleteFileWithWrites {
            name: "a".into(),
            file_id: 10,
            writes: vec![(tag(9), write)],
        };
        assert_eq!(s.apply(&stale), MapResponse::NotFound);
        assert!(s.sessions.get(tag(9)).is_none());
    }

    #[test]
    fn a_take_back_removes_the_file_only_at_its_epoch() {
        let mut s = three();
        s.apply(&for_write("a", 10));
        // The epoch moved on (the primary fenced it before writing): nothing is removed.
        s.apply(&MapCommand::SetReplicas {
            name: "a".into(),
            file_id: 10,
            expected_epoch: 1,
            replicas: vec![1, 2],
        });
        assert!(matches!(
            s.apply(&take_back("a", 10, 1)),
            MapResponse::Conflict(_)
        ));
        assert!(s.files.get("a").is_some());
        s.apply(&for_write("b", 20));
        assert!(matches!(
            s.apply(&take_back("b", 20, 1)),
            MapResponse::Deleted(_)
        ));
        assert!(s.files.get("b").is_none());
    }

    #[test]
    fn a_file_a_write_created_is_unwritten_until_claimed_or_deleted() {
        let mut s = three();
        assert!(matches!(
            s.apply(&for_write("a", 10)),
            MapResponse::Created(_)
        ));
        assert!(s.unwritten.contains(&10));
        let claim = |name: &str, file_id| MapCommand::ClaimFile {
            name: name.into(),
            file_id,
        };
        assert!(matches!(s.apply(&claim("a", 10)), MapResponse::Created(_)));
        assert!(!s.unwritten.contains(&10));
        assert!(matches!(
            s.apply(&claim("a", 10)),
            MapResponse::AlreadyExists(_)
        ));
        // Claimed: a take-back no longer removes it.
        assert!(matches!(
            s.apply(&take_back("a", 10, 1)),
            MapResponse::Conflict(_)
        ));
        s.apply(&for_write("b", 11));
        assert!(matches!(s.apply(&delete("b", 11)), MapResponse::Deleted(_)));
        assert!(s.unwritten.is_empty());
        assert_eq!(s.apply(&claim("b", 11)), MapResponse::NotFound);
    }
}
