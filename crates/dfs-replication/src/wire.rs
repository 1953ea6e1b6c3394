//! The data layer's messages between nodes, carried as opaque payloads of the peer
//! connections ([`dfs_cluster::RaftRpc::Data`]) and postcard-encoded.
//!
//! ```text
//! primary                                    replica
//!   Begin{transfer, name, id, epoch, kind,  ->  checks epoch and version, opens a store
//!         first chunk, last?}                    transaction (commits at once if last)
//!   Chunk{transfer, data, last?}            ->  writes (commits if last)
//!                                  <- Committed{version, size, checksum} | Staged
//! ```

use bytes::Bytes;
use dfs_placement::{FileId, NodeId};
use dfs_store::{DedupKey, InstallState};
use serde::{Deserialize, Serialize};

use crate::WriteMode;

/// A request of one node's data layer to another's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum DataRpc {
    /// A node asks the map's leader for its lease (and so tells it that it is alive).
    Lease {
        /// The asking node.
        from: NodeId,
    },
    /// Opens a transfer: a write forwarded by the file's primary, or a whole copy.
    Begin {
        /// Chosen by the sender, unique among its transfers.
        transfer: u64,
        /// The file's name.
        name: String,
        /// The file's id.
        file_id: FileId,
        /// The placement epoch the sender acts in.
        epoch: u64,
        /// What the transfer does.
        kind: TransferKind,
        /// The first bytes.
        data: Bytes,
        /// Whether these are all the bytes (the transfer commits at once).
        last: bool,
    },
    /// More bytes of an open transfer.
    Chunk {
        /// The transfer.
        transfer: u64,
        /// The bytes.
        data: Bytes,
        /// Whether these are the last bytes (the transfer commits).
        last: bool,
    },
    /// Abandons an open transfer.
    Abort {
        /// The transfer.
        transfer: u64,
    },
    /// Asks for the receiver's copy of a file: its version, size and checksum.
    Probe {
        /// The file's name.
        name: String,
        /// The file's id.
        file_id: FileId,
        /// The placement epoch the sender acts in.
        epoch: u64,
    },
    /// Asks for the receiver's role in the map's consensus group.
    Role,
    /// Asks for the size and version of files the receiver is the primary of (for listings).
    Metas {
        /// The files: name and id (the name finds the placement without a scan).
        files: Vec<(String, FileId)>,
    },
    /// Asks the receiver to scrub its copies now.
    Scrub,
}

/// What a transfer does on the receiving replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TransferKind {
    /// A client's write, applied as version `base_version + 1`.
    Write {
        /// Append or put.
        mode: WriteMode,
        /// The version the receiver's copy must be at.
        base_version: u64,
        /// The client's tag, remembered for retries.
        key: Option<DedupKey>,
    },
    /// A whole copy of the sender's file, replacing the receiver's.
    Install {
        /// Version, modification time and dedup table of the copy.
        state: InstallState,
    },
}

/// A copy of a file as one replica holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CopyState {
    /// Its version.
    pub(crate) version: u64,
    /// Its size.
    pub(crate) size: u64,
    /// Its checksum.
    pub(crate) checksum: u32,
}

/// The answer to a [`DataRpc`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum DataReply {
    /// The lease is granted: apply the map up to this index first.
    Lease(u64),
    /// The transfer is open and took the bytes.
    Staged,
    /// The transfer committed; this is the copy now.
    Committed(CopyState),
    /// The receiver's copy (`None`: it holds none).
    Copy(Option<CopyState>),
    /// Sizes and versions, in the order asked (`None`: not held or not primary there).
    Metas(Vec<Option<(u64, u64)>>),
    /// The receiver's map does not have the file at the sender's epoch: it has a newer
    /// epoch (`epoch`), or the file is gone or is another file now (`epoch` 0). The
    /// sender acts on an old map and must not go on.
    Stale {
        /// The receiver's epoch of the file, 0 if it has none.
        epoch: u64,
    },
    /// The receiver's copy is not at the version the write follows: it needs a whole copy.
    Behind {
        /// Its version.
        version: u64,
    },
    /// The receiver's role in the map's consensus group.
    Role(dfs_proto::NodeRole),
    /// The request failed (the message says why).
    Failed(String),
    /// What the receiver's scrub found.
    Scrub(dfs_proto::ScrubReport),
}

/// Payloads that do not fit the peer frame are refused by the transport; these encoders
/// never panic.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes any bytes, refusing those that are not a `T`.
pub(crate) fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(payload).map_err(|e| format!("undecodable data message: {e}"))
}
