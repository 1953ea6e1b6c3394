//! File names: path-like UTF-8 strings, checked against the data model's rules.
//!
//! A name is never used as an OS path on a node (the store keys files by id), so these
//! rules are about a clean namespace, not about safety on disk: `/`-separated segments,
//! 1..=1024 bytes in all, each segment 1..=255 bytes, no empty, `.` or `..` segment, no
//! NUL or control characters, no leading `/`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name in bytes.
pub const NAME_BYTES_MAX: usize = 1024;
/// Longest segment (between `/`) in bytes.
pub const SEGMENT_BYTES_MAX: usize = 255;

/// The rule a name breaks. Each message says the rule, so users can fix the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("invalid name: a name must not be empty")]
    Empty,
    /// The name is longer than [`NAME_BYTES_MAX`].
    #[error("invalid name: a name is at most {NAME_BYTES_MAX} bytes (this one has {0})")]
    TooLong(usize),
    /// The name starts with `/`.
    #[error(
        "invalid name {0:?}: a name must not start with '/' (names are relative, like 'dir/file')"
    )]
    LeadingSlash(String),
    /// Two `/` in a row, or a trailing `/`.
    #[error("invalid name {0:?}: no empty segment ('a//b' and a trailing '/' are not allowed)")]
    EmptySegment(String),
    /// A segment that is `.` or `..`.
    #[error("invalid name {0:?}: no '.' or '..' segment")]
    DotSegment(String),
    /// A segment longer than [`SEGMENT_BYTES_MAX`].
    #[error(
        "invalid name: each '/'-separated segment is at most {SEGMENT_BYTES_MAX} bytes (one has {0})"
    )]
    SegmentTooLong(usize),
    /// A NUL or other control character.
    #[error("invalid name {0:?}: no NUL or control characters")]
    ControlChar(String),
}

/// A name that follows every rule of the data model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Name(String);

impl Name {
    /// Checks `s` against the rules and wraps it.
    ///
    /// ```
    /// use dfs_proto::{Name, NameError};
    /// assert!(Name::parse("logs/2026/app.log").is_ok());
    /// assert!(matches!(Name::parse("a//b"), Err(NameError::EmptySegment(_))));
    /// assert!(matches!(Name::parse("../x"), Err(NameError::DotSegment(_))));
    /// ```
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > NAME_BYTES_MAX {
            return Err(NameError::TooLong(s.len()));
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlChar(s.escape_default().to_string()));
        }
        if s.starts_with('/') {
            return Err(NameError::LeadingSlash(s.to_owned()));
        }
        for segment in s.split('/') {
            if segment.is_empty() {
                return Err(NameError::EmptySegment(s.to_owned()));
            }
            if segment == "." || segment == ".." {
                return Err(NameError::DotSegment(s.to_owned()));
            }
            if segment.len() > SEGMENT_BYTES_MAX {
                return Err(NameError::SegmentTooLong(segment.len()));
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Checks a `list` prefix: any string a name could start with (possibly empty), so at most
/// [`NAME_BYTES_MAX`] bytes and no control characters.
pub fn validate_prefix(prefix: &str) -> Result<(), NameError> {
    if prefix.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong(prefix.len()));
    }
    if prefix.chars().any(char::is_control) {
        return Err(NameError::ControlChar(prefix.escape_default().to_string()));
    }
    if prefix.starts_with('/') {
        return Err(NameError::LeadingSlash(prefix.to_owned()));
    }
    Ok(())
}
