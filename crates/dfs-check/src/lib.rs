//! A linearizability checker for histories of dfs operations.
//!
//! A test (a Jepsen-style fault-injection run, a soak test, a property test) lets a few
//! clients hammer a small set of files while nodes crash and networks fail, and records
//! every operation in a [`History`]: who invoked what, when, and what came back. [`check`]
//! then decides whether that history is *linearizable*: whether every operation can be
//! given one instant, inside the interval between its invocation and its response, such
//! that replaying the operations one at a time in the order of those instants, against the
//! sequential model below, gives back exactly the results the clients saw. dfs promises
//! this per file (see the product brief, section 3); a history that is not linearizable is
//! a bug, and the verdict's explanation names the file and the operations involved.
//!
//! # The sequential model
//!
//! The state is a map from file name to `Option<bytes>` (`None`: the file does not exist).
//! Every file starts absent unless [`History::set_initial`] says otherwise. The operations
//! ([`Op`]) follow dfs exactly (`dfs_client::Client`):
//!
//! | op | file absent | file present |
//! |---|---|---|
//! | [`Op::Create`] | becomes present and empty; `Ok` | [`ErrorKind::AlreadyExists`], no change |
//! | [`Op::Append`] | **created** with the bytes; `Ok`, offset 0 | bytes added at the end; `Ok`, offset = old size |
//! | [`Op::Put`] | **created** with the bytes; `Ok` | content replaced; `Ok` |
//! | [`Op::WriteAt`] | [`ErrorKind::NotFound`] | bytes written at the offset, over what is there; a gap past the end filled with zero bytes; `Ok`, size = max(old size, offset + len) |
//! | [`Op::Truncate`] | [`ErrorKind::NotFound`] | cut to the size, or extended to it with zero bytes; `Ok`, size = the size |
//! | [`Op::Read`] | [`ErrorKind::NotFound`] | `Ok(content)` |
//! | [`Op::Delete`] | [`ErrorKind::NotFound`] | becomes absent; `Ok` |
//!
//! Like dfs, `append` and `put` create a missing file and never fail with `NotFound`; a
//! history in which one does is not linearizable. `write_at` and `truncate` do not create
//! it: on a missing file they fail with `NotFound` and change nothing. An append's result
//! may carry the offset at which the bytes landed ([`Ret::Appended`]; from a `WriteAck`,
//! `offset = ack.size - data.len()`, which also holds for an ack answered from the dedup
//! table), and the checker then holds the append to it; likewise a `write_at`'s or a
//! `truncate`'s result may carry the size the file had after it ([`Ret::Size`]: `ack.size`).
//! A write whose end would be past `2^64 - 1` bytes never succeeds in the model.
//!
//! Every operation ends in one of three ways ([`Outcome`]):
//!
//! - `Ok(ret)`: it took effect, once, at some instant between its invocation and its
//!   response, and `ret` is what it returned;
//! - `Failed(error)`: a definite answer from the store. `NotFound` and `AlreadyExists` are
//!   *results* the model must reproduce at the operation's instant (the operation changes
//!   nothing); [`ErrorKind::Rejected`] stands for any other definite refusal (a bad name, a
//!   fencing or version conflict) and places no constraint at all;
//! - `Unknown`: a timeout or a lost connection. The operation may have taken effect at any
//!   instant after its invocation (even after every other operation), or never; it has no
//!   response time. An operation still pending when the history is checked counts as
//!   `Unknown`.
//!
//! Two operations are ordered when one's response time is *strictly* before the other's
//! invocation time; otherwise they are concurrent and may be linearized either way. The
//! [`History`] builder takes times from its own logical clock (each event gets the next
//! tick, so recording events in the order they happened is enough) or explicitly, in
//! nanoseconds, for histories recorded by several threads ([`History::invoke_at`],
//! [`History::complete_at`]). [`SharedHistory`] is a cloneable, lockable handle for
//! recording from many tasks.
//!
//! # The algorithm
//!
//! 1. **Per file (P-compositionality).** Files are independent objects: an operation
//!    touches one file and its result depends on that file only, so a history is
//!    linearizable if and only if each file's sub-history is (Herlihy & Wing's locality
//!    theorem). [`check`] splits the history by file name and checks each file on its own,
//!    which turns one search exponential in the total number of concurrent operations into
//!    several much smaller ones.
//! 2. **Wing & Gong's search.** For one file the operations' invocation and response events
//!    are sorted by time into a linked list. The search repeatedly picks an operation whose
//!    invocation comes before the first response still in the list (a *minimal* operation:
//!    nothing still pending must precede it), applies it to the model and, if the model's
//!    result matches what was observed, *lifts* it out of the list and continues; when the
//!    first event of the list is a response (an operation that can no longer be deferred)
//!    and no candidate fits, it backtracks. The file is linearizable once every completed
//!    operation has been lifted: an `Unknown` operation's response is at infinity, so it can
//!    be linearized anywhere after its invocation, or left out (never took effect).
//! 3. **Lowe's memoization.** Two search paths that have linearized the same *set* of
//!    operations and reached the same file state have the same future, so every
//!    (linearized set, state) configuration is recorded in a hash table and never explored
//!    twice. The set is a bitset hashed incrementally (Zobrist); the state's content is a
//!    persistent list of pieces with an incremental polynomial hash and length, so an
//!    append costs O(its own bytes) and no file content is ever copied during the search.
//!    A piece is a slice of an operation's data or a run of zero bytes (never
//!    materialized, so a `truncate` to a huge size costs nothing); a `write_at` or a
//!    cutting `truncate` shares the pieces before the change and re-links the pieces after
//!    it, which costs O(the bytes it writes + the pieces after it + the bytes of the one or
//!    two pieces it cuts); a `write_at` at or past the end is an append. Hash matches are
//!    confirmed by an exact byte comparison, so the memoization never conflates two
//!    different contents. Once every read that returned a value has been linearized,
//!    nothing still to come can see the bytes (an append's offset and the size a
//!    `write_at` or `truncate` leaves depend only on the length), so from then on contents
//!    of equal length count as the same state.
//! 4. **Read-prefix pruning** (specific to this model). Between two *rewrites* (a `put`, a
//!    `delete`, a `write_at` or a `truncate`), a file only grows. So when the next read
//!    still to be linearized (the one that responded first) returned a value that does not
//!    start with the current content, and no rewrite not yet linearized (and not seen to
//!    fail) was invoked before that read responded, the configuration is dead and is
//!    abandoned at once. This pins the order of concurrent appends as they are linearized,
//!    instead of discovering a wrong order only when the read is reached: without it,
//!    appends recorded without offsets between two reads make the search exponential.
//!
//! Operations that cannot affect the outcome are dropped first: reads with an unknown
//! outcome and `Rejected` failures.
//!
//! The result is checked against a brute-force search on many thousands of small random
//! histories (property tests), besides known good and bad scenarios.
//!
//! # Cost
//!
//! Per file, the search explores at most (linearized sets reachable) × (distinct states)
//! configurations, one memo entry (about `n/8 + 60` bytes for `n` operations) each. With a
//! handful of clients, append offsets or regular reads, and few operations of unknown
//! outcome, that is roughly linear in the number of operations: 500 operations from 5
//! clients on 3 files check in about a millisecond. The expensive case is many operations
//! of unknown outcome on one file: each may take effect at any later point or never, and
//! unknown rewrites (`put`, `delete`, `write_at`, `truncate`) also switch the read-prefix
//! pruning off until they are linearized; proving that such a history is *not*
//! linearizable can mean trying a number of orders exponential in them. The search is
//! therefore bounded by [`CheckOptions::max_steps_per_file`] (a step is a fraction of a
//! microsecond); past it the verdict is [`Verdict::Inconclusive`], never an endless loop.
//! To keep checks decisive: record append offsets and `write_at`/`truncate` sizes, read
//! every file at the end of a run, and let the client's exactly-once retries turn timeouts
//! into definite outcomes where the test allows.
//!
//! # Example
//!
//! ```
//! use dfs_check::{ErrorKind, History, Op, Ret, Verdict, check};
//!
//! let mut h = History::new();
//! let a = h.invoke(1, "f", Op::Append(b"x".to_vec()));
//! let b = h.invoke(2, "f", Op::Append(b"y".to_vec())); // concurrent with `a`
//! h.ok(b, Ret::Appended { offset: 0 })?;
//! h.ok(a, Ret::Appended { offset: 1 })?;
//! let r = h.invoke(3, "f", Op::Read);
//! h.ok(r, Ret::Value(b"yx".to_vec()))?;
//! let d = h.invoke(3, "g", Op::Delete);
//! h.fail(d, ErrorKind::NotFound)?;
//! assert_eq!(check(&h), Verdict::Linearizable);
//!
//! // A later read that lost `a`'s acknowledged append.
//! let r = h.invoke(3, "f", Op::Read);
//! h.ok(r, Ret::Value(b"y".to_vec()))?;
//! let verdict = check(&h);
//! assert!(matches!(&verdict, Verdict::NotLinearizable { file, .. } if file == "f"));
//! println!("{verdict}"); // names the file and the operations that could not be ordered
//! # Ok::<(), dfs_check::HistoryError>(())
//! ```

mod history;
mod model;
mod search;

pub use history::{
    Completion, Entry, ErrorKind, History, HistoryError, Op, OpId, Outcome, ProcessId, Ret,
    SharedHistory,
};
pub use search::{CheckOptions, Verdict, check, check_with};

#[cfg(test)]
mod tests;
