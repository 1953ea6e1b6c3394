//! The cluster secret and the peer handshake's proofs.

use std::path::Path;

use dfs_proto::PROOF_BYTES;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{AuthError, read_private, to_hex, write_private_file};

/// A handshake nonce: fresh random bytes from one side.
pub type Nonce = [u8; PROOF_BYTES];
/// An HMAC-SHA256 proof of the secret.
pub type Proof = [u8; PROOF_BYTES];

/// Shortest secret accepted, in bytes (after trimming white space).
const SECRET_BYTES_MIN: usize = 16;
/// Longest secret file read.
const SECRET_FILE_BYTES_MAX: u64 = 4096;

/// Which side of a handshake a proof comes from. Each side's proof is computed under its
/// own label, so a node's proof can never be sent back to it as a caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The node that accepted the connection (it proves first).
    Node,
    /// The peer or forwarder that opened it.
    Caller,
}

/// The bytes every proof of one connection covers besides the nonces: the cluster, the
/// caller's node id and its role (`peer` or `forwarder`), as its hello says them.
pub fn peer_context(cluster_id: u64, caller: u64, role: &str) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16 + role.len());
    ctx.extend_from_slice(&cluster_id.to_be_bytes());
    ctx.extend_from_slice(&caller.to_be_bytes());
    ctx.extend_from_slice(role.as_bytes());
    ctx
}

/// The secret the nodes of one cluster share. Its bytes never travel: only proofs do.
#[derive(Clone)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from its bytes (at least 16).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let key = key.into();
        if key.len() < SECRET_BYTES_MIN {
            return Err(AuthError::Invalid(format!(
                "a cluster secret is at least {SECRET_BYTES_MIN} bytes (this one has {})",
                key.len()
            )));
        }
        Ok(Self { key })
    }

    /// A new random secret (32 bytes from the operating system).
    pub fn generate() -> Self {
        Self {
            key: to_hex(&crate::random_bytes::<32>()).into_bytes(),
        }
    }

    /// Reads the secret from `path`: its content with surrounding white space trimmed. The
    /// file must be readable by its owner only (mode 0600).
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let bad = |why: String| AuthError::BadFile {
            path: path.display().to_string(),
            why,
        };
        let len = std::fs::metadata(path)
            .map_err(|source| AuthError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
        if len > SECRET_FILE_BYTES_MAX {
            return Err(bad(format!(
                "a secret file is at most {SECRET_FILE_BYTES_MAX} bytes (this one has {len})"
            )));
        }
        let bytes = read_private(path)?;
        let key = bytes.trim_ascii().to_vec();
        Self::new(key).map_err(|e| bad(e.to_string()))
    }

    /// Writes this secret to `path` (mode 0600), refusing to replace a file unless `replace`.
    pub fn write(&self, path: &Path, replace: bool) -> Result<(), AuthError> {
        let mut data = self.key.clone();
        data.push(b'\n');
        write_private_file(path, &data, replace)
    }

    /// The proof `side` sends for a connection described by `context` (see
    /// [`peer_context`]), over the caller's and the node's nonces.
    pub fn proof(&self, side: Side, context: &[u8], caller: &Nonce, node: &Nonce) -> Proof {
        self.mac(side, context, caller, node)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is `side`'s proof for this connection (compared in constant time).
    pub fn verify(
        &self,
        side: Side,
        context: &[u8],
        caller: &Nonce,
        node: &Nonce,
        proof: &Proof,
    ) -> bool {
        self.mac(side, context, caller, node)
            .verify_slice(proof)
            .is_ok()
    }

    fn mac(&self, side: Side, context: &[u8], caller: &Nonce, node: &Nonce) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC accepts keys of every length")
        };
        let label: &[u8] = match side {
            Side::Node => b"dfs peer handshake v1: node",
            Side::Caller => b"dfs peer handshake v1: caller",
        };
        for part in [label, context, caller, node] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s.as_bytes().to_vec()).expect("long enough")
    }

    #[test]
    fn a_proof_verifies_only_for_its_side_context_and_nonces() {
        let s = secret("correct horse battery staple");
        let ctx = peer_context(7, 1, "peer");
        let (c, n) = ([1u8; 32], [2u8; 32]);
        let p = s.proof(Side::Caller, &ctx, &c, &n);
        assert!(s.verify(Side::Caller, &ctx, &c, &n, &p));
        assert!(
            !s.verify(Side::Node, &ctx, &c, &n, &p),
            "other side's label"
        );
        assert!(
            !s.verify(Side::Caller, &ctx, &c, &[3u8; 32], &p),
            "other nonce"
        );
        let other_ctx = peer_context(7, 3, "peer");
        assert!(
            !s.verify(Side::Caller, &other_ctx, &c, &n, &p),
            "other caller"
        );
        let other = secret("another secret of enough bytes");
        assert!(
            !other.verify(Side::Caller, &ctx, &c, &n, &p),
            "other secret"
        );
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(ClusterSecret::new(b"short".to_vec()).is_err());
    }

    #[test]
    fn a_secret_file_round_trips_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let s = ClusterSecret::generate();
        s.write(&path, false).expect("written");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = ClusterSecret::from_file(&path).expect("read back");
        let ctx = peer_context(1, 1, "peer");
        let p = s.proof(Side::Node, &ctx, &[0; 32], &[1; 32]);
        assert!(back.verify(Side::Node, &ctx, &[0; 32], &[1; 32], &p));
        assert!(s.write(&path, false).is_err(), "not overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ClusterSecret::from_file(&path).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
