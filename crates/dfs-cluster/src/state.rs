//! The cluster map's data and the commands that change it: pure and deterministic (no
//! clock, no randomness, no I/O), so every node that applies the same log holds the same
//! map.

use std::collections::BTreeMap;

use dfs_placement::{FileId, NodeId, Placement, PlacementTable};
use serde::{Deserialize, Serialize};

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
}

impl ClusterState {
    /// Applies one command. Deterministic: the same state and command give the same result
    /// on every node.
    pub fn apply(&mut self, command: &MapCommand) -> MapResponse {
        match command {
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
                    let changed: Vec<(String, Placement)> = self
                        .files
                        .iter()
                        .filter(|(_, p)| p.holds(*id) && p.replicas.len() > 1)
                        .map(|(name, p)| {
                            let replicas = p.replicas.iter().copied().filter(|r| r != id);
                            let placement = Placement {
                                file_id: p.file_id,
                                replicas: replicas.collect(),
                                epoch: p.epoch + 1,
                            };
                            (name.to_owned(), placement)
                        })
                        .collect();
                    for (name, placement) in changed {
                        self.files.replace(name, placement);
                    }
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
            MapCommand::DeleteFile { name, file_id } => match self.files.get(name) {
                None => MapResponse::NotFound,
                Some(p) if p.file_id != *file_id => MapResponse::Conflict(Some(p.clone())),
                Some(_) => match self.files.remove(name) {
                    Ok(p) => MapResponse::Deleted(p),
                    Err(_) => MapResponse::NotFound,
                },
            },
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
}
