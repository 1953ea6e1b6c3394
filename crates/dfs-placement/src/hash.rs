//! The stable weight function used by rendezvous hashing.

use crate::NodeId;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// The splitmix64 increment (2^64 / golden ratio).
const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64-bit FNV-1a over `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The splitmix64 output for state `x`: `x + gamma`, then its mixer.
/// A bijection on `u64`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(SPLITMIX_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// MurmurHash3's 64-bit finaliser. A bijection on `u64` with full avalanche.
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Weight of `node` for `name` in rendezvous hashing; used by [`crate::place`].
///
/// Defined as
///
/// ```text
/// weight(name, node) = fmix64(fnv1a64(utf8(name)) ^ splitmix64(node))
/// ```
///
/// where `fnv1a64` is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`,
/// prime `0x100000001b3`), `splitmix64(x)` is the splitmix64 output for
/// state `x` (add `0x9e3779b97f4a7c15`, then its xor-shift-multiply mixer)
/// and `fmix64` is the MurmurHash3 64-bit finaliser. All arithmetic wraps
/// modulo 2^64.
///
/// This definition is part of the on-disk contract of dfs (it decides where
/// data lives) and must never change. For a fixed name it is a bijection in
/// `node`, so distinct nodes always get distinct weights.
///
/// ```
/// let a = dfs_placement::weight("dir/file", 1);
/// assert_eq!(a, dfs_placement::weight("dir/file", 1));
/// assert_ne!(a, dfs_placement::weight("dir/file", 2));
/// ```
pub fn weight(name: &str, node: NodeId) -> u64 {
    weight_with_name_hash(fnv1a64(name.as_bytes()), node)
}

/// [`weight`] given the already computed `fnv1a64` of the name.
pub(crate) fn weight_with_name_hash(name_hash: u64, node: NodeId) -> u64 {
    fmix64(name_hash ^ splitmix64(node))
}
