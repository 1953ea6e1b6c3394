//! The dfs wire protocol: what travels between clients and nodes, and between nodes.
//!
//! This crate knows nothing of the network: it defines the data model's [`Name`] rules,
//! the messages ([`ClientFrame`], [`ServerFrame`] and what they carry), the error
//! vocabulary ([`ErrorCode`], [`WireError`]) and the [`FrameCodec`] that turns them into
//! bytes. Nodes and clients wrap a socket in `tokio_util::codec::Framed` with it.
//!
//! # Frames
//! Every frame is a 4-byte big-endian length followed by that many bytes of a
//! postcard-encoded message. The length is checked before any byte of the body is
//! buffered: a frame longer than [`FRAME_BYTES_MAX`] is refused with
//! [`ProtoError::FrameTooLarge`], so a peer cannot make us allocate without bound.
//!
//! # A connection
//! ```text
//! client                                   node
//!   | ClientFrame::Hello{magic,version,role} |
//!   |--------------------------------------->|   mismatch: ServerFrame::Goodbye(error), close
//!   |<---------------------------------------|   ServerFrame::Welcome{node_id, ..}
//!   | Request{id:1, Put{body:{more:true}}}   |
//!   | Chunk{id:1, ..} .. Chunk{id:1,last}    |   bodies larger than one frame stream as chunks
//!   | Request{id:2, Read{..}}                |   requests pipeline: ids tell replies apart
//!   |<---------------------------------------|   Response{id:2, ReadStart{len}} Chunk{id:2}..
//!   |<---------------------------------------|   Response{id:1, Written{..}}
//! ```
//!
//! A node of the same cluster says hello with `Role::Peer` instead, and then exchanges
//! [`PeerMessage`]s: `ClientFrame::Peer` requests, `ServerFrame::Peer` answers with the same
//! id, pipelined like requests.
//!
//! # Compatibility
//! postcard is not self-describing, so the hello carries [`PROTOCOL_VERSION`] and a node
//! refuses any other. Enum variants are only ever appended, never reordered; a struct that
//! gains a field bumps the version (fields added so carry `#[serde(default)]`, for readers in
//! self-describing formats such as JSON).
//!
//! Why postcard: compact, `serde`-driven, no schema compiler, and it decodes from a
//! bounded buffer without trusting lengths inside the message beyond that buffer.

mod codec;
mod error;
mod message;
mod name;

pub use codec::{ClientCodec, FrameCodec, ProtoError, ServerCodec};
pub use error::{ErrorCode, WireError};
pub use message::*;
pub use name::{NAME_BYTES_MAX, Name, NameError, SEGMENT_BYTES_MAX, validate_prefix};

/// First field of every hello: "DFS1" in ASCII.
pub const MAGIC: u32 = u32::from_be_bytes(*b"DFS1");

/// The protocol version this crate speaks; a node refuses a hello with any other.
///
/// Bumped whenever an encoding changes other than by appending an enum variant (postcard
/// has no field names: a struct that gains a field reads differently). 2: `TableEntry`
/// gained `replication_factor`, `ClusterStatus` `under_replicated` and
/// `rereplicate_after_ms`, `NodeStatus` `down_for_ms`. 3: `Append`, `Put` and `Delete`
/// gained a [`Condition`]. 4: [`Hello`] gained `nonce` and `token` (the peer handshake
/// and clients' access tokens). 5: [`Op::Write`] (at an offset) and [`Op::Truncate`]
/// (appended variants, but a node of version 4 would refuse them as undecodable frames
/// and close the connection).
pub const PROTOCOL_VERSION: u16 = 5;

/// Most bytes one [`Op::Write`] may carry (4 MiB, sixteen chunks): the file's primary and
/// every replica hold the whole write in memory until it is applied, so that it lands
/// whole or not at all.
pub const WRITE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Longest access token a hello may carry, in bytes.
pub const TOKEN_BYTES_MAX: usize = 512;

/// Bytes in a handshake nonce and in an HMAC-SHA256 proof.
pub const PROOF_BYTES: usize = 32;

/// Shortest lock lease: 100 ms.
pub const LOCK_TTL_MS_MIN: u64 = 100;

/// Longest lock lease: one day. A holder that needs longer renews.
pub const LOCK_TTL_MS_MAX: u64 = 24 * 3600 * 1000;

/// Longest a `lock` request waits for a lock held by others: ten minutes.
pub const LOCK_WAIT_MS_MAX: u64 = 600 * 1000;

/// Largest frame body either side accepts or sends (1 MiB).
///
/// Bounds the memory one frame can take; big payloads travel as [`Chunk`]s.
pub const FRAME_BYTES_MAX: usize = 1024 * 1024;

/// Largest payload of one [`Chunk`] (or of a request's inline body): 256 KiB.
///
/// Leaves ample room under [`FRAME_BYTES_MAX`] for the envelope around it.
pub const CHUNK_BYTES_MAX: usize = 256 * 1024;

/// Largest payload of one [`PeerMessage`]: the frame limit less room for the envelope (the
/// frame's variant, the message id and the payload's length).
pub const PEER_PAYLOAD_BYTES_MAX: usize = FRAME_BYTES_MAX - 32;

/// Most entries in one page of `list` or `table`: worst case 512 x (1 KiB name + a little)
/// stays well under [`FRAME_BYTES_MAX`].
pub const PAGE_ENTRIES_MAX: u32 = 512;

const _: () = assert!(CHUNK_BYTES_MAX + NAME_BYTES_MAX + 256 < FRAME_BYTES_MAX);
const _: () = assert!(PAGE_ENTRIES_MAX as usize * (NAME_BYTES_MAX + 128) < FRAME_BYTES_MAX);

#[cfg(test)]
mod test;
