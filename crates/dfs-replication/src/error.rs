//! The engine's error type and its wire form.

use dfs_proto::{ErrorCode, NameError, WireError};
use dfs_store::StoreError;

/// Everything an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The name breaks a rule of the data model.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No such file.
    #[error("{0:?} not found")]
    NotFound(String),
    /// `create` of an existing name.
    #[error("{0:?} already exists")]
    AlreadyExists(String),
    /// A streamed body ended before its last chunk (the client went away or cancelled);
    /// nothing was applied.
    #[error("write abandoned: {0}")]
    BodyAborted(String),
    /// A request the engine cannot serve as asked.
    #[error("{0}")]
    InvalidRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation cannot be served now (no map leader or quorum, no lease, a failover
    /// or a replica sync in progress; the message says which); retry, maybe on another
    /// node.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This node is not the file's primary: the operation belongs on `node` at `addr`
    /// (a node forwards it there).
    #[error("node {node} at {addr} is the primary of this file")]
    Redirect {
        /// The primary.
        node: u64,
        /// Its address.
        addr: String,
    },
    /// `lock` of a name held in a conflicting mode until the wait ended.
    #[error("lock held: {0}")]
    LockHeld(String),
    /// A fenced write or delete whose token was superseded (the message says how).
    #[error("{0}")]
    Fenced(String),
    /// A write or delete that required another version of the file.
    #[error("{name:?} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The file.
        name: String,
        /// The version required.
        expected: u64,
        /// The file's version.
        actual: u64,
    },
    /// `renew` or `unlock` of a lease that is gone.
    #[error("lease {0} has expired or was released")]
    LeaseExpired(u64),
    /// A background task failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The code a client sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::InvalidName(_) => ErrorCode::InvalidName,
            EngineError::NotFound(_) => ErrorCode::NotFound,
            EngineError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            EngineError::BodyAborted(_) | EngineError::InvalidRequest(_) => {
                ErrorCode::InvalidRequest
            }
            EngineError::Store(StoreError::Corrupt { .. }) => ErrorCode::Corrupt,
            EngineError::Store(StoreError::Busy(_)) => ErrorCode::Busy,
            EngineError::Store(StoreError::NameTooLong(_)) => ErrorCode::InvalidName,
            EngineError::Store(StoreError::OutOfRange(_)) => ErrorCode::TooLarge,
            EngineError::Store(StoreError::OutcomeForgotten { .. }) => ErrorCode::OutcomeUnknown,
            EngineError::Store(e) if e.is_no_space() => ErrorCode::NoSpace,
            EngineError::Unavailable(_) | EngineError::Redirect { .. } => ErrorCode::Unavailable,
            EngineError::Store(_) | EngineError::Internal(_) => ErrorCode::Internal,
            EngineError::LockHeld(_) => ErrorCode::LockHeld,
            EngineError::Fenced(_) => ErrorCode::Fenced,
            EngineError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            EngineError::LeaseExpired(_) => ErrorCode::LeaseExpired,
        }
    }

    /// The error as sent to a client. A full disk is told without the node's paths (its
    /// log has them).
    pub fn to_wire(&self) -> WireError {
        match self.code() {
            ErrorCode::NoSpace => WireError::new(
                ErrorCode::NoSpace,
                "disk full: the node holding this file has no space left for the write \
                 (its log says where)",
            ),
            code => WireError::new(code, self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn a_full_disk_has_its_own_code() {
        let io = |kind| {
            EngineError::Store(StoreError::Io {
                context: "appending to f".into(),
                source: Error::from(kind),
            })
        };
        let full = io(ErrorKind::StorageFull).to_wire();
        assert_eq!(full.code, ErrorCode::NoSpace);
        assert!(full.message.starts_with("disk full: "), "{}", full.message);
        assert!(
            !full.message.contains("appending to f"),
            "no internal detail: {}",
            full.message
        );
        assert!(!ErrorCode::NoSpace.is_retryable());
        assert_eq!(io(ErrorKind::Other).code(), ErrorCode::Internal);
    }
}
