//! A whole dfs node, embeddable: start one from a [`NodeConfig`] and it serves clients on
//! its address until [`Node::shutdown`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), dfs_node::NodeError> {
//! use dfs_node::{Node, NodeConfig};
//! let node = Node::start(NodeConfig::single("/tmp/dfs-demo", "127.0.0.1:0")).await?;
//! println!("serving on {}", node.local_addr());
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What it does
//! - Accepts TCP connections up to [`Limits::connections_max`], and up to
//!   [`Limits::connections_per_address_max`] from one source address; one more gets a
//!   `Busy` goodbye and is closed, so a flood of connections cannot starve the node, nor
//!   one host everybody else.
//! - Refuses a client's frame over [`Limits::request_bytes_max`] with a `TooLarge` goodbye.
//! - Expects a hello within [`Limits::hello_timeout`] (a silent connection is closed), checks
//!   magic, version and role, and answers a stray HTTP request with `400 Bad Request`.
//! - Serves a client connection's requests concurrently (pipelining, at most
//!   [`Limits::requests_in_flight_max`] at once), routing streamed body chunks to their
//!   request through bounded queues, and answering each through one bounded outbound queue.
//! - Closes a connection idle for [`Limits::idle_timeout`], one that stalls in the middle
//!   of a frame for [`Limits::frame_timeout`] (a slow sender), and one whose peer does not
//!   take our frames within [`Limits::write_timeout`].
//! - Every error reaches the client as a code and a message; malformed input ends only the
//!   connection that sent it.
//! - On shutdown stops accepting, says goodbye on every connection, and waits up to
//!   [`Limits::shutdown_grace`] for requests in progress to finish.
//!
//! The file operations themselves are the [`Engine`](dfs_replication::Engine)'s. A node that
//! is not a file's primary forwards the request to the primary and relays the answer.
//! [`LocalCluster`] runs several nodes in one process, for examples and tests.

mod config;
mod connection;
mod forward;
mod local;
mod server;

pub use config::{Limits, NodeConfig, REQUEST_BYTES_MIN, parse_cluster};
pub use dfs_replication::{Member, Timing};
pub use local::LocalCluster;
pub use server::Node;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is not usable; the message says what to change.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The data directory could not be opened or recovered.
    #[error("store: {0}")]
    Store(#[from] dfs_store::StoreError),
    /// The engine refused the configuration.
    #[error(transparent)]
    Engine(#[from] dfs_replication::EngineError),
    /// The cluster map could not start (its storage, or no leader in time).
    #[error(transparent)]
    Cluster(#[from] dfs_cluster::ClusterError),
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod offsets_tests;
#[cfg(test)]
mod test;
