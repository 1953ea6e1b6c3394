//! dfs: a replicated distributed file store for "a few servers that keep my files safe".
//!
//! This facade re-exports the crates a Rust program embeds:
//! - [`client`]: connect to any node and use every operation ([`client::Client`]);
//! - [`node`]: run a whole node in-process from a [`node::NodeConfig`];
//! - [`store`]: the local file store and per-file lock manager, usable on their own;
//! - [`auth`]: the cluster secret, access tokens and their rights;
//! - [`net`]: the transports (TCP, and TLS in [`net::tls`]);
//! - [`proto`], [`placement`], [`replication`]: the protocol, the replica placement and
//!   the engine underneath.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use dfs::{client::Client, node::{Node, NodeConfig}};
//! let dir = tempfile::tempdir()?;
//! let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
//! let client = Client::connect([node.local_addr().to_string()]).await?;
//! client.append("hello.txt", "hi").await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The `dfs-server` and `dfs-client` binaries are built with the default `cli` feature.

pub use dfs_auth as auth;
pub use dfs_client as client;
pub use dfs_net as net;
pub use dfs_node as node;
pub use dfs_placement as placement;
pub use dfs_proto as proto;
pub use dfs_replication as replication;
pub use dfs_store as store;

/// The README's Rust snippets, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
