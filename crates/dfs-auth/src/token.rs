//! Clients' access tokens: the tokens file, looking a token up, and what it allows.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use dfs_proto::{LockMode, Op};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AuthError, read_private, to_hex, token_length_ok, write_private_file};

/// Longest token name.
const TOKEN_NAME_BYTES_MAX: usize = 64;
/// Largest tokens file read.
const TOKENS_FILE_BYTES_MAX: u64 = 4 << 20;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Right {
    /// Read, stat and list files, take shared locks, see the cluster's status.
    Read,
    /// Everything: also create, append, put and delete files, take exclusive locks, scrub.
    ReadWrite,
}

impl Right {
    /// The right's name as users write it: `read` or `read-write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::ReadWrite => "read-write",
        }
    }
}

impl std::str::FromStr for Right {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Right::Read),
            "read-write" => Ok(Right::ReadWrite),
            other => Err(AuthError::Invalid(format!(
                "right {other:?} is neither `read` nor `read-write`"
            ))),
        }
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One token in a tokens file: never the token itself, only its SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// The token's name (it is also the token's first part, so logs can name it).
    pub name: String,
    /// What the token allows.
    pub right: Right,
    /// If set, the token reaches only names starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Lower-case hex SHA-256 of the whole token.
    pub sha256: String,
}

/// The tokens a node accepts: a JSON file, `{"tokens": [TokenEntry, ...]}`, the same on
/// every node (copy it after a change; a node re-reads it when it changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensFile {
    /// The tokens, in the order they were added.
    pub tokens: Vec<TokenEntry>,
}

fn digest(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// Equality that takes the same time wherever the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= TOKEN_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "token name {name:?}: 1 to {TOKEN_NAME_BYTES_MAX} letters, digits, '_', '-' or '@'"
        )))
    }
}

impl TokensFile {
    /// Reads a tokens file. It must be readable by its owner only (mode 0600): it names
    /// every token and its rights.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
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
        if len > TOKENS_FILE_BYTES_MAX {
            return Err(bad(format!(
                "a tokens file is at most {TOKENS_FILE_BYTES_MAX} bytes (this one has {len})"
            )));
        }
        let bytes = read_private(path)?;
        let file: TokensFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a tokens file ({e})")))?;
        for (i, t) in file.tokens.iter().enumerate() {
            check_name(&t.name).map_err(|e| bad(e.to_string()))?;
            if file.tokens[..i].iter().any(|o| o.name == t.name) {
                return Err(bad(format!("token name {:?} appears twice", t.name)));
            }
            if let Some(p) = &t.prefix {
                dfs_proto::validate_prefix(p).map_err(|e| bad(e.to_string()))?;
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "token {:?}: sha256 is not 64 hex digits",
                    t.name
                )));
            }
        }
        Ok(file)
    }

    /// Reads `path`, or an empty list if there is no such file.
    pub fn load_or_empty(path: &Path) -> Result<Self, AuthError> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Writes the file (mode 0600), replacing what was there.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| AuthError::Invalid(format!("cannot encode the tokens: {e}")))?;
        json.push(b'\n');
        write_private_file(path, &json, true)
    }

    /// Adds a token `name` with `right`, limited to names under `prefix` if given, and
    /// returns the token: the only time it is ever shown (the file keeps its digest).
    pub fn add(
        &mut self,
        name: &str,
        right: Right,
        prefix: Option<&str>,
    ) -> Result<String, AuthError> {
        check_name(name)?;
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(AuthError::Invalid(format!(
                "a token named {name:?} exists already; remove it first"
            )));
        }
        if let Some(p) = prefix {
            dfs_proto::validate_prefix(p).map_err(|e| AuthError::Invalid(e.to_string()))?;
        }
        let token = format!("{name}.{}", to_hex(&crate::random_bytes::<32>()));
        self.tokens.push(TokenEntry {
            name: name.to_owned(),
            right,
            prefix: prefix.filter(|p| !p.is_empty()).map(str::to_owned),
            sha256: digest(&token),
        });
        Ok(token)
    }

    /// Removes the token `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        self.tokens.len() != before
    }

    /// What `token` allows, if it is one of these.
    pub fn grant(&self, token: &str) -> Result<Grant, AuthError> {
        if !token_length_ok(token) {
            return Err(AuthError::UnknownToken);
        }
        let Some((name, _)) = token.rsplit_once('.') else {
            return Err(AuthError::UnknownToken);
        };
        let d = digest(token);
        self.tokens
            .iter()
            .find(|t| t.name == name && same(&t.sha256, &d))
            .map(|t| Grant {
                name: t.name.clone(),
                right: t.right,
                prefix: t.prefix.clone(),
            })
            .ok_or(AuthError::UnknownToken)
    }
}

/// The file's identity when last read: a change of either means it was rewritten.
type Stamp = (Option<SystemTime>, u64);

/// A node's view of its tokens file: re-read when the file changes (a write of the file,
/// or `dfs-server token add`, takes effect for new connections without a restart).
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    state: Mutex<(TokensFile, Stamp)>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

impl TokenStore {
    /// Reads the tokens file at `path` (an error if it is missing or malformed).
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let stamp = stamp(path).unwrap_or_default();
        let file = TokensFile::load(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((file, stamp)),
        })
    }

    /// The file the tokens come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a client presenting `token` may do. A tokens file that changed is read again
    /// first; if the new content is broken, the tokens read before stay in force (and a
    /// warning is logged).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let token = token.ok_or(AuthError::NoToken)?;
        let mut state = self.state.lock();
        let now = stamp(&self.path).unwrap_or_default();
        if now != state.1 {
            match TokensFile::load(&self.path) {
                Ok(file) => {
                    tracing::info!(path = %self.path.display(), tokens = file.tokens.len(), "tokens file re-read");
                    *state = (file, now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tokens file changed but cannot be read; the tokens read before stay in force");
                    state.1 = now;
                }
            }
        }
        state.0.grant(token)
    }
}

/// What one authenticated client may do: its token's name, right and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name.
    pub name: String,
    /// Its right.
    pub right: Right,
    /// The names it reaches, if limited.
    pub prefix: Option<String>,
}

impl Grant {
    /// A grant of everything, for a node that requires no tokens.
    pub fn everything() -> Self {
        Self {
            name: "anyone".into(),
            right: Right::ReadWrite,
            prefix: None,
        }
    }

    /// Whether this grant allows `op`; if not, the error names the token and what is
    /// missing.
    ///
    /// - `read` allows reads, stat, list, the table, status, shared locks, and renewing or
    ///   releasing a lease; `read-write` allows everything (writes at an offset and
    ///   truncations too).
    /// - A prefix limits every named operation to names starting with it, and a listing to
    ///   prefixes starting with it. The table (every file's placement) and scrub (a whole
    ///   cluster's) need a token without a prefix.
    pub fn check(&self, op: &Op) -> Result<(), AuthError> {
        let (what, needs, name) = match op {
            Op::Create { name, .. } => ("create", Right::ReadWrite, Some(name)),
            Op::Append { name, .. } => ("append", Right::ReadWrite, Some(name)),
            Op::Put { name, .. } => ("put", Right::ReadWrite, Some(name)),
            Op::Write { name, .. } => ("write", Right::ReadWrite, Some(name)),
            Op::Truncate { name, .. } => ("truncate", Right::ReadWrite, Some(name)),
            Op::Delete { name, .. } => ("delete", Right::ReadWrite, Some(name)),
            Op::Read { name, .. } => ("read", Right::Read, Some(name)),
            Op::Stat { name } => ("stat", Right::Read, Some(name)),
            Op::Lock { name, mode, .. } => match mode {
                LockMode::Exclusive => ("an exclusive lock", Right::ReadWrite, Some(name)),
                LockMode::Shared => ("a shared lock", Right::Read, Some(name)),
            },
            Op::List { prefix, .. } => {
                if let Some(mine) = &self.prefix
                    && !prefix.starts_with(mine.as_str())
                {
                    return Err(self.outside("list", &format!("names under {prefix:?}")));
                }
                return Ok(());
            }
            Op::Table { .. } => ("the table", Right::Read, None),
            Op::Scrub => ("scrub", Right::ReadWrite, None),
            Op::Status | Op::Renew { .. } | Op::Unlock { .. } => return Ok(()),
        };
        if needs == Right::ReadWrite && self.right == Right::Read {
            return Err(AuthError::Denied(format!(
                "token {:?} has the `read` right only; {what} needs `read-write`",
                self.name
            )));
        }
        match (name, &self.prefix) {
            (Some(name), Some(mine)) if !name.starts_with(mine.as_str()) => {
                Err(self.outside(what, &format!("{name:?}")))
            }
            (None, Some(_)) => Err(AuthError::Denied(format!(
                "token {:?} is limited to a prefix; {what} covers every file and needs a \
                 token without one",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    fn outside(&self, what: &str, target: &str) -> AuthError {
        AuthError::Denied(format!(
            "token {:?} reaches only names starting with {:?}; {what} of {target} is outside it",
            self.name,
            self.prefix.as_deref().unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use dfs_proto::Condition;

    use super::*;

    fn op_append(name: &str) -> Op {
        Op::Append {
            name: name.into(),
            body: dfs_proto::Body {
                data: Default::default(),
                more: false,
            },
            tag: None,
            cond: Condition::default(),
        }
    }

    fn op_read(name: &str) -> Op {
        Op::Read {
            name: name.into(),
            offset: 0,
            len: None,
        }
    }

    #[test]
    fn a_token_is_known_by_its_digest_only() {
        let mut file = TokensFile::default();
        let token = file.add("alice", Right::ReadWrite, None).expect("added");
        assert!(token.starts_with("alice."));
        assert!(!serde_json::to_string(&file).expect("json").contains(&token));
        assert_eq!(file.grant(&token).expect("known").name, "alice");
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(matches!(file.grant(&wrong), Err(AuthError::UnknownToken)));
        assert!(matches!(file.grant("nobody"), Err(AuthError::UnknownToken)));
        assert!(
            file.add("alice", Right::Read, None).is_err(),
            "names are unique"
        );
        assert!(file.add("a b", Right::Read, None).is_err(), "name rules");
        assert!(file.remove("alice"));
        assert!(matches!(file.grant(&token), Err(AuthError::UnknownToken)));
    }

    #[test]
    fn rights_and_prefixes_decide_each_operation() {
        let reader = Grant {
            name: "r".into(),
            right: Right::Read,
            prefix: None,
        };
        assert!(reader.check(&op_read("x")).is_ok());
        let err = reader.check(&op_append("x")).expect_err("read only");
        assert!(err.to_string().contains("needs `read-write`"), "{err}");
        let logs = Grant {
            name: "l".into(),
            right: Right::ReadWrite,
            prefix: Some("logs/".into()),
        };
        assert!(logs.check(&op_append("logs/a")).is_ok());
        let err = logs.check(&op_append("etc/passwd")).expect_err("outside");
        assert!(err.to_string().contains("\"logs/\""), "{err}");
        let list = |prefix: &str| Op::List {
            prefix: prefix.into(),
            start_after: None,
            limit: 10,
        };
        assert!(logs.check(&list("logs/2026")).is_ok());
        assert!(logs.check(&list("")).is_err());
        assert!(
            logs.check(&Op::Table {
                start_after: None,
                limit: 1
            })
            .is_err()
        );
        assert!(logs.check(&Op::Status).is_ok());
        assert!(Grant::everything().check(&Op::Scrub).is_ok());
    }

    #[test]
    fn writes_at_an_offset_and_truncations_need_read_write_and_the_prefix() {
        let write = |name: &str| Op::Write {
            name: name.into(),
            offset: 3,
            body: dfs_proto::Body {
                data: Default::default(),
                more: false,
            },
            tag: None,
            cond: Condition::default(),
        };
        let truncate = |name: &str| Op::Truncate {
            name: name.into(),
            size: 0,
            tag: None,
            cond: Condition::default(),
        };
        let reader = Grant {
            name: "r".into(),
            right: Right::Read,
            prefix: None,
        };
        for op in [write("x"), truncate("x")] {
            let err = reader.check(&op).expect_err("read only");
            assert!(err.to_string().contains("needs `read-write`"), "{err}");
        }
        let logs = Grant {
            name: "l".into(),
            right: Right::ReadWrite,
            prefix: Some("logs/".into()),
        };
        assert!(logs.check(&write("logs/a")).is_ok());
        assert!(logs.check(&truncate("logs/a")).is_ok());
        for op in [write("etc/passwd"), truncate("etc/passwd")] {
            let err = logs.check(&op).expect_err("outside the prefix");
            assert!(err.to_string().contains("\"logs/\""), "{err}");
        }
    }

    #[test]
    fn the_store_rereads_a_changed_file_and_keeps_the_old_one_if_broken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        let mut file = TokensFile::default();
        let alice = file.add("alice", Right::Read, None).expect("added");
        file.save(&path).expect("saved");
        let store = TokenStore::open(&path).expect("opened");
        assert!(matches!(store.authenticate(None), Err(AuthError::NoToken)));
        assert_eq!(
            store.authenticate(Some(&alice)).expect("ok").right,
            Right::Read
        );
        let bob = file
            .add("bob", Right::ReadWrite, Some("b/"))
            .expect("added");
        file.save(&path).expect("saved");
        assert_eq!(
            store
                .authenticate(Some(&bob))
                .expect("re-read")
                .prefix
                .as_deref(),
            Some("b/")
        );
        write_private_file(&path, b"{ not json, and longer than before", true).expect("broken");
        assert!(store.authenticate(Some(&bob)).is_ok(), "old tokens stay");
    }
}
