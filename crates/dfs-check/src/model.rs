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

/// The polynomial hash of `n` zero bytes and `BASE^n`, in O(log n) (a zero fill may be
/// far too long to hash byte by byte): built from the top bit of `n` down, doubling the
/// run (`hash(z ++ z) = hash(z) * BASE^len(z) + hash(z)`) and adding one zero byte where
/// `n` has a one.
fn zeros_hash(n: u64) -> (u64, u64) {
    let (mut hash, mut pow) = (0u64, 1u64);
    for bit in (0..u64::BITS - n.leading_zeros()).rev() {
        hash = hash.wrapping_mul(pow).wrapping_add(hash);
        pow = pow.wrapping_mul(pow);
        if (n >> bit) & 1 == 1 {
            hash = hash.wrapping_mul(BASE).wrapping_add(1);
            pow = pow.wrapping_mul(BASE);
        }
    }
    (hash, pow)
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

/// What one piece of content holds: bytes of the history (an operation's data or a part
/// of it), or a run of zero bytes (the fill of a write past the end or of a truncation
/// upwards, never materialized: it may be huge). Never empty.
#[derive(Debug, Clone, Copy)]
enum Chunk<'h> {
    Bytes(&'h [u8]),
    Zeros(u64),
}

impl<'h> Chunk<'h> {
    fn len(&self) -> u64 {
        match self {
            Chunk::Bytes(b) => b.len() as u64,
            Chunk::Zeros(n) => *n,
        }
    }

    /// Its hash and `BASE^len`: O(len) for bytes, O(log len) for zeros.
    fn hash_pow(&self) -> (u64, u64) {
        match self {
            Chunk::Bytes(b) => (poly_hash(b), pow(b.len() as u64)),
            Chunk::Zeros(n) => zeros_hash(*n),
        }
    }

    /// Its bytes `start..end` (`start <= end <= len`).
    fn slice(&self, start: u64, end: u64) -> Chunk<'h> {
        match self {
            // Both bounds are at most the slice's length, a `usize`.
            Chunk::Bytes(b) => Chunk::Bytes(b.get(start as usize..end as usize).unwrap_or(&[])),
            Chunk::Zeros(_) => Chunk::Zeros(end - start),
        }
    }

    /// Whether its bytes `start..start + n` equal `other`'s bytes `other_start..`.
    fn range_eq(&self, start: u64, other: &Chunk<'_>, other_start: u64, n: u64) -> bool {
        match (
            self.slice(start, start + n),
            other.slice(other_start, other_start + n),
        ) {
            (Chunk::Bytes(a), Chunk::Bytes(b)) => a == b,
            (Chunk::Zeros(_), Chunk::Zeros(_)) => true,
            (Chunk::Zeros(_), Chunk::Bytes(b)) | (Chunk::Bytes(b), Chunk::Zeros(_)) => {
                b.iter().all(|&x| x == 0)
            }
        }
    }

    /// Whether it holds exactly `value` (of the same length).
    fn eq_bytes(&self, value: &[u8]) -> bool {
        match self {
            Chunk::Bytes(b) => *b == value,
            Chunk::Zeros(n) => *n == value.len() as u64 && value.iter().all(|&x| x == 0),
        }
    }
}

/// One non-empty piece of a file's content and everything before it.
struct Piece<'h> {
    chunk: Chunk<'h>,
    prev: Option<Rc<Piece<'h>>>,
    /// Length of the whole content up to and including this piece.
    len: u64,
    /// Hash of the whole content up to and including this piece.
    hash: u64,
}

impl Piece<'_> {
    /// Where this piece starts in the content.
    fn start(&self) -> u64 {
        self.len - self.chunk.len()
    }
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
/// everything before and copies nothing. Writing at an offset or truncating shares the
/// pieces before the change and rebuilds the list after it, without copying bytes: its
/// pieces point into the operations' data or are runs of zeros.
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

    /// The content followed by `chunk`, whose hash and `BASE^len` are given. The caller
    /// makes sure the total length fits in a `u64`.
    fn push(&self, chunk: Chunk<'h>, (hash, pow): (u64, u64)) -> Self {
        if chunk.len() == 0 {
            return self.clone();
        }
        Content(Some(Rc::new(Piece {
            chunk,
            prev: self.0.clone(),
            len: self.len() + chunk.len(),
            hash: self.hash().wrapping_mul(pow).wrapping_add(hash),
        })))
    }

    fn append(&self, data: &Data<'h>) -> Self {
        self.push(Chunk::Bytes(data.bytes), (data.hash, data.pow))
    }

    /// The content followed by `n` zero bytes.
    fn zeros(&self, n: u64) -> Self {
        let chunk = Chunk::Zeros(n);
        self.push(chunk, chunk.hash_pow())
    }

    /// The first `n` bytes (`n <= len`): the pieces before the cut are shared.
    fn prefix(&self, n: u64) -> Self {
        let mut piece = &self.0;
        while let Some(p) = piece {
            if p.len <= n {
                return Content(Some(Rc::clone(p)));
            }
            let start = p.start();
            if start < n {
                let chunk = p.chunk.slice(0, n - start);
                return Content(p.prev.clone()).push(chunk, chunk.hash_pow());
            }
            piece = &p.prev;
        }
        Content::default()
    }

    /// The chunks holding the bytes from `n` on (`n <= len`), in order, each with its hash
    /// and `BASE^len`. A whole piece's hash comes from the running hashes (`hash(piece) =
    /// hash(up to it) - hash(before it) * BASE^len`), without reading its bytes; only the
    /// piece cut at `n` is hashed anew.
    fn suffix(&self, n: u64) -> Vec<(Chunk<'h>, (u64, u64))> {
        let mut chunks = Vec::new();
        let mut piece = self.0.as_deref();
        while let Some(p) = piece.filter(|p| p.len > n) {
            let start = p.start();
            if start >= n {
                let pow = pow(p.chunk.len());
                let before = p.prev.as_ref().map_or(0, |q| q.hash);
                let hash = p.hash.wrapping_sub(before.wrapping_mul(pow));
                chunks.push((p.chunk, (hash, pow)));
            } else {
                let chunk = p.chunk.slice(n - start, p.chunk.len());
                chunks.push((chunk, chunk.hash_pow()));
            }
            piece = p.prev.as_deref();
        }
        chunks.reverse();
        chunks
    }

    /// The content after writing `data` at `offset` (zeros fill any gap past the end); the
    /// caller makes sure `offset + len` fits in a `u64`. At or past the end it is an append
    /// (of the fill, then the data); inside, the pieces before `offset` are shared and the
    /// bytes the data does not cover are re-linked after it.
    fn write_at(&self, offset: u64, data: &Data<'h>) -> Self {
        let len = self.len();
        if offset >= len {
            return self.zeros(offset - len).append(data);
        }
        let end = offset + data.bytes.len() as u64;
        let mut content = self.prefix(offset).append(data);
        if end < len {
            for (chunk, hash_pow) in self.suffix(end) {
                content = content.push(chunk, hash_pow);
            }
        }
        content
    }

    /// The content cut or extended with zeros to `size` bytes.
    fn truncate(&self, size: u64) -> Self {
        let len = self.len();
        if size >= len {
            self.zeros(size - len)
        } else {
            self.prefix(size)
        }
    }

    /// Whether the content is exactly `value`.
    fn eq_bytes(&self, value: &[u8]) -> bool {
        if self.len() != value.len() as u64 {
            return false;
        }
        let mut end = value.len();
        let mut piece = self.0.as_deref();
        while let Some(p) = piece {
            let Some(start) = usize::try_from(p.chunk.len())
                .ok()
                .and_then(|n| end.checked_sub(n))
            else {
                return false;
            };
            if !value.get(start..end).is_some_and(|v| p.chunk.eq_bytes(v)) {
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
        let (mut ai, mut bi) = (
            a.map_or(0, |p| p.chunk.len()),
            b.map_or(0, |p| p.chunk.len()),
        );
        loop {
            while let (0, Some(p)) = (ai, a) {
                a = p.prev.as_deref();
                ai = a.map_or(0, |p| p.chunk.len());
            }
            while let (0, Some(p)) = (bi, b) {
                b = p.prev.as_deref();
                bi = b.map_or(0, |p| p.chunk.len());
            }
            match (a, b) {
                (None, None) => return true,
                (Some(pa), Some(pb)) => {
                    if std::ptr::eq(pa, pb) && ai == bi {
                        // The same piece at the same point: everything before is shared.
                        return true;
                    }
                    let n = ai.min(bi);
                    if !pa.chunk.range_eq(ai - n, &pb.chunk, bi - n, n) {
                        return false;
                    }
                    ai -= n;
                    bi -= n;
                }
                _ => return false,
            }
        }
    }

    /// The bytes `start..end` (`start <= end <= len`; for messages, so a short range).
    fn range(&self, start: u64, end: u64) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut piece = self.0.as_deref();
        while let Some(p) = piece.filter(|p| p.len > start) {
            let (from, to) = (p.start().max(start), p.len.min(end));
            if from < to {
                parts.push(p.chunk.slice(from - p.start(), to - p.start()));
            }
            piece = p.prev.as_deref();
        }
        parts.reverse();
        let mut out = Vec::new();
        for chunk in parts {
            match chunk {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::Zeros(n) => out.resize(out.len() + n as usize, 0),
            }
        }
        out
    }

    /// Every byte (for tests; messages use [`Display`](fmt::Display), which shortens).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.range(0, self.len())
    }
}

impl fmt::Display for Content<'_> {
    /// Like [`Bytes`], without materializing a long content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.len();
        if len <= Bytes::SHOWN as u64 {
            return write!(f, "{}", Bytes(&self.range(0, len)));
        }
        let head = self.range(0, (Bytes::SHOWN - Bytes::TAIL) as u64);
        let tail = self.range(len - Bytes::TAIL as u64, len);
        Bytes::fmt_long(f, &head, &tail, len)
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
            FileState::Present(c) => write!(f, "holds {c}"),
        }
    }
}

/// What an operation does, in the model.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'h> {
    Create,
    Append(Data<'h>),
    Put(Data<'h>),
    WriteAt { offset: u64, data: Data<'h> },
    Truncate(u64),
    Read,
    Delete,
}

impl Action<'_> {
    /// Whether it may change a present file other than by adding bytes at the end (or
    /// make it absent): the operations that switch the read-prefix pruning off while they
    /// may still come.
    pub(crate) fn may_rewrite(&self) -> bool {
        matches!(
            self,
            Action::Put(_) | Action::Delete | Action::WriteAt { .. } | Action::Truncate(_)
        )
    }
}

/// What was observed of an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Observed<'h> {
    /// Outcome unknown: any answer will do.
    Any,
    /// Succeeded (an append: at an unknown offset; a write at an offset or a truncation:
    /// to an unknown size).
    Done,
    /// An append succeeded at this offset.
    Appended(u64),
    /// A write at an offset or a truncation succeeded, leaving the file this long.
    Size(u64),
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
            Observed::Size(size) => write!(f, "ok, size {size}"),
            Observed::Value(v) => write!(f, "{}", Bytes(v)),
            Observed::Error(e) => write!(f, "{e}"),
        }
    }
}

/// What the model answers to an operation in a given state.
pub(crate) enum Answer<'s, 'h> {
    Done,
    Appended(u64),
    Size(u64),
    Value(&'s Content<'h>),
    Error(ErrorKind),
}

impl fmt::Display for Answer<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Done => f.write_str("ok"),
            Answer::Appended(offset) => write!(f, "ok at offset {offset}"),
            Answer::Size(size) => write!(f, "ok, size {size}"),
            Answer::Value(c) => write!(f, "{c}"),
            Answer::Error(e) => write!(f, "{e}"),
        }
    }
}

/// The model's answer to `action` in `state`.
///
/// A write whose end would be past `2^64 - 1` bytes cannot succeed (dfs refuses it): the
/// model answers [`ErrorKind::Rejected`], which only an unknown outcome fits.
pub(crate) fn answer<'s, 'h>(state: &'s FileState<'h>, action: &Action<'h>) -> Answer<'s, 'h> {
    match (action, state) {
        (Action::Create, FileState::Absent) => Answer::Done,
        (Action::Create, FileState::Present(_)) => Answer::Error(ErrorKind::AlreadyExists),
        (Action::Append(_), FileState::Absent) => Answer::Appended(0),
        (Action::Append(data), FileState::Present(c)) => {
            match c.len().checked_add(data.bytes.len() as u64) {
                Some(_) => Answer::Appended(c.len()),
                None => Answer::Error(ErrorKind::Rejected),
            }
        }
        (Action::Put(_), _) => Answer::Done,
        (Action::WriteAt { offset, data }, FileState::Present(c)) => {
            match offset.checked_add(data.bytes.len() as u64) {
                Some(end) => Answer::Size(end.max(c.len())),
                None => Answer::Error(ErrorKind::Rejected),
            }
        }
        (Action::Truncate(size), FileState::Present(_)) => Answer::Size(*size),
        (Action::Read, FileState::Present(c)) => Answer::Value(c),
        (
            Action::Read | Action::Delete | Action::WriteAt { .. } | Action::Truncate(_),
            FileState::Absent,
        ) => Answer::Error(ErrorKind::NotFound),
        (Action::Delete, FileState::Present(_)) => Answer::Done,
    }
}

/// Whether the model's answer matches what was observed.
pub(crate) fn fits(answer: &Answer<'_, '_>, observed: &Observed<'_>) -> bool {
    match (observed, answer) {
        (Observed::Any, _) => true,
        (Observed::Done, Answer::Done | Answer::Appended(_) | Answer::Size(_)) => true,
        (Observed::Appended(seen), Answer::Appended(model)) => seen == model,
        (Observed::Size(seen), Answer::Size(model)) => seen == model,
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
        (Action::WriteAt { offset, data }, FileState::Present(c)) => {
            FileState::Present(c.write_at(*offset, data))
        }
        (Action::Truncate(size), FileState::Present(c)) => FileState::Present(c.truncate(*size)),
        (Action::Delete, _) => FileState::Absent,
        // The rest answer without a change or with an error.
        (Action::Create | Action::Read | Action::WriteAt { .. } | Action::Truncate(_), _) => {
            state.clone()
        }
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
    fn a_run_of_zeros_hashes_like_its_bytes() {
        for n in [0u64, 1, 2, 3, 5, 8, 63, 64, 100, 1000] {
            let bytes = vec![0u8; n as usize];
            assert_eq!(zeros_hash(n), (poly_hash(&bytes), pow(n)), "{n} zeros");
        }
    }

    /// The bytes `write_at` and `truncate` should give, computed naively.
    fn naive_write(content: &[u8], offset: usize, data: &[u8]) -> Vec<u8> {
        let mut v = content.to_vec();
        if v.len() < offset + data.len() {
            v.resize(offset + data.len(), 0);
        }
        v[offset..offset + data.len()].copy_from_slice(data);
        v
    }

    #[test]
    fn writes_at_offsets_and_truncations_match_a_naive_byte_vector() {
        let base = build(&[b"abc", b"defg", b"hi"]);
        let expected = b"abcdefghi".to_vec();
        assert_eq!(base.to_vec(), expected);
        let datas: [&[u8]; 4] = [b"", b"X", b"XYZ", b"XYZUVWXYZUVW"];
        for offset in 0..14u64 {
            for data in datas {
                let got = base.write_at(offset, &Data::new(data));
                let want = naive_write(&expected, offset as usize, data);
                assert_eq!(got.to_vec(), want, "write {data:?} at {offset}");
                assert_eq!(got.len(), want.len() as u64);
                assert_eq!(
                    got.hash(),
                    poly_hash(&want),
                    "hash after {data:?} at {offset}"
                );
                assert!(got.eq_bytes(&want) && got.same(&Content::of(&Data::new(&want))));
            }
        }
        for size in 0..14u64 {
            let got = base.truncate(size);
            let mut want = expected.clone();
            want.resize(size as usize, 0);
            assert_eq!(got.to_vec(), want, "truncate to {size}");
            assert_eq!(got.hash(), poly_hash(&want));
            assert!(got.same(&Content::of(&Data::new(&want))));
            assert!(!got.same(&base) || size == expected.len() as u64);
        }
    }

    #[test]
    fn zero_fills_compare_with_bytes_and_other_fills() {
        let zeros = [0u8; 6];
        let a = Content::default().truncate(6);
        let b = Content::default().truncate(2).truncate(6);
        let c = Content::of(&Data::new(&zeros));
        let d = Content::default()
            .write_at(3, &Data::new(b"\0"))
            .truncate(6);
        assert!(a.same(&b) && b.same(&c) && c.same(&d) && d.same(&a));
        assert!(a.eq_bytes(&zeros) && !a.eq_bytes(b"\0\0\0\0\0\x01"));
        let e = a.write_at(5, &Data::new(b"\x01"));
        assert!(!e.same(&a) && e.eq_bytes(b"\0\0\0\0\0\x01"));
        assert!(a.is_prefix_of(b"\0\0\0\0\0\0x") && !a.is_prefix_of(b"\0\0\0\0\0x"));
    }

    #[test]
    fn a_huge_zero_fill_is_never_materialized() {
        let big = Content::of(&Data::new(b"head")).truncate(1 << 50);
        assert_eq!(big.len(), 1 << 50);
        let end = big.write_at((1 << 50) - 4, &Data::new(b"tail"));
        assert!(end.same(&end.truncate(1 << 50)));
        assert!(!end.same(&big) && end.len() == big.len());
        let shown = format!("{end}");
        assert!(
            shown.starts_with("\"head\\x00") && shown.contains("\\x00tail\""),
            "{shown}"
        );
        assert!(!big.eq_bytes(b"head") && !big.is_prefix_of(b"head"));
        assert!(big.truncate(4).eq_bytes(b"head"));
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
