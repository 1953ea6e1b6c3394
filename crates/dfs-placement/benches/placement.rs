//! Cost of the placement function and of the placement table's operations.
//!
//! * `place/<n>_nodes_r<r>`: [`place`] of one name among `n` member nodes (ids `1..=n`) for
//!   `r` replicas, the result's allocation included. Names cycle through 1024 distinct ones.
//! * `table/<files>/get`, `insert` and `remove`: one operation on a table of `files` names
//!   built once before the timing. They run in batches of 32 operations; each batch's names
//!   (fresh copies, as a node has the name of a request it just decoded) and placements are
//!   made outside the timing.
//!   * `get` looks up placed names in a scattered order (a fixed stride through the
//!     names in the order they were made), so consecutive lookups do not share a path.
//!   * `insert` places names not yet placed, which fall between placed ones all over the
//!     table (a fixed stride again); `remove` removes such names. Each batch is undone
//!     outside the timing (removed after `insert`, inserted before `remove`), so the table
//!     stays within 32 names of `files`. So `remove` finds its names' paths warm in the
//!     cache (the untimed insert just walked them): it flatters a remove on a cold table.
//!
//! Throughput is one element per operation. Run with `cargo bench -p dfs-placement`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dfs_placement::{Placement, PlacementTable, place};

/// Operations timed per batch of `get` / `insert` / `remove`.
const BATCH: usize = 32;

/// A stride coprime with every table size used (powers of ten), to visit names scattered.
const STRIDE: usize = 7_919;

/// The `k`th name: placed names have an even `k`, names to insert an odd one. Names `2i` and
/// `2i + 1` share a directory and sort next to each other, so inserted names land between
/// placed ones.
fn name(k: usize) -> String {
    format!("dir-{:03}/file-{k:09}", k / 2 % 1000)
}

/// A three-replica placement.
fn placement(i: usize) -> Placement {
    Placement {
        file_id: i as u64,
        replicas: vec![1, 2, 3],
        epoch: 1,
    }
}

fn bench_place(c: &mut Criterion) {
    let names: Vec<String> = (0..1024).map(name).collect();
    let mut group = c.benchmark_group("place");
    group.throughput(Throughput::Elements(1));
    for nodes in [3u64, 5, 16] {
        let members: Vec<u64> = (1..=nodes).collect();
        for r in [2usize, 3] {
            let mut i = 0;
            group.bench_function(format!("{nodes}_nodes_r{r}"), |b| {
                b.iter(|| {
                    i = (i + 1) % names.len();
                    place(black_box(&names[i]), black_box(&members), r).expect("enough nodes")
                })
            });
        }
    }
    group.finish();
}

fn bench_table(c: &mut Criterion) {
    for files in [1_000usize, 100_000, 1_000_000] {
        // Placed: names 0, 2, 4, ...; to insert: 1, 3, 5, ..., among them.
        let placed: Vec<String> = (0..files).map(|i| name(2 * i)).collect();
        let mut table = PlacementTable::new();
        for (i, n) in placed.iter().enumerate() {
            table
                .insert(n.clone(), placement(i))
                .expect("names are distinct");
        }

        let mut group = c.benchmark_group(format!("table/{files}"));
        group.throughput(Throughput::Elements(1));

        let mut i = 0;
        group.bench_function("get", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let count = left.min(BATCH);
                    left -= count;
                    // Fresh copies, as a node looks up the name of a request it just decoded.
                    let names: Vec<String> = (0..count)
                        .map(|_| {
                            i = (i + STRIDE) % files;
                            placed[i].clone()
                        })
                        .collect();
                    let start = Instant::now();
                    for n in &names {
                        black_box(table.get(black_box(n)).expect("placed").file_id);
                    }
                    total += start.elapsed();
                }
                total
            })
        });

        // The next `count` names not placed, made on demand (outside the timing) so that
        // over a run they land all over the table, not on a few warm paths.
        let mut next = 0;
        let mut take_fresh = |count: usize| -> Vec<String> {
            (0..count)
                .map(|_| {
                    next = (next + 1) % files;
                    name(2 * (next * STRIDE % files) + 1)
                })
                .collect()
        };

        group.bench_function("insert", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let count = left.min(BATCH);
                    left -= count;
                    let names = take_fresh(count);
                    let batch: Vec<(String, Placement)> =
                        names.iter().map(|n| (n.clone(), placement(0))).collect();
                    let start = Instant::now();
                    for (n, p) in batch {
                        table.insert(n, p).expect("not yet placed");
                    }
                    total += start.elapsed();
                    for n in &names {
                        table.remove(n).expect("just inserted");
                    }
                }
                total
            })
        });

        group.bench_function("remove", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                let mut removed = Vec::with_capacity(BATCH);
                while left > 0 {
                    let count = left.min(BATCH);
                    left -= count;
                    let names = take_fresh(count);
                    for n in &names {
                        table.insert(n.clone(), placement(0)).expect("not placed");
                    }
                    let start = Instant::now();
                    for n in &names {
                        removed.push(table.remove(n).expect("just inserted"));
                    }
                    total += start.elapsed();
                    removed.clear();
                }
                total
            })
        });
        group.finish();
        assert_eq!(table.len(), files, "the benchmarks left the table as built");
        // The tables are big: drop this one before building the next.
        drop(table);
    }
}

criterion_group! {
    name = benches;
    // Moderate by default, so the whole `cargo bench` stays short; the command line overrides.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_place, bench_table
}
criterion_main!(benches);
