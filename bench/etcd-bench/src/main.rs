//! `etcd-bench`: a load generator for etcd that measures it exactly as `dfs-bench` measures
//! dfs, so that the two can be compared on one machine (`bench/compare.sh`).
//!
//! It speaks etcd's own gRPC API (the unary calls `/etcdserverpb.KV/Put`, `Range` and
//! `DeleteRange`) over plain HTTP/2 with tonic, not the JSON gateway, which would add a
//! hop. The protobuf messages are written by hand in [`proto`], with the field numbers of
//! etcd's `rpc.proto` and `kv.proto` and only the fields it uses (a decoder skips the
//! others), so no `protoc` and no build script are needed. Tested against etcd 3.4.
//!
//! # Workloads
//! Each runs with `--clients` concurrent clients for `--duration` (or for `--ops`
//! operations), after a `--warmup` whose operations are not counted; SIZE is `--size`
//! (4 KiB by default).
//!
//! - `put`: puts of SIZE bytes, each to a new key (as `dfs-bench put` writes new files);
//! - `get`: linearizable gets of SIZE bytes (a `Range` of one key with
//!   `serializable = false`, so the member asked confirms with the leader before it
//!   answers), each of one of `--keys` keys put before the workload starts; every value
//!   read is compared with the bytes put (each carries its key's number), and a missing
//!   key or a different value counts as an error, never as an operation;
//! - `latency`: one client, sequential puts of SIZE bytes to one key (as
//!   `dfs-bench latency`, sequential appends to one file).
//!
//! # Clients
//! The closed loop of `dfs-bench`, the same code (`bins/shared/load.rs`): a client sends
//! one request, waits for its answer, and sends the next. By default every client has its
//! own connection (its own tonic `Channel`, one HTTP/2 connection), client `k` to the
//! `k mod n`-th of the `--endpoints`, as `dfs-bench` gives every client its own
//! connection; `--connections N` shares N connections among the clients (HTTP/2
//! multiplexes their requests, as etcd's Go client does over one connection). Every
//! request has a deadline (`--timeout`); a failed request is counted as an error, not
//! retried, and the workload goes on.
//!
//! # What it reports
//! Per workload: operations completed, errors, operations per second and MB/s (payload
//! bytes put and read, 10^6 bytes per MB) over the workload's wall-clock time, latency
//! p50, p99, p99.9 and the maximum (an HDR histogram of successful operations, microsecond
//! resolution, 3 significant digits); `get` also counts the values it verified. As an
//! aligned table, or with `--json` one JSON object on stdout whose `workloads` entries
//! have the fields of `dfs-bench`'s (without the servers' memory).
//!
//! The keys it writes are under a fresh prefix `etcd-bench-PID-MILLIS/` and are deleted at
//! the end (one `DeleteRange` of the prefix) unless `--keep`; etcd keeps their old
//! revisions until it is compacted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use serde_json::json;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

#[path = "../../../bins/shared/duration.rs"]
mod duration;
#[path = "../../../bins/shared/load.rs"]
mod load;
pub mod proto;

use duration::parse_duration;
use load::{End, Payload, Stats, parse_size};

/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A load generator for etcd: throughput and latency of puts and linearizable gets.
#[derive(Parser, Debug)]
#[command(name = "etcd-bench", version, about)]
struct Cli {
    /// Client URLs of the etcd members, `HOST:PORT,...` (or `http://HOST:PORT,...`).
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Workloads to run, comma-separated: put, get, latency, or all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    workload: Vec<Workload>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Connections the clients share [default: one per client].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// How long each workload runs (`500ms`, `10s`, `2m`).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Run each workload for this many operations instead of `--duration`.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Uncounted operations before each workload, for this long.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Keys the `get` workload reads (put once, before it).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Bytes per value (`4096`, `4KiB`; K, M, G are powers of 1024).
    #[arg(long, value_parser = parse_size, default_value = "4KiB")]
    size: u64,
    /// Deadline of every request.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the keys written instead of deleting them at the end.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Put,
    Get,
    Latency,
    All,
}

/// The order `all` runs them in.
const ALL: [Workload; 3] = [Workload::Put, Workload::Get, Workload::Latency];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.endpoints.iter().all(|e| e.trim().is_empty()) {
        bail!("give --endpoints HOST:PORT,... (or set ETCD_ENDPOINTS)");
    }
    if cli.clients == 0 || cli.connections == Some(0) {
        bail!("--clients and --connections must be at least 1");
    }
    if cli.size == 0 || cli.keys == 0 {
        bail!("--size and --keys must be at least 1");
    }
    if cli.timeout.is_zero() {
        bail!("--timeout must be more than 0");
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
    let report = runtime.block_on(async {
        tokio::select! {
            r = run(&cli, &workloads) => r,
            r = tokio::signal::ctrl_c() => {
                r.context("cannot watch SIGINT")?;
                bail!("interrupted")
            }
        }
    })?;
    drop(runtime);
    if cli.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A connection to one etcd member's KV service. Clones share the connection.
#[derive(Clone)]
struct Kv {
    grpc: Grpc<Channel>,
}

impl Kv {
    /// Connects to `endpoint` (`HOST:PORT` or a URL); every request gets `timeout`.
    async fn connect(endpoint: &str, timeout: Duration) -> anyhow::Result<Kv> {
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad endpoint {endpoint:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        Ok(Kv {
            grpc: Grpc::new(channel),
        })
    }

    /// One unary call of the KV service.
    async fn call<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| format!("{path}: connection not ready: {e}"))?;
        let codec = ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map_err(|s| format!("{path}: {}: {}", s.code(), s.message()))?;
        Ok(response.into_inner())
    }

    /// Puts `value` at `key`.
    async fn put(&self, key: Vec<u8>, value: Bytes) -> Result<(), String> {
        let request = proto::PutRequest {
            key,
            value,
            ..Default::default()
        };
        self.call::<_, proto::PutResponse>("/etcdserverpb.KV/Put", request)
            .await
            .map(|_| ())
    }

    /// The value at `key` (a linearizable read), if it has one.
    async fn get(&self, key: Vec<u8>) -> Result<Option<Bytes>, String> {
        let request = proto::RangeRequest {
            key,
            serializable: false,
            ..Default::default()
        };
        let response: proto::RangeResponse = self.call("/etcdserverpb.KV/Range", request).await?;
        Ok(response.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Deletes every key that starts with `prefix`; how many there were.
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<i64, String> {
        let request = proto::DeleteRangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            prev_kv: false,
        };
        let response: proto::DeleteRangeResponse =
            self.call("/etcdserverpb.KV/DeleteRange", request).await?;
        Ok(response.deleted)
    }
}

/// The end of the range of keys that start with `prefix`: `prefix` with its last byte
/// below 0xff incremented and what follows it dropped (etcd's `GetPrefixRangeEnd`); `[0]`,
/// every key, when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Checks a value read against the one put.
fn check_value(key: &str, got: Option<Bytes>, want: &Bytes) -> Result<u64, String> {
    match got {
        None => Err(format!("{key}: not found")),
        Some(got) if got != *want => Err(format!(
            "{key}: read {} bytes that differ from the {} put",
            got.len(),
            want.len()
        )),
        Some(got) => Ok(got.len() as u64),
    }
}

/// One operation of a workload, on a [`Kv`] connection.
type OpFn = load::OpFn<Kv>;

/// One workload's figures.
struct Outcome {
    workload: &'static str,
    stats: Stats,
    elapsed: Duration,
    clients: usize,
    /// Values read and found equal to those put (`get` only).
    verified: Option<u64>,
}

struct Bench<'a> {
    cli: &'a Cli,
    pool: Vec<Kv>,
    prefix: String,
    /// Numbers operations across the whole run, so keys and stamps never repeat.
    counter: Arc<AtomicU64>,
    data: Payload,
}

async fn run(cli: &Cli, workloads: &[Workload]) -> anyhow::Result<Report> {
    let started_unix_ms = load::unix_ms();
    let endpoints: Vec<String> = cli
        .endpoints
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let connections = cli.connections.unwrap_or(cli.clients).min(cli.clients);
    let pool = connect_all(&endpoints, connections, cli.timeout).await?;
    let prefix = format!("etcd-bench-{}-{started_unix_ms}", std::process::id());
    let bench = Bench {
        cli,
        pool,
        prefix,
        counter: Arc::new(AtomicU64::new(0)),
        data: Payload::new(cli.size),
    };
    let mut results = Vec::new();
    let mut outcome = Ok(());
    for &w in workloads {
        match bench.workload(w).await {
            Ok(o) => results.push(o),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if !cli.keep {
        let prefix = format!("{}/", bench.prefix);
        match bench.pool[0].delete_prefix(prefix.as_bytes()).await {
            Ok(n) => eprintln!("deleted the {n} keys written under {prefix}"),
            Err(e) => eprintln!("cannot delete the keys written under {prefix}: {e}"),
        }
    }
    outcome?;
    Ok(Report {
        endpoints,
        connections,
        started_unix_ms,
        cli_clients: cli.clients,
        size: cli.size,
        duration: cli.ops.is_none().then_some(cli.duration),
        ops: cli.ops,
        warmup: cli.warmup,
        keys: cli.keys,
        results,
    })
}

/// Opens `connections` connections at once, the `k`-th to the `k mod n`-th endpoint.
async fn connect_all(
    endpoints: &[String],
    connections: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Kv>> {
    let tasks: Vec<_> = (0..connections)
        .map(|k| {
            let endpoint = endpoints[k % endpoints.len()].clone();
            tokio::spawn(async move { Kv::connect(&endpoint, timeout).await })
        })
        .collect();
    let mut pool = Vec::with_capacity(connections);
    for task in tasks {
        pool.push(task.await.context("a connecting task failed")??);
    }
    Ok(pool)
}

impl Bench<'_> {
    async fn workload(&self, w: Workload) -> anyhow::Result<Outcome> {
        let cli = self.cli;
        let size = cli.size;
        let name = match w {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Latency => "latency",
            Workload::All => unreachable!("expanded"),
        };
        eprintln!("{name}: running");
        let prefix = self.prefix.clone();
        let data = self.data.clone();
        let verified = Arc::new(AtomicU64::new(0));
        let op: OpFn = match w {
            Workload::Put => Arc::new(move |c, i, _| {
                let key = format!("{prefix}/put/{i}").into_bytes();
                let value = data.stamped(i);
                Box::pin(async move {
                    c.put(key, value).await?;
                    Ok(size)
                })
            }),
            Workload::Get => {
                let keys = Arc::new(self.prepare().await?);
                let verified = verified.clone();
                Arc::new(move |c, _, rng| {
                    let (key, want) = keys[rng.below(keys.len() as u64) as usize].clone();
                    let verified = verified.clone();
                    Box::pin(async move {
                        let got = c.get(key.clone().into_bytes()).await?;
                        let n = check_value(&key, got, &want)?;
                        verified.fetch_add(1, Ordering::Relaxed);
                        Ok(n)
                    })
                })
            }
            Workload::Latency => {
                let key = format!("{prefix}/latency");
                Arc::new(move |c, i, _| {
                    let (key, value) = (key.clone().into_bytes(), data.stamped(i));
                    Box::pin(async move {
                        c.put(key, value).await?;
                        Ok(size)
                    })
                })
            }
            Workload::All => unreachable!("expanded"),
        };
        let clients = if w == Workload::Latency {
            1
        } else {
            cli.clients
        };
        if !cli.warmup.is_zero() {
            self.drive(clients, End::At(Instant::now() + cli.warmup), &op)
                .await;
        }
        let end = match cli.ops {
            Some(n) => End::Count(self.counter.load(Ordering::Relaxed) + n),
            None => End::At(Instant::now() + cli.duration),
        };
        // Only the measured operations' verifications count.
        verified.store(0, Ordering::Relaxed);
        let (stats, elapsed) = self.drive(clients, end, &op).await;
        Ok(Outcome {
            workload: name,
            stats,
            elapsed,
            clients,
            verified: (w == Workload::Get).then(|| verified.load(Ordering::Relaxed)),
        })
    }

    async fn drive(&self, clients: usize, end: End, op: &OpFn) -> (Stats, Duration) {
        load::drive(&self.pool, clients, end, &self.counter, op).await
    }

    /// Puts the keys `get` reads: `--keys` keys of SIZE bytes; their names and values.
    async fn prepare(&self) -> anyhow::Result<Vec<(String, Bytes)>> {
        let keys: Vec<(String, Bytes)> = (0..self.cli.keys)
            .map(|j| {
                (
                    format!("{}/data/{j}", self.prefix),
                    self.data.stamped(u64::MAX - j),
                )
            })
            .collect();
        let written = Arc::new(keys.clone());
        let first = self.counter.load(Ordering::Relaxed);
        let op: OpFn = Arc::new(move |c, i, _| {
            let (key, value) = written[(i - first) as usize].clone();
            Box::pin(async move {
                c.put(key.into_bytes(), value).await?;
                Ok(0)
            })
        });
        let (stats, took) = self
            .drive(self.cli.clients, End::Count(first + self.cli.keys), &op)
            .await;
        if stats.errors > 0 {
            bail!(
                "putting the {} keys to read failed {} times; first: {}",
                self.cli.keys,
                stats.errors,
                stats.first_error.unwrap_or_default()
            );
        }
        eprintln!(
            "put {} keys of {} bytes to read in {:.2} s",
            self.cli.keys,
            self.cli.size,
            took.as_secs_f64()
        );
        Ok(keys)
    }
}

struct Report {
    endpoints: Vec<String>,
    connections: usize,
    started_unix_ms: u128,
    cli_clients: usize,
    size: u64,
    duration: Option<Duration>,
    ops: Option<u64>,
    warmup: Duration,
    keys: u64,
    results: Vec<Outcome>,
}

impl Report {
    fn json(&self) -> serde_json::Value {
        json!({
            "tool": "etcd-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "started_unix_ms": self.started_unix_ms as u64,
            "endpoints": self.endpoints,
            "linearizable_gets": true,
            "clients": self.cli_clients,
            "connections": self.connections,
            "size": self.size,
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "ops_per_workload": self.ops,
            "warmup_s": self.warmup.as_secs_f64(),
            "keys": self.keys,
            "workloads": self.results.iter().map(|o| {
                let mut w = load::workload_json(o.workload, o.clients, &o.stats, o.elapsed);
                if let Some(n) = o.verified {
                    w["verified"] = json!(n);
                }
                w
            }).collect::<Vec<_>>(),
        })
    }

    fn table(&self) -> String {
        let how_long = match (self.ops, self.duration) {
            (Some(n), _) => format!("{n} operations"),
            (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
            (None, None) => String::new(),
        };
        let mut out = format!(
            "etcd-bench: {} (linearizable gets), {} clients over {} connection{}, {}-byte \
             values, {how_long} per workload after {:.1} s of warm-up\n",
            self.endpoints.join(","),
            self.cli_clients,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.size,
            self.warmup.as_secs_f64(),
        );
        let mut rows = vec![load::HEADER.iter().map(|h| h.to_string()).collect()];
        rows.extend(
            self.results
                .iter()
                .map(|o| load::row(o.workload, o.clients, &o.stats, o.elapsed)),
        );
        out.push_str(&load::aligned(&rows, |c| c == 0));
        for o in &self.results {
            if let Some(n) = o.verified {
                out.push_str(&format!("{}: {n} values read and verified\n", o.workload));
            }
            if let Some(e) = &o.stats.first_error {
                out.push_str(&format!(
                    "{}: {} errors, first: {e}\n",
                    o.workload, o.stats.errors
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use prost::Message;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn a_value_read_is_checked() {
        let want = Bytes::from_static(b"abcd");
        assert_eq!(check_value("k", Some(want.clone()), &want), Ok(4));
        assert!(check_value("k", None, &want).is_err());
        assert!(check_value("k", Some(Bytes::from_static(b"abce")), &want).is_err());
        assert!(check_value("k", Some(Bytes::from_static(b"abc")), &want).is_err());
    }

    #[test]
    fn messages_have_etcds_field_numbers() {
        // PutRequest: key = 1 (bytes), value = 2 (bytes); wire type 2 is length-delimited.
        let put = proto::PutRequest {
            key: b"k".to_vec(),
            value: Bytes::from_static(b"vv"),
            ..Default::default()
        };
        assert_eq!(put.encode_to_vec(), [0x0a, 1, b'k', 0x12, 2, b'v', b'v']);
        // RangeRequest: key = 1, serializable = 7 (varint, wire type 0) omitted when false.
        let range = proto::RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
            ..Default::default()
        };
        assert_eq!(range.encode_to_vec(), [0x0a, 1, b'k', 0x38, 1]);
        // RangeResponse: kvs = 2 holding a KeyValue with key = 1 and value = 5, and a
        // field this client does not know (count = 4), which is skipped.
        let kv = [0x0a, 1, b'k', 0x2a, 1, b'v'];
        let mut response = vec![0x12, kv.len() as u8];
        response.extend_from_slice(&kv);
        response.extend_from_slice(&[0x20, 1]);
        let decoded = proto::RangeResponse::decode(&response[..]).expect("decodes");
        assert_eq!(decoded.kvs.len(), 1);
        assert_eq!(decoded.kvs[0].key, b"k");
        assert_eq!(decoded.kvs[0].value, Bytes::from_static(b"v"));
        assert_eq!(decoded.count, 1);
    }
}
