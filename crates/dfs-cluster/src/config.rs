//! The raft settings of the cluster map, sized for the transport: every consensus message
//! must fit in one peer frame.

use std::sync::Arc;

use dfs_proto::{NAME_BYTES_MAX, PEER_PAYLOAD_BYTES_MAX};
use openraft::{Config, ConfigError};

/// A leader's heartbeat interval, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
/// The shortest election timeout, in milliseconds: six heartbeats, so a loaded two-core
/// machine that delays a few of them does not start an election.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
/// The longest election timeout, in milliseconds.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// Time to live of one snapshot chunk's call, in milliseconds.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 2_000;
/// The largest piece of a snapshot sent in one message: 256 KiB.
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;
/// Most log entries in one append-entries message.
pub const MAX_PAYLOAD_ENTRIES: u64 = 128;
/// A bound on one encoded log entry: a command carries at most one file name (at most
/// [`NAME_BYTES_MAX`]) and a handful of ids; the rest pays for the replica list, the log
/// id and a node address.
pub const LOG_ENTRY_BYTES_MAX: usize = NAME_BYTES_MAX + 1024;
/// Room in a message for what surrounds its entries or chunk (vote, log ids, membership).
const ENVELOPE_BYTES: usize = 16 * 1024;

// A full append-entries message and a full snapshot chunk each fit in one peer frame.
const _: () = assert!(
    MAX_PAYLOAD_ENTRIES as usize * LOG_ENTRY_BYTES_MAX + ENVELOPE_BYTES <= PEER_PAYLOAD_BYTES_MAX
);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES + ENVELOPE_BYTES <= PEER_PAYLOAD_BYTES_MAX);

/// The validated raft configuration of the cluster map of `cluster_name`: heartbeats every
/// [`HEARTBEAT_INTERVAL_MS`], elections after [`ELECTION_TIMEOUT_MIN_MS`] to
/// [`ELECTION_TIMEOUT_MAX_MS`] of silence, snapshots in [`SNAPSHOT_CHUNK_BYTES`] chunks and
/// at most [`MAX_PAYLOAD_ENTRIES`] entries per append, so every message fits in a frame.
///
/// The error (boxed: openraft's is large) says which setting is inconsistent.
pub fn raft_config(cluster_name: &str) -> Result<Arc<Config>, Box<ConfigError>> {
    raft_config_with(
        cluster_name,
        (ELECTION_TIMEOUT_MIN_MS, ELECTION_TIMEOUT_MAX_MS),
    )
}

/// [`raft_config`] with elections after `election_timeout_ms.0` to `election_timeout_ms.1`
/// milliseconds of silence (the range must lie above the heartbeat interval).
pub fn raft_config_with(
    cluster_name: &str,
    election_timeout_ms: (u64, u64),
) -> Result<Arc<Config>, Box<ConfigError>> {
    let config = Config {
        cluster_name: cluster_name.to_owned(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: election_timeout_ms.0,
        election_timeout_max: election_timeout_ms.1,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Config::default()
    };
    Ok(Arc::new(config.validate()?))
}
