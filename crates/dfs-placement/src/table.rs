//! The placement table: the placement recorded for every file name.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::{FileId, NodeId, PlacementError};

/// Where one file lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Identifier of the file, assigned by the cluster map.
    pub file_id: FileId,
    /// Nodes holding a replica, primary first (as returned by
    /// [`place`](crate::place)).
    pub replicas: Vec<NodeId>,
    /// Version of this placement; the cluster map bumps it whenever the
    /// replica set changes, so stale views can be detected.
    pub epoch: u64,
}

impl Placement {
    /// The primary replica (the first one), or `None` if there are no
    /// replicas.
    pub fn primary(&self) -> Option<NodeId> {
        self.replicas.first().copied()
    }

    /// Whether `node` holds a replica of the file.
    pub fn holds(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
    }
}

/// The placement of every file, keyed and sorted by file name.
///
/// A plain, deterministic serde data structure owned by the cluster map
/// (a Raft state machine), which is its only writer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementTable {
    /// Placements by file name.
    entries: BTreeMap<String, Placement>,
}

impl PlacementTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The placement of `name`, if it is placed.
    pub fn get(&self, name: &str) -> Option<&Placement> {
        self.entries.get(name)
    }

    /// Whether `name` is placed.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Record the placement of a new name.
    ///
    /// # Errors
    ///
    /// [`PlacementError::AlreadyPlaced`] if `name` is already in the table;
    /// the table is then left unchanged.
    pub fn insert(&mut self, name: String, placement: Placement) -> Result<(), PlacementError> {
        match self.entries.entry(name) {
            Entry::Occupied(entry) => Err(PlacementError::AlreadyPlaced(entry.key().clone())),
            Entry::Vacant(entry) => {
                entry.insert(placement);
                Ok(())
            }
        }
    }

    /// Remove the placement of `name` and return it.
    ///
    /// # Errors
    ///
    /// [`PlacementError::NotPlaced`] if `name` is not in the table.
    pub fn remove(&mut self, name: &str) -> Result<Placement, PlacementError> {
        self.entries
            .remove(name)
            .ok_or_else(|| PlacementError::NotPlaced(name.to_owned()))
    }

    /// Sets the placement of `name`, placed or not (the cluster map's reconfigurations).
    pub fn replace(&mut self, name: String, placement: Placement) {
        self.entries.insert(name, placement);
    }

    /// Number of placed names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is placed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Placement)> {
        self.entries.iter().map(|(name, p)| (name.as_str(), p))
    }

    /// Sorted page of entries whose name starts with `prefix`, strictly after
    /// `start_after` (if given), at most `limit` entries.
    ///
    /// To list a whole directory page by page, pass the last name of the
    /// previous page as `start_after`. Costs `O(log n + limit)`: it seeks in
    /// the sorted map rather than scanning it.
    ///
    /// ```
    /// use dfs_placement::{Placement, PlacementTable};
    ///
    /// let mut table = PlacementTable::new();
    /// for name in ["a/1", "a/2", "a/3", "b/1"] {
    ///     let p = Placement { file_id: 0, replicas: vec![1], epoch: 0 };
    ///     table.insert(name.to_owned(), p)?;
    /// }
    /// let names = |page: Vec<(&str, &Placement)>| -> Vec<String> {
    ///     page.into_iter().map(|(n, _)| n.to_owned()).collect()
    /// };
    /// assert_eq!(names(table.page("a/", None, 2)), ["a/1", "a/2"]);
    /// assert_eq!(names(table.page("a/", Some("a/2"), 2)), ["a/3"]);
    /// # Ok::<(), dfs_placement::PlacementError>(())
    /// ```
    pub fn page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<(&str, &Placement)> {
        // Every name with the prefix sorts at or after the prefix itself, so
        // start from whichever of `prefix` / `start_after` is later.
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        // Names sharing a prefix are contiguous in sorted order, so the first
        // name without it ends the page.
        self.entries
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit)
            .map(|(name, p)| (name.as_str(), p))
            .collect()
    }

    /// Names (sorted) whose placement includes `node`, e.g. to find the files
    /// to re-replicate when the node fails. Scans the whole table.
    pub fn names_on(&self, node: NodeId) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(move |(_, p)| p.holds(node))
            .map(|(name, _)| name.as_str())
    }
}
