//! The one table that turns a dfs error into the errno a program sees.
//!
//! | dfs error | errno | why |
//! |---|---|---|
//! | `NotFound` | `ENOENT` | the file is not there |
//! | `AlreadyExists` | `EEXIST` | `O_CREAT\|O_EXCL`, `mkdir`, `RENAME_NOREPLACE` |
//! | `InvalidName` (a name or segment too long) | `ENAMETOOLONG` | segment > 255 or name > 1024 bytes |
//! | `InvalidName` (any other rule) | `EINVAL` | control characters and the like |
//! | `InvalidRequest` | `EINVAL` | |
//! | `TooLarge` | `EFBIG` | a body or file over a limit |
//! | `NoSpace` | `ENOSPC` | the primary's disk is full |
//! | `Busy` (after the client's retries) | `EBUSY` | the nodes shed load |
//! | `Unavailable` (after the retries and the mount's deadline) | `EIO` | no node could serve it |
//! | `Timeout` | `ETIMEDOUT` | no answer in time; a write's outcome is unknown |
//! | `OutcomeUnknown` | `ETIMEDOUT` | a retried write whose first attempt's outcome was forgotten: it may have been applied once |
//! | `Corrupt` | `EIO` | no good copy could be read |
//! | `Internal` | `EIO` | a node's bug or I/O failure |
//! | `ProtocolMismatch` | `EPROTO` | client and node do not speak the same protocol |
//! | `LockHeld` | `EAGAIN` | someone else holds the lock |
//! | `Fenced`, `VersionMismatch`, `LeaseExpired` | `ESTALE` | the file changed under a conditional operation |
//! | `Unauthenticated`, `PermissionDenied` | `EACCES` | the token is missing or lacks the right |
//! | a local I/O error | its own errno, else `EIO` | |
//! | a bad client configuration | `EINVAL` | |

use dfs_client::ClientError;
use dfs_proto::{ErrorCode, NameError};
use fuser::Errno;

/// The errno for a dfs error code (see the module's table).
pub fn code_errno(code: ErrorCode) -> Errno {
    match code {
        ErrorCode::NotFound => Errno::ENOENT,
        ErrorCode::AlreadyExists => Errno::EEXIST,
        ErrorCode::InvalidName | ErrorCode::InvalidRequest => Errno::EINVAL,
        ErrorCode::TooLarge => Errno::EFBIG,
        ErrorCode::NoSpace => Errno::ENOSPC,
        ErrorCode::Busy => Errno::EBUSY,
        ErrorCode::Unavailable | ErrorCode::Corrupt | ErrorCode::Internal => Errno::EIO,
        ErrorCode::Timeout | ErrorCode::OutcomeUnknown => Errno::from_i32(libc::ETIMEDOUT),
        ErrorCode::ProtocolMismatch => Errno::from_i32(libc::EPROTO),
        ErrorCode::LockHeld => Errno::EAGAIN,
        ErrorCode::Fenced | ErrorCode::VersionMismatch | ErrorCode::LeaseExpired => {
            Errno::from_i32(libc::ESTALE)
        }
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => Errno::EACCES,
    }
}

/// The errno for a client error: [`code_errno`] of its code, refined where the error says
/// more than its code (name too long, a local I/O error).
pub fn client_errno(e: &ClientError) -> Errno {
    match e {
        ClientError::InvalidName(NameError::TooLong(_) | NameError::SegmentTooLong(_)) => {
            Errno::from_i32(libc::ENAMETOOLONG)
        }
        ClientError::Io(io) => io.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
        ClientError::Config(_) => Errno::EINVAL,
        other => code_errno(other.code()),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_code_has_its_errno() {
        let table = [
            (ErrorCode::NotFound, libc::ENOENT),
            (ErrorCode::AlreadyExists, libc::EEXIST),
            (ErrorCode::InvalidName, libc::EINVAL),
            (ErrorCode::InvalidRequest, libc::EINVAL),
            (ErrorCode::TooLarge, libc::EFBIG),
            (ErrorCode::NoSpace, libc::ENOSPC),
            (ErrorCode::Busy, libc::EBUSY),
            (ErrorCode::Unavailable, libc::EIO),
            (ErrorCode::Timeout, libc::ETIMEDOUT),
            (ErrorCode::OutcomeUnknown, libc::ETIMEDOUT),
            (ErrorCode::Corrupt, libc::EIO),
            (ErrorCode::Internal, libc::EIO),
            (ErrorCode::ProtocolMismatch, libc::EPROTO),
            (ErrorCode::LockHeld, libc::EAGAIN),
            (ErrorCode::Fenced, libc::ESTALE),
            (ErrorCode::VersionMismatch, libc::ESTALE),
            (ErrorCode::LeaseExpired, libc::ESTALE),
            (ErrorCode::Unauthenticated, libc::EACCES),
            (ErrorCode::PermissionDenied, libc::EACCES),
        ];
        for (code, errno) in table {
            assert_eq!(code_errno(code).code(), errno, "{code:?}");
        }
    }

    #[test]
    fn client_errors_refine_their_code() {
        let long = dfs_proto::Name::parse(&"a".repeat(300)).expect_err("too long");
        assert_eq!(
            client_errno(&ClientError::from(long)).code(),
            libc::ENAMETOOLONG
        );
        let ctl = dfs_proto::Name::parse("a\u{1}b").expect_err("control");
        assert_eq!(client_errno(&ClientError::from(ctl)).code(), libc::EINVAL);
        assert_eq!(
            client_errno(&ClientError::NotFound("x".into())).code(),
            libc::ENOENT
        );
        assert_eq!(
            client_errno(&ClientError::Unavailable("x".into())).code(),
            libc::EIO
        );
        assert_eq!(
            client_errno(&ClientError::Timeout("x".into())).code(),
            libc::ETIMEDOUT
        );
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(client_errno(&ClientError::Io(io)).code(), libc::ENOSPC);
    }
}
