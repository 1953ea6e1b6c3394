//! `dfs-bench`: a load generator for dfs; how fast a cluster serves the workloads that
//! matter, measured through the client library ([`dfs::client::Client`]) as an application
//! would use it.
//!
//! It drives a running cluster (`--servers`, default `$DFS_SERVERS`), or with `--spawn`
//! starts real `dfs-server` processes of its own (three, or `--nodes N` from R to 32; the
//! binary next to this one, or `--server`) on free loopback ports in a fresh temporary
//! directory, with replication factor 2 and fsync on (the defaults), and stops them and
//! removes their data when it ends (on an error or Ctrl-C too). The report gives the
//! cluster's node count (as its `status` lists the members).
//!
//! # Workloads
//! Each runs with `--clients` concurrent clients for `--duration` (or for `--ops`
//! operations), after a `--warmup` whose operations are not counted; `SIZE` is `--size`
//! (4 KiB by default).
//!
//! - `append`: durable appends of SIZE bytes, each to one of `--files` files at random
//!   (acknowledged only once on R disks: fsync on);
//! - `put`: puts of SIZE bytes, each to a new file;
//! - `read`: linearizable reads of SIZE bytes, each of one of `--files` files written
//!   before the workload starts;
//! - `mix`: 90% reads as in `read`, 10% appends of SIZE bytes to the same files (reads
//!   read each file's first SIZE bytes, which appends leave alone);
//! - `small-files`: the small-file cycle, `--small-files` times in all (2,000 by
//!   default; not timed by `--duration`): create a file, append SIZE bytes, read it back,
//!   delete it; one cycle is one operation;
//! - `big`: one put of `--big-size` bytes (1 GiB by default) streamed with
//!   `Client::put_stream`, then one get of it streamed with `Client::read_to` into a sink
//!   that checks it; reported as `big-put` and `big-get`, one operation each;
//! - `latency`: one client, sequential appends of SIZE bytes to one file;
//! - `files` (not part of `all`): how the namespace scales. For each of `--file-counts`
//!   (1000 and 10000 by default; `100k`, `1M` are accepted), in increasing order, it grows
//!   the number of files it made to that count, `--clients` at a time, each file made by
//!   one `create` (so empty: a map commit and an empty file on R nodes), in directories of
//!   100 (`PREFIX/files/DDDDD/NN`), reported as `create/COUNT` (one operation per file
//!   created at that step). It then notes each server's RSS (`VmRSS`), and times, as the
//!   timed workloads above (`--clients`, `--warmup`, `--duration` or `--ops`): `stat/COUNT`,
//!   a `stat` of one of the files at random (checked: its name, size 0), and
//!   `ls-dir/COUNT`, the listing of one of the directories at random (`Client::list` of
//!   `PREFIX/files/DDDDD/`: one `List` request, 100 entries, fewer in the last directory;
//!   checked: the count), and `ls-all/COUNT`, three listings by one client of all the files
//!   (`Client::list` of `PREFIX/files/`: one `List` request per 512 files, the most a page
//!   holds; checked: the count). Per count it also reports each server's RSS and its growth
//!   since before the first create divided by the files created (bytes per file: the whole
//!   server's, not only the placement table's; `cargo bench -p dfs-placement --bench
//!   table_memory` measures the table alone). The files are left in place.
//!
//! # Clients
//! A client is a task that sends one operation, waits for its answer, and sends the next
//! (a closed loop). By default every client has its own [`Client`], hence its own TCP
//! connection to a node picked at random, as independent application processes would;
//! `--connections N` shares N `Client`s among the tasks instead (a `Client` pipelines
//! the requests of its clones over its one connection), which measures what pipelining
//! buys.
//!
//! # What it reports
//! Per workload: operations completed, errors, operations per second and MB/s (payload
//! bytes written and read, 10^6 bytes per MB) over the workload's wall-clock time,
//! latency p50, p99, p99.9 and the maximum (an HDR histogram of successful operations,
//! microsecond resolution, 3 significant digits), and each server's peak RSS (`VmHWM` of
//! `/proc/PID/status`; with `--servers`, only for the processes given with
//! `--server-pids`). The peak is reset (`/proc/PID/clear_refs`) before each workload where
//! the system allows it, so it is that workload's; where it does not, it is the peak since
//! the process started, and flagged so. As an aligned table (with `files`, a second one of
//! the servers' RSS per file count), or with `--json` one JSON object on stdout (`files`
//! adds `file_count` to its rows of `workloads`, and fills `file_counts`: per count, each
//! server's `start_bytes`, `bytes` and `bytes_per_file`, and the `ls_all_pages`).
//!
//! Every read is checked against the bytes written (each payload carries its operation's
//! number, so a stale or misplaced answer differs): a mismatch counts as an error, never
//! as an operation. A failed operation (after the client library's own retries) is
//! counted as an error and the workload goes on.
//!
//! The files it writes are under a fresh prefix `bench-PID-MILLIS/`; with `--servers`
//! they are deleted at the end unless `--keep`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use dfs::client::{Client, ClientConfig};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[path = "../shared/cluster.rs"]
mod cluster;
#[path = "../shared/duration.rs"]
mod duration;
#[path = "../shared/load.rs"]
mod load;

use cluster::{Cluster, NODES_MAX, REPLICATION, default_server};
use duration::parse_duration;
use load::{End, Payload, Stats, parse_size, pseudo_random};

/// One operation of a workload, on a dfs [`Client`].
type OpFn = load::OpFn<Client>;

/// The block the big file's content repeats (each copy stamped with its index).
const BLOCK: usize = 1 << 20;
/// Share of reads in `mix`, in percent.
const MIX_READ_PERCENT: u64 = 90;
/// Files per directory in `files`: what one `ls-dir` lists.
const FILES_PER_DIR: u64 = 100;
/// Listings of all the files per file count in `files` (`ls-all`).
const LS_ALL_RUNS: u64 = 3;
/// The most files `--file-counts` may ask for.
const FILE_COUNT_MAX: u64 = 10_000_000;
/// Entries per `List` page: the client library asks for the most a page may hold.
const LIST_PAGE: u64 = dfs::proto::PAGE_ENTRIES_MAX as u64;

/// A load generator for dfs: throughput, latency and server memory per workload.
#[derive(Parser, Debug)]
#[command(name = "dfs-bench", version, about)]
struct Cli {
    /// Nodes of a running cluster, `HOST:PORT,...` (ignored with `--spawn`).
    #[arg(long, env = "DFS_SERVERS", value_name = "ADDRS")]
    servers: Option<String>,
    /// Start `dfs-server` processes on loopback (R = 2, fsync on) for the run.
    #[arg(long)]
    spawn: bool,
    /// How many servers `--spawn` starts [default: 3].
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,
    /// The `dfs-server` binary for `--spawn` [default: the one next to this program].
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// An extra argument for every spawned server (repeat for more), e.g.
    /// `--server-arg=--no-fsync` to see what fsync costs.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Process ids of the servers of `--servers`, for their peak RSS.
    #[arg(long, value_name = "PIDS", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Workloads to run, comma-separated: append, put, read, mix, small-files, big,
    /// latency, files, or all (every one but files).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    workload: Vec<Workload>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// `Client`s (connections) the clients share [default: one per client].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// How long each timed workload runs (`500ms`, `10s`, `2m`).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Run each timed workload for this many operations instead of `--duration`.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Uncounted operations before each timed workload, for this long.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Files the `append`, `read` and `mix` workloads spread over.
    #[arg(long, default_value_t = 1000)]
    files: u64,
    /// Bytes per operation (`4096`, `4KiB`, `1MiB`; K, M, G are powers of 1024).
    #[arg(long, value_parser = parse_size, default_value = "4KiB")]
    size: u64,
    /// Cycles of the `small-files` workload.
    #[arg(long, default_value_t = 2000)]
    small_files: u64,
    /// Size of the `big` workload's file.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    big_size: u64,
    /// The numbers of files the `files` workload grows the namespace to, comma-separated
    /// (`1000`, `100k`, `1M`; k and M are powers of 1000).
    #[arg(long, value_parser = parse_count, value_delimiter = ',', default_value = "1000,10000")]
    file_counts: Vec<u64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the spawned cluster's data and logs, or with `--servers` the files written.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Append,
    Put,
    Read,
    Mix,
    SmallFiles,
    Big,
    Latency,
    Files,
    All,
}

/// The order `all` runs them in (`files`, which leaves its files behind, is not one).
const ALL: [Workload; 7] = [
    Workload::Append,
    Workload::Put,
    Workload::Read,
    Workload::Mix,
    Workload::SmallFiles,
    Workload::Big,
    Workload::Latency,
];

/// Parses a count: digits and an optional unit, `k` (10^3) or `M` (10^6).
fn parse_count(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (n, unit) = duration::number_and_unit(text, "a count such as 1000, 100k or 1M")?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        _ => return Err(format!("unknown unit in {text:?}: use k or M")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.clients == 0 || cli.connections == Some(0) {
        bail!("--clients and --connections must be at least 1");
    }
    if cli.size == 0 || cli.big_size == 0 {
        bail!("--size and --big-size must be at least 1 byte");
    }
    if cli.files == 0 {
        bail!("--files must be at least 1");
    }
    if let Some(n) = cli.nodes {
        if !cli.spawn {
            bail!("--nodes is for --spawn (a running cluster has the nodes it has)");
        }
        if !(REPLICATION..=NODES_MAX).contains(&n) {
            bail!("--nodes must be {REPLICATION} (R) to {NODES_MAX}");
        }
    }
    cli.file_counts.sort_unstable();
    cli.file_counts.dedup();
    if cli.file_counts.first() == Some(&0) || cli.file_counts.is_empty() {
        bail!("--file-counts must be at least 1 each");
    }
    if cli.file_counts.iter().any(|&n| n > FILE_COUNT_MAX) {
        bail!("--file-counts must be at most {FILE_COUNT_MAX} each");
    }
    let mut workloads = Vec::new();
    for w in &cli.workload {
        let add: &[Workload] = if *w == Workload::All { &ALL } else { &[*w] };
        for w in add {
            if !workloads.contains(w) {
                workloads.push(*w);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut cluster = None;
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&cli, &workloads, &mut cluster) => r,
            r = tokio::signal::ctrl_c() => {
                r.context("cannot watch SIGINT")?;
                bail!("interrupted")
            }
        }
    });
    if result.is_err()
        && let Some(c) = &cluster
    {
        c.print_log_tails();
    }
    // Stops the spawned servers and removes their data.
    drop(cluster);
    drop(runtime);
    let report = result?;
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// One server process whose memory is watched.
#[derive(Debug, Clone, Copy)]
struct Proc {
    node: Option<u64>,
    pid: u32,
}

/// What the run used, for the report.
struct Setup {
    mode: &'static str,
    servers: Vec<String>,
    /// Members of the cluster (as its `status` lists them).
    nodes: usize,
    replication_factor: Option<u32>,
    fsync: Option<bool>,
    connections: usize,
    started_unix_ms: u128,
}

async fn run(
    cli: &Cli,
    workloads: &[Workload],
    slot: &mut Option<Cluster>,
) -> anyhow::Result<Report> {
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let (servers, procs, mode) = if cli.spawn {
        let server = match &cli.server {
            Some(path) => path.clone(),
            None => default_server()?,
        };
        let cluster = slot.insert(Cluster::new(server, "dfs-bench", cli.keep)?);
        cluster.extra_args = cli.server_arg.clone();
        if let Some(n) = cli.nodes {
            cluster.node_count = n;
        }
        cluster.start().await?;
        let ids = cluster.ids();
        let procs = cluster
            .pids()
            .into_iter()
            .map(|(id, pid)| Proc {
                node: Some(id),
                pid,
            })
            .collect::<Vec<_>>();
        eprintln!(
            "{} dfs-server processes on {} (R = {}{}), data in {}",
            ids.len(),
            cluster.servers(&ids).join(", "),
            cluster::REPLICATION,
            if cli.server_arg.is_empty() {
                ", fsync on".to_string()
            } else {
                format!(", extra arguments {:?}", cli.server_arg)
            },
            cluster.root.display()
        );
        (cluster.servers(&ids), procs, "spawn")
    } else {
        let Some(list) = &cli.servers else {
            bail!("give --servers HOST:PORT,... (or set DFS_SERVERS), or --spawn");
        };
        let servers = ClientConfig::from_list(list).servers;
        if servers.is_empty() {
            bail!("--servers names no address");
        }
        let procs = cli
            .server_pids
            .iter()
            .map(|&pid| Proc { node: None, pid })
            .collect();
        (servers, procs, "servers")
    };
    let connections = cli.connections.unwrap_or(cli.clients).min(cli.clients);
    let pool =
        futures::future::try_join_all((0..connections).map(|_| Client::connect(servers.clone())))
            .await
            .context("cannot connect to the cluster")?;
    let status = pool[0].status().await.context("status of the cluster")?;
    let setup = Setup {
        mode,
        servers,
        nodes: status.nodes.len(),
        replication_factor: Some(status.replication_factor),
        fsync: cli
            .spawn
            .then_some(!cli.server_arg.iter().any(|a| a == "--no-fsync")),
        connections,
        started_unix_ms,
    };
    let prefix = format!("bench-{}-{started_unix_ms}", std::process::id());
    let mut bench = Bench {
        cli,
        pool,
        procs,
        prefix,
        counter: Arc::new(AtomicU64::new(0)),
        data: Payload::new(cli.size),
        prepared: None,
        memory: Vec::new(),
    };
    let mut results = Vec::new();
    for &w in workloads {
        results.extend(bench.workload(w).await?);
    }
    if !cli.spawn && !cli.keep {
        bench.clean_up().await;
    }
    let memory = std::mem::take(&mut bench.memory);
    Ok(Report {
        setup,
        cli_clients: cli.clients,
        size: cli.size,
        results,
        duration: cli.ops.is_none().then_some(cli.duration),
        ops: cli.ops,
        warmup: cli.warmup,
        files: cli.files,
        small_files: cli.small_files,
        big_size: cli.big_size,
        memory,
    })
}

/// One workload's figures.
struct Outcome {
    workload: &'static str,
    /// The files in the namespace, for the parts of `files`.
    file_count: Option<u64>,
    stats: Stats,
    elapsed: Duration,
    clients: usize,
    rss: Vec<Rss>,
    /// CPU time (user + system) the watched servers spent over the workload, in all,
    /// in microseconds; `None` if some server's could not be read.
    cpu_us: Option<u64>,
}

/// A server's peak RSS over a workload.
struct Rss {
    proc_: Proc,
    bytes: Option<u64>,
    /// The peak could not be reset: it is the peak since the process started.
    since_start: bool,
}

struct Bench<'a> {
    cli: &'a Cli,
    pool: Vec<Client>,
    procs: Vec<Proc>,
    prefix: String,
    /// Numbers operations across the whole run, so names and stamps never repeat.
    counter: Arc<AtomicU64>,
    data: Payload,
    /// The files `read` and `mix` read: their names and contents (written once).
    prepared: Option<Arc<Vec<(String, Bytes)>>>,
    /// The servers' memory at each count of `files`.
    memory: Vec<FileCountMemory>,
}

/// The servers' memory once `files` has grown the namespace to `files` files.
struct FileCountMemory {
    files: u64,
    /// Per watched server: `VmRSS` before the first file was created, and now.
    rss: Vec<(Proc, Option<u64>, Option<u64>)>,
}

impl FileCountMemory {
    /// Growth of a server's RSS since the start, per file created (`None` if unknown).
    fn bytes_per_file(&self, start: Option<u64>, now: Option<u64>) -> Option<f64> {
        let (start, now) = (start?, now?);
        Some((now as f64 - start as f64) / self.files as f64)
    }
}

/// The `k`th file of the `files` workload: directories of [`FILES_PER_DIR`] files.
fn numbered_file(prefix: &str, k: u64) -> String {
    format!(
        "{}/{:02}",
        numbered_dir(prefix, k / FILES_PER_DIR),
        k % FILES_PER_DIR
    )
}

/// The `d`th directory of the `files` workload (no trailing `/`).
fn numbered_dir(prefix: &str, d: u64) -> String {
    format!("{prefix}/files/{d:05}")
}

impl Bench<'_> {
    async fn workload(&mut self, w: Workload) -> anyhow::Result<Vec<Outcome>> {
        let cli = self.cli;
        let (size, files) = (cli.size, cli.files);
        let name = match w {
            Workload::Append => "append",
            Workload::Put => "put",
            Workload::Read => "read",
            Workload::Mix => "mix",
            Workload::SmallFiles => "small-files",
            Workload::Big => "big",
            Workload::Latency => "latency",
            Workload::Files => "files",
            Workload::All => unreachable!("expanded"),
        };
        eprintln!("{name}: running");
        let prefix = self.prefix.clone();
        let data = self.data.clone();
        let op: OpFn = match w {
            Workload::Append => Arc::new(move |c, i, rng| {
                let file = format!("{prefix}/append/{}", rng.below(files));
                let body = data.stamped(i);
                Box::pin(async move {
                    c.append(&file, body).await.map_err(|e| e.to_string())?;
                    Ok(size)
                })
            }),
            Workload::Put => Arc::new(move |c, i, _| {
                let file = format!("{prefix}/put/{i}");
                let body = data.stamped(i);
                Box::pin(async move {
                    c.put(&file, body).await.map_err(|e| e.to_string())?;
                    Ok(size)
                })
            }),
            Workload::Read | Workload::Mix => {
                let prepared = self.prepare().await?;
                let mix = w == Workload::Mix;
                Arc::new(move |c, i, rng| {
                    let (file, want) = prepared[rng.below(files) as usize].clone();
                    if mix && rng.below(100) >= MIX_READ_PERCENT {
                        let body = data.stamped(i);
                        Box::pin(async move {
                            c.append(&file, body).await.map_err(|e| e.to_string())?;
                            Ok(size)
                        })
                    } else {
                        Box::pin(async move { read_checked(&c, &file, &want).await })
                    }
                })
            }
            Workload::SmallFiles => Arc::new(move |c, i, _| {
                let file = format!("{prefix}/small/{i}");
                let body = data.stamped(i);
                Box::pin(async move { small_file_cycle(&c, &file, body).await })
            }),
            Workload::Latency => {
                let file = format!("{prefix}/latency");
                Arc::new(move |c, i, _| {
                    let (file, body) = (file.clone(), data.stamped(i));
                    Box::pin(async move {
                        c.append(&file, body).await.map_err(|e| e.to_string())?;
                        Ok(size)
                    })
                })
            }
            Workload::Big => return self.big().await,
            Workload::Files => return self.files().await,
            Workload::All => unreachable!("expanded"),
        };
        let clients = if w == Workload::Latency {
            1
        } else {
            cli.clients
        };
        let end = if w == Workload::SmallFiles {
            End::Count(self.counter.load(Ordering::Relaxed) + cli.small_files)
        } else {
            if !cli.warmup.is_zero() {
                self.drive(clients, End::At(Instant::now() + cli.warmup), &op)
                    .await;
            }
            match cli.ops {
                Some(n) => End::Count(self.counter.load(Ordering::Relaxed) + n),
                None => End::At(Instant::now() + cli.duration),
            }
        };
        let resets = self.reset_peaks();
        let cpu = self.cpu_us();
        let (stats, elapsed) = self.drive(clients, end, &op).await;
        let rss = self.peaks(&resets);
        Ok(vec![Outcome {
            workload: name,
            file_count: None,
            stats,
            elapsed,
            clients,
            rss,
            cpu_us: self.cpu_us_since(cpu),
        }])
    }

    /// Runs `op` on `clients` tasks until `end`; their merged counts and the wall-clock time.
    async fn drive(&self, clients: usize, end: End, op: &OpFn) -> (Stats, Duration) {
        load::drive(&self.pool, clients, end, &self.counter, op).await
    }

    /// Writes the files `read` and `mix` read, once: `--files` files of SIZE bytes.
    async fn prepare(&mut self) -> anyhow::Result<Arc<Vec<(String, Bytes)>>> {
        if let Some(p) = &self.prepared {
            return Ok(p.clone());
        }
        let files: Vec<(String, Bytes)> = (0..self.cli.files)
            .map(|j| {
                (
                    format!("{}/data/{j}", self.prefix),
                    self.data.stamped(u64::MAX - j),
                )
            })
            .collect();
        let files = Arc::new(files);
        let first = self.counter.load(Ordering::Relaxed);
        let written = files.clone();
        let op: OpFn = Arc::new(move |c, i, _| {
            let (file, body) = written[(i - first) as usize].clone();
            Box::pin(async move {
                c.put(&file, body).await.map_err(|e| e.to_string())?;
                Ok(0)
            })
        });
        let (stats, took) = self
            .drive(self.cli.clients, End::Count(first + self.cli.files), &op)
            .await;
        if stats.errors > 0 {
            bail!(
                "writing the {} files to read failed {} times; first: {}",
                self.cli.files,
                stats.errors,
                stats.first_error.unwrap_or_default()
            );
        }
        eprintln!(
            "wrote {} files of {} bytes to read in {:.2} s",
            self.cli.files,
            self.cli.size,
            took.as_secs_f64()
        );
        self.prepared = Some(files.clone());
        Ok(files)
    }

    /// One put of `--big-size` bytes streamed, then one streamed get of it, checked.
    async fn big(&mut self) -> anyhow::Result<Vec<Outcome>> {
        let size = self.cli.big_size;
        let file = format!("{}/big", self.prefix);
        let block = Arc::new(pseudo_random(BLOCK, 0xb16));
        let client = &self.pool[0];

        let resets = self.reset_peaks();
        let cpu = self.cpu_us();
        let mut put = Stats::new();
        let reader = PatternReader {
            block: block.clone(),
            pos: 0,
            total: size,
        };
        let t0 = Instant::now();
        match client.put_stream(&file, reader).await {
            Ok(ack) if ack.size == size => put.ok(t0.elapsed(), size),
            Ok(ack) => put.err(format!("put acknowledged {} bytes, not {size}", ack.size)),
            Err(e) => put.err(e.to_string()),
        }
        let put_elapsed = t0.elapsed();
        let put_rss = self.peaks(&resets);
        let put_cpu = self.cpu_us_since(cpu);

        let resets = self.reset_peaks();
        let cpu = self.cpu_us();
        let mut get = Stats::new();
        let t0 = Instant::now();
        if put.errors > 0 {
            get.err("not run: the put failed".into());
        } else {
            let mut sink = CheckingSink {
                block,
                pos: 0,
                mismatch: None,
                scratch: Vec::new(),
            };
            match client.read_to(&file, 0, None, &mut sink).await {
                Ok((_, n)) if n != size => get.err(format!("got {n} bytes, not {size}")),
                Ok(_) => match sink.mismatch {
                    Some(at) => get.err(format!("the bytes read differ at offset {at}")),
                    None => get.ok(t0.elapsed(), size),
                },
                Err(e) => get.err(e.to_string()),
            }
        }
        let get_elapsed = t0.elapsed();
        let get_rss = self.peaks(&resets);
        let get_cpu = self.cpu_us_since(cpu);
        // Free the disk space for the workloads after this one.
        if let Err(e) = client.delete(&file).await {
            eprintln!("cannot delete {file}: {e}");
        }
        Ok(vec![
            Outcome {
                workload: "big-put",
                file_count: None,
                stats: put,
                elapsed: put_elapsed,
                clients: 1,
                rss: put_rss,
                cpu_us: put_cpu,
            },
            Outcome {
                workload: "big-get",
                file_count: None,
                stats: get,
                elapsed: get_elapsed,
                clients: 1,
                rss: get_rss,
                cpu_us: get_cpu,
            },
        ])
    }

    /// The `files` workload: for each of `--file-counts`, grows the namespace to that many
    /// empty files (`create`, `--clients` at a time), notes each server's RSS, then times
    /// `stat` of a random one of them and `ls` of a random directory of 100 (each as a timed
    /// workload) and [`LS_ALL_RUNS`] listings of all of them (one client).
    async fn files(&mut self) -> anyhow::Result<Vec<Outcome>> {
        let cli = self.cli;
        let start = self.current_rss();
        let mut have = 0;
        let mut outcomes = Vec::new();
        for &count in &cli.file_counts {
            // Grow: files have..count, each one create (empty).
            eprintln!("files: creating files {have}..{count}");
            let (prefix, first) = (self.prefix.clone(), self.counter.load(Ordering::Relaxed));
            let create: OpFn = Arc::new(move |c, i, _| {
                let file = numbered_file(&prefix, have + (i - first));
                Box::pin(async move {
                    let info = c
                        .create(&file)
                        .await
                        .map_err(|e| format!("create {file}: {e}"))?;
                    if info.size != 0 {
                        return Err(format!("created {file} with {} bytes", info.size));
                    }
                    Ok(0)
                })
            });
            let resets = self.reset_peaks();
            let cpu = self.cpu_us();
            let (stats, elapsed) = self
                .drive(cli.clients, End::Count(first + count - have), &create)
                .await;
            let rss = self.peaks(&resets);
            let cpu_us = self.cpu_us_since(cpu);
            let now = self.current_rss();
            if stats.errors > 0 {
                bail!(
                    "creating files {have}..{count} failed {} times; first: {}",
                    stats.errors,
                    stats.first_error.unwrap_or_default()
                );
            }
            eprintln!(
                "files: created {} files in {:.2} s ({:.0}/s)",
                count - have,
                elapsed.as_secs_f64(),
                (count - have) as f64 / elapsed.as_secs_f64().max(1e-9)
            );
            have = count;
            outcomes.push(Outcome {
                workload: "create",
                file_count: Some(count),
                stats,
                elapsed,
                clients: cli.clients,
                rss,
                cpu_us,
            });
            self.memory.push(FileCountMemory {
                files: count,
                rss: self
                    .procs
                    .iter()
                    .zip(start.iter().zip(now))
                    .map(|(p, (&s, n))| (*p, s, n))
                    .collect(),
            });

            let prefix = self.prefix.clone();
            let stat: OpFn = Arc::new(move |c, _, rng| {
                let file = numbered_file(&prefix, rng.below(count));
                Box::pin(async move {
                    let info = c
                        .stat(&file)
                        .await
                        .map_err(|e| format!("stat {file}: {e}"))?;
                    if info.name != file || info.size != 0 {
                        return Err(format!("stat {file}: got {info:?}"));
                    }
                    Ok(0)
                })
            });
            outcomes.push(self.timed("stat", count, &stat).await);

            let prefix = self.prefix.clone();
            let ls_dir: OpFn = Arc::new(move |c, _, rng| {
                let d = rng.below(count.div_ceil(FILES_PER_DIR));
                let want = (count - d * FILES_PER_DIR).min(FILES_PER_DIR);
                let dir = format!("{}/", numbered_dir(&prefix, d));
                Box::pin(async move { list_checked(&c, &dir, want).await })
            });
            outcomes.push(self.timed("ls-dir", count, &ls_dir).await);

            let all = format!("{}/files/", self.prefix);
            let ls_all: OpFn = Arc::new(move |c, _, _| {
                let all = all.clone();
                Box::pin(async move { list_checked(&c, &all, count).await })
            });
            let first = self.counter.load(Ordering::Relaxed);
            let resets = self.reset_peaks();
            let cpu = self.cpu_us();
            let (stats, elapsed) = self
                .drive(1, End::Count(first + LS_ALL_RUNS), &ls_all)
                .await;
            outcomes.push(Outcome {
                workload: "ls-all",
                file_count: Some(count),
                stats,
                elapsed,
                clients: 1,
                rss: self.peaks(&resets),
                cpu_us: self.cpu_us_since(cpu),
            });
        }
        Ok(outcomes)
    }

    /// Runs `op` as a timed workload: `--clients` clients for `--duration` (or `--ops`)
    /// after `--warmup`.
    async fn timed(&self, workload: &'static str, file_count: u64, op: &OpFn) -> Outcome {
        let cli = self.cli;
        eprintln!("{workload}: running at {file_count} files");
        if !cli.warmup.is_zero() {
            self.drive(cli.clients, End::At(Instant::now() + cli.warmup), op)
                .await;
        }
        let end = match cli.ops {
            Some(n) => End::Count(self.counter.load(Ordering::Relaxed) + n),
            None => End::At(Instant::now() + cli.duration),
        };
        let resets = self.reset_peaks();
        let cpu = self.cpu_us();
        let (stats, elapsed) = self.drive(cli.clients, end, op).await;
        Outcome {
            workload,
            file_count: Some(file_count),
            stats,
            elapsed,
            clients: cli.clients,
            rss: self.peaks(&resets),
            cpu_us: self.cpu_us_since(cpu),
        }
    }

    /// Each watched server's current RSS (`VmRSS`), in bytes.
    fn current_rss(&self) -> Vec<Option<u64>> {
        self.procs
            .iter()
            .map(|p| status_bytes(p.pid, "VmRSS:"))
            .collect()
    }

    /// Resets each watched server's peak RSS to its current RSS; whether each could be.
    fn reset_peaks(&self) -> Vec<bool> {
        self.procs
            .iter()
            .map(|p| std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5").is_ok())
            .collect()
    }

    /// The CPU time the watched servers have used so far, in all (`None` if there are
    /// none, or one could not be read).
    fn cpu_us(&self) -> Option<u64> {
        if self.procs.is_empty() {
            return None;
        }
        self.procs.iter().map(|p| cpu_us(p.pid)).sum()
    }

    fn cpu_us_since(&self, start: Option<u64>) -> Option<u64> {
        Some(self.cpu_us()?.saturating_sub(start?))
    }

    fn peaks(&self, resets: &[bool]) -> Vec<Rss> {
        self.procs
            .iter()
            .zip(resets)
            .map(|(p, &reset)| Rss {
                proc_: *p,
                bytes: peak_rss(p.pid),
                since_start: !reset,
            })
            .collect()
    }

    /// Deletes every file the run wrote (with `--servers`).
    async fn clean_up(&self) {
        let names = match self.pool[0].list(&format!("{}/", self.prefix)).await {
            Ok(entries) => entries.into_iter().map(|e| e.name).collect::<Vec<_>>(),
            Err(e) => {
                eprintln!("cannot list the files written under {}/: {e}", self.prefix);
                return;
            }
        };
        eprintln!("deleting the {} files written", names.len());
        let names = Arc::new(names);
        let first = self.counter.load(Ordering::Relaxed);
        let count = names.len() as u64;
        let listed = names.clone();
        let op: OpFn = Arc::new(move |c, i, _| {
            let file = listed[(i - first) as usize].clone();
            Box::pin(async move {
                c.delete(&file).await.map_err(|e| e.to_string())?;
                Ok(0)
            })
        });
        let (stats, _) = self
            .drive(self.cli.clients, End::Count(first + count), &op)
            .await;
        if stats.errors > 0 {
            eprintln!(
                "{} files under {}/ could not be deleted; first error: {}",
                stats.errors,
                self.prefix,
                stats.first_error.unwrap_or_default()
            );
        }
    }
}

/// Reads `file`'s first `want.len()` bytes and checks they are `want`.
async fn read_checked(c: &Client, file: &str, want: &Bytes) -> Result<u64, String> {
    let got = c
        .read(file, 0, Some(want.len() as u64))
        .await
        .map_err(|e| e.to_string())?;
    if got != *want {
        return Err(format!(
            "{file}: read {} bytes that differ from the {} written",
            got.len(),
            want.len()
        ));
    }
    Ok(got.len() as u64)
}

/// Lists `prefix` (every page) and checks it holds `want` files.
async fn list_checked(c: &Client, prefix: &str, want: u64) -> Result<u64, String> {
    let entries = c
        .list(prefix)
        .await
        .map_err(|e| format!("ls {prefix}: {e}"))?;
    if entries.len() as u64 != want {
        return Err(format!("ls {prefix}: {} files, not {want}", entries.len()));
    }
    Ok(0)
}

/// Create, append `body`, read back and check, delete.
async fn small_file_cycle(c: &Client, file: &str, body: Bytes) -> Result<u64, String> {
    let e = |what: &str, e: dfs::client::ClientError| format!("{what} {file}: {e}");
    c.create(file).await.map_err(|x| e("create", x))?;
    c.append(file, body.clone())
        .await
        .map_err(|x| e("append to", x))?;
    let read = read_checked(c, file, &body).await?;
    c.delete(file).await.map_err(|x| e("delete", x))?;
    Ok(body.len() as u64 + read)
}

/// Writes the big file's content at `pos` into `out`: `block` repeated, each copy's first
/// 8 bytes replaced by its index.
fn pattern_at(block: &[u8], pos: u64, out: &mut [u8]) {
    let mut done = 0;
    while done < out.len() {
        let p = pos + done as u64;
        let off = (p % BLOCK as u64) as usize;
        let n = (BLOCK - off).min(out.len() - done);
        out[done..done + n].copy_from_slice(&block[off..off + n]);
        if off < 8 {
            let stamp = (p / BLOCK as u64).to_le_bytes();
            let k = (8 - off).min(n);
            out[done..done + k].copy_from_slice(&stamp[off..off + k]);
        }
        done += n;
    }
}

/// The big file's content, generated as it is read.
struct PatternReader {
    block: Arc<Vec<u8>>,
    pos: u64,
    total: u64,
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (self.total - self.pos).min(buf.remaining() as u64) as usize;
        if n > 0 {
            let out = buf.initialize_unfilled_to(n);
            pattern_at(&self.block, self.pos, &mut out[..n]);
            buf.advance(n);
            self.pos += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}

/// Takes the big file's content as it is read and notes where it first differs from the
/// pattern.
struct CheckingSink {
    block: Arc<Vec<u8>>,
    pos: u64,
    mismatch: Option<u64>,
    scratch: Vec<u8>,
}

impl AsyncWrite for CheckingSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.mismatch.is_none() {
            this.scratch.resize(buf.len(), 0);
            pattern_at(&this.block, this.pos, &mut this.scratch);
            if let Some(i) = this.scratch.iter().zip(buf).position(|(a, b)| a != b) {
                this.mismatch = Some(this.pos + i as u64);
            }
        }
        this.pos += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The CPU time (user + system) process `pid` has used, in microseconds: fields 14 and 15
/// of `/proc/PID/stat`, in clock ticks of 1/100 s (`USER_HZ`, 100 on Linux).
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the ')' that ends it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

/// `VmHWM` of `/proc/PID/status`, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The line `field` (`VmHWM:`, `VmRSS:`) of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

struct Report {
    setup: Setup,
    cli_clients: usize,
    size: u64,
    duration: Option<Duration>,
    ops: Option<u64>,
    warmup: Duration,
    files: u64,
    small_files: u64,
    big_size: u64,
    results: Vec<Outcome>,
    memory: Vec<FileCountMemory>,
}

impl Outcome {
    /// The servers' CPU time per successful operation, in microseconds.
    fn cpu_per_op_us(&self) -> Option<f64> {
        let cpu = self.cpu_us?;
        (self.stats.ops > 0).then(|| cpu as f64 / self.stats.ops as f64)
    }
}

impl Report {
    fn json(&self) -> serde_json::Value {
        let s = &self.setup;
        json!({
            "tool": "dfs-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "started_unix_ms": s.started_unix_ms as u64,
            "mode": s.mode,
            "servers": s.servers,
            "nodes": s.nodes,
            "replication_factor": s.replication_factor,
            "fsync": s.fsync,
            "clients": self.cli_clients,
            "connections": s.connections,
            "size": self.size,
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "ops_per_workload": self.ops,
            "warmup_s": self.warmup.as_secs_f64(),
            "files": self.files,
            "small_files": self.small_files,
            "big_size": self.big_size,
            "workloads": self.results.iter().map(|o| {
                let mut w = load::workload_json(o.workload, o.clients, &o.stats, o.elapsed);
                w["file_count"] = json!(o.file_count);
                w["server_cpu_us"] = json!(o.cpu_us);
                w["server_cpu_us_per_op"] = json!(o.cpu_per_op_us());
                w["server_peak_rss"] = o.rss.iter().map(|r| json!({
                    "node": r.proc_.node,
                    "pid": r.proc_.pid,
                    "bytes": r.bytes,
                    "since_start": r.since_start,
                })).collect();
                w
            }).collect::<Vec<_>>(),
            "file_counts": self.memory.iter().map(|m| json!({
                "files": m.files,
                "ls_all_pages": ls_pages(m.files),
                "server_rss": m.rss.iter().map(|&(p, start, now)| json!({
                    "node": p.node,
                    "pid": p.pid,
                    "start_bytes": start,
                    "bytes": now,
                    "bytes_per_file": m.bytes_per_file(start, now),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    fn table(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let how_long = match (self.ops, self.duration) {
            (Some(n), _) => format!("{n} operations"),
            (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "dfs-bench: {} ({}; {} nodes, R = {}, fsync {}), {} clients over {} connection{}, \
             {}-byte operations, {how_long} per timed workload after {:.1} s of warm-up\n",
            s.servers.join(","),
            if s.mode == "spawn" {
                "spawned"
            } else {
                "running cluster"
            },
            s.nodes,
            s.replication_factor
                .map_or("?".to_string(), |r| r.to_string()),
            match s.fsync {
                Some(true) => "on",
                Some(false) => "off",
                None => "as configured",
            },
            self.cli_clients,
            s.connections,
            if s.connections == 1 { "" } else { "s" },
            self.size,
            self.warmup.as_secs_f64(),
        ));
        let mut header: Vec<String> = load::HEADER.iter().map(|h| h.to_string()).collect();
        header.push("CPU us/op".to_string());
        header.push("peak RSS MiB".to_string());
        let rss_column = header.len() - 1;
        let mut rows = vec![header];
        let mut since_start = false;
        for o in &self.results {
            let rss = if o.rss.is_empty() {
                "-".to_string()
            } else {
                o.rss
                    .iter()
                    .map(|r| {
                        since_start |= r.since_start;
                        r.bytes.map_or("?".to_string(), |b| {
                            format!(
                                "{:.1}{}",
                                b as f64 / (1024.0 * 1024.0),
                                if r.since_start { "*" } else { "" }
                            )
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let name = match o.file_count {
                Some(n) => format!("{}/{n}", o.workload),
                None => o.workload.to_string(),
            };
            let mut row = load::row(&name, o.clients, &o.stats, o.elapsed);
            row.push(
                o.cpu_per_op_us()
                    .map_or("-".to_string(), |c| format!("{c:.0}")),
            );
            row.push(rss);
            rows.push(row);
        }
        out.push_str(&load::aligned(&rows, |c| c == 0 || c == rss_column));
        let nodes: Vec<String> = self
            .results
            .first()
            .map(|o| {
                o.rss
                    .iter()
                    .map(|r| match r.proc_.node {
                        Some(n) => format!("node {n}"),
                        None => format!("pid {}", r.proc_.pid),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !nodes.is_empty() {
            out.push_str(&format!(
                "peak RSS: {}, each over its workload{}\n",
                nodes.join(" / "),
                if since_start {
                    " (*: since the process started, as its peak could not be reset)"
                } else {
                    ""
                }
            ));
        }
        if let Some(first) = self.memory.first() {
            out.push_str(&self.memory_table(first));
        }
        for o in &self.results {
            if let Some(e) = &o.stats.first_error {
                out.push_str(&format!(
                    "{}: {} errors, first: {e}\n",
                    o.workload, o.stats.errors
                ));
            }
        }
        out
    }

    /// The servers' memory at each file count of `files`.
    fn memory_table(&self, first: &FileCountMemory) -> String {
        let names: Vec<String> = first
            .rss
            .iter()
            .map(|(p, _, _)| match p.node {
                Some(n) => format!("node {n}"),
                None => format!("pid {}", p.pid),
            })
            .collect();
        let mut out = format!(
            "files: server RSS (VmRSS) of {} after the creates, and its growth since before \
             the first create per file created; ls-dir lists {FILES_PER_DIR} files (one \
             List request), ls-all all of them ({LIST_PAGE} per List request)\n",
            names.join(" / ")
        );
        let mib =
            |b: Option<u64>| b.map_or("?".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
        let mut rows = vec![vec![
            "files".to_string(),
            "RSS MiB".to_string(),
            "bytes per file".to_string(),
        ]];
        rows.push(vec![
            "0".to_string(),
            first
                .rss
                .iter()
                .map(|&(_, start, _)| mib(start))
                .collect::<Vec<_>>()
                .join(" / "),
            "-".to_string(),
        ]);
        for m in &self.memory {
            rows.push(vec![
                m.files.to_string(),
                m.rss
                    .iter()
                    .map(|&(_, _, now)| mib(now))
                    .collect::<Vec<_>>()
                    .join(" / "),
                m.rss
                    .iter()
                    .map(|&(_, start, now)| {
                        m.bytes_per_file(start, now)
                            .map_or("?".to_string(), |b| format!("{b:.0}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" / "),
            ]);
        }
        out.push_str(&load::aligned(&rows, |c| c > 0));
        out
    }
}

/// `List` requests the client library sends to list `files` files.
fn ls_pages(files: u64) -> u64 {
    files.div_ceil(LIST_PAGE).max(1)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(parse_count("1000"), Ok(1000));
        assert_eq!(parse_count("100k"), Ok(100_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        for bad in ["", "k", "1.5k", "-1", "1G", "1m", "99999999999999999999"] {
            assert!(parse_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbered_files_sort_by_directory() {
        assert_eq!(numbered_file("p", 0), "p/files/00000/00");
        assert_eq!(numbered_file("p", 12_345), "p/files/00123/45");
        assert!(numbered_file("p", 99).starts_with(&format!("{}/", numbered_dir("p", 0))));
        assert_eq!(ls_pages(1), 1);
        assert_eq!(ls_pages(LIST_PAGE), 1);
        assert_eq!(ls_pages(LIST_PAGE + 1), 2);
    }

    #[test]
    fn the_pattern_is_the_same_however_it_is_cut() {
        let block = pseudo_random(BLOCK, 7);
        let mut whole = vec![0; 3 * BLOCK + 100];
        pattern_at(&block, 0, &mut whole);
        assert_eq!(&whole[BLOCK..BLOCK + 8], &1u64.to_le_bytes());
        assert_eq!(&whole[8..BLOCK], &block[8..]);
        for (pos, len) in [(0, 5), (3, 10), (BLOCK - 4, 20), (2 * BLOCK + 7, 93)] {
            let mut part = vec![0; len];
            pattern_at(&block, pos as u64, &mut part);
            assert_eq!(part, whole[pos..pos + len], "at {pos}");
        }
    }
}
