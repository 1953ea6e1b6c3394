//! Errors as they travel on the wire: a code the program can match and a message for people.

use serde::{Deserialize, Serialize};

/// What went wrong, as a value a client can act on. Append new codes at the end only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The named file does not exist.
    NotFound,
    /// `create` of a name that exists.
    AlreadyExists,
    /// The name breaks a rule of the data model; the message names the rule.
    InvalidName,
    /// The request is malformed or not allowed in this state.
    InvalidRequest,
    /// A frame, body or field is larger than its limit.
    TooLarge,
    /// A limit (connections, requests in flight) is reached; retry later.
    Busy,
    /// The node cannot serve this now (shutting down, no quorum); try another node.
    Unavailable,
    /// The operation did not finish in time; its outcome is unknown.
    Timeout,
    /// Stored bytes failed their checksum or structure check.
    Corrupt,
    /// The hello's magic, version or role does not match this node.
    ProtocolMismatch,
    /// A bug or an I/O failure on the node; the message says which.
    Internal,
    /// The disk of the node that serves the file (its primary) is full, so the write
    /// failed. Retrying helps only once space is freed there.
    NoSpace,
    /// `lock` of a name held by others in a conflicting mode, still held when the wait
    /// ended.
    LockHeld,
    /// A write or delete carried a fencing token older than the newest conflicting grant
    /// of the file's lock: its holder has lost the lock. Nothing was changed.
    Fenced,
    /// A write or delete required a version the file is not at. Nothing was changed.
    VersionMismatch,
    /// `renew` or `unlock` of a lease that has expired or was released (or never
    /// existed).
    LeaseExpired,
    /// The connection did not prove who it is: no access token, a token the node does not
    /// know, or a peer that failed the cluster-secret handshake.
    Unauthenticated,
    /// The access token does not give the right this operation needs (the message names
    /// the token and the right missing). Nothing was changed.
    PermissionDenied,
    /// A retried write that may have been applied by an earlier attempt whose outcome the
    /// file no longer remembers (the same client wrote to the file many times since). It
    /// was not applied again; read the file to see whether the first attempt was.
    OutcomeUnknown,
}

impl ErrorCode {
    /// Whether a client should try the same operation again (on this or another node).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Busy | Self::Unavailable | Self::Timeout)
    }
}

/// An error as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    /// The machine-readable kind.
    pub code: ErrorCode,
    /// A one-line explanation for people.
    pub message: String,
}

impl WireError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
