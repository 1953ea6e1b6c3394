//! A node reading a client's (or a peer's) byte stream: `dfs_fuzz::targets::server_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|stream: &[u8]| dfs_fuzz::targets::server_frames(stream));
