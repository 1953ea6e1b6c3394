//! The checked-in corpus, `fuzz/corpus/<target>/`: the seed inputs every fuzzer starts
//! from (the stable one here and cargo-fuzz's).
//!
//! Files named `seed-*` (a valid message of every kind) and `regress-*` (inputs that once
//! crashed a node) are generated from [`crate::samples`]: regenerate them with
//! `DFS_FUZZ_REGEN=1 cargo test -p dfs-fuzz --test corpus`. Any other file (`found-*`,
//! inputs a fuzzer found interesting and someone copied in) is kept as it is.

use std::io;
use std::path::{Path, PathBuf};

/// Set to regenerate the `seed-*` files of every target.
pub const REGEN_ENV: &str = "DFS_FUZZ_REGEN";

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The corpus directory of `target`.
pub fn dir(target: &str) -> PathBuf {
    repo_root().join("fuzz").join("corpus").join(target)
}

/// Every file of `target`'s corpus, in name order (empty if there is none).
pub fn load(target: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir(target)) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (!name.starts_with('.'))
                .then(|| std::fs::read(e.path()).ok().map(|bytes| (name, bytes)))
                .flatten()
        })
        .collect();
    files.sort();
    files
}

/// Whether a corpus file is generated (and so replaced when the corpus is regenerated).
pub fn is_generated(file_name: &str) -> bool {
    file_name.starts_with("seed-") || file_name.starts_with("regress-")
}

/// Replaces `target`'s generated files with `files`: each written under its name if that
/// starts with `regress-`, else as `seed-<name>`. Other files are left alone. Returns how
/// many were written.
pub fn write_generated(target: &str, files: &[(String, Vec<u8>)]) -> io::Result<usize> {
    let dir = dir(target);
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if is_generated(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    for (name, bytes) in files {
        let file = if name.starts_with("regress-") {
            name.clone()
        } else {
            format!("seed-{name}")
        };
        std::fs::write(dir.join(file), bytes)?;
    }
    Ok(files.len())
}
