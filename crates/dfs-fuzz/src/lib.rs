//! Fuzzing dfs's wire (test-only; see `FUZZING.md` at the repository root).
//!
//! Nothing a peer or a client sends may panic a node, make it allocate without bound, or
//! hold a lock forever. This crate holds what the fuzzers share:
//!
//! - [`targets`]: the properties checked on any input, one function per target
//!   ([`TARGETS`]); the stable fuzzer (this crate's tests, run by `cargo test`) and the
//!   cargo-fuzz targets (`fuzz/`, nightly) call the same functions;
//! - [`Mutator`]: a seeded mutator (byte-level and frame-aware mutations, huge varints,
//!   length-prefix tweaks), so a seed replays;
//! - [`Campaign`]: the iteration count and seed from the environment, and a failure report
//!   with the seed and the input in hex;
//! - [`samples`] and [`corpus`]: a valid message of every kind, and the checked-in corpus
//!   (`fuzz/corpus/<target>/`) made from them.
//!
//! The tests: `tests/frames.rs` (the frame decoder both ways, every message kind),
//! `tests/payloads.rs` (the peer payloads: consensus and data layer), `tests/live_node.rs`
//! (fuzzed streams and frames against a running node, which must still serve afterwards)
//! and `tests/corpus.rs` (regenerates the corpus with `DFS_FUZZ_REGEN=1`).

pub mod corpus;
mod mutate;
mod run;
pub mod samples;
pub mod targets;

pub use mutate::{
    HUGE_VARINTS, INPUT_BYTES_MAX, Mutator, for_each_nesting, frame, join_frames, split_frames,
};
pub use run::{
    Campaign, ITERS_ENV, REPLAY_ENV, SEED_ENV, SLOW_INPUT, TRACE_ENV, hex, panic_message,
    save_artifact, unhex,
};

/// A node reading client and peer frames ([`targets::server_frames`]).
pub const SERVER_FRAMES: &str = "server_frames";
/// A client reading a node's frames ([`targets::client_frames`]).
pub const CLIENT_FRAMES: &str = "client_frames";
/// The cluster map's peer payloads ([`targets::cluster_payloads`]).
pub const CLUSTER_PAYLOADS: &str = "cluster_payloads";
/// The data layer's peer payloads ([`targets::data_payloads`]).
pub const DATA_PAYLOADS: &str = "data_payloads";

/// Every target: the corpus directories and the cargo-fuzz targets have these names.
pub const TARGETS: [&str; 4] = [
    SERVER_FRAMES,
    CLIENT_FRAMES,
    CLUSTER_PAYLOADS,
    DATA_PAYLOADS,
];

/// The inputs a fuzzer of `target` starts from: the checked-in corpus, then the samples
/// generated now (so a message changed since the corpus was written is still covered),
/// without duplicates.
pub fn starting_inputs(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let generated = samples::seeds(target).into_iter().map(|(_, b)| b);
    for input in corpus::load(target)
        .into_iter()
        .map(|(_, b)| b)
        .chain(generated)
    {
        if !out.contains(&input) {
            out.push(input);
        }
    }
    out
}
