//! The check: split by file, then Wing & Gong's search with Lowe's memoization per file.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use crate::history::{Completion, Entry, ErrorKind, History, Op, OpId, Ret};
use crate::model::{self, Action, Content, Data, FileState, Observed};

/// Limits of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps allowed per file (one step tries one operation or backtracks once);
    /// past it that file's verdict is [`Verdict::Inconclusive`]. Memory grows with the
    /// steps taken: at most one memo entry each.
    pub max_steps_per_file: u64,
}

impl Default for CheckOptions {
    /// One million steps per file: well under a second, and at most one memo entry
    /// (about `n/8 + 60` bytes for `n` operations on the file) per step.
    fn default() -> Self {
        CheckOptions {
            max_steps_per_file: 1_000_000,
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Every file's operations can be linearized.
    Linearizable,
    /// The operations on `file` cannot be linearized (the first such file by name).
    NotLinearizable {
        /// The file.
        file: String,
        /// Why, for a human: the longest linearizable prefix found, the operation that
        /// could not be ordered next and why every candidate fails there.
        explanation: String,
    },
    /// No file is known to be non-linearizable, but the search on `file` (the first such
    /// file by name) ran out of steps before deciding.
    Inconclusive {
        /// The file.
        file: String,
        /// The steps taken on it.
        steps: u64,
    },
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable { file, explanation } => {
                write!(f, "not linearizable on {file:?}: {explanation}")
            }
            Verdict::Inconclusive { file, steps } => write!(
                f,
                "inconclusive: the search on {file:?} gave up after {steps} steps"
            ),
        }
    }
}

/// Checks `history` with the default [`CheckOptions`].
pub fn check(history: &History) -> Verdict {
    check_with(history, &CheckOptions::default())
}

/// Checks `history`: each file separately, in name order. Returns the first file found not
/// linearizable; otherwise the first file whose search ran out of steps, if any; otherwise
/// [`Verdict::Linearizable`].
pub fn check_with(history: &History, options: &CheckOptions) -> Verdict {
    let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in history.entries().iter().enumerate() {
        by_file.entry(e.file.as_str()).or_default().push(i);
    }
    let mut inconclusive = None;
    for (file, ids) in by_file {
        match check_file(history, file, &ids, options.max_steps_per_file) {
            FileVerdict::Linearizable => {}
            FileVerdict::Violation(explanation) => {
                return Verdict::NotLinearizable {
                    file: file.to_owned(),
                    explanation,
                };
            }
            FileVerdict::OutOfSteps(steps) => {
                inconclusive.get_or_insert(Verdict::Inconclusive {
                    file: file.to_owned(),
                    steps,
                });
            }
        }
    }
    inconclusive.unwrap_or(Verdict::Linearizable)
}

enum FileVerdict {
    Linearizable,
    Violation(String),
    OutOfSteps(u64),
}

/// One operation of the file being checked.
struct FileOp<'h> {
    id: OpId,
    entry: &'h Entry,
    action: Action<'h>,
    observed: Observed<'h>,
    /// Has a definite outcome and a response time (must be linearized).
    completed: bool,
    /// Its Zobrist key in the hash of the linearized set.
    zobrist: u64,
}

impl<'h> FileOp<'h> {
    /// Builds the operation, or `None` if it cannot affect the verdict.
    fn new(id: OpId, entry: &'h Entry) -> Option<Self> {
        let action = match &entry.op {
            Op::Create => Action::Create,
            Op::Append(data) => Action::Append(Data::new(data)),
            Op::Put(data) => Action::Put(Data::new(data)),
            Op::WriteAt { offset, data } => Action::WriteAt {
                offset: *offset,
                data: Data::new(data),
            },
            Op::Truncate { size } => Action::Truncate(*size),
            Op::Read => Action::Read,
            Op::Delete => Action::Delete,
        };
        let observed = match &entry.completion {
            // A rejected operation did nothing; a read of unknown outcome observed nothing.
            Completion::Failed {
                error: ErrorKind::Rejected,
                ..
            } => return None,
            Completion::Pending | Completion::Unknown if matches!(entry.op, Op::Read) => {
                return None;
            }
            Completion::Pending | Completion::Unknown => Observed::Any,
            Completion::Failed { error, .. } => Observed::Error(*error),
            Completion::Ok { ret, .. } => match ret {
                Ret::Done => Observed::Done,
                Ret::Appended { offset } => Observed::Appended(*offset),
                Ret::Size(size) => Observed::Size(*size),
                Ret::Value(v) => Observed::Value(v),
            },
        };
        Some(FileOp {
            id,
            entry,
            action,
            observed,
            completed: entry.completion.at().is_some(),
            zobrist: model::mix(id.0 as u64 ^ 0x5eed_0f11),
        })
    }

    /// Whether linearizing it may change a present file other than by adding bytes at
    /// the end: a rewrite ([`Action::may_rewrite`]) not seen to fail (an operation that
    /// failed definitely changed nothing, wherever it is linearized).
    fn may_rewrite(&self) -> bool {
        self.action.may_rewrite() && !matches!(self.observed, Observed::Error(_))
    }

    /// Sort key of the invocation event.
    fn call_key(&self, i: usize) -> (u8, u64, u8, usize) {
        (0, self.entry.invoked_at, 0, i)
    }

    /// Sort key of the response event: responses at equal times come after invocations
    /// (so operations that touch in time count as concurrent), and operations of unknown
    /// outcome respond after everything.
    fn return_key(&self, i: usize) -> (u8, u64, u8, usize) {
        match self.entry.completion.at() {
            Some(at) => (0, at, 1, i),
            None => (1, 0, 1, i),
        }
    }
}

impl fmt::Display for FileOp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.entry;
        write!(
            f,
            "{} (process {}) {} -> {} [invoked {}, ",
            self.id, e.process, e.op, self.observed, e.invoked_at
        )?;
        match e.completion.at() {
            Some(at) => write!(f, "returned {at}]"),
            None => f.write_str("no response]"),
        }
    }
}

const NIL: usize = usize::MAX;

/// The events of one file in time order, as a doubly linked list that operations are
/// lifted out of and put back into. Node `2i` is operation `i`'s invocation, `2i + 1` its
/// response; node `2n` is the head sentinel.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Events {
    fn new(ops: &[FileOp<'_>]) -> Self {
        let n = ops.len();
        let mut order: Vec<(usize, (u8, u64, u8, usize))> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            order.push((2 * i, op.call_key(i)));
            order.push((2 * i + 1, op.return_key(i)));
        }
        order.sort_unstable_by_key(|&(_, key)| key);
        let head = 2 * n;
        let mut next = vec![NIL; 2 * n + 1];
        let mut prev = vec![NIL; 2 * n + 1];
        let mut last = head;
        for (node, _) in order {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Events { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    /// Removes operation `i`'s two events.
    fn lift(&mut self, i: usize) {
        let (call, ret) = (2 * i, 2 * i + 1);
        // The invocation always precedes its own response, so `next[call]` is not NIL.
        self.next[self.prev[call]] = self.next[call];
        self.prev[self.next[call]] = self.prev[call];
        self.next[self.prev[ret]] = self.next[ret];
        if self.next[ret] != NIL {
            self.prev[self.next[ret]] = self.prev[ret];
        }
    }

    /// Puts back operation `i`'s two events, undoing the last [`lift`](Self::lift).
    fn unlift(&mut self, i: usize) {
        let (call, ret) = (2 * i, 2 * i + 1);
        self.next[self.prev[ret]] = ret;
        if self.next[ret] != NIL {
            self.prev[self.next[ret]] = ret;
        }
        self.next[self.prev[call]] = call;
        self.prev[self.next[call]] = call;
    }
}

/// The set of linearized operations, with an incrementally maintained hash.
struct Linearized {
    bits: Vec<u64>,
    hash: u64,
}

impl Linearized {
    fn toggle(&mut self, i: usize, zobrist: u64) {
        self.bits[i / 64] ^= 1 << (i % 64);
        self.hash ^= zobrist;
    }

    fn contains(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
}

/// One explored configuration: the linearized set's bits and the state.
type Configuration<'h> = (Box<[u64]>, FileState<'h>);

/// Configurations already explored, by hash.
#[derive(Default)]
struct Memo<'h> {
    seen: HashMap<u64, Vec<Configuration<'h>>>,
}

impl<'h> Memo<'h> {
    /// Records the configuration; `false` if it was already there.
    ///
    /// With `length_only`, contents of the same length count as the same: right when no
    /// read that returned a value is left to linearize, since then no operation still to
    /// come can tell two such contents apart: an append's offset and the size a
    /// `write_at` or a `truncate` leaves depend only on the length, and every operation
    /// leaves contents of equal length equally long. Whether that holds depends only on
    /// the linearized set, so entries for the same set are always compared the same way.
    fn insert(
        &mut self,
        linearized: &Linearized,
        state: &FileState<'h>,
        length_only: bool,
    ) -> bool {
        let key = linearized.hash ^ state.hash(length_only);
        let bucket = self.seen.entry(key).or_default();
        if bucket
            .iter()
            .any(|(bits, s)| **bits == *linearized.bits && s.same(state, length_only))
        {
            return false;
        }
        bucket.push((linearized.bits.clone().into_boxed_slice(), state.clone()));
        true
    }
}

/// A Fenwick tree of counts, for "how many of the first `n` slots are set".
struct Fenwick(Vec<i64>);

impl Fenwick {
    fn ones(n: usize) -> Self {
        let mut tree = Fenwick(vec![0; n + 1]);
        for slot in 0..n {
            tree.add(slot, 1);
        }
        tree
    }

    fn add(&mut self, slot: usize, delta: i64) {
        let mut i = slot + 1;
        while let Some(cell) = self.0.get_mut(i) {
            *cell += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// The sum over slots `0..n`.
    fn prefix(&self, n: usize) -> i64 {
        let mut i = n.min(self.0.len().saturating_sub(1));
        let mut sum = 0;
        while i > 0 {
            sum += self.0[i];
            i &= i - 1;
        }
        sum
    }
}

/// How an operation changed the content of a present file.
#[derive(Clone, Copy)]
enum Change<'h> {
    /// Not at all (a read, a failed operation).
    Same,
    /// These bytes were appended.
    Appended(&'h [u8]),
    /// Anything else.
    Other,
}

fn change<'h>(before: &FileState<'h>, op: &FileOp<'h>) -> Change<'h> {
    match (&op.action, before) {
        (Action::Read, _) => Change::Same,
        (action, before) if matches!(model::answer(before, action), model::Answer::Error(_)) => {
            Change::Same
        }
        (Action::Append(data), FileState::Present(_)) => Change::Appended(data.bytes()),
        _ => Change::Other,
    }
}

/// The read-prefix pruning. Without a `put`, a `delete`, a `write_at` or a `truncate` (a
/// *rewrite*, [`Action::may_rewrite`]) in between, a present file only grows, by appends;
/// so if the next read still to be linearized (the one with the earliest response)
/// returned a value that does not start with the current content, and no pending rewrite
/// may come before that read, the configuration is dead. This pins the order of
/// concurrent appends as soon as they happen instead of when the read is reached, which
/// keeps histories of appends without offsets from exploding. (A `write_at` at or past
/// the end only grows the file too, but whether it does depends on the state it meets, so
/// every `write_at` counts as a rewrite.)
struct Guard {
    /// The completed reads that returned a value, by response time.
    reads: Vec<usize>,
    /// `reads[..lo]` are all linearized.
    lo: usize,
    /// The invocation keys of every rewrite, sorted.
    reset_keys: Vec<Key>,
    /// Each operation's slot in `reset_keys`, or `NIL`.
    reset_slot: Vec<usize>,
    /// One per rewrite not linearized yet, by slot.
    pending_resets: Fenwick,
    /// The current content is known to be a prefix of `reads[v]`'s value.
    verified: Option<usize>,
}

type Key = (u8, u64, u8, usize);

impl Guard {
    fn new(ops: &[FileOp<'_>]) -> Self {
        let mut reads: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].completed && matches!(ops[i].observed, Observed::Value(_)))
            .collect();
        reads.sort_unstable_by_key(|&i| ops[i].return_key(i));
        let mut resets: Vec<(Key, usize)> = (0..ops.len())
            .filter(|&i| ops[i].may_rewrite())
            .map(|i| (ops[i].call_key(i), i))
            .collect();
        resets.sort_unstable();
        let mut reset_slot = vec![NIL; ops.len()];
        for (slot, &(_, i)) in resets.iter().enumerate() {
            reset_slot[i] = slot;
        }
        Guard {
            reads,
            lo: 0,
            pending_resets: Fenwick::ones(resets.len()),
            reset_keys: resets.into_iter().map(|(key, _)| key).collect(),
            reset_slot,
            verified: None,
        }
    }
}

/// The search on one file.
struct Search<'a, 'h> {
    ops: &'a [FileOp<'h>],
    events: Events,
    linearized: Linearized,
    memo: Memo<'h>,
    state: FileState<'h>,
    /// The linearized operations in order.
    stack: Vec<Frame<'h>>,
    /// Completed operations not linearized yet.
    remaining: usize,
    guard: Guard,
}

/// One linearized operation and what to restore when it is taken back.
struct Frame<'h> {
    op: usize,
    before: FileState<'h>,
    lo: usize,
    verified: Option<usize>,
}

impl<'a, 'h> Search<'a, 'h> {
    fn new(ops: &'a [FileOp<'h>], initial: FileState<'h>) -> Self {
        Search {
            ops,
            events: Events::new(ops),
            linearized: Linearized {
                bits: vec![0; ops.len().div_ceil(64)],
                hash: 0,
            },
            memo: Memo::default(),
            state: initial,
            stack: Vec::new(),
            remaining: ops.iter().filter(|op| op.completed).count(),
            guard: Guard::new(ops),
        }
    }

    /// Linearizes operation `i`, leading to `next`.
    fn push(&mut self, i: usize, next: FileState<'h>) {
        self.linearized.toggle(i, self.ops[i].zobrist);
        let before = std::mem::replace(&mut self.state, next);
        self.stack.push(Frame {
            op: i,
            before,
            lo: self.guard.lo,
            verified: self.guard.verified,
        });
        self.events.lift(i);
        if self.ops[i].completed {
            self.remaining -= 1;
        }
        let guard = &mut self.guard;
        if let Some(&slot) = guard.reset_slot.get(i).filter(|&&s| s != NIL) {
            guard.pending_resets.add(slot, -1);
        }
        while guard
            .reads
            .get(guard.lo)
            .is_some_and(|&r| self.linearized.contains(r))
        {
            guard.lo += 1;
        }
    }

    /// Takes back the last linearized operation.
    fn pop(&mut self) -> Option<usize> {
        let frame = self.stack.pop()?;
        let i = frame.op;
        self.state = frame.before;
        self.linearized.toggle(i, self.ops[i].zobrist);
        self.events.unlift(i);
        if self.ops[i].completed {
            self.remaining += 1;
        }
        if let Some(&slot) = self.guard.reset_slot.get(i).filter(|&&s| s != NIL) {
            self.guard.pending_resets.add(slot, 1);
        }
        self.guard.lo = frame.lo;
        self.guard.verified = frame.verified;
        Some(i)
    }

    /// Whether the current configuration, just reached by a step that made `change` to
    /// the content, is dead by the read-prefix rule (see [`Guard`]).
    fn doomed(&mut self, change: Change<'_>, parent_verified: Option<usize>) -> bool {
        let guard = &mut self.guard;
        guard.verified = None;
        let FileState::Present(content) = &self.state else {
            return false;
        };
        let lo = guard.lo;
        let Some(&q) = guard.reads.get(lo) else {
            return false;
        };
        let Observed::Value(value) = self.ops[q].observed else {
            return false;
        };
        let deadline = self.ops[q].return_key(q);
        let before = guard.reset_keys.partition_point(|key| *key < deadline);
        if guard.pending_resets.prefix(before) > 0 {
            return false;
        }
        let prefix = match (parent_verified == Some(lo), change) {
            (true, Change::Same) => true,
            (true, Change::Appended(data)) => {
                let end = usize::try_from(content.len()).unwrap_or(usize::MAX);
                end.checked_sub(data.len())
                    .and_then(|start| value.get(start..end))
                    .is_some_and(|seen| seen == data)
            }
            _ => content.is_prefix_of(value),
        };
        if prefix {
            guard.verified = Some(lo);
        }
        !prefix
    }
}

fn check_file(history: &History, file: &str, ids: &[usize], max_steps: u64) -> FileVerdict {
    let entries = history.entries();
    let ops: Vec<FileOp<'_>> = ids
        .iter()
        .filter_map(|&i| FileOp::new(OpId(i), entries.get(i)?))
        .collect();
    let initial = match history.initial(file) {
        Some(content) => FileState::Present(Content::of(&Data::new(content))),
        None => FileState::Absent,
    };

    let mut search = Search::new(&ops, initial.clone());
    // The longest linearizable prefix seen, and the operation that could not follow it.
    let mut deepest: Option<(Vec<usize>, usize)> = None;
    let mut steps = 0u64;
    let mut node = search.events.first();

    while search.remaining > 0 {
        if steps >= max_steps {
            return FileVerdict::OutOfSteps(steps);
        }
        steps += 1;
        if node != NIL && node.is_multiple_of(2) {
            // An invocation: try to linearize this operation now.
            let i = node / 2;
            let op = &ops[i];
            if let Some(next) = model::step(&search.state, &op.action, &op.observed) {
                let change = change(&search.state, op);
                let parent_verified = search.guard.verified;
                search.push(i, next);
                let length_only = search.guard.lo >= search.guard.reads.len();
                if search
                    .memo
                    .insert(&search.linearized, &search.state, length_only)
                    && !search.doomed(change, parent_verified)
                {
                    node = search.events.first();
                    continue;
                }
                search.pop();
            }
            node = search.events.next[2 * i];
        } else {
            // A response (or, defensively, the end of the list): its operation had to be
            // linearized by now and nothing fits; undo the last choice.
            let depth = search.stack.len();
            if node != NIL && deepest.as_ref().is_none_or(|(p, _)| depth > p.len()) {
                deepest = Some((search.stack.iter().map(|f| f.op).collect(), node / 2));
            }
            let Some(i) = search.pop() else {
                return FileVerdict::Violation(explain(file, &ops, &initial, deepest));
            };
            node = search.events.next[2 * i];
        }
    }
    FileVerdict::Linearizable
}

/// The naive form of [`Search::doomed`], for explanations: the read that rules out
/// `state` after the operations in `done`, if any.
fn doomed_by(ops: &[FileOp<'_>], done: &[bool], state: &FileState<'_>) -> Option<usize> {
    let FileState::Present(content) = state else {
        return None;
    };
    let q = (0..ops.len())
        .filter(|&i| !done[i] && ops[i].completed && matches!(ops[i].observed, Observed::Value(_)))
        .min_by_key(|&i| ops[i].return_key(i))?;
    let deadline = ops[q].return_key(q);
    let reset_pending =
        (0..ops.len()).any(|i| !done[i] && ops[i].may_rewrite() && ops[i].call_key(i) < deadline);
    match ops[q].observed {
        Observed::Value(value) if !reset_pending && !content.is_prefix_of(value) => Some(q),
        _ => None,
    }
}

/// The longest prefix shown in an explanation.
const PREFIX_SHOWN: usize = 20;

/// The most candidates listed in an explanation.
const CANDIDATES_SHOWN: usize = 12;

/// Describes why no linearization exists: the longest linearizable prefix found, the
/// operation that could not follow it and why every candidate fails there.
fn explain(
    file: &str,
    ops: &[FileOp<'_>],
    initial: &FileState<'_>,
    deepest: Option<(Vec<usize>, usize)>,
) -> String {
    let mut out = String::new();
    let total = ops.len();
    let Some((prefix, blocked)) = deepest else {
        let _ = write!(
            out,
            "no linearization of the {total} operations on {file:?} exists"
        );
        return out;
    };
    let _ = writeln!(
        out,
        "no linearization of the {total} operations on {file:?} exists."
    );
    let _ = writeln!(
        out,
        "Initially {file:?} {initial}. The longest linearizable prefix found has {} \
         operation{}:",
        prefix.len(),
        if prefix.len() == 1 { "" } else { "s" }
    );
    let mut state = initial.clone();
    let skipped = prefix.len().saturating_sub(PREFIX_SHOWN);
    if skipped > 0 {
        let _ = writeln!(out, "  ... ({skipped} earlier operations)");
    }
    let mut in_prefix = vec![false; total];
    for (n, &i) in prefix.iter().enumerate() {
        in_prefix[i] = true;
        let op = &ops[i];
        if n >= skipped {
            let _ = writeln!(out, "  {:>4}. {op}", n + 1);
        }
        match model::step(&state, &op.action, &op.observed) {
            Some(next) => state = next,
            None => {
                // Cannot happen: the prefix was built by these very steps.
                let _ = writeln!(out, "  (internal: this step does not replay)");
            }
        }
    }
    let _ = writeln!(out, "after which {file:?} {state}.");
    let Some(blocked_op) = ops.get(blocked) else {
        return out;
    };
    let _ = writeln!(
        out,
        "Next, {blocked_op} must take effect before its response, but no operation pending \
         then can take effect first:"
    );
    let deadline = blocked_op.return_key(blocked);
    let candidates: Vec<usize> = (0..total)
        .filter(|&i| !in_prefix[i] && ops[i].call_key(i) < deadline)
        .collect();
    // The blocked operation first, then the others in invocation order.
    let shown = std::iter::once(blocked)
        .chain(candidates.iter().copied().filter(|&i| i != blocked))
        .take(CANDIDATES_SHOWN);
    for i in shown {
        let op = &ops[i];
        let answer = model::answer(&state, &op.action);
        if let Some(after) = model::step(&state, &op.action, &op.observed) {
            in_prefix[i] = true;
            let doomed = doomed_by(ops, &in_prefix, &after);
            in_prefix[i] = false;
            match doomed.and_then(|q| ops.get(q)) {
                Some(read) => {
                    let _ = writeln!(
                        out,
                        "  - {op}: fits, but then {file:?} {after}, and {read} cannot follow: \
                         its value does not start with that, and no put, delete, write_at or \
                         truncate can come between"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  - {op}: fits (then {file:?} {after}), but no linearization \
                         continues from there"
                    );
                }
            }
        } else {
            let _ = writeln!(
                out,
                "  - {op}: cannot, the model would answer {answer} since {file:?} {state}"
            );
        }
    }
    if candidates.len() > CANDIDATES_SHOWN {
        let _ = writeln!(
            out,
            "  ... and {} more",
            candidates.len() - CANDIDATES_SHOWN
        );
    }
    out.truncate(out.trim_end().len());
    out
}
