//! The sequential model of one file, with a state representation made for the search:
//! cheap to clone, to extend, to hash and to compare.

use std::fmt;
use std::rc::Rc;

use crate::history::{Bytes, ErrorKind};

/// The base of the polynomial content hash (odd, so multiplying by it is a bijection on
/// `u64`).
const BASE: u64 = 0x0000_0100_0000_01b3;

/// The polynomial hash of `data`: `sum (b_i + 1) * BASE^(len - 1 - i)`, wrapping. It
/// composes: `hash(a ++ b) = hash(a) * BASE^len(b) + hash(b)`.
fn poly_hash(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1)
    })
}

/// `BASE^n`, wrapping.
fn pow(mut n: u64) -> u64 {
    let (mut result, mut base) = (1u64, BASE);
    while n > 0 {
        if n & 1 == 1 {
            result = result.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        n >>= 1;
    }
    result
}

/// The finalizer of splitmix64: a good 64-bit mixer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of a write, with their hash and `BASE^len` computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Data<'h> {
    bytes: &'h [u8],
    hash: u64,
    pow: u64,
}

impl<'h> Data<'h> {
    pub(crate) fn new(bytes: &'h [u8]) -> Self {
        Data {
            bytes,
            hash: poly_hash(bytes),
            pow: pow(bytes.len() as u64),
        }
    }

    pub(crate) fn bytes(&self) -> &'h [u8] {
        self.bytes
    }
}

/// One non-empty piece of a file's content and everything before it.
struct Piece<'h> {
    data: &'h [u8],
    prev: Option<Rc<Piece<'h>>>,
    /// Length of the whole content up to and including this piece.
    len: u64,
    /// Hash of the whole content up to and including this piece.
    hash: u64,
}

impl Drop for Piece<'_> {
    /// Unlinks a long chain iteratively: the default recursive drop could overflow the
    /// stack on a file built from many appends.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(rc) = next {
            match Rc::try_unwrap(rc) {
                Ok(mut piece) => next = piece.prev.take(),
                Err(_) => break,
            }
        }
    }
}

/// A file's content: a persistent list of pieces, newest last, so appending shares
/// everything before and copies nothing.
#[derive(Clone, Default)]
pub(crate) struct Content<'h>(Option<Rc<Piece<'h>>>);

impl<'h> Content<'h> {
    pub(crate) fn of(data: &Data<'h>) -> Self {
        Content::default().append(data)
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.len)
    }

    fn hash(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.hash)
    }

    fn append(&self, data: &Data<'h>) -> Self {
        if data.bytes.is_empty() {
            return self.clone();
        }
        Content(Some(Rc::new(Piece {
            data: data.bytes,
            prev: self.0.clone(),
            len: self.len() + data.bytes.len() as u64,
            hash: self.hash().wrapping_mul(data.pow).wrapping_add(data.hash),
        })))
    }

    /// Whether the content is exactly `value`.
    fn eq_bytes(&self, value: &[u8]) -> bool {
        if self.len() != value.len() as u64 {
            return false;
        }
        let mut end = value.len();
        let mut piece = self.0.as_deref();
        while let Some(p) = piece {
            let Some(start) = end.checked_sub(p.data.len()) else {
                return false;
            };
            if value.get(start..end) != Some(p.data) {
                return false;
            }
            end = start;
            piece = p.prev.as_deref();
        }
        end == 0
    }

    /// Whether `value` starts with the content.
    pub(crate) fn is_prefix_of(&self, value: &[u8]) -> bool {
        let Ok(len) = usize::try_from(self.len()) else {
            return false;
        };
        match value.get(..len) {
            Some(prefix) => self.eq_bytes(prefix),
            None => false,
        }
    }

    /// Whether two contents hold the same bytes (however they were built).
    fn same(&self, other: &Content<'h>) -> bool {
        if self.len() != other.len() || self.hash() != other.hash() {
            return false;
        }
        let (mut a, mut b) = (self.0.as_deref(), other.0.as_deref());
        // Bytes of the current piece not compared yet (a prefix of it).
        let (mut ai, mut bi) = (a.map_or(0, |p| p.data.len()), b.map_or(0, |p| p.data.len()));
        loop {
            while let (0, Some(p)) = (ai, a) {
                a = p.prev.as_deref();
                ai = a.map_or(0, |p| p.data.len());
            }
            while let (0, Some(p)) = (bi, b) {
                b = p.prev.as_deref();
                bi = b.map_or(0, |p| p.data.len());
            }
            match (a, b) {
                (None, None) => return true,
                (Some(pa), Some(pb)) => {
                    if std::ptr::eq(pa, pb) && ai == bi {
                        // The same piece at the same point: everything before is shared.
                        return true;
                    }
                    let n = ai.min(bi);
                    if pa.data.get(ai - n..ai) != pb.data.get(bi - n..bi) {
                        return false;
                    }
                    ai -= n;
                    bi -= n;
                }
                _ => return false,
            }
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut pieces = Vec::new();
        let mut piece = self.0.as_deref();
        while let Some(p) = piece {
            pieces.push(p.data);
            piece = p.prev.as_deref();
        }
        pieces.reverse();
        pieces.concat()
    }
}

/// A file's state in the model.
#[derive(Clone)]
pub(crate) enum FileState<'h> {
    /// The file does not exist.
    Absent,
    /// The file exists with this content.
    Present(Content<'h>),
}

impl<'h> FileState<'h> {
    /// A hash of the state, for the memo table; with `length_only`, of its existence and
    /// length only.
    pub(crate) fn hash(&self, length_only: bool) -> u64 {
        match self {
            FileState::Absent => mix(0x0bad_f11e),
            FileState::Present(c) if length_only => mix(mix(c.len())),
            FileState::Present(c) => mix(c.hash() ^ mix(c.len())),
        }
    }

    /// Whether two states are equal (same existence, same bytes); with `length_only`, the
    /// same existence and length.
    pub(crate) fn same(&self, other: &FileState<'h>, length_only: bool) -> bool {
        match (self, other) {
            (FileState::Absent, FileState::Absent) => true,
            (FileState::Present(a), FileState::Present(b)) if length_only => a.len() == b.len(),
            (FileState::Present(a), FileState::Present(b)) => a.same(b),
            _ => false,
        }
    }
}

impl fmt::Display for FileState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileState::Absent => f.write_str("does not exist"),
            FileState::Present(c) => write!(f, "holds {}", Bytes(&c.to_vec())),
        }
    }
}

/// What an operation does, in the model.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'h> {
    Create,
    Append(Data<'h>),
    Put(Data<'h>),
    Read,
    Delete,
}

/// What was observed of an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Observed<'h> {
    /// Outcome unknown: any answer will do.
    Any,
    /// Succeeded (an append: at an unknown offset).
    Done,
    /// An append succeeded at this offset.
    Appended(u64),
    /// A read returned this.
    Value(&'h [u8]),
    /// Failed with this error.
    Error(ErrorKind),
}

impl fmt::Display for Observed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Any => f.write_str("outcome unknown"),
            Observed::Done => f.write_str("ok"),
            Observed::Appended(offset) => write!(f, "ok at offset {offset}"),
            Observed::Value(v) => write!(f, "{}", Bytes(v)),
            Observed::Error(e) => write!(f, "{e}"),
        }
    }
}

/// What the model answers to an operation in a given state.
pub(crate) enum Answer<'s, 'h> {
    Done,
    Appended(u64),
    Value(&'s Content<'h>),
    Error(ErrorKind),
}

impl fmt::Display for Answer<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Done => f.write_str("ok"),
            Answer::Appended(offset) => write!(f, "ok at offset {offset}"),
            Answer::Value(c) => write!(f, "{}", Bytes(&c.to_vec())),
            Answer::Error(e) => write!(f, "{e}"),
        }
    }
}

/// The model's answer to `action` in `state`.
pub(crate) fn answer<'s, 'h>(state: &'s FileState<'h>, action: &Action<'h>) -> Answer<'s, 'h> {
    match (action, state) {
        (Action::Create, FileState::Absent) => Answer::Done,
        (Action::Create, FileState::Present(_)) => Answer::Error(ErrorKind::AlreadyExists),
        (Action::Append(_), FileState::Absent) => Answer::Appended(0),
        (Action::Append(_), FileState::Present(c)) => Answer::Appended(c.len()),
        (Action::Put(_), _) => Answer::Done,
        (Action::Read, FileState::Present(c)) => Answer::Value(c),
        (Action::Read | Action::Delete, FileState::Absent) => Answer::Error(ErrorKind::NotFound),
        (Action::Delete, FileState::Present(_)) => Answer::Done,
    }
}

/// Whether the model's answer matches what was observed.
pub(crate) fn fits(answer: &Answer<'_, '_>, observed: &Observed<'_>) -> bool {
    match (observed, answer) {
        (Observed::Any, _) => true,
        (Observed::Done, Answer::Done | Answer::Appended(_)) => true,
        (Observed::Appended(seen), Answer::Appended(model)) => seen == model,
        (Observed::Value(seen), Answer::Value(content)) => content.eq_bytes(seen),
        (Observed::Error(seen), Answer::Error(model)) => seen == model,
        _ => false,
    }
}

/// The state after `action` in `state`, when the model answered without an error.
fn after<'h>(state: &FileState<'h>, action: &Action<'h>) -> FileState<'h> {
    match (action, state) {
        (Action::Create, FileState::Absent) => FileState::Present(Content::default()),
        (Action::Append(data), FileState::Absent) | (Action::Put(data), _) => {
            FileState::Present(Content::of(data))
        }
        (Action::Append(data), FileState::Present(c)) => FileState::Present(c.append(data)),
        (Action::Delete, _) => FileState::Absent,
        (Action::Create | Action::Read, _) => state.clone(),
    }
}

/// Applies `action` to `state` if the model's answer matches `observed`: the next state,
/// or `None` if the operation cannot take effect here.
pub(crate) fn step<'h>(
    state: &FileState<'h>,
    action: &Action<'h>,
    observed: &Observed<'h>,
) -> Option<FileState<'h>> {
    let answer = answer(state, action);
    if !fits(&answer, observed) {
        return None;
    }
    Some(match answer {
        Answer::Error(_) => state.clone(),
        _ => after(state, action),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build<'h>(parts: &[&'h [u8]]) -> Content<'h> {
        parts
            .iter()
            .fold(Content::default(), |c, p| c.append(&Data::new(p)))
    }

    #[test]
    fn content_hash_composes_and_comparison_ignores_piece_boundaries() {
        let a = build(&[b"ab", b"cde", b"f"]);
        let b = build(&[b"a", b"bcd", b"", b"ef"]);
        let c = Content::of(&Data::new(b"abcdef"));
        let d = build(&[b"ab", b"cdf", b"e"]);
        assert_eq!(a.hash(), poly_hash(b"abcdef"));
        assert_eq!(a.hash(), b.hash());
        assert!(a.same(&b) && b.same(&c) && c.same(&a));
        assert!(!a.same(&d) && !d.same(&a));
        assert!(a.eq_bytes(b"abcdef") && !a.eq_bytes(b"abcdeg") && !a.eq_bytes(b"abcde"));
        assert_eq!(a.to_vec(), b"abcdef");
        assert!(Content::default().same(&build(&[b"", b""])));
        assert!(Content::default().eq_bytes(b""));
        assert!(a.is_prefix_of(b"abcdef") && a.is_prefix_of(b"abcdefg"));
        assert!(!a.is_prefix_of(b"abcde") && !a.is_prefix_of(b"abcdeg"));
        assert!(Content::default().is_prefix_of(b""));
        let shared = build(&[b"xy"]);
        let e = shared.append(&Data::new(b"z"));
        let f = shared.append(&Data::new(b"z"));
        assert!(e.same(&f));
    }

    #[test]
    fn dropping_a_long_chain_does_not_overflow_the_stack() {
        let data = Data::new(b"x");
        let mut c = Content::default();
        for _ in 0..1_000_000 {
            c = c.append(&data);
        }
        assert_eq!(c.len(), 1_000_000);
        drop(c);
    }
}
