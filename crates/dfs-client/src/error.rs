//! The client's error type.

use dfs_proto::{ErrorCode, NameError, WireError};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `create` of a name that exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The name breaks a rule (checked before anything is sent).
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// Any other error a node reported.
    #[error("{message}")]
    Server {
        /// What kind of error.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
    /// No node could be reached (or all refused) before the retry deadline.
    #[error("no server available: {0}")]
    Unavailable(String),
    /// The request got no answer in time; a write's outcome is unknown (a retry with the
    /// same client is still applied at most once).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The node sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection broke during a stream that cannot be replayed.
    #[error("connection lost during a transfer: {0}")]
    Interrupted(String),
    /// A local reader or writer (a file being uploaded or downloaded) failed.
    #[error("local i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// `lock` of a name others held in a conflicting mode until the wait ended.
    #[error("{0}")]
    LockHeld(String),
    /// A fenced write or delete whose token was superseded: this holder lost the lock.
    /// Nothing was changed.
    #[error("{0}")]
    Fenced(String),
    /// A conditional write or delete found the file at another version. Nothing was
    /// changed.
    #[error("{0}")]
    VersionMismatch(String),
    /// `renew` or `unlock` of a lease that had run out (or was released).
    #[error("{0}")]
    LeaseExpired(String),
    /// A request larger than the protocol allows (a `write_at` of more than
    /// [`WRITE_BYTES_MAX`](dfs_proto::WRITE_BYTES_MAX) bytes, or an offset past 2^64):
    /// nothing was sent or changed.
    #[error("{0}")]
    TooLarge(String),
    /// The client was given no usable server address.
    #[error("bad configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The error code, as the node would send it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::NotFound(_) => ErrorCode::NotFound,
            ClientError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            ClientError::InvalidName(_) => ErrorCode::InvalidName,
            ClientError::Server { code, .. } => *code,
            ClientError::Unavailable(_) | ClientError::Interrupted(_) => ErrorCode::Unavailable,
            ClientError::Timeout(_) => ErrorCode::Timeout,
            ClientError::Protocol(_) => ErrorCode::ProtocolMismatch,
            ClientError::Io(_) | ClientError::Config(_) => ErrorCode::InvalidRequest,
            ClientError::LockHeld(_) => ErrorCode::LockHeld,
            ClientError::Fenced(_) => ErrorCode::Fenced,
            ClientError::VersionMismatch(_) => ErrorCode::VersionMismatch,
            ClientError::LeaseExpired(_) => ErrorCode::LeaseExpired,
            ClientError::TooLarge(_) => ErrorCode::TooLarge,
        }
    }

    /// Whether sending the same request again (maybe to another node) may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unavailable(_) | ClientError::Timeout(_) => true,
            ClientError::Server { code, .. } => code.is_retryable(),
            _ => false,
        }
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        match e.code {
            ErrorCode::NotFound => ClientError::NotFound(e.message),
            ErrorCode::AlreadyExists => ClientError::AlreadyExists(e.message),
            ErrorCode::LockHeld => ClientError::LockHeld(e.message),
            ErrorCode::Fenced => ClientError::Fenced(e.message),
            ErrorCode::VersionMismatch => ClientError::VersionMismatch(e.message),
            ErrorCode::LeaseExpired => ClientError::LeaseExpired(e.message),
            code => ClientError::Server {
                code,
                message: e.message,
            },
        }
    }
}
