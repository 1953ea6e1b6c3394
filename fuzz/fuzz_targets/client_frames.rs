//! A client reading a node's byte stream: `dfs_fuzz::targets::client_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|stream: &[u8]| dfs_fuzz::targets::client_frames(stream));
