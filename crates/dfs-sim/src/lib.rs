//! Deterministic simulation of a dfs cluster.
//!
//! [`run_seed`] runs the real node code ([`dfs_node::Node`]) and the real client library
//! ([`dfs_client::Client`]) in one process, on [turmoil]'s simulated network and clock,
//! through the [`Simulated`] transport. Everything random in a run (the workload, the
//! faults, message latency) comes from one seed:
//!
//! 1. Three nodes start (R = 2), each with its own real data directory in a temp dir.
//! 2. Clients run a random mix of create, append, put, read and delete on a few files
//!    while the fault schedule injects, one at a time: node crashes with restarts (disk
//!    kept), symmetric partitions of one node from the others, one-way partitions, and
//!    held links (messages delayed until released). A partition in turmoil drops segments
//!    of open connections, which then stall for good: the code must notice by its own
//!    timeouts, as it must with a real half-dead connection.
//! 3. Once the clients are done, every fault is healed, and a verifier reads every file
//!    through every node.
//! 4. The whole history (invocations, results, unknown outcomes) goes through the
//!    linearizability checker ([`dfs_check`]). The verifier's reads come after every write
//!    has ended, so a linearizable history also proves every acknowledged write is present,
//!    once, on every node's view.
//!
//! A failing seed is printed with the command that replays it:
//! `DFS_SIM_SEED=<seed> cargo test -p dfs-sim --test sim -- --nocapture`.
//!
//! Limits: the simulated hosts share this process, so a crash drops the host's tasks and
//! connections but not its data directory (like a killed process: written data survives
//! in the page cache); losing the disk itself is not simulated. Writes are not fsynced in
//! the simulation (a process crash does not need it).

mod run;
mod transport;

pub use run::{SimConfig, SimFailure, SimReport, run_seed};
pub use transport::Simulated;
