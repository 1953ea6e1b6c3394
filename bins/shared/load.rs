//! Closed-loop load and its figures, the same for every load generator: `dfs-bench` (over
//! the dfs client library) and `etcd-bench` (`bench/etcd-bench`, over etcd's gRPC API), so
//! the two systems are driven and measured by the same code.
//!
//! A client is a task that sends one operation, waits for its answer, and sends the next
//! ([`drive`]). A workload's figures ([`Stats`]) are the operations completed, the errors,
//! the payload bytes moved and an HDR histogram of the successful operations' latencies
//! (microsecond resolution, 3 significant digits); they are printed as one row of a table
//! ([`row`], [`aligned`]) or one JSON object ([`workload_json`]).
//!
//! Not every binary uses every part, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;

use super::duration::number_and_unit;

/// The longest latency the histograms hold: one hour, in microseconds.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// The columns of [`row`], in order.
pub const HEADER: [&str; 10] = [
    "workload", "clients", "ops", "errors", "ops/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms",
    "max ms",
];

/// Parses a byte count: digits and an optional unit, `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (n, unit) = number_and_unit(text, "a size such as 4096, 4KiB, 256MiB or 1GiB")?;
    let unit = unit.to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("unknown unit in {text:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Content of SIZE-byte payloads: a fixed pseudo-random block, its first 8 bytes replaced
/// by a number (the operation's or the file's), so two payloads differ.
#[derive(Clone)]
pub struct Payload {
    base: Arc<Vec<u8>>,
}

impl Payload {
    /// Payloads of `size` bytes.
    pub fn new(size: u64) -> Payload {
        Payload {
            base: Arc::new(pseudo_random(size as usize, 0x5eed)),
        }
    }

    /// The payload stamped with `n`.
    pub fn stamped(&self, n: u64) -> Bytes {
        let mut v = self.base.as_ref().clone();
        let stamp = n.to_le_bytes();
        let k = v.len().min(stamp.len());
        v[..k].copy_from_slice(&stamp[..k]);
        Bytes::from(v)
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// xorshift64*: cheap, good enough to pick files.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counts of one task, or of a whole workload once merged.
pub struct Stats {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed (or read the wrong bytes).
    pub errors: u64,
    /// Payload bytes written and read by the successful operations.
    pub bytes: u64,
    /// Latencies of the successful operations, in microseconds.
    pub hist: Histogram<u64>,
    /// What went wrong first, if anything did.
    pub first_error: Option<String>,
}

impl Stats {
    /// Nothing counted yet.
    pub fn new() -> Stats {
        Stats {
            ops: 0,
            errors: 0,
            bytes: 0,
            hist: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds"),
            first_error: None,
        }
    }

    /// Counts a successful operation that took `took` and moved `bytes`.
    pub fn ok(&mut self, took: Duration, bytes: u64) {
        self.ops += 1;
        self.bytes += bytes;
        let us = (took.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        self.hist.saturating_record(us);
    }

    /// Counts a failed operation.
    pub fn err(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Stats) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.hist.add(&other.hist).expect("same bounds");
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Operations per second over `elapsed`.
    pub fn ops_per_s(&self, elapsed: Duration) -> f64 {
        self.ops as f64 / elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload MB (10^6 bytes) per second over `elapsed`.
    pub fn mb_per_s(&self, elapsed: Duration) -> f64 {
        self.bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    /// Latency at quantile `q`, in microseconds (0 when nothing succeeded).
    pub fn latency_us(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// The highest latency, in microseconds (0 when nothing succeeded).
    pub fn max_us(&self) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.max()
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// A workload's figures as one JSON object: `workload`, `clients`, `ops`, `errors`,
/// `first_error`, `bytes`, `elapsed_s`, `ops_per_s`, `mb_per_s` and `latency_us` (`p50`,
/// `p99`, `p999`, `max`, `mean`).
pub fn workload_json(
    workload: &str,
    clients: usize,
    s: &Stats,
    elapsed: Duration,
) -> serde_json::Value {
    json!({
        "workload": workload,
        "clients": clients,
        "ops": s.ops,
        "errors": s.errors,
        "first_error": s.first_error,
        "bytes": s.bytes,
        "elapsed_s": elapsed.as_secs_f64(),
        "ops_per_s": s.ops_per_s(elapsed),
        "mb_per_s": s.mb_per_s(elapsed),
        "latency_us": {
            "p50": s.latency_us(0.5),
            "p99": s.latency_us(0.99),
            "p999": s.latency_us(0.999),
            "max": s.max_us(),
            "mean": if s.hist.is_empty() { 0.0 } else { s.hist.mean() },
        },
    })
}

/// A workload's figures as the cells of a table row, in the order of [`HEADER`].
pub fn row(workload: &str, clients: usize, s: &Stats, elapsed: Duration) -> Vec<String> {
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    vec![
        workload.to_string(),
        clients.to_string(),
        s.ops.to_string(),
        s.errors.to_string(),
        format!("{:.1}", s.ops_per_s(elapsed)),
        format!("{:.2}", s.mb_per_s(elapsed)),
        ms(s.latency_us(0.5)),
        ms(s.latency_us(0.99)),
        ms(s.latency_us(0.999)),
        ms(s.max_us()),
    ]
}

/// `rows` (the header first) as aligned text two spaces apart, one line each: the columns
/// `left` picks aligned left, the others right.
pub fn aligned(rows: &[Vec<String>], left: impl Fn(usize) -> bool) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if left(c) {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// When a run of [`drive`] ends.
#[derive(Clone, Copy)]
pub enum End {
    /// At this instant (an operation under way then is finished and counted).
    At(Instant),
    /// At this value of the operation counter.
    Count(u64),
}

/// Boxed future of one operation: the payload bytes it moved, or what went wrong.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;
/// One operation: given a client, the operation's number and the task's random numbers.
pub type OpFn<C> = Arc<dyn Fn(C, u64, &mut Rng) -> OpFuture + Send + Sync>;

/// Runs `op` on `clients` tasks (task `k` uses `pool[k % pool.len()]`; `pool` is not
/// empty) until `end`, numbering operations with `counter`; their merged counts and the
/// wall-clock time.
pub async fn drive<C: Clone + Send + 'static>(
    pool: &[C],
    clients: usize,
    end: End,
    counter: &Arc<AtomicU64>,
    op: &OpFn<C>,
) -> (Stats, Duration) {
    let started = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let client = pool[k % pool.len()].clone();
            let (op, counter) = (op.clone(), counter.clone());
            let mut rng = Rng((seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
            tokio::spawn(async move {
                let mut stats = Stats::new();
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let over = match end {
                        End::At(t) => Instant::now() >= t,
                        End::Count(n) => i >= n,
                    };
                    if over {
                        break;
                    }
                    let fut = op(client.clone(), i, &mut rng);
                    let t0 = Instant::now();
                    match fut.await {
                        Ok(bytes) => stats.ok(t0.elapsed(), bytes),
                        Err(e) => stats.err(e),
                    }
                }
                stats
            })
        })
        .collect();
    let mut total = Stats::new();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => total.err(format!("a client task failed: {e}")),
        }
    }
    (total, started.elapsed())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "KiB", "1.5MiB", "-1", "4 TB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stamped_payloads_differ_only_in_their_stamp() {
        let p = Payload::new(100);
        let (a, b) = (p.stamped(1), p.stamped(2));
        assert_eq!(a.len(), 100);
        assert_ne!(a, b);
        assert_eq!(a[8..], b[8..]);
        assert_eq!(Payload::new(3).stamped(7).len(), 3);
    }

    #[test]
    fn figures_and_rows() {
        let mut s = Stats::new();
        for us in [100, 200, 300] {
            s.ok(Duration::from_micros(us), 10);
        }
        s.err("first".into());
        s.err("second".into());
        let mut t = Stats::new();
        t.ok(Duration::from_micros(400), 10);
        s.merge(t);
        assert_eq!((s.ops, s.errors, s.bytes), (4, 2, 40));
        assert_eq!(s.first_error.as_deref(), Some("first"));
        let elapsed = Duration::from_secs(2);
        assert_eq!(s.ops_per_s(elapsed), 2.0);
        assert_eq!(s.max_us(), 400);
        let v = workload_json("w", 3, &s, elapsed);
        assert_eq!(v["ops"], 4);
        assert_eq!(v["latency_us"]["max"], 400);
        let r = row("w", 3, &s, elapsed);
        assert_eq!(r.len(), HEADER.len());
        let head: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
        let text = aligned(&[head, r], |c| c == 0);
        assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("w ")));
        assert_eq!(Stats::new().latency_us(0.5), 0);
    }
}
