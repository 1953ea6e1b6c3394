//! A fuzz campaign: how many inputs, from which seed, and a failure reported with what is
//! needed to replay it.
//!
//! | variable | meaning |
//! |---|---|
//! | `DFS_FUZZ_ITERS` | inputs per campaign (each test has its own small default) |
//! | `DFS_FUZZ_SEED` | the seed, decimal or `0x` hex; `random` draws one (printed on failure) |
//! | `DFS_FUZZ_REPLAY` | `<target>:<hex>` or `<target>:@<file>`: run only that input, in that target's campaigns |
//! | `DFS_FUZZ_TRACE` | save every input to `fuzz/artifacts/<target>/last-input` before running it: after a crash that kills the process (a stack overflow, an allocation failure), that file holds the input |

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::mutate::Mutator;

/// Inputs per campaign.
pub const ITERS_ENV: &str = "DFS_FUZZ_ITERS";
/// The campaign's seed.
pub const SEED_ENV: &str = "DFS_FUZZ_SEED";
/// One input to replay, `<target>:<hex>` or `<target>:@<file>`.
pub const REPLAY_ENV: &str = "DFS_FUZZ_REPLAY";
/// Save each input before it runs (see the module's documentation).
pub const TRACE_ENV: &str = "DFS_FUZZ_TRACE";

/// An input that takes longer than this to check counts as a hang.
pub const SLOW_INPUT: Duration = Duration::from_secs(5);

/// Inputs up to this size are printed in hex in a failure report; larger ones only saved.
const PRINTED_BYTES_MAX: usize = 4096;

/// One target's run: its seed, its number of inputs, and the checks around each input.
#[derive(Debug)]
pub struct Campaign {
    target: String,
    seed: u64,
    iters: usize,
    trace: bool,
    replay: Option<Vec<u8>>,
    peak: Option<(fn() -> usize, usize)>,
    runs: Cell<usize>,
}

impl Campaign {
    /// A campaign for `target` (a corpus directory's name, see [`crate::TARGETS`]) of
    /// `default_iters` inputs unless [`ITERS_ENV`] says otherwise, seeded from [`SEED_ENV`]
    /// or else from the target's name (so every run is the same).
    ///
    /// # Panics
    /// If a variable is set to something that does not parse.
    pub fn new(target: &str, default_iters: usize) -> Self {
        let iters = match std::env::var(ITERS_ENV) {
            Ok(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{ITERS_ENV}={v:?} is not a number")),
            Err(_) => default_iters,
        };
        let seed = match std::env::var(SEED_ENV) {
            Ok(v) if v.trim() == "random" => rand::random(),
            Ok(v) => {
                parse_u64(v.trim()).unwrap_or_else(|| panic!("{SEED_ENV}={v:?} is not a number"))
            }
            Err(_) => fnv1a(target.as_bytes()),
        };
        let replay = std::env::var(REPLAY_ENV).ok().and_then(|v| {
            let (t, input) = v.split_once(':')?;
            (t == target).then(|| parse_input(input))
        });
        let skip_all = replay.is_none() && std::env::var(REPLAY_ENV).is_ok();
        Self {
            target: target.to_owned(),
            seed,
            // Replaying another target's input: this campaign runs nothing.
            iters: if skip_all { 0 } else { iters },
            trace: std::env::var_os(TRACE_ENV).is_some(),
            replay,
            peak: None,
            runs: Cell::new(0),
        }
    }

    /// Also fails an input after which `probe` (the heap's peak so far, in bytes) reads more
    /// than `limit`.
    pub fn with_heap_peak(mut self, probe: fn() -> usize, limit: usize) -> Self {
        self.peak = Some((probe, limit));
        self
    }

    /// The target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many mutated inputs the campaign makes.
    pub fn iters(&self) -> usize {
        self.iters
    }

    /// The input to replay, if this campaign replays one.
    pub fn replay(&self) -> Option<&[u8]> {
        self.replay.as_deref()
    }

    /// Inputs checked so far.
    pub fn runs(&self) -> usize {
        self.runs.get()
    }

    /// The mutator of this campaign's seed.
    pub fn mutator(&self) -> Mutator {
        Mutator::new(self.seed)
    }

    /// The standard loop: every seed as it is, then [`Self::iters`] inputs, the `i`-th a
    /// mutation (by `mutate`) of seed `i mod n` or, one time in four, of the input before;
    /// each checked with [`Self::check`]. With a replay, checks only that input. Returns
    /// the number of inputs checked.
    pub fn fuzz(
        &self,
        seeds: &[Vec<u8>],
        mut mutate: impl FnMut(&mut Mutator, &[u8], &[Vec<u8>]) -> Vec<u8>,
        check: impl Fn(&[u8]),
    ) -> usize {
        if let Some(input) = self.replay() {
            self.check(0, input, &check);
            return self.runs();
        }
        if self.iters == 0 {
            return 0;
        }
        for (i, seed) in seeds.iter().enumerate() {
            self.check(i, seed, &check);
        }
        let mut m = self.mutator();
        let mut last: Vec<u8> = Vec::new();
        for i in 0..self.iters {
            let base = if !last.is_empty() && m.chance(0.25) {
                last.clone()
            } else if seeds.is_empty() {
                Vec::new()
            } else {
                seeds[i % seeds.len()].clone()
            };
            last = mutate(&mut m, &base, seeds);
            self.check(seeds.len() + i, &last, &check);
        }
        self.runs()
    }

    /// Runs `check` on `input`; if it panics, takes longer than [`SLOW_INPUT`] or (with
    /// [`Self::with_heap_peak`]) leaves the heap's peak over its limit, saves the input and
    /// panics with a report: the seed, the input's number, the input in hex and how to
    /// replay it.
    pub fn check(&self, number: usize, input: &[u8], check: impl Fn(&[u8])) {
        if self.trace {
            // Slow (a file write per input), but survives an abort of the process.
            let _ = save_artifact(&self.target, "last-input", input);
            let _ = save_artifact(
                &self.target,
                "last-input-number",
                number.to_string().as_bytes(),
            );
        }
        self.runs.set(self.runs.get() + 1);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
        let took = started.elapsed();
        let failure = match outcome {
            Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
            Ok(()) if took > SLOW_INPUT => Some(format!("took {took:?} (over {SLOW_INPUT:?})")),
            Ok(()) => self.peak.and_then(|(probe, limit)| {
                let peak = probe();
                (peak > limit).then(|| format!("the heap peaked at {peak} bytes (over {limit})"))
            }),
        };
        if let Some(why) = failure {
            panic!("{}", self.report(number, input, &why));
        }
    }

    /// What a failure prints: the cause, the seed, the input and how to replay it.
    pub fn report(&self, number: usize, input: &[u8], why: &str) -> String {
        let saved = save_artifact(
            &self.target,
            &format!("stable-{:#x}-{number}", self.seed),
            input,
        );
        let shown = if input.len() <= PRINTED_BYTES_MAX {
            hex(input)
        } else {
            format!("({} bytes, not printed)", input.len())
        };
        let replay = match (&saved, input.len() <= PRINTED_BYTES_MAX) {
            (_, true) => format!("{}:{}", self.target, hex(input)),
            (Some(path), false) => format!("{}:@{}", self.target, path.display()),
            (None, false) => format!("{}:@<file>", self.target),
        };
        format!(
            "fuzz target `{}` failed on input #{number}: {why}\n  \
             {SEED_ENV}={:#x} {ITERS_ENV}={}\n  \
             input ({} bytes): {shown}\n  \
             saved: {}\n  \
             replay: {REPLAY_ENV}={replay} cargo test -p dfs-fuzz",
            self.target,
            self.seed,
            self.iters,
            input.len(),
            saved.map_or_else(
                || "(could not save)".to_owned(),
                |p| p.display().to_string()
            ),
        )
    }
}

/// Saves a failing input under `fuzz/artifacts/<target>/<name>` (where cargo-fuzz puts its
/// own, ignored by git); `None` if it cannot be written.
pub fn save_artifact(target: &str, name: &str, input: &[u8]) -> Option<PathBuf> {
    let dir = crate::corpus::repo_root()
        .join("fuzz")
        .join("artifacts")
        .join(target);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(name);
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses [`hex`]'s output (whitespace ignored); `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

fn parse_input(text: &str) -> Vec<u8> {
    if let Some(path) = text.strip_prefix('@') {
        std::fs::read(path).unwrap_or_else(|e| panic!("{REPLAY_ENV}: cannot read {path}: {e}"))
    } else {
        unhex(text).unwrap_or_else(|| panic!("{REPLAY_ENV}: {text:?} is not hex"))
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// FNV-1a: a fixed seed per target name.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("0a 0B\n"), Some(vec![10, 11]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_failure_names_the_seed_and_the_input() {
        let campaign = Campaign::new("self_test", 1);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            campaign.check(3, &[0xab, 0xcd], |input| assert!(input.is_empty(), "boom"));
        }))
        .expect_err("fails");
        let report = panic_message(&*caught);
        assert!(report.contains("boom"), "{report}");
        assert!(report.contains("abcd"), "{report}");
        assert!(report.contains(SEED_ENV), "{report}");
        assert!(report.contains("self_test:abcd"), "{report}");
        let _ = std::fs::remove_dir_all(
            crate::corpus::repo_root()
                .join("fuzz")
                .join("artifacts")
                .join("self_test"),
        );
    }
}
