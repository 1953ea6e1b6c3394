//! A small seeded mutator: byte-level mutations in the manner of libFuzzer's, and
//! frame-aware ones that keep (or deliberately break) the 4-byte length prefixes of a frame
//! stream so that mutated bodies reach the message decoder.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};

/// Inputs grow to at most this many bytes (a frame body may be 1 MiB; the decoders' limits
/// are tested separately with inputs built for them).
pub const INPUT_BYTES_MAX: usize = 64 * 1024;

/// Varints that announce absurd lengths or values: `u32::MAX`, `u64::MAX`, `2^32`, `2^40`,
/// `2^63`, and an over-long one (eleven bytes; postcard allows ten at most).
pub const HUGE_VARINTS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x10],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x20],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ],
];

/// Byte values that often sit on a decoder's edge.
const INTERESTING_BYTES: &[u8] = &[0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xfe, 0xff];

/// Wider values that often sit on an edge, written little- or big-endian.
const INTERESTING_WORDS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x10000,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    1024 * 1024,
    1024 * 1024 + 1,
    i64::MAX as u64,
    u64::MAX,
];

/// A seeded source of mutated inputs: the same seed gives the same inputs, on every
/// platform (xoshiro256++, not the platform-dependent `SmallRng`).
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: Xoshiro256PlusPlus,
}

impl Mutator {
    /// A mutator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The random source, for choices of the caller's own.
    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.rng
    }

    /// A uniformly chosen index below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Up to `max` random bytes.
    pub fn random_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        let mut out = vec![0u8; len];
        self.rng.fill_bytes(&mut out);
        out
    }

    /// Random cut points in `0..len`, sorted, to feed a stream in pieces.
    pub fn splits(&mut self, len: usize) -> Vec<usize> {
        if len < 2 {
            return Vec::new();
        }
        let n = self.below(8.min(len));
        let mut cuts: Vec<usize> = (0..n).map(|_| 1 + self.below(len - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// One to four stacked byte-level mutations of `input`; `others` (may be empty) are
    /// spliced from.
    pub fn bytes(&mut self, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let mut out = input.to_vec();
        let rounds = 1 + self.below(4);
        for _ in 0..rounds {
            self.mutate_once(&mut out, others);
        }
        out.truncate(INPUT_BYTES_MAX);
        out
    }

    /// A mutation of a stream of frames: usually one frame's body mutated with its length
    /// prefix fixed up to match (so the change reaches the message decoder), otherwise a
    /// length prefix changed, frames dropped, repeated or taken from `others`, or the whole
    /// stream mutated as bytes.
    pub fn frames(&mut self, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let (mut frames, rest) = split_frames(input);
        if frames.is_empty() {
            return self.bytes(input, others);
        }
        let i = self.below(frames.len());
        match self.below(10) {
            0..=4 => {
                let body = self.bytes(&frames[i], &[]);
                frames[i] = body;
            }
            5 => {
                // A body mutated, its stale length prefix kept.
                let mut out = join_frames(&frames, &rest);
                let at = frames[..i].iter().map(|f| f.len() + 4).sum::<usize>() + 4;
                let body_len = frames[i].len();
                let body = self.bytes(&frames[i], &[]);
                out.splice(at..at + body_len, body);
                out.truncate(INPUT_BYTES_MAX);
                return out;
            }
            6 => {
                let mut out = join_frames(&frames, &rest);
                let at = frames[..i].iter().map(|f| f.len() + 4).sum::<usize>();
                let len = self.length_tweak(frames[i].len());
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                return out;
            }
            7 => {
                if frames.len() > 1 {
                    frames.remove(i);
                } else {
                    let f = frames[i].clone();
                    frames.push(f);
                }
            }
            8 => {
                if let Some(other) = self.pick(others) {
                    let (theirs, _) = split_frames(&other);
                    if !theirs.is_empty() {
                        let j = self.below(theirs.len());
                        let at = self.below(frames.len() + 1);
                        frames.insert(at, theirs[j].clone());
                    }
                }
            }
            _ => return self.bytes(input, others),
        }
        let mut out = join_frames(&frames, &rest);
        out.truncate(INPUT_BYTES_MAX);
        out
    }

    /// A length prefix for a body of `len` bytes: off by a little, zero, at or over the
    /// frame limit, or random.
    fn length_tweak(&mut self, len: usize) -> u32 {
        let len = len as u32;
        match self.below(8) {
            0 => 0,
            1 => len.saturating_add(1),
            2 => len.saturating_sub(1),
            3 => len.saturating_add(1 + self.below(64) as u32),
            4 => dfs_proto::FRAME_BYTES_MAX as u32,
            5 => dfs_proto::FRAME_BYTES_MAX as u32 + 1,
            6 => u32::MAX,
            _ => self.rng.random(),
        }
    }

    fn pick(&mut self, others: &[Vec<u8>]) -> Option<Vec<u8>> {
        if others.is_empty() {
            None
        } else {
            Some(others[self.below(others.len())].clone())
        }
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>, others: &[Vec<u8>]) {
        let len = out.len();
        match self.below(13) {
            // Flip a bit.
            0 if len > 0 => {
                let i = self.below(len);
                out[i] ^= 1 << self.below(8);
            }
            // An interesting byte, or a random one.
            1 if len > 0 => {
                let i = self.below(len);
                out[i] = INTERESTING_BYTES[self.below(INTERESTING_BYTES.len())];
            }
            2 if len > 0 => {
                let i = self.below(len);
                out[i] = self.rng.random();
            }
            // Insert random bytes.
            3 => {
                let at = self.below(len + 1);
                let bytes = self.random_bytes(16);
                out.splice(at..at, bytes);
            }
            // Delete a range.
            4 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below(16.min(len - at));
                out.drain(at..at + n);
            }
            // Truncate.
            5 if len > 0 => {
                let at = self.below(len);
                out.truncate(at);
            }
            // Copy a range elsewhere.
            6 if len > 1 => {
                let from = self.below(len);
                let n = 1 + self.below(32.min(len - from));
                let chunk = out[from..from + n].to_vec();
                let at = self.below(len + 1);
                out.splice(at..at, chunk);
            }
            // Splice with another input: our head, their tail.
            7 => {
                if let Some(other) = self.pick(others) {
                    let at = self.below(len + 1);
                    let from = self.below(other.len() + 1);
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                } else {
                    self.mutate_once(out, &[]);
                }
            }
            // A huge varint, written over or inserted.
            8 => {
                let v = HUGE_VARINTS[self.below(HUGE_VARINTS.len())];
                let at = self.below(len + 1);
                if self.chance(0.5) {
                    let end = (at + v.len()).min(len);
                    out.splice(at..end, v.iter().copied());
                } else {
                    out.splice(at..at, v.iter().copied());
                }
            }
            // An interesting word over the bytes, little- or big-endian, 2, 4 or 8 wide.
            9 if len > 0 => {
                let w = INTERESTING_WORDS[self.below(INTERESTING_WORDS.len())];
                let width = [2, 4, 8][self.below(3)];
                // The word's low `width` bytes, in the order drawn.
                let (le, be) = (w.to_le_bytes(), w.to_be_bytes());
                let bytes = if self.chance(0.5) {
                    &le[..width]
                } else {
                    &be[8 - width..]
                };
                let at = self.below(len);
                let end = (at + width).min(len);
                out.splice(at..end, bytes.iter().copied());
            }
            // Swap two bytes.
            10 if len > 1 => {
                let (a, b) = (self.below(len), self.below(len));
                out.swap(a, b);
            }
            // Repeat a range a few times.
            11 if len > 0 => {
                let from = self.below(len);
                let n = 1 + self.below(8.min(len - from));
                let chunk = out[from..from + n].to_vec();
                let times = 2 + self.below(64);
                let at = from + n;
                let repeated: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
                out.splice(at..at, repeated);
            }
            // Add or subtract a little from a byte (a length or an enum index nearby).
            12 if len > 0 => {
                let i = self.below(len);
                let delta = 1 + self.below(4) as u8;
                out[i] = if self.chance(0.5) {
                    out[i].wrapping_add(delta)
                } else {
                    out[i].wrapping_sub(delta)
                };
            }
            // The input was too short for the mutation drawn: grow it.
            _ => {
                let bytes = self.random_bytes(8);
                out.extend_from_slice(&bytes);
            }
        }
    }
}

/// Calls `f` with `sample` in which one run of bytes (every start, every length up to
/// `run_max`) is repeated until the input has `levels` copies of it: where the run is one
/// level of a recursive structure, a decoder recursing once per level meets thousands of
/// levels. Inputs stay under [`INPUT_BYTES_MAX`].
pub fn for_each_nesting(sample: &[u8], run_max: usize, levels: usize, mut f: impl FnMut(&[u8])) {
    let mut input = Vec::with_capacity(INPUT_BYTES_MAX);
    for start in 0..sample.len() {
        for n in 1..=run_max.min(sample.len() - start) {
            let end = start + n;
            let copies = levels.min((INPUT_BYTES_MAX - sample.len()) / n);
            input.clear();
            input.extend_from_slice(&sample[..end]);
            for _ in 0..copies {
                input.extend_from_slice(&sample[start..end]);
            }
            input.extend_from_slice(&sample[end..]);
            f(&input);
        }
    }
}

/// Splits a stream into the bodies of its whole frames and what follows the last one (a
/// partial frame, or bytes whose length prefix overruns the stream).
pub fn split_frames(stream: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut frames = Vec::new();
    let mut at = 0;
    while stream.len() - at >= 4 {
        let len = u32::from_be_bytes([stream[at], stream[at + 1], stream[at + 2], stream[at + 3]])
            as usize;
        if stream.len() - at - 4 < len {
            break;
        }
        frames.push(stream[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    (frames, stream[at..].to_vec())
}

/// Frames `bodies` (each with its 4-byte big-endian length) and appends `rest`.
pub fn join_frames(bodies: &[Vec<u8>], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 4).sum::<usize>());
    for body in bodies {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    out.extend_from_slice(rest);
    out
}

/// `body` as one frame: its 4-byte big-endian length, then the body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    join_frames(&[body.to_vec()], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let seed_input = frame(b"hello world");
        let run = |seed| {
            let mut m = Mutator::new(seed);
            (0..200)
                .map(|_| m.frames(&seed_input, std::slice::from_ref(&seed_input)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn frames_split_and_join_back() {
        let stream = join_frames(&[b"ab".to_vec(), Vec::new(), b"cde".to_vec()], &[0, 0, 9]);
        let (frames, rest) = split_frames(&stream);
        assert_eq!(frames, vec![b"ab".to_vec(), Vec::new(), b"cde".to_vec()]);
        assert_eq!(rest, vec![0, 0, 9]);
        assert_eq!(join_frames(&frames, &rest), stream);
    }

    #[test]
    fn mutations_stay_within_the_input_limit() {
        let mut m = Mutator::new(1);
        let mut input = vec![0u8; INPUT_BYTES_MAX];
        for _ in 0..100 {
            input = m.bytes(&input, std::slice::from_ref(&input));
            assert!(input.len() <= INPUT_BYTES_MAX);
        }
    }
}
