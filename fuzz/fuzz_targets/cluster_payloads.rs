//! A peer payload of the cluster map's transport (`RaftRpc`, `RaftReply`):
//! `dfs_fuzz::targets::cluster_payloads`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let _ = dfs_fuzz::targets::cluster_payloads(payload);
});
