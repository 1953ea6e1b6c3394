//! A peer payload of the data layer (`DataRpc`, `DataReply`):
//! `dfs_fuzz::targets::data_payloads`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let _ = dfs_fuzz::targets::data_payloads(payload);
});
