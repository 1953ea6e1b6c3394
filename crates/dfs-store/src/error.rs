//! The single error type of the store.

use std::path::PathBuf;

use crate::{FileId, NAME_MAX};

/// Everything that can go wrong in a [`Store`](crate::Store) operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No file with this id exists (never created, or deleted).
    #[error("file {0:016x} not found")]
    NotFound(FileId),
    /// `create` was called for an id that already exists.
    #[error("file {0:016x} already exists")]
    AlreadyExists(FileId),
    /// The file's single writer slot is taken by an open [`AppendTxn`](crate::AppendTxn) or
    /// [`PutTxn`](crate::PutTxn); commit or drop it first.
    #[error("file {0:016x} has a streaming write in progress")]
    Busy(FileId),
    /// The file is damaged (found at recovery, or a write failed half-way); it is kept out of
    /// service and never served. Delete it and restore it from another replica.
    #[error("file {id:016x} is corrupt: {reason}")]
    Corrupt {
        /// The damaged file.
        id: FileId,
        /// What is wrong with it.
        reason: String,
    },
    /// Another [`Store`](crate::Store) (in this or another process) holds the directory's `LOCK`.
    #[error("store directory {0} is already in use (its LOCK file is held)")]
    Locked(PathBuf),
    /// A file name longer than [`NAME_MAX`] bytes; carries the offending length.
    #[error("file name is {0} bytes long; at most {NAME_MAX} bytes are allowed")]
    NameTooLong(usize),
    /// An offset or size past what a file can hold (`offset + len` overflows).
    #[error("{0}")]
    OutOfRange(String),
    /// A keyed write at or below its client's floor in the file's dedup table: it may have
    /// been applied, but its outcome was evicted (the client made many writes to this file
    /// since). It must not be applied again, and its outcome cannot be told.
    #[error(
        "file {id:016x}: write {seq} of client {client_id:016x} may have been applied, but \
         its outcome is no longer remembered (the client's later writes to the file pushed \
         it out); it was not applied again"
    )]
    OutcomeForgotten {
        /// The file.
        id: FileId,
        /// The writing client.
        client_id: u64,
        /// The write's sequence number.
        seq: u64,
    },
    /// An operating-system I/O error (a full disk says so first: `disk full: ...`).
    #[error("{}{context}: {source}", no_space_prefix(.source))]
    Io {
        /// What the store was doing (and on which path).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.kind() == std::io::ErrorKind::StorageFull {
            tracing::warn!(%context, "disk full: {source}");
        }
        StoreError::Io { context, source }
    }

    /// Whether this is an I/O error because the disk is full (`ENOSPC`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull)
    }
}

fn no_space_prefix(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "disk full: "
    } else {
        ""
    }
}

/// Adds context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`StoreError::Io`] with the context produced by `f`.
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(f(), e))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::StoreError;

    #[test]
    fn a_full_disk_says_so() {
        let full = StoreError::io("appending to f", Error::from(ErrorKind::StorageFull));
        assert!(full.is_no_space());
        assert!(
            full.to_string().starts_with("disk full: appending to f: "),
            "{full}"
        );
        let other = StoreError::io("appending to f", Error::from(ErrorKind::PermissionDenied));
        assert!(!other.is_no_space());
        assert!(other.to_string().starts_with("appending to f: "), "{other}");
    }
}
