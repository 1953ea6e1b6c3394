//! A history of operations on dfs files, recorded by many tasks, and checks of it that need
//! no search: what fault tests with self-identifying writes can decide file by file.
//!
//! The shapes follow the `dfs-check` crate (an operation on one file: append, put or read;
//! its invocation time; an outcome that is a result, a definite failure or unknown), so a
//! recorded history converts to a `dfs_check::History` entry by entry for its full
//! linearizability check. What is checked here, per file:
//!
//! - [`check_append_file`], for a file only ever appended to, each append one distinct line:
//!   the final content is the initial content and then lines that were each appended once;
//!   every acknowledged append is in it, at the offset its acknowledgement gave; no two
//!   appends lie in an order that contradicts real time (one acknowledged before the other
//!   was invoked lies before it; so each writer's acknowledged appends are in its order);
//!   every successful read returned a prefix of the final content that holds every append
//!   acknowledged before the read was invoked and nothing invoked after it returned; a read
//!   that began after another ended is not shorter.
//! - [`check_register_file`], for a file only ever replaced (put) with distinct contents:
//!   every read returned the initial content or a put's, one that had been invoked before
//!   the read returned and that no put had definitely replaced before the read began; the
//!   same for the final content.
//!
//! An operation whose outcome is unknown (a timeout, a lost connection, the client's retries
//! exhausted) may have taken effect at any time after its invocation, or never: it has no
//! response time here.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Who invoked an operation (a writer task).
pub(crate) type ProcessId = u64;

/// An operation on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Append the bytes (creating the file if missing).
    Append(Vec<u8>),
    /// Replace the whole content with the bytes.
    Put(Vec<u8>),
    /// Read the whole content.
    Read,
}

impl Op {
    /// The operation's name.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::Append(_) => "append",
            Op::Put(_) => "put",
            Op::Read => "read",
        }
    }
}

/// What a successful operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ret {
    /// A put succeeded.
    Done,
    /// An append succeeded; its bytes start at `offset` (`ack.size - data.len()`).
    Appended {
        /// Where the appended bytes start.
        offset: u64,
    },
    /// A read returned this content.
    Value(Vec<u8>),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It took effect (once) and returned this.
    Ok(Ret),
    /// The file did not exist (a read).
    NotFound,
    /// A definite failure that changed nothing (a refused read, say); no constraint.
    Failed(String),
    /// No definite answer: it may have taken effect at any time after its invocation.
    Unknown(String),
}

/// One recorded operation. Times are nanoseconds since the recorder was made.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) process: ProcessId,
    pub(crate) file: String,
    pub(crate) op: Op,
    pub(crate) invoked_at: u64,
    /// When the call returned (for an unknown outcome too, though the checks give such an
    /// operation no response time); `None` while it is pending.
    pub(crate) returned_at: Option<u64>,
    /// `None` while pending (checked as unknown).
    pub(crate) outcome: Option<Outcome>,
}

impl Entry {
    /// The response time of an operation with a definite outcome.
    fn completed_at(&self) -> Option<u64> {
        match self.outcome {
            Some(Outcome::Ok(_) | Outcome::NotFound | Outcome::Failed(_)) => self.returned_at,
            Some(Outcome::Unknown(_)) | None => None,
        }
    }

    fn acked(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Ok(_)))
    }
}

/// The handle of an invoked operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpId(usize);

/// A history shared by the tasks that record into it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    start: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            entries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nanoseconds since the recorder was made.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records the invocation of `op` (call it just before sending the request).
    pub(crate) fn invoke(&self, process: ProcessId, file: &str, op: Op) -> OpId {
        let mut entries = self.lock();
        let invoked_at = self.now();
        entries.push(Entry {
            process,
            file: file.to_owned(),
            op,
            invoked_at,
            returned_at: None,
            outcome: None,
        });
        OpId(entries.len() - 1)
    }

    /// Records how `id` ended (call it just after the call returns).
    pub(crate) fn complete(&self, id: OpId, outcome: Outcome) {
        let returned_at = self.now();
        let mut entries = self.lock();
        let entry = &mut entries[id.0];
        assert!(entry.outcome.is_none(), "operation {id:?} completed twice");
        entry.returned_at = Some(returned_at);
        entry.outcome = Some(outcome);
    }

    /// A copy of every entry so far.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// Every entry, one per line, for a failure report.
    pub(crate) fn dump(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.lock().iter().enumerate() {
            let op = match &e.op {
                Op::Append(d) | Op::Put(d) => format!("{} {}", e.op.kind(), short(d)),
                Op::Read => "read".to_owned(),
            };
            let outcome = match &e.outcome {
                None => "pending".to_owned(),
                Some(Outcome::Ok(Ret::Value(v))) => format!("ok {}", short(v)),
                Some(o) => format!("{o:?}"),
            };
            let _ = writeln!(
                out,
                "#{i} p{} {} {op} invoked {:.3}s returned {} -> {outcome}",
                e.process,
                e.file,
                secs(e.invoked_at),
                e.returned_at
                    .map_or("-".to_owned(), |t| format!("{:.3}s", secs(t))),
            );
        }
        out
    }
}

/// Counts of a file's operations, for the test's report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) writes_acked: usize,
    pub(crate) writes_unknown: usize,
    /// Unknown writes whose effect is in the final content.
    pub(crate) unknown_applied: usize,
    pub(crate) reads_ok: usize,
    pub(crate) reads_failed: usize,
}

fn count(entries: &[&Entry], applied_unknown: usize) -> Counts {
    let mut c = Counts {
        unknown_applied: applied_unknown,
        ..Counts::default()
    };
    for e in entries {
        match (&e.op, &e.outcome) {
            (Op::Read, Some(Outcome::Ok(_))) => c.reads_ok += 1,
            (Op::Read, _) => c.reads_failed += 1,
            (_, Some(Outcome::Ok(_))) => c.writes_acked += 1,
            (_, _) => c.writes_unknown += 1,
        }
    }
    c
}

fn on_file<'a>(entries: &'a [Entry], file: &str) -> Vec<&'a Entry> {
    entries.iter().filter(|e| e.file == file).collect()
}

/// Checks a file that was only appended to, each append one distinct line ending in `\n`,
/// against its `initial` and `final_` content (see the module's description). Returns the
/// counts, or every violation found.
pub(crate) fn check_append_file(
    entries: &[Entry],
    file: &str,
    initial: &[u8],
    final_: &[u8],
) -> Result<Counts, Vec<String>> {
    let ops = on_file(entries, file);
    let mut errors = Vec::new();
    // Each appended line, and the operation that appended it.
    let mut appends: HashMap<&[u8], &Entry> = HashMap::new();
    for e in &ops {
        match &e.op {
            Op::Append(data) => {
                let one_line =
                    data.last() == Some(&b'\n') && !data[..data.len() - 1].contains(&b'\n');
                assert!(one_line, "append {} is not one line", short(data));
                let again = appends.insert(data, e).is_some();
                assert!(!again, "append {} recorded twice", short(data));
            }
            Op::Put(_) => panic!("{file} is append-only but has a put"),
            Op::Read => {}
        }
    }

    // The final content: initial, then known lines, each once, in an order real time allows.
    let Some(rest) = final_.strip_prefix(initial) else {
        return Err(vec![format!(
            "{file}: final content {} does not start with the initial {}",
            short(final_),
            short(initial)
        )]);
    };
    // Line -> its offset in the final content.
    let mut at: HashMap<&[u8], u64> = HashMap::new();
    let mut placed: Vec<(u64, &Entry)> = Vec::new();
    let mut offset = initial.len() as u64;
    for line in rest.split_inclusive(|&b| b == b'\n') {
        match appends.get(line) {
            None => errors.push(format!(
                "{file}: at offset {offset}, {} was never appended (torn or invented)",
                short(line)
            )),
            Some(e) => {
                if at.insert(line, offset).is_some() {
                    errors.push(format!(
                        "{file}: {} is in the file twice (p{})",
                        short(line),
                        e.process
                    ));
                } else {
                    placed.push((offset, e));
                }
            }
        }
        offset += line.len() as u64;
    }
    let mut applied_unknown = 0;
    for (line, e) in &appends {
        let found = at.get(line);
        match (&e.outcome, found) {
            (Some(Outcome::Ok(Ret::Appended { offset })), Some(found)) if offset != found => {
                errors.push(format!(
                    "{file}: {} acknowledged at offset {offset} but is at {found}",
                    short(line)
                ));
            }
            (Some(Outcome::Ok(_)), None) => errors.push(format!(
                "{file}: acknowledged append {} (p{}, returned at {:.3}s) is missing",
                short(line),
                e.process,
                secs(e.returned_at.unwrap_or(0))
            )),
            (Some(Outcome::Ok(_)), Some(_)) => {}
            (_, Some(_)) => applied_unknown += 1,
            (_, None) => {}
        }
    }
    // No line lies after one that was invoked only after it had been acknowledged.
    let mut earliest_after: Option<(u64, &Entry)> = None;
    for (_, e) in placed.iter().rev() {
        if let Some((done, later)) = earliest_after
            && done < e.invoked_at
        {
            errors.push(format!(
                "{file}: {} (p{}) lies after {} (p{}), which was invoked {:.3}s, after it \
                 was acknowledged at {:.3}s",
                short(op_data(later)),
                later.process,
                short(op_data(e)),
                e.process,
                secs(e.invoked_at),
                secs(done)
            ));
        }
        if let Some(done) = e.completed_at()
            && earliest_after.is_none_or(|(t, _)| done < t)
        {
            earliest_after = Some((done, e));
        }
    }

    // Reads: prefixes of the final content, holding what was acknowledged before them and
    // nothing from their future, never shorter than a read that ended before they began.
    let mut reads: Vec<(&Entry, &[u8])> = Vec::new();
    for e in &ops {
        match (&e.op, &e.outcome) {
            (Op::Read, Some(Outcome::Ok(Ret::Value(content)))) => reads.push((e, content)),
            (Op::Read, Some(Outcome::NotFound)) => errors.push(format!(
                "{file}: a read invoked at {:.3}s found no file",
                secs(e.invoked_at)
            )),
            _ => {}
        }
    }
    for &(r, content) in &reads {
        let (begun, ended) = (r.invoked_at, r.returned_at.unwrap_or(u64::MAX));
        if !final_.starts_with(content) {
            let common = content
                .iter()
                .zip(final_)
                .take_while(|(a, b)| a == b)
                .count();
            errors.push(format!(
                "{file}: a read at {:.3}s..{:.3}s returned {} bytes that are not a prefix of \
                 the final content (they differ from byte {common}: {} vs {})",
                secs(begun),
                secs(ended),
                content.len(),
                short(&content[common..content.len().min(common + 40)]),
                short(&final_[common..final_.len().min(common + 40)]),
            ));
            continue;
        }
        for (offset, e) in &placed {
            let inside = (*offset as usize) < content.len();
            if !inside && e.completed_at().is_some_and(|t| t < begun) {
                errors.push(format!(
                    "{file}: a read at {:.3}s..{:.3}s lacks {} (p{}), acknowledged at {:.3}s",
                    secs(begun),
                    secs(ended),
                    short(op_data(e)),
                    e.process,
                    secs(e.completed_at().unwrap_or(0))
                ));
            }
            if inside && e.invoked_at > ended {
                errors.push(format!(
                    "{file}: a read at {:.3}s..{:.3}s holds {} (p{}), invoked only at {:.3}s",
                    secs(begun),
                    secs(ended),
                    short(op_data(e)),
                    e.process,
                    secs(e.invoked_at)
                ));
            }
        }
    }
    let mut by_end: Vec<&(&Entry, &[u8])> = reads.iter().collect();
    by_end.sort_by_key(|(r, _)| r.returned_at);
    for &(r, content) in &reads {
        let earlier_longer = by_end
            .iter()
            .take_while(|(e, _)| e.returned_at.is_some_and(|t| t < r.invoked_at))
            .find(|(_, c)| c.len() > content.len());
        if let Some((e, c)) = earlier_longer {
            errors.push(format!(
                "{file}: a read at {:.3}s returned {} bytes, fewer than the {} of a read that \
                 ended at {:.3}s",
                secs(r.invoked_at),
                content.len(),
                c.len(),
                secs(e.returned_at.unwrap_or(0))
            ));
        }
    }
    if errors.is_empty() {
        Ok(count(&ops, applied_unknown))
    } else {
        Err(errors)
    }
}

/// Checks a file that was only replaced (put), each put with distinct content, against its
/// `initial` and `final_` content (see the module's description).
pub(crate) fn check_register_file(
    entries: &[Entry],
    file: &str,
    initial: &[u8],
    final_: &[u8],
) -> Result<Counts, Vec<String>> {
    let ops = on_file(entries, file);
    let mut errors = Vec::new();
    let mut puts: BTreeMap<&[u8], &Entry> = BTreeMap::new();
    for e in &ops {
        match &e.op {
            Op::Put(data) => {
                assert!(data != initial, "a put repeats the initial content");
                let again = puts.insert(data, e).is_some();
                assert!(!again, "put {} recorded twice", short(data));
            }
            Op::Append(_) => panic!("{file} is put-only but has an append"),
            Op::Read => {}
        }
    }
    let acked: Vec<&Entry> = puts.values().copied().filter(|e| e.acked()).collect();
    // Whether the content written by a put that completed at `done` (`None`: unknown, no
    // response) was certainly replaced before `t`: another put was invoked after it completed
    // and was acknowledged before `t`.
    let replaced_before = |done: Option<i128>, t: i128| -> Option<&Entry> {
        let done = done?;
        acked.iter().copied().find(|q| {
            i128::from(q.invoked_at) > done && q.completed_at().is_some_and(|c| i128::from(c) < t)
        })
    };
    // `Some(why not)` if `value` may not be read between `begun` and `ended`.
    let explain = |value: &[u8], begun: i128, ended: i128| -> Option<String> {
        let (invoked, done) = if value == initial {
            (-1, Some(-1))
        } else if let Some(p) = puts.get(value) {
            (i128::from(p.invoked_at), p.completed_at().map(i128::from))
        } else {
            return Some(format!("{} was never put", short(value)));
        };
        if invoked > ended {
            return Some(format!("{} was put only after the read", short(value)));
        }
        replaced_before(done, begun).map(|q| {
            format!(
                "{} had been replaced by {} (p{}, acknowledged at {:.3}s)",
                short(value),
                short(op_data(q)),
                q.process,
                secs(q.completed_at().unwrap_or(0))
            )
        })
    };
    for e in &ops {
        match (&e.op, &e.outcome) {
            (Op::Read, Some(Outcome::Ok(Ret::Value(content)))) => {
                let (begun, ended) = (
                    i128::from(e.invoked_at),
                    i128::from(e.returned_at.unwrap_or(u64::MAX)),
                );
                if let Some(why) = explain(content, begun, ended) {
                    errors.push(format!(
                        "{file}: a read at {:.3}s..{:.3}s (p{}) is wrong: {why}",
                        secs(e.invoked_at),
                        secs(e.returned_at.unwrap_or(0)),
                        e.process
                    ));
                }
            }
            (Op::Read, Some(Outcome::NotFound)) => errors.push(format!(
                "{file}: a read invoked at {:.3}s found no file",
                secs(e.invoked_at)
            )),
            _ => {}
        }
    }
    if let Some(why) = explain(final_, i128::MAX, i128::MAX) {
        errors.push(format!("{file}: the final content is wrong: {why}"));
    }
    let unknown_applied = usize::from(puts.get(final_).is_some_and(|p| !p.acked()));
    if errors.is_empty() {
        Ok(count(&ops, unknown_applied))
    } else {
        Err(errors)
    }
}

fn op_data(e: &Entry) -> &[u8] {
    match &e.op {
        Op::Append(d) | Op::Put(d) => d,
        Op::Read => b"",
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Bytes for a message: their length and start.
pub(crate) fn short(bytes: &[u8]) -> String {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(24)]);
    if bytes.len() <= 24 {
        format!("{head:?}")
    } else {
        format!("{head:?}... ({} bytes)", bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: u64, op: Op, t: (u64, u64), outcome: Outcome) -> Entry {
        Entry {
            process: p,
            file: "f".to_owned(),
            op,
            invoked_at: t.0,
            returned_at: Some(t.1),
            outcome: Some(outcome),
        }
    }

    fn append(p: u64, line: &str, t: (u64, u64), offset: Option<u64>) -> Entry {
        let outcome = match offset {
            Some(offset) => Outcome::Ok(Ret::Appended { offset }),
            None => Outcome::Unknown("timed out".into()),
        };
        entry(p, Op::Append(line.as_bytes().to_vec()), t, outcome)
    }

    fn read(t: (u64, u64), content: &str) -> Entry {
        entry(
            9,
            Op::Read,
            t,
            Outcome::Ok(Ret::Value(content.as_bytes().to_vec())),
        )
    }

    #[test]
    fn appends_that_are_right_pass_and_wrong_ones_are_named() {
        let h = vec![
            append(1, "a\n", (0, 10), Some(0)),
            append(2, "b\n", (5, 30), Some(2)),
            append(1, "c\n", (11, 40), None),
            read((12, 13), "a\n"),
            read((31, 35), "a\nb\n"),
        ];
        let counts = check_append_file(&h, "f", b"", b"a\nb\nc\n").expect("valid");
        assert_eq!((counts.writes_acked, counts.unknown_applied), (2, 1));
        assert!(check_append_file(&h, "f", b"", b"a\nb\n").is_ok());
        // Lost, duplicated, invented, out of order, a stale read.
        assert!(check_append_file(&h, "f", b"", b"a\n").is_err());
        assert!(check_append_file(&h, "f", b"", b"a\nb\nc\nc\n").is_err());
        assert!(check_append_file(&h, "f", b"", b"a\nb\nx\n").is_err());
        let swapped = vec![
            append(1, "a\n", (0, 10), Some(2)),
            append(1, "b\n", (11, 20), Some(0)),
        ];
        assert!(check_append_file(&swapped, "f", b"", b"b\na\n").is_err());
        let stale = vec![append(1, "a\n", (0, 10), Some(0)), read((11, 12), "")];
        assert!(check_append_file(&stale, "f", b"", b"a\n").is_err());
    }

    #[test]
    fn register_reads_must_not_be_overwritten_values() {
        let put = |p, v: &str, t, ok: bool| {
            let outcome = if ok {
                Outcome::Ok(Ret::Done)
            } else {
                Outcome::Unknown("lost".into())
            };
            entry(p, Op::Put(v.as_bytes().to_vec()), t, outcome)
        };
        let h = vec![
            put(1, "one", (0, 10), true),
            put(1, "two", (11, 20), false),
            put(2, "three", (21, 30), true),
            read((5, 6), ""),
            read((12, 13), "one"),
            read((31, 32), "two"),
        ];
        assert!(check_register_file(&h, "f", b"", b"three").is_ok());
        assert!(check_register_file(&h, "f", b"", b"two").is_ok());
        assert!(check_register_file(&h, "f", b"", b"one").is_err());
        let stale = vec![put(1, "one", (0, 10), true), read((11, 12), "")];
        assert!(check_register_file(&stale, "f", b"", b"one").is_err());
    }
}
