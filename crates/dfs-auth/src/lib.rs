//! Who may talk to a dfs node, and what each client may do.
//!
//! Two separate questions, answered at the start of every connection:
//!
//! - **Is the caller a node of this cluster?** The nodes share a [`ClusterSecret`] (a file,
//!   never a command-line value). A peer or forwarding node proves it knows the secret with
//!   a challenge-response in the hello exchange: both sides send a fresh random nonce and
//!   each sends an HMAC-SHA256 over both nonces ([`ClusterSecret::proof`]), the node's proof
//!   first. A recorded handshake is useless: the next one covers other nonces. The node
//!   proves itself too, so a node never sends its cluster's traffic to an impostor.
//!
//!   ```text
//!   caller                                   node
//!     Hello{role: Peer, nonce_c}   ───────►
//!                                  ◄───────  Challenge{nonce_n, proof_n = MAC(node, …)}
//!     (checks proof_n)
//!     Proof(MAC(caller, …))        ───────►
//!                                  ◄───────  Welcome   (or Goodbye(Unauthenticated))
//!   ```
//!
//! - **Which client is this, and what may it do?** Clients present an access token in
//!   their hello. A node keeps a [`TokensFile`] of token names, [`Right`]s (`read` or
//!   `read-write`), optional name prefixes and the tokens' SHA-256 digests (never the tokens
//!   themselves). [`TokenStore`] looks a token up (re-reading the file when it changes) and
//!   gives the connection a [`Grant`], which [`Grant::check`] applies to every operation.
//!
//! Pure logic only: no sockets, no clock. The node (`dfs-node`) runs the node's side of
//! the handshake, the cluster's peer transport and the client library run the caller's.

pub mod handshake;
mod secret;
mod token;

pub use handshake::{GreetError, greet};
pub use secret::{ClusterSecret, Nonce, Proof, Side, peer_context};
pub use token::{Grant, Right, TokenEntry, TokenStore, TokensFile};

use dfs_proto::TOKEN_BYTES_MAX;

/// What can go wrong loading secrets and tokens, or authenticating.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what it must be; the message says what is wrong.
    #[error("{path}: {why}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// An argument (a token name, a prefix, a right) breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The client sent no token to a node that requires one.
    #[error(
        "this cluster requires an access token: pass --token-file FILE or set DFS_TOKEN \
         (`dfs-server token add` makes one)"
    )]
    NoToken,
    /// The token is not one the node knows (wrong, malformed or removed).
    #[error("the access token is not valid on this node (wrong, or removed)")]
    UnknownToken,
    /// The token does not give the right an operation needs.
    #[error("{0}")]
    Denied(String),
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Whether a token is short enough to look at (longer ones are refused unread).
pub(crate) fn token_length_ok(token: &str) -> bool {
    !token.is_empty() && token.len() <= TOKEN_BYTES_MAX
}

/// Fresh random bytes from the operating system, for secrets and tokens.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngExt;
    let mut out = [0u8; N];
    rand::rng().fill(&mut out[..]);
    out
}

/// Writes `data` to `path` readable by its owner only (mode 0600), refusing to replace an
/// existing file unless `replace`; the file is written in full to a temporary name, synced
/// and renamed, so a reader never sees half of it. For secrets, tokens and keys.
pub fn write_private_file(
    path: &std::path::Path,
    data: &[u8],
    replace: bool,
) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    };
    if !replace && path.exists() {
        return Err(AuthError::BadFile {
            path: path.display().to_string(),
            why: "exists already; not overwritten".into(),
        });
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(data).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a file that must be private to its owner: refused if group or others may read it.
pub(crate) fn read_private(path: &std::path::Path) -> Result<Vec<u8>, AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| AuthError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(AuthError::BadFile {
            path: path.display().to_string(),
            why: format!(
                "other users may read it (mode {:o}); run `chmod 600` on it",
                mode & 0o777
            ),
        });
    }
    std::fs::read(path).map_err(io)
}
