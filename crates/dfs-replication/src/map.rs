//! The cluster map of a one-member cluster.

use dfs_placement::{FileId, NodeId, Placement, PlacementError, PlacementTable};
use dfs_store::FileMeta;
use parking_lot::RwLock;

/// The map of a one-member cluster: the placement table in memory, rebuilt at start-up
/// from the names the store records beside each file, so it needs no log of its own.
///
/// The replicated cluster keeps the same table in an openraft state machine instead.
#[derive(Debug, Default)]
pub struct LocalMap {
    table: RwLock<PlacementTable>,
}

impl LocalMap {
    /// Rebuilds the table from the store's files, all held by `node`.
    pub fn rebuild(node: NodeId, files: &[FileMeta]) -> Self {
        let mut table = PlacementTable::new();
        for meta in files {
            let placement = Placement {
                file_id: meta.id,
                replicas: vec![node],
                epoch: 1,
            };
            if let Err(PlacementError::AlreadyPlaced(name)) =
                table.insert(meta.name.clone(), placement)
            {
                // Cannot happen through the engine (a name is created only when absent);
                // keep the first (lowest id) and say so.
                tracing::warn!(name, file_id = meta.id, "two stored files carry one name");
            }
        }
        Self {
            table: RwLock::new(table),
        }
    }

    /// Where `name` lives, if it exists.
    pub fn lookup(&self, name: &str) -> Option<Placement> {
        self.table.read().get(name).cloned()
    }

    /// Records a new file.
    pub fn insert(&self, name: &str, placement: Placement) -> Result<(), PlacementError> {
        self.table.write().insert(name.to_owned(), placement)
    }

    /// Forgets a file.
    pub fn remove(&self, name: &str) -> Result<Placement, PlacementError> {
        self.table.write().remove(name)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.table.read().len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.table.read().is_empty()
    }

    /// A sorted page of `(name, file id, placement)` for names starting with `prefix`
    /// after `start_after`, and the name to resume after if more remain.
    pub fn page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, FileId, Placement)>, Option<String>) {
        let table = self.table.read();
        // One extra entry tells whether another page follows.
        let mut rows: Vec<_> = table
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
    }
}
