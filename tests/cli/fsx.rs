//! An fsx-style checker: a seeded, deterministic sequence of random operations on one file
//! (writes at random offsets, past the end too; truncates down and up; appends through an
//! `O_APPEND` handle; reads at random offsets; fsync; close and reopen; size checks), each
//! checked against an in-memory model of what the file must hold. It takes any directory, so
//! it is checked against a plain local one here (`fsx_checker_*`) and run against the mount
//! in `mount.rs`.
//!
//! A mismatch is reported with the seed, the op number, the last [`HISTORY`] ops and the
//! first differing offset: `DFS_FSX_SEED=<seed>` repeats the run.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Ops shown when a check fails.
pub(crate) const HISTORY: usize = 30;

/// A small deterministic generator (SplitMix64): the same seed, the same choices.
#[derive(Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A `usize` in `0..n` (`n` > 0).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("fits")
    }

    /// `len` pseudo-random bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The seed of a run: `DFS_FSX_SEED` if set, else `default`.
pub(crate) fn seed_or(default: u64) -> u64 {
    std::env::var("DFS_FSX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How a run is shaped.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) seed: u64,
    pub(crate) ops: u64,
    /// Writes and truncates stay below this size (appends may go a little past it).
    pub(crate) max_len: u64,
    /// The largest write, append or read.
    pub(crate) max_io: u64,
    /// Counts the ops done so far, for a caller watching the progress (optional).
    pub(crate) progress: Option<Arc<AtomicU64>>,
    /// For the checker's own test: after this op, change one byte of the file behind the
    /// checker's back, so the next check covering it must fail.
    pub(crate) sabotage_after: Option<u64>,
}

impl Config {
    pub(crate) fn new(seed: u64, ops: u64) -> Config {
        Config {
            seed,
            ops,
            max_len: 256 << 10,
            max_io: 64 << 10,
            progress: None,
            sabotage_after: None,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) ops: u64,
    pub(crate) writes: u64,
    pub(crate) appends: u64,
    pub(crate) truncates: u64,
    pub(crate) reads: u64,
    pub(crate) fsyncs: u64,
    pub(crate) reopens: u64,
    pub(crate) stats: u64,
    /// Bytes read and compared.
    pub(crate) checked_bytes: u64,
    pub(crate) final_len: u64,
    pub(crate) elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ops in {:.1?} ({} writes, {} appends, {} truncates, {} reads of {} bytes in all, \
             {} fsyncs, {} reopens, {} stats), final size {}",
            self.ops,
            self.elapsed,
            self.writes,
            self.appends,
            self.truncates,
            self.reads,
            self.checked_bytes,
            self.fsyncs,
            self.reopens,
            self.stats,
            self.final_len
        )
    }
}

/// One run on one file.
struct Fsx {
    config: Config,
    path: PathBuf,
    rng: Rng,
    model: Vec<u8>,
    file: Option<File>,
    appender: Option<File>,
    history: VecDeque<String>,
    op: u64,
    report: Report,
}

/// Runs `config.ops` random ops on `dir/name` (created, or emptied if it exists) and checks
/// every read and size against the model; then reads the whole file back, through the open
/// handle and after a reopen. The error says what differed, where, and how to repeat it.
pub(crate) fn run(dir: &Path, name: &str, config: Config) -> Result<Report, String> {
    let start = Instant::now();
    let mut fsx = Fsx {
        rng: Rng::new(config.seed),
        path: dir.join(name),
        config,
        model: Vec::new(),
        file: None,
        appender: None,
        history: VecDeque::new(),
        op: 0,
        report: Report::default(),
    };
    fsx.open(true)?;
    while fsx.op < fsx.config.ops {
        fsx.op += 1;
        fsx.step()?;
        if fsx.config.sabotage_after == Some(fsx.op) {
            fsx.sabotage()?;
        }
        if let Some(progress) = &fsx.config.progress {
            progress.store(fsx.op, Ordering::Relaxed);
        }
    }
    fsx.op += 1;
    fsx.log("final: read all".to_owned());
    fsx.check_all("final read")?;
    fsx.log("final: fsync, close, reopen, read all".to_owned());
    fsx.file()?
        .sync_all()
        .map_err(|e| fsx.failed(&format!("final fsync: {e}")))?;
    fsx.file = None;
    fsx.appender = None;
    fsx.open(false)?;
    fsx.check_all("read after the final reopen")?;
    fsx.check_stat()?;
    fsx.report.ops = fsx.config.ops;
    fsx.report.final_len = fsx.model.len() as u64;
    fsx.report.elapsed = start.elapsed();
    Ok(fsx.report)
}

impl Fsx {
    fn log(&mut self, what: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {what}", self.op));
    }

    /// The failure report: the seed, the op, what went wrong, the last ops.
    fn failed(&self, what: &str) -> String {
        let ops: Vec<&str> = self.history.iter().map(String::as_str).collect();
        format!(
            "fsx on {}: seed {} (DFS_FSX_SEED={} repeats it), op {} of {}: {what}\n\
             model size {}; the last {} ops:\n  {}",
            self.path.display(),
            self.config.seed,
            self.config.seed,
            self.op,
            self.config.ops,
            self.model.len(),
            ops.len(),
            ops.join("\n  ")
        )
    }

    fn file(&self) -> Result<&File, String> {
        self.file
            .as_ref()
            .ok_or_else(|| self.failed("no open handle"))
    }

    fn open(&mut self, create: bool) -> Result<(), String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(&self.path)
            .map_err(|e| self.failed(&format!("open: {e}")))?;
        let appender = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| self.failed(&format!("open O_APPEND: {e}")))?;
        self.file = Some(file);
        self.appender = Some(appender);
        Ok(())
    }

    /// An offset and length for a write: mostly inside the file, sometimes past its end.
    fn write_range(&mut self) -> (u64, u64) {
        let len = 1 + self.rng.below(self.config.max_io);
        let size = self.model.len() as u64;
        let off = if self.rng.below(4) == 0 || size == 0 {
            // Past the end (a hole in between) or anywhere below the limit.
            self.rng.below(self.config.max_len)
        } else {
            self.rng.below(size)
        };
        (off, len.min(self.config.max_len.saturating_sub(off)).max(1))
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.below(100) {
            0..=29 => self.write(),
            30..=39 => self.append(),
            40..=49 => self.truncate(),
            50..=84 => self.read(),
            85..=89 => self.fsync(),
            90..=93 => self.reopen(),
            _ => self.check_stat(),
        }
    }

    fn write(&mut self) -> Result<(), String> {
        let (off, len) = self.write_range();
        let data = self.rng.bytes(usize::try_from(len).expect("small"));
        self.log(format!(
            "pwrite off={off} len={len} (size {} -> {})",
            self.model.len(),
            (self.model.len() as u64).max(off + len)
        ));
        self.file()?
            .write_all_at(&data, off)
            .map_err(|e| self.failed(&format!("pwrite off={off} len={len}: {e}")))?;
        let (off, end) = (off as usize, (off + len) as usize);
        if self.model.len() < end {
            self.model.resize(end, 0);
        }
        self.model[off..end].copy_from_slice(&data);
        self.report.writes += 1;
        Ok(())
    }

    fn append(&mut self) -> Result<(), String> {
        let len = 1 + self.rng.below(self.config.max_io / 4);
        let data = self.rng.bytes(usize::try_from(len).expect("small"));
        self.log(format!(
            "append (O_APPEND) len={len} at {}",
            self.model.len()
        ));
        let mut appender = self
            .appender
            .take()
            .ok_or_else(|| self.failed("no O_APPEND handle"))?;
        let written = appender.write_all(&data);
        self.appender = Some(appender);
        written.map_err(|e| self.failed(&format!("append len={len}: {e}")))?;
        self.model.extend_from_slice(&data);
        self.report.appends += 1;
        Ok(())
    }

    fn truncate(&mut self) -> Result<(), String> {
        let size = self.model.len() as u64;
        // Down more often than up, so the file keeps moving in both directions.
        let to = if self.rng.below(3) == 0 || size == 0 {
            self.rng.below(self.config.max_len)
        } else {
            self.rng.below(size + 1)
        };
        self.log(format!("truncate {size} -> {to}"));
        self.file()?
            .set_len(to)
            .map_err(|e| self.failed(&format!("ftruncate to {to}: {e}")))?;
        self.model.resize(usize::try_from(to).expect("small"), 0);
        self.report.truncates += 1;
        Ok(())
    }

    fn read(&mut self) -> Result<(), String> {
        let size = self.model.len() as u64;
        // Sometimes from past the end, which must read nothing.
        let off = self.rng.below(size + size / 8 + 1);
        let len = 1 + self.rng.below(self.config.max_io);
        self.log(format!("pread off={off} len={len} (size {size})"));
        self.check_range(off, len, "pread")
    }

    /// Reads `len` bytes at `off` through the handle (repeating short reads until the end of
    /// file) and compares them with the model.
    fn check_range(&mut self, off: u64, len: u64, what: &str) -> Result<(), String> {
        let mut got = vec![0u8; usize::try_from(len).expect("small")];
        let mut done = 0usize;
        while done < got.len() {
            match self.file()?.read_at(&mut got[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(&format!("{what} off={off} len={len}: {e}"))),
            }
        }
        got.truncate(done);
        let start = usize::try_from(off).expect("small").min(self.model.len());
        let end = (start + usize::try_from(len).expect("small")).min(self.model.len());
        let want = &self.model[start..end];
        self.report.reads += 1;
        self.report.checked_bytes += done as u64;
        if got == want {
            return Ok(());
        }
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let at = off + first as u64;
        let around = |bytes: &[u8]| -> String {
            let from = first.saturating_sub(4).min(bytes.len());
            let to = (first + 12).min(bytes.len());
            format!("{:02x?}", &bytes[from..to])
        };
        Err(self.failed(&format!(
            "{what} off={off} len={len}: got {} bytes, want {}; first differing offset {at} \
             (file offset; got {} want {} from offset {})",
            got.len(),
            want.len(),
            around(&got),
            around(want),
            off + first.saturating_sub(4) as u64
        )))
    }

    fn check_all(&mut self, what: &str) -> Result<(), String> {
        let len = self.model.len() as u64;
        // One byte more than the model: the file must end where the model does.
        self.check_range(0, len + 1, what)
    }

    fn fsync(&mut self) -> Result<(), String> {
        self.log("fsync".to_owned());
        self.file()?
            .sync_all()
            .map_err(|e| self.failed(&format!("fsync: {e}")))?;
        self.report.fsyncs += 1;
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), String> {
        let fsync_first = self.rng.below(2) == 0;
        self.log(format!("close and reopen (fsync first: {fsync_first})"));
        if fsync_first {
            self.file()?
                .sync_all()
                .map_err(|e| self.failed(&format!("fsync before close: {e}")))?;
        }
        self.file = None;
        self.appender = None;
        self.open(false)?;
        self.report.reopens += 1;
        Ok(())
    }

    /// The size through the open handle (fstat) and through the path (stat).
    fn check_stat(&mut self) -> Result<(), String> {
        let want = self.model.len() as u64;
        self.log(format!("stat (want size {want})"));
        let fstat = self
            .file()?
            .metadata()
            .map_err(|e| self.failed(&format!("fstat: {e}")))?
            .len();
        let stat = std::fs::metadata(&self.path)
            .map_err(|e| self.failed(&format!("stat: {e}")))?
            .len();
        self.report.stats += 1;
        if fstat == want && stat == want {
            Ok(())
        } else {
            Err(self.failed(&format!(
                "size: fstat says {fstat}, stat says {stat}, want {want}"
            )))
        }
    }

    /// Flips one byte of the file through a handle of its own (the checker's own test).
    fn sabotage(&mut self) -> Result<(), String> {
        if self.model.is_empty() {
            self.model.push(0);
            self.file()?
                .write_all_at(&[0], 0)
                .map_err(|e| self.failed(&format!("sabotage: {e}")))?;
        }
        let at = self.model.len() as u64 / 2;
        let byte = self.model[usize::try_from(at).expect("small")] ^ 0x5a;
        let other = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| f.write_all_at(&[byte], at))
            .map_err(|e| self.failed(&format!("sabotage: {e}")));
        other?;
        self.log(format!(
            "(sabotage: byte {at} changed behind the checker's back)"
        ));
        Ok(())
    }
}

/// The ops of a quick local run: `DFS_FSX_OPS` if set, else `default`.
pub(crate) fn ops_or(default: u64) -> u64 {
    std::env::var("DFS_FSX_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fsx_checker_agrees_with_a_local_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ops = ops_or(5_000);
    let runs: Vec<_> = [seed_or(1), 2, 3]
        .into_iter()
        .enumerate()
        .map(|(i, seed)| {
            let dir = tmp.path().to_owned();
            std::thread::spawn(move || (seed, run(&dir, &format!("f{i}"), Config::new(seed, ops))))
        })
        .collect();
    for handle in runs {
        let (seed, report) = handle.join().expect("fsx thread");
        let report = report.unwrap_or_else(|e| panic!("{e}"));
        eprintln!("fsx on a local directory, seed {seed}: {report}");
        assert_eq!(report.ops, ops);
        assert!(report.writes > 0 && report.appends > 0 && report.truncates > 0);
        assert!(report.reads > 0 && report.fsyncs > 0 && report.reopens > 0);
    }
}

#[test]
fn fsx_checker_is_deterministic_and_catches_a_changed_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The same seed, the same sequence: identical reports (but for the time).
    let a = run(tmp.path(), "a", Config::new(7, 2_000)).unwrap_or_else(|e| panic!("{e}"));
    let b = run(tmp.path(), "b", Config::new(7, 2_000)).unwrap_or_else(|e| panic!("{e}"));
    let strip = |r: &Report| {
        format!("{r:?}")
            .split(", elapsed")
            .next()
            .map(str::to_owned)
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(
        std::fs::read(tmp.path().join("a")).expect("read a"),
        std::fs::read(tmp.path().join("b")).expect("read b")
    );
    // A byte changed behind its back is found, with the seed, the op and the offset.
    let mut config = Config::new(7, 2_000);
    config.sabotage_after = Some(2_000);
    let err = run(tmp.path(), "c", config).expect_err("the changed byte must be found");
    eprintln!("{err}");
    assert!(err.contains("seed 7 (DFS_FSX_SEED=7"), "{err}");
    assert!(err.contains("first differing offset"), "{err}");
    assert!(err.contains("(sabotage: byte"), "{err}");
    assert!(err.lines().count() > HISTORY / 2, "{err}");
}
