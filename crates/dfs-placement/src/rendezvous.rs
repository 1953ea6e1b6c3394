//! Choosing the replicas of a name by rendezvous hashing.

use std::cmp::Reverse;

use crate::hash::{fnv1a64, weight_with_name_hash};
use crate::{NodeId, PlacementError};

/// Pick `r` distinct nodes for `name` out of `members` by rendezvous
/// (highest-random-weight) hashing.
///
/// The result is ordered by descending [`weight`](crate::weight): index 0 is
/// the primary. It is deterministic, depends only on the *set* of members
/// (neither their order nor duplicate ids matter) and changes minimally when
/// members are added or removed (see the crate docs).
///
/// # Errors
///
/// * [`PlacementError::ZeroReplicas`] if `r == 0`;
/// * [`PlacementError::NotEnoughNodes`] if `members` has fewer than `r`
///   distinct ids.
///
/// ```
/// use dfs_placement::{place, PlacementError};
///
/// let replicas = place("dir/file", &[1, 2, 3, 4], 3)?;
/// assert_eq!(replicas.len(), 3);
/// assert_eq!(replicas, place("dir/file", &[4, 3, 2, 1, 1], 3)?);
/// assert_eq!(
///     place("dir/file", &[1, 2], 3),
///     Err(PlacementError::NotEnoughNodes { wanted: 3, available: 2 }),
/// );
/// # Ok::<(), PlacementError>(())
/// ```
pub fn place(name: &str, members: &[NodeId], r: usize) -> Result<Vec<NodeId>, PlacementError> {
    if r == 0 {
        return Err(PlacementError::ZeroReplicas);
    }
    let name_hash = fnv1a64(name.as_bytes());
    let mut weighted: Vec<(u64, NodeId)> = members
        .iter()
        .map(|&node| (weight_with_name_hash(name_hash, node), node))
        .collect();
    // Sorting by (weight desc, id asc) makes duplicates adjacent: a node's
    // weight depends only on its id. Ties between distinct ids cannot occur
    // (the weight is a bijection in the id) but the id order would break them.
    weighted.sort_unstable_by_key(|&(w, node)| (Reverse(w), node));
    weighted.dedup_by_key(|&mut (_, node)| node);
    if weighted.len() < r {
        return Err(PlacementError::NotEnoughNodes {
            wanted: r,
            available: weighted.len(),
        });
    }
    Ok(weighted.into_iter().take(r).map(|(_, node)| node).collect())
}
