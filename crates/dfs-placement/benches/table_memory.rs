//! Memory of the placement table per file, at 1,000, 100,000 and 1,000,000 files.
//!
//! Each table is built in a process of its own (this program runs itself once per table,
//! with `--one`), so that the memory one table freed cannot hide the next one's growth.
//! Three figures per table, each divided by the number of files:
//!
//! * `live`: the heap bytes the table holds, as asked of the allocator (a counting wrapper
//!   around the system allocator, from the `cap` crate): the map's nodes, the names and the
//!   replica lists, without the allocator's own overhead;
//! * `RSS`: the growth of the process's resident memory (`VmRSS` of `/proc/self/status`)
//!   over the build: what the table really costs with the allocator's chunk headers,
//!   rounding and slack (Linux only, else `-`);
//! * `snapshot`: the table's postcard encoding, as the cluster map's snapshots hold it.
//!
//! Entries are as the cluster map holds them: names of exact capacity (a node decodes
//! them from requests), R = 2 replicas (the default), a file id and an epoch. Two name
//! shapes: 22 bytes (`bench-0123/file-000123`, 1,000 files per directory) and 40 bytes (the
//! names `dfs-bench --workload files` creates, `bench-12345-1764000000000/files/01234/56`).
//! Three ways to fill the table: `ascending` inserts the names in order (as files named in
//! order are created), `scattered` in a fixed stride through them (as unrelated files are),
//! and `loaded` decodes the scattered table's snapshot encoding (as a node that receives or
//! restarts from a snapshot does: serde inserts the entries in order); its RSS growth is not
//! shown, as its process first built and freed the table it encodes.
//!
//! Run with `cargo bench -p dfs-placement --bench table_memory` (about 20 s). Run without
//! `--bench` (as `cargo test --benches` does), it builds only the 1,000-file tables.

use std::process::Command;

use cap::Cap;
use dfs_placement::{Placement, PlacementTable};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// A stride coprime with every table size used (powers of ten), to scatter the inserts.
const STRIDE: usize = 7_919;

/// Makes the `k`th name of a shape.
type NameFn = fn(usize) -> String;

/// The name shapes: their length, and the `k`th name of that shape.
const SHAPES: [(usize, NameFn); 2] = [(22, short_name), (40, long_name)];

/// How a table is filled.
const ORDERS: [&str; 3] = ["ascending", "scattered", "loaded"];

fn short_name(k: usize) -> String {
    format!("bench-{:04}/file-{k:06}", k / 1000)
}

fn long_name(k: usize) -> String {
    format!(
        "bench-12345-1764000000000/files/{:05}/{:02}",
        k / 100,
        k % 100
    )
}

/// A name of exact capacity, as decoded from a request.
fn exact(mut name: String) -> String {
    name.shrink_to_fit();
    name
}

fn placement(k: usize) -> Placement {
    Placement {
        file_id: k as u64 + 1,
        replicas: vec![1 + k as u64 % 3, 1 + (k as u64 + 1) % 3],
        epoch: 1,
    }
}

/// `VmRSS` of this process, in bytes.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn build(files: usize, name: NameFn, scattered: bool) -> PlacementTable {
    let mut table = PlacementTable::new();
    for i in 0..files {
        let k = if scattered { i * STRIDE % files } else { i };
        table
            .insert(exact(name(k)), placement(k))
            .expect("names are distinct");
    }
    table
}

/// Builds one table in this process; prints its live bytes, RSS growth (or `-`) and
/// encoded size, all in bytes.
fn one(files: usize, shape: usize, order: &str) {
    let (len, name) = SHAPES[shape];
    assert_eq!(name(files - 1).len(), len, "the names are {len} bytes");
    let (table, live, rss_growth) = if order == "loaded" {
        let bytes = postcard::to_stdvec(&build(files, name, true)).expect("encodes");
        let before = ALLOCATOR.allocated();
        let table: PlacementTable = postcard::from_bytes(&bytes).expect("decodes");
        (table, ALLOCATOR.allocated() - before, None)
    } else {
        let (before, rss_before) = (ALLOCATOR.allocated(), rss());
        let table = build(files, name, order == "scattered");
        let live = ALLOCATOR.allocated() - before;
        let growth = rss_before.zip(rss()).map(|(b, a)| a.saturating_sub(b));
        (table, live, growth)
    };
    assert_eq!(table.len(), files);
    let encoded = postcard::to_stdvec(&table).expect("encodes").len();
    let rss_growth = rss_growth.map_or("-".to_string(), |b| b.to_string());
    println!("{live} {rss_growth} {encoded}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let arg = |k: usize| args.get(i + k).expect("--one FILES SHAPE ORDER");
        one(
            arg(1).parse().expect("a file count"),
            arg(2).parse().expect("a shape index"),
            arg(3),
        );
        return;
    }
    let sizes: &[usize] = if args.iter().any(|a| a == "--bench") {
        &[1_000, 100_000, 1_000_000]
    } else {
        &[1_000]
    };
    let exe = std::env::current_exe().expect("this program's path");
    println!("placement table memory per file (R = 2; see the source for what each column is)");
    println!(
        "{:>9}  {:>4}  {:<9}  {:>11}  {:>10}  {:>15}",
        "files", "name", "order", "live B/file", "RSS B/file", "snapshot B/file"
    );
    for (shape, (len, _)) in SHAPES.iter().enumerate() {
        for &files in sizes {
            for order in ORDERS {
                let out = Command::new(&exe)
                    .args(["--one", &files.to_string(), &shape.to_string(), order])
                    .output()
                    .expect("run a measurement");
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{files} {len} {order}: {}{text}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let per_file = |field: Option<&str>| match field.and_then(|f| f.parse::<u64>().ok())
                {
                    Some(bytes) => format!("{:.1}", bytes as f64 / files as f64),
                    None => "-".to_string(),
                };
                let mut fields = text.split_whitespace();
                let (live, rss, encoded) = (fields.next(), fields.next(), fields.next());
                println!(
                    "{files:>9}  {len:>4}  {order:<9}  {:>11}  {:>10}  {:>15}",
                    per_file(live),
                    per_file(rss),
                    per_file(encoded)
                );
            }
        }
    }
}
