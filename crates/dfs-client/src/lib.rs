//! The dfs client library: connect to any node of a cluster and use every operation.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dfs_client::ClientError> {
//! use dfs_client::Client;
//! let client = Client::connect(["127.0.0.1:6000", "127.0.0.1:7000"]).await?;
//! client.create("notes/today.txt").await?;
//! client.append("notes/today.txt", "hello ").await?;
//! client.append("notes/today.txt", "world").await?;
//! let bytes = client.read("notes/today.txt", 0, None).await?;
//! assert_eq!(&bytes[..], b"hello world");
//! # Ok(()) }
//! ```
//!
//! # Failover and exactly-once
//! A [`Client`] keeps one connection to one node and pipelines every request over it (many
//! tasks may share a client). When the connection fails or the node answers `Busy` or
//! `Unavailable`, the request is sent again, to the next node in the list, until
//! [`ClientConfig::retry_deadline`] passes. Every write carries an
//! [`OpTag`](dfs_proto::OpTag) (a random client id and a sequence number) that the retry
//! reuses, so a node that already applied it answers with the saved result instead of
//! applying it twice. Streamed writes ([`Client::put_stream`]) cannot replay their source
//! and are not retried once their body has started.
//!
//! # Memory
//! Bodies travel in chunks of at most [`CHUNK_BYTES_MAX`](dfs_proto::CHUNK_BYTES_MAX);
//! [`Client::put_stream`] and [`Client::read_to`] hold only a few chunks at a time, so a
//! file of any size moves through bounded memory. A write at an offset
//! ([`Client::write_at`]) is applied whole, so it is bounded instead: at most
//! [`WRITE_BYTES_MAX`] bytes (4 MiB) per call.
//!
//! # Writes at an offset and truncation
//! [`Client::write_at`] overwrites (and extends) an existing file at an offset and
//! [`Client::truncate`] sets its size; both are atomic on every replica, exactly-once
//! under retries, take the same [`Condition`]s as `append` (`write_at_if`,
//! `truncate_if`), and answer [`ClientError::NotFound`] for a missing file.

mod client;
mod connection;
mod error;

pub use client::{Client, ClientConfig, ReadStream, SCRUB_TIMEOUT, token_from_env};
pub use connection::RawConnection;
pub use dfs_net::{SharedTransport, Tcp, Transport};
pub use dfs_proto::{
    BadCopy, ClusterStatus, Condition, FileInfo, ListEntry, LockGrant, LockMode, NodeRole,
    NodeStatus, ScrubReport, TableEntry, WRITE_BYTES_MAX, WriteAck,
};
pub use error::ClientError;

/// The servers a client uses when none are given: the seed's three ports on this host.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:6000,127.0.0.1:7000,127.0.0.1:8000";
