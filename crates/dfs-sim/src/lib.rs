//! Deterministic simulation of a dfs cluster.
//!
//! [`run_seed`] runs the real node code ([`dfs_node::Node`]) and the real client library
//! ([`dfs_client::Client`]) in one process, on [turmoil]'s simulated network and clock,
//! through the [`Simulated`] transport. Everything random in a run (the workload, the
//! faults, message latency) comes from one seed:
//!
//! 1. Three nodes start (R = 2), each with its own real data directory in a temp dir.
//! 2. Clients run a random mix of create, append, put, read, delete, write at an offset
//!    (a few bytes at an offset within or a little past the file's likely end, so both
//!    overwrites and zero-filled gaps occur) and truncate (down or up) on a few files,
//!    recording each write's acknowledged offset or size, while the fault schedule
//!    injects, one at a time: node crashes with restarts (disk kept), symmetric
//!    partitions of one node from the others, one-way partitions, and held links
//!    (messages delayed until released). A partition in turmoil drops segments
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
//! # Replay
//!
//! A seed replays exactly: two runs of it inject the same faults at the same simulated
//! times and record the same history, event for event. Everything a run depends on is
//! either simulated or drawn from the seed, all on the one thread that drives the
//! simulation:
//!
//! - the network (latency, partitions) and the clock are turmoil's, seeded by the run;
//! - tokio's own random choices (which branch of a `select!` is polled first) come from
//!   each host's runtime, which turmoil seeds, but only in a build with
//!   `--cfg tokio_unstable` (the workspace's `.cargo/config.toml` sets it;
//!   [`REPLAYS_EXACTLY`] tells whether this build has it);
//! - file I/O runs inline on the simulation's thread (`dfs_net::blocking`) instead of on
//!   tokio's blocking threads;
//! - ids (files, transfers, clients) and the client's first server come from a generator
//!   seeded by the run (`dfs_net::random`);
//! - whatever the code iterates to send, wake or close (calls waiting on a connection,
//!   open connections) is kept in ordered maps, not hash maps;
//! - a crashed host's tasks are dropped in an order that depends on their tokio task ids,
//!   which come from one counter per process: a run first moves that counter to a fixed
//!   alignment, and runs in one process take turns. Tokio runtimes of other threads
//!   spawning tasks during a run would break replay; the simulation's test binary has
//!   none.
//!
//! Real wall-clock time only reaches the files' modification times, which no operation of
//! the workload reads. Election timeouts are fixed per node (openraft would draw them).
//!
//! Limits: the simulated hosts share this process, so a crash drops the host's tasks and
//! connections but not its data directory (like a killed process: written data survives
//! in the page cache); losing the disk itself is not simulated. Writes are not fsynced in
//! the simulation (a process crash does not need it).

mod run;
mod transport;

pub use run::{SimConfig, SimFailure, SimReport, run_seed};

/// Whether this build replays a seed exactly: built with `--cfg tokio_unstable`, without
/// which turmoil cannot seed tokio's random choices (see [Replay](crate#replay)).
pub const REPLAYS_EXACTLY: bool = cfg!(tokio_unstable);
pub use transport::Simulated;
