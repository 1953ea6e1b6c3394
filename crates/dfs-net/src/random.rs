//! Random numbers for ids and choices (file ids, transfer ids, client ids, the first
//! server a client tries): from the operating system's entropy, or, in a deterministic
//! simulation, from a generator the simulation seeded for its thread.
//!
//! Like [`blocking`](crate::blocking), a per-thread switch: the simulator calls
//! [`seed_this_thread`] with its run's seed on the thread that drives every simulated
//! host, so the ids drawn in a run, and the choices made with them, repeat with the seed.
//! Every other thread (real nodes, real clients) draws from [`rand::random`].

use std::cell::Cell;

thread_local! {
    /// The state of this thread's seeded generator, if the simulation set one.
    static SEEDED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes [`next_u64`] and [`below`] on this thread draw from a generator seeded with `seed`
/// (`Some`), or from the operating system's entropy (`None`, the default).
pub fn seed_this_thread(seed: Option<u64>) {
    SEEDED.with(|s| s.set(seed));
}

/// Whether this thread draws from a seeded generator (see [`seed_this_thread`]).
pub fn is_seeded() -> bool {
    SEEDED.with(Cell::get).is_some()
}

/// A random 64-bit number.
pub fn next_u64() -> u64 {
    SEEDED.with(|s| match s.get() {
        Some(state) => {
            let (next, value) = split_mix_64(state);
            s.set(Some(next));
            value
        }
        None => rand::random(),
    })
}

/// 32 random bytes: a handshake's nonce.
pub fn nonce() -> [u8; 32] {
    let mut out = [0u8; 32];
    for part in out.chunks_exact_mut(8) {
        part.copy_from_slice(&next_u64().to_le_bytes());
    }
    out
}

/// A random number in `0..n`; 0 if `n` is 0.
pub fn below(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    if is_seeded() {
        // The modulo bias is immaterial for the small ranges drawn here.
        (next_u64() % n as u64) as usize
    } else {
        rand::random_range(0..n)
    }
}

/// SplitMix64: the next state and the output for `state` (a generator defined here, so a
/// seed's draws do not change with a library's choice of algorithm).
fn split_mix_64(state: u64) -> (u64, u64) {
    let next = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (next, z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_repeats_its_draws() {
        seed_this_thread(Some(7));
        let a: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        let i = below(3);
        seed_this_thread(Some(7));
        let b: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        assert_eq!(a, b);
        assert_eq!(below(3), i);
        assert!(i < 3);
        seed_this_thread(None);
        assert!(!is_seeded());
        assert_eq!(below(0), 0);
        assert!(below(5) < 5);
    }
}
