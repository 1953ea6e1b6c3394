//! The checked-in corpus (`fuzz/corpus/<target>/`), which every fuzzer starts from.
//!
//! Regenerate its `seed-*` files after a message changes (one command, from the repository
//! root):
//!
//! ```text
//! DFS_FUZZ_REGEN=1 cargo test -p dfs-fuzz --test corpus
//! ```
//!
//! That rewrites the `seed-*` and `regress-*` files; others (`found-*`) are kept. Without the variable this only checks
//! that every target has a corpus: the stable fuzzer adds the samples generated at run
//! time to it, so a stale corpus costs cargo-fuzz a little coverage, never a test failure.

use dfs_fuzz::corpus::{self, REGEN_ENV};
use dfs_fuzz::{TARGETS, samples};

#[test]
fn every_target_has_a_corpus_which_regenerates_on_demand() {
    if std::env::var_os(REGEN_ENV).is_some() {
        for target in TARGETS {
            let seeds = samples::seeds(target);
            let n = corpus::write_generated(target, &seeds)
                .unwrap_or_else(|e| panic!("writing {}: {e}", corpus::dir(target).display()));
            eprintln!(
                "{target}: {n} seeds written to {}",
                corpus::dir(target).display()
            );
        }
    }
    for target in TARGETS {
        let files = corpus::load(target);
        assert!(
            files.iter().any(|(name, _)| name.starts_with("seed-")),
            "{} has no seeds: run `{REGEN_ENV}=1 cargo test -p dfs-fuzz --test corpus`",
            corpus::dir(target).display()
        );
    }
}
