//! Recording a history: operations, their outcomes and their times.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::search::{CheckOptions, Verdict, check_with};

/// Who invoked an operation: a client, task or thread. Only used in explanations; one
/// process may have several operations in flight (dfs pipelines requests).
pub type ProcessId = u64;

/// The handle of one recorded operation, returned by [`History::invoke`]; its index in
/// [`History::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op#{}", self.0)
    }
}

/// An operation on one file, as in dfs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Create an empty file; fails with [`ErrorKind::AlreadyExists`] if it exists.
    Create,
    /// Append the bytes, creating the file if missing. Never fails in the model.
    Append(Vec<u8>),
    /// Replace the whole content with the bytes, creating the file if missing. Never fails
    /// in the model.
    Put(Vec<u8>),
    /// Write the bytes at `offset`, overwriting what is there; a write past the end fills
    /// the gap with zero bytes, and the size becomes `max(size, offset + data.len())`.
    /// Fails with [`ErrorKind::NotFound`] if the file is absent (unlike an append, it
    /// does not create it).
    WriteAt {
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Set the size: cut the end off, or extend with zero bytes. Fails with
    /// [`ErrorKind::NotFound`] if the file is absent.
    Truncate {
        /// The new size.
        size: u64,
    },
    /// Read the whole content; fails with [`ErrorKind::NotFound`] if the file is absent.
    Read,
    /// Delete the file; fails with [`ErrorKind::NotFound`] if it is absent.
    Delete,
}

impl Op {
    /// The operation's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Append(_) => "append",
            Op::Put(_) => "put",
            Op::WriteAt { .. } => "write_at",
            Op::Truncate { .. } => "truncate",
            Op::Read => "read",
            Op::Delete => "delete",
        }
    }

    /// Whether `ret` is a possible successful result for this kind of operation.
    fn accepts(&self, ret: &Ret) -> bool {
        matches!(
            (self, ret),
            (
                Op::Create | Op::Put(_) | Op::Delete | Op::Append(_),
                Ret::Done
            ) | (Op::Append(_), Ret::Appended { .. })
                | (
                    Op::WriteAt { .. } | Op::Truncate { .. },
                    Ret::Done | Ret::Size(_)
                )
                | (Op::Read, Ret::Value(_))
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Append(data) | Op::Put(data) => write!(f, "{} {}", self.name(), Bytes(data)),
            Op::WriteAt { offset, data } => write!(f, "write_at {offset} {}", Bytes(data)),
            Op::Truncate { size } => write!(f, "truncate to {size}"),
            _ => f.write_str(self.name()),
        }
    }
}

/// What a successful operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    /// A `create`, `put`, `delete`, `append`, `write_at` or `truncate` succeeded (for an
    /// append: without saying where its bytes landed; for a `write_at` or a `truncate`:
    /// without saying the size it left).
    Done,
    /// An `append` succeeded and its bytes start at `offset` (the file's size just before
    /// it). From a dfs `WriteAck`: `ack.size - data.len()`.
    Appended {
        /// Where the appended bytes start.
        offset: u64,
    },
    /// A `write_at` or a `truncate` succeeded and left the file this many bytes long. From
    /// a dfs `WriteAck`: `ack.size` (for a `write_at`, `max(old size, offset + len)`; for
    /// a `truncate`, the size asked for).
    Size(u64),
    /// A `read` returned this content.
    Value(Vec<u8>),
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Done => f.write_str("ok"),
            Ret::Appended { offset } => write!(f, "ok at offset {offset}"),
            Ret::Size(size) => write!(f, "ok, size {size}"),
            Ret::Value(data) => write!(f, "{}", Bytes(data)),
        }
    }
}

/// A definite failure reported by the store: the operation did not change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The file did not exist (`read`, `delete`, `write_at`, `truncate`). Checked against
    /// the model.
    NotFound,
    /// The file already existed (`create`). Checked against the model.
    AlreadyExists,
    /// Any other definite refusal that guarantees the operation had no effect (an invalid
    /// name, a fencing-token or version conflict, a request refused before it was applied).
    /// It places no constraint on the history and is ignored by the check. Do not use it
    /// for timeouts or lost connections: those are [`Outcome::Unknown`].
    Rejected,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Rejected => "Rejected",
        })
    }
}

/// How an operation ended, as given to [`History::complete`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// It took effect and returned this.
    Ok(Ret),
    /// The store answered with a definite error.
    Failed(ErrorKind),
    /// No answer (timeout, lost connection): it may have taken effect at any time after its
    /// invocation, or never.
    Unknown,
}

/// An operation's completion as recorded, with its response time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Completion {
    /// Not completed yet; checked like [`Completion::Unknown`].
    Pending,
    /// Succeeded at time `at`.
    Ok {
        /// The result.
        ret: Ret,
        /// The response time.
        at: u64,
    },
    /// Failed definitely at time `at`.
    Failed {
        /// The error.
        error: ErrorKind,
        /// The response time.
        at: u64,
    },
    /// Outcome unknown; no response time.
    Unknown,
}

impl Completion {
    /// The response time, for operations with a definite outcome.
    pub fn at(&self) -> Option<u64> {
        match self {
            Completion::Ok { at, .. } | Completion::Failed { at, .. } => Some(*at),
            Completion::Pending | Completion::Unknown => None,
        }
    }
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Who invoked it.
    pub process: ProcessId,
    /// The file it is on.
    pub file: String,
    /// What it does.
    pub op: Op,
    /// Its invocation time.
    pub invoked_at: u64,
    /// How it ended.
    pub completion: Completion,
}

/// Why [`History`] refused to record an event: always a bug in the recording code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// No operation has this id.
    #[error("{0} was never invoked in this history")]
    NoSuchOp(OpId),
    /// The operation already has an outcome.
    #[error("{0} is already completed")]
    AlreadyCompleted(OpId),
    /// The result is not one this kind of operation returns (e.g. a value for a `create`).
    #[error("{id} is a {op}, which cannot return {ret}")]
    WrongResult {
        /// The operation.
        id: OpId,
        /// Its kind.
        op: &'static str,
        /// The result given.
        ret: String,
    },
    /// The response time is before the invocation time.
    #[error("{id} completes at {at}, before its invocation at {invoked_at}")]
    CompletedBeforeInvoked {
        /// The operation.
        id: OpId,
        /// Its invocation time.
        invoked_at: u64,
        /// The response time given.
        at: u64,
    },
}

/// A history of operations on files, built by recording each invocation and each
/// completion; checked with [`check`](crate::check).
///
/// Times come from a logical clock inside the history (every [`invoke`](Self::invoke) and
/// [`complete`](Self::complete) takes the next tick), so recording every event when it
/// happens, in one thread or under one lock ([`SharedHistory`]), is enough: record the
/// invocation *before* sending the request and the completion *after* the answer arrives.
/// For events recorded in several places at once, give explicit times (e.g. nanoseconds
/// since a common start) with [`invoke_at`](Self::invoke_at) and
/// [`complete_at`](Self::complete_at); events may then be recorded in any order. Do not mix
/// the two styles in one history unless the explicit times are ticks of the same clock.
///
/// Serialized (serde) as its initial state and entries; deserializing validates the entries
/// like the recording methods do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHistory")]
pub struct History {
    initial: BTreeMap<String, Vec<u8>>,
    entries: Vec<Entry>,
    #[serde(skip)]
    clock: u64,
}

/// The serialized form of a [`History`], validated on the way in.
#[derive(Deserialize)]
struct RawHistory {
    #[serde(default)]
    initial: BTreeMap<String, Vec<u8>>,
    entries: Vec<Entry>,
}

impl TryFrom<RawHistory> for History {
    type Error = HistoryError;

    fn try_from(raw: RawHistory) -> Result<Self, HistoryError> {
        let mut clock = 0;
        for (i, e) in raw.entries.iter().enumerate() {
            let id = OpId(i);
            clock = clock.max(e.invoked_at);
            if let Completion::Ok { ret, .. } = &e.completion {
                check_ret(id, &e.op, ret)?;
            }
            if let Some(at) = e.completion.at() {
                check_time(id, e.invoked_at, at)?;
                clock = clock.max(at);
            }
        }
        Ok(History {
            initial: raw.initial,
            entries: raw.entries,
            clock,
        })
    }
}

fn check_ret(id: OpId, op: &Op, ret: &Ret) -> Result<(), HistoryError> {
    if op.accepts(ret) {
        Ok(())
    } else {
        Err(HistoryError::WrongResult {
            id,
            op: op.name(),
            ret: ret.to_string(),
        })
    }
}

fn check_time(id: OpId, invoked_at: u64, at: u64) -> Result<(), HistoryError> {
    if at < invoked_at {
        Err(HistoryError::CompletedBeforeInvoked { id, invoked_at, at })
    } else {
        Ok(())
    }
}

impl History {
    /// An empty history in which every file starts absent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `file` exist with `content` before the first operation (files not named start
    /// absent).
    pub fn set_initial(&mut self, file: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.initial.insert(file.into(), content.into());
    }

    /// The content `file` starts with, or `None` if it starts absent.
    pub fn initial(&self, file: &str) -> Option<&[u8]> {
        self.initial.get(file).map(Vec::as_slice)
    }

    /// Records that `process` invokes `op` on `file` now (the next tick of the logical
    /// clock).
    pub fn invoke(&mut self, process: ProcessId, file: impl Into<String>, op: Op) -> OpId {
        self.clock += 1;
        let at = self.clock;
        self.push(process, file.into(), op, at)
    }

    /// Records that `process` invoked `op` on `file` at time `at` (any unit, typically
    /// nanoseconds since a common start).
    pub fn invoke_at(
        &mut self,
        process: ProcessId,
        file: impl Into<String>,
        op: Op,
        at: u64,
    ) -> OpId {
        self.clock = self.clock.max(at);
        self.push(process, file.into(), op, at)
    }

    fn push(&mut self, process: ProcessId, file: String, op: Op, invoked_at: u64) -> OpId {
        self.entries.push(Entry {
            process,
            file,
            op,
            invoked_at,
            completion: Completion::Pending,
        });
        OpId(self.entries.len() - 1)
    }

    /// Records how operation `id` ended, now (the next tick of the logical clock).
    pub fn complete(&mut self, id: OpId, outcome: Outcome) -> Result<(), HistoryError> {
        self.complete_at(id, outcome, self.clock + 1)
    }

    /// Records how operation `id` ended, at time `at` (ignored for [`Outcome::Unknown`]).
    pub fn complete_at(&mut self, id: OpId, outcome: Outcome, at: u64) -> Result<(), HistoryError> {
        let entry = self.entries.get(id.0).ok_or(HistoryError::NoSuchOp(id))?;
        if entry.completion != Completion::Pending {
            return Err(HistoryError::AlreadyCompleted(id));
        }
        let completion = match outcome {
            Outcome::Ok(ret) => {
                check_ret(id, &entry.op, &ret)?;
                check_time(id, entry.invoked_at, at)?;
                Completion::Ok { ret, at }
            }
            Outcome::Failed(error) => {
                check_time(id, entry.invoked_at, at)?;
                Completion::Failed { error, at }
            }
            Outcome::Unknown => Completion::Unknown,
        };
        if completion.at().is_some() {
            self.clock = self.clock.max(at);
        }
        if let Some(entry) = self.entries.get_mut(id.0) {
            entry.completion = completion;
        }
        Ok(())
    }

    /// Records that `id` succeeded with `ret`, now.
    pub fn ok(&mut self, id: OpId, ret: Ret) -> Result<(), HistoryError> {
        self.complete(id, Outcome::Ok(ret))
    }

    /// Records that `id` failed definitely with `error`, now.
    pub fn fail(&mut self, id: OpId, error: ErrorKind) -> Result<(), HistoryError> {
        self.complete(id, Outcome::Failed(error))
    }

    /// Records that the outcome of `id` is unknown (timeout, lost connection).
    pub fn unknown(&mut self, id: OpId) -> Result<(), HistoryError> {
        self.complete(id, Outcome::Unknown)
    }

    /// Every recorded operation, in invocation-recording order ([`OpId`] is the index).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The operation `id`, if recorded.
    pub fn get(&self, id: OpId) -> Option<&Entry> {
        self.entries.get(id.0)
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every file named by an operation or the initial state, sorted.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self
            .initial
            .keys()
            .map(String::as_str)
            .chain(self.entries.iter().map(|e| e.file.as_str()))
            .collect();
        files.sort_unstable();
        files.dedup();
        files
    }
}

/// A [`History`] behind a lock, cheap to clone and share between threads or tokio tasks
/// (the lock is held only to record an event, never across an `.await`).
///
/// With the logical clock, the order in which tasks take the lock is the order of the
/// events, which is consistent with real time as long as each task records an invocation
/// before sending its request and a completion after receiving the answer.
#[derive(Debug, Clone, Default)]
pub struct SharedHistory(Arc<Mutex<History>>);

impl SharedHistory {
    /// An empty shared history.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        // A panic while recording cannot leave a History half-updated (every method
        // validates before changing anything), so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// See [`History::set_initial`].
    pub fn set_initial(&self, file: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.lock().set_initial(file, content);
    }

    /// See [`History::invoke`].
    pub fn invoke(&self, process: ProcessId, file: impl Into<String>, op: Op) -> OpId {
        self.lock().invoke(process, file, op)
    }

    /// See [`History::invoke_at`].
    pub fn invoke_at(&self, process: ProcessId, file: impl Into<String>, op: Op, at: u64) -> OpId {
        self.lock().invoke_at(process, file, op, at)
    }

    /// See [`History::complete`].
    pub fn complete(&self, id: OpId, outcome: Outcome) -> Result<(), HistoryError> {
        self.lock().complete(id, outcome)
    }

    /// See [`History::complete_at`].
    pub fn complete_at(&self, id: OpId, outcome: Outcome, at: u64) -> Result<(), HistoryError> {
        self.lock().complete_at(id, outcome, at)
    }

    /// See [`History::ok`].
    pub fn ok(&self, id: OpId, ret: Ret) -> Result<(), HistoryError> {
        self.lock().ok(id, ret)
    }

    /// See [`History::fail`].
    pub fn fail(&self, id: OpId, error: ErrorKind) -> Result<(), HistoryError> {
        self.lock().fail(id, error)
    }

    /// See [`History::unknown`].
    pub fn unknown(&self, id: OpId) -> Result<(), HistoryError> {
        self.lock().unknown(id)
    }

    /// A copy of the history recorded so far.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }

    /// Checks a snapshot of the history (the lock is not held during the check).
    pub fn check(&self) -> Verdict {
        self.check_with(&CheckOptions::default())
    }

    /// Checks a snapshot of the history with `options`.
    pub fn check_with(&self, options: &CheckOptions) -> Verdict {
        check_with(&self.snapshot(), options)
    }
}

impl From<History> for SharedHistory {
    fn from(history: History) -> Self {
        SharedHistory(Arc::new(Mutex::new(history)))
    }
}

/// Bytes for messages: a quoted, escaped string, shortened when long.
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    /// The longest value shown whole.
    pub(crate) const SHOWN: usize = 48;
    /// The bytes of the end shown of a longer value (after `SHOWN - TAIL` of its start).
    pub(crate) const TAIL: usize = 16;

    /// Shows a value longer than [`SHOWN`](Self::SHOWN) bytes by its `head` and `tail`.
    pub(crate) fn fmt_long(
        f: &mut fmt::Formatter<'_>,
        head: &[u8],
        tail: &[u8],
        len: u64,
    ) -> fmt::Result {
        write!(
            f,
            "\"{}…{}\" ({len} bytes)",
            head.escape_ascii(),
            tail.escape_ascii()
        )
    }
}

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.0;
        if data.len() <= Self::SHOWN {
            write!(f, "\"{}\"", data.escape_ascii())
        } else {
            let head = &data[..Self::SHOWN - Self::TAIL];
            let tail = &data[data.len() - Self::TAIL..];
            Self::fmt_long(f, head, tail, data.len() as u64)
        }
    }
}
