//! Three real `dfs-server` processes on loopback ports, driven by the real `dfs-client`:
//! every operation through every node, concurrent appends through different nodes, SIGKILL
//! of replica holders with failover and catch-up, changes made while a node is down, a full
//! restart, replication factors 1 and 3, and the client library failing over with
//! exactly-once retries while the primary of the file it appends to is killed.
//!
//! The harness keeps a model of what every file must hold. What must happen eventually (a
//! leader, a failover, a catch-up, a node marked down) is polled with a deadline, never
//! waited for with a fixed sleep; what must never happen (a stale, torn or duplicated read)
//! fails at once. After a node is killed, commands are retried until the failover deadline,
//! and a failed write is checked by reading the file before it is sent again, so a retry
//! never applies it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dfs::client::{Client, ClientConfig, ClientError};
use futures::future::join_all;
use serde_json::Value;

use crate::util::{client_cmd, fails, ok, run_with_stdin, welcomes};

/// Node ids of every cluster here.
const IDS: [u64; 3] = [1, 2, 3];
/// How long a cluster may take to start (or nodes to restart) and agree on a leader.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a failover, a catch-up or a down-marking may take.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);
/// Pause between two polls of an eventual condition.
const POLL: Duration = Duration::from_millis(50);
/// Anything waited for at least this long has its time printed.
const SLOW: Duration = Duration::from_millis(200);
/// Attempts at starting a cluster: a port found free can be taken before a node binds it.
const START_ATTEMPTS: usize = 3;
/// Lines of each node's log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// One `dfs-server` process (or its absence, between a kill and a restart).
struct Node {
    id: u64,
    addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self, members: &str, replication: usize) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .args(["--id", &self.id.to_string(), "--cluster", members])
            .args(["--replication-factor", &replication.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dfs-server");
        self.child = Some(child);
    }

    /// SIGKILL, and reap; nothing if the node is not running.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        // openraft narrates every consensus step at info; its warnings stay.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" INFO openraft"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- node {} ({}), log {}, last {} lines (openraft info left out):\n{}",
            self.id,
            self.addr,
            self.log.display(),
            tail.len(),
            tail.join("\n")
        )
    }
}

/// Three nodes with the same `--cluster` list, plus the model of what every file holds.
struct Cluster {
    nodes: Vec<Node>,
    members: String,
    replication: usize,
    /// Every file that must exist, with its content.
    files: BTreeMap<String, Vec<u8>>,
    /// Files deleted through the cluster: reads must say not found.
    deleted: BTreeSet<String>,
    /// Whether every file must have R replicas now: until a node is killed, and again once
    /// [`Cluster::wait_replicated`] saw it.
    full_replicas: bool,
    /// How long a command may keep failing before the test fails: nothing in a healthy
    /// cluster, the failover deadline once a node has been killed.
    patience: Duration,
    /// Kept (not removed) when a test fails, for the logs.
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts three nodes on free loopback ports, each with replication factor `replication`,
    /// and waits until every node serves and all agree on a leader.
    fn start(replication: usize) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            members: String::new(),
            replication,
            files: BTreeMap::new(),
            deleted: BTreeSet::new(),
            full_replicas: true,
            patience: Duration::ZERO,
            tmp: Some(tmp),
        };
        for attempt in 0..START_ATTEMPTS {
            let ports = free_ports(IDS.len());
            cluster.nodes = IDS
                .iter()
                .zip(ports)
                .map(|(&id, port)| {
                    let dir = root.join(format!("try{attempt}-node{id}"));
                    Node {
                        id,
                        addr: format!("127.0.0.1:{port}"),
                        log: dir.with_extension("log"),
                        data_dir: dir,
                        child: None,
                    }
                })
                .collect();
            cluster.members = cluster
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.id, n.addr))
                .collect::<Vec<_>>()
                .join(",");
            if cluster.spawn_and_listen(&IDS) {
                cluster.wait_ready();
                return cluster;
            }
            eprintln!("a node exited during start-up (attempt {attempt}); new ports");
            cluster.nodes.iter_mut().for_each(Node::kill9);
        }
        cluster.fail("the cluster did not start")
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[usize::try_from(id - 1).expect("small id")]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[usize::try_from(id - 1).expect("small id")]
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// `--servers` for these nodes.
    fn servers(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&id| self.node(id).addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Spawns these nodes and waits until each answers a hello; false if one exited.
    fn spawn_and_listen(&mut self, ids: &[u64]) -> bool {
        let (members, replication) = (self.members.clone(), self.replication);
        for &id in ids {
            self.node_mut(id).spawn(&members, replication);
        }
        let deadline = Instant::now() + START_DEADLINE;
        let mut waiting: Vec<u64> = ids.to_vec();
        while !waiting.is_empty() {
            if ids.iter().any(|&id| self.node_mut(id).exited()) {
                return false;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "nodes {waiting:?} did not answer a hello within {START_DEADLINE:?}"
                ));
            }
            waiting.retain(|&id| !welcomes(&self.node(id).addr));
            std::thread::sleep(POLL);
        }
        true
    }

    /// Waits until `status` through every running node lists the three nodes, every running
    /// one up, and all name the same leader (a running node) and term.
    fn wait_ready(&self) {
        self.wait_for("cluster ready", START_DEADLINE, || {
            let mut seen = BTreeSet::new();
            for id in self.running() {
                let status = self.try_json(&[id], &["status"])?;
                seen.insert(self.leader_and_term(&status)?);
            }
            match seen.len() {
                1 => Ok(()),
                _ => Err(format!("nodes disagree on (leader, term): {seen:?}")),
            }
        });
    }

    /// The leader and term in a `status --json` answer that lists the three nodes with every
    /// running one up and exactly one leader, which is running.
    fn leader_and_term(&self, status: &Value) -> Result<(u64, u64), String> {
        let nodes = status.as_array().ok_or("status is not an array")?;
        let ids: Vec<u64> = nodes.iter().filter_map(|n| n["id"].as_u64()).collect();
        if ids != IDS {
            return Err(format!("status lists {ids:?}: {status}"));
        }
        let running = self.running();
        let down: Vec<u64> = nodes
            .iter()
            .filter(|n| n["up"] != true)
            .filter_map(|n| n["id"].as_u64())
            .filter(|id| running.contains(id))
            .collect();
        if !down.is_empty() {
            return Err(format!("running nodes {down:?} not up yet: {status}"));
        }
        let leaders: Vec<u64> = nodes
            .iter()
            .filter(|n| n["leader"] == true)
            .filter_map(|n| n["id"].as_u64())
            .collect();
        let term = nodes[0]["term"].as_u64().ok_or("no term")?;
        match leaders[..] {
            [leader] if running.contains(&leader) && term > 0 => Ok((leader, term)),
            _ => Err(format!("no single running leader: {status}")),
        }
    }

    /// SIGKILLs a node. From now on commands are retried until the failover deadline.
    fn kill(&mut self, id: u64) {
        assert!(self.node(id).child.is_some(), "node {id} is not running");
        self.node_mut(id).kill9();
        self.patience = FAILOVER_DEADLINE;
        self.full_replicas = false;
        eprintln!("killed node {id} (SIGKILL)");
    }

    /// Starts these (killed) nodes again with the same flags and data directories, and waits
    /// until the cluster is ready with them.
    fn restart(&mut self, ids: &[u64]) {
        if !self.spawn_and_listen(ids) {
            self.fail(&format!("nodes {ids:?} exited while restarting"));
        }
        self.wait_ready();
        eprintln!("restarted nodes {ids:?}");
    }

    /// Polls `attempt` until it succeeds; past `limit` the test fails with the last reason.
    /// A zero limit means one attempt.
    fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut attempt: impl FnMut() -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt() {
                Ok(value) => {
                    if attempts > 1 || start.elapsed() >= SLOW {
                        eprintln!("{what}: took {:?} ({attempts} attempts)", start.elapsed());
                    }
                    return value;
                }
                Err(reason) if start.elapsed() >= limit => self.fail(&format!(
                    "{what}: not within {limit:?} ({attempts} attempts); last: {reason}"
                )),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// [`Cluster::wait_for`] with the current patience.
    fn patiently<T>(&self, what: &str, attempt: impl FnMut() -> Result<T, String>) -> T {
        self.wait_for(what, self.patience, attempt)
    }

    #[track_caller]
    fn fail(&self, message: &str) -> ! {
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("node {} log: {}", n.id, n.log.display()))
            .collect();
        panic!("{message}\n{}", logs.join("\n"))
    }

    /// Runs `dfs-client --servers <ids> ARGS`.
    fn run(&self, ids: &[u64], args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = client_cmd(&self.servers(ids));
        cmd.args(args);
        match stdin {
            Some(data) => run_with_stdin(&mut cmd, data),
            None => cmd.output().expect("run dfs-client"),
        }
    }

    /// `ARGS --json` through `ids`: the JSON, or the error line.
    fn try_json(&self, ids: &[u64], args: &[&str]) -> Result<Value, String> {
        let out = self.run(ids, &[&["--json"], args].concat(), None);
        if !out.status.success() {
            return Err(stderr(&out));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON ({e}): {out:?}"))
    }

    /// `ARGS --json` through `ids`, retried within the patience.
    fn json(&self, ids: &[u64], args: &[&str]) -> Value {
        self.patiently(&format!("{args:?} through {ids:?}"), || {
            self.try_json(ids, args)
        })
    }

    /// A file's content through `ids`: `Ok(None)` if the cluster says it does not exist,
    /// `Err` for any other failure.
    fn try_read(&self, ids: &[u64], name: &str) -> Result<Option<Vec<u8>>, String> {
        let out = self.run(ids, &["read", name], None);
        let err = stderr(&out);
        if out.status.success() {
            Ok(Some(out.stdout))
        } else if err.contains(&format!("{name:?} not found")) {
            Ok(None)
        } else {
            Err(err)
        }
    }

    /// Reads `name` through `ids` (retrying failures within the patience) and checks it holds
    /// what the model says; a wrong answer (stale, torn, a deleted file) fails at once.
    fn check_read(&self, ids: &[u64], name: &str) {
        let want = self.files.get(name);
        let what = format!("read {name} through {ids:?}");
        self.patiently(&what, || {
            let got = self.try_read(ids, name)?;
            if got.as_ref() != want {
                self.fail(&format!(
                    "{what}: got {}, want {}",
                    shown(got.as_deref()),
                    shown(want.map(Vec::as_slice))
                ));
            }
            Ok(())
        });
    }

    /// Runs a write-like command through `ids` that turns `name` into `after` (`None`:
    /// deleted), and records it in the model. A failed attempt is retried within the
    /// patience, but only after a read shows it was not applied: a retry by a new client
    /// process is not deduplicated. Any content other than the one before or after fails.
    fn change(
        &mut self,
        ids: &[u64],
        name: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        after: Option<Vec<u8>>,
    ) {
        let before = self.files.get(name).cloned();
        let what = format!("{args:?} through {ids:?}");
        let mut check_first = false;
        self.patiently(&what, || {
            if check_first {
                let got = self.try_read(ids, name)?;
                if got == after {
                    return Ok(());
                }
                if got != before {
                    self.fail(&format!(
                        "{what} failed, and then {name} holds {}: neither before ({}) nor after ({})",
                        shown(got.as_deref()),
                        shown(before.as_deref()),
                        shown(after.as_deref())
                    ));
                }
            }
            let out = self.run(ids, args, stdin);
            if out.status.success() {
                return Ok(());
            }
            check_first = true;
            Err(stderr(&out))
        });
        match after {
            Some(content) => {
                self.deleted.remove(name);
                self.files.insert(name.to_owned(), content);
            }
            None => {
                self.files.remove(name);
                self.deleted.insert(name.to_owned());
            }
        }
    }

    fn create(&mut self, ids: &[u64], name: &str) {
        self.change(ids, name, &["create", name], None, Some(Vec::new()));
    }

    fn append(&mut self, ids: &[u64], name: &str, text: &str) {
        let mut after = self.files.get(name).cloned().unwrap_or_default();
        after.extend_from_slice(text.as_bytes());
        self.change(ids, name, &["write", name, text], None, Some(after));
    }

    fn put(&mut self, ids: &[u64], name: &str, data: &[u8]) {
        self.change(
            ids,
            name,
            &["put", name, "-"],
            Some(data),
            Some(data.to_vec()),
        );
    }

    fn delete(&mut self, ids: &[u64], name: &str) {
        self.change(ids, name, &["delete", name], None, None);
    }

    /// The replica ids `stat` reports for `name` through `id` (see [`Cluster::replica_ids`]).
    fn replicas(&self, id: u64, name: &str) -> Vec<u64> {
        let stat = self.json(&[id], &["stat", name]);
        self.checked_replicas(&format!("stat {name} through {id}"), &stat["replicas"])
    }

    /// The node ids in a `replicas` array: distinct members, at most R of them, and exactly
    /// R unless a node has been killed since every file last had R copies (a node marked
    /// down leaves the replica sets until it returns).
    fn replica_ids(&self, replicas: &Value) -> Result<Vec<u64>, String> {
        let ids: Vec<u64> = replicas
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        let r = self.replication;
        let min = if self.full_replicas { r } else { 1 };
        if distinct.len() == ids.len()
            && distinct.iter().all(|id| IDS.contains(id))
            && (min..=r).contains(&ids.len())
        {
            Ok(ids)
        } else {
            Err(format!(
                "replicas {replicas}, want {min}..={r} distinct node ids"
            ))
        }
    }

    fn checked_replicas(&self, what: &str, replicas: &Value) -> Vec<u64> {
        self.replica_ids(replicas)
            .unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    /// Waits until `table` through `via` shows R replicas for every file; from then on
    /// every check expects R.
    fn wait_replicated(&mut self, via: u64) {
        let r = self.replication;
        self.wait_for("every file back on R replicas", FAILOVER_DEADLINE, || {
            let table = self.try_json(&[via], &["table"])?;
            let short: Vec<String> = table
                .as_object()
                .ok_or("table is not an object")?
                .iter()
                .filter(|(_, replicas)| replicas.as_array().map(Vec::len) != Some(r))
                .map(|(name, replicas)| format!("{name}: {replicas}"))
                .collect();
            if short.is_empty() {
                Ok(())
            } else {
                Err(short.join(", "))
            }
        });
        self.full_replicas = true;
    }

    /// Checks, through each of `through` on its own, that every file reads as in the model,
    /// every deleted file is not found, `ls` lists exactly the model's names and sizes,
    /// `stat` and `table` agree on each file's replicas (see [`Cluster::replica_ids`]), and
    /// that every node gives the same `ls`, `stat` and `table` answers.
    fn check_all(&self, through: &[u64]) {
        let want_ls: Vec<(String, u64)> = self
            .files
            .iter()
            .map(|(name, content)| (name.clone(), content.len() as u64))
            .collect();
        let mut answers: Option<(Value, Vec<Value>, Value)> = None;
        for &id in through {
            for name in self.files.keys().chain(&self.deleted) {
                self.check_read(&[id], name);
            }
            let ls = self.json(&[id], &["ls"]);
            let got_ls: Vec<(String, u64)> = ls
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| (e["name"].as_str().unwrap_or("?").to_owned(), size(e)))
                        .collect()
                })
                .unwrap_or_default();
            if got_ls != want_ls {
                self.fail(&format!("ls through {id}: {got_ls:?}, want {want_ls:?}"));
            }
            // Repair may move a placement between the `stat`s and the `table` (a returned
            // node going back into replica sets), so their agreement is awaited; sizes and
            // names must be right on every attempt.
            let (stats, table) = self.wait_for(
                &format!("stat and table to agree through {id}"),
                FAILOVER_DEADLINE,
                || {
                    let stats: Vec<Value> = self
                        .files
                        .iter()
                        .map(|(name, content)| {
                            let stat = self.json(&[id], &["stat", name]);
                            assert_eq!(
                                size(&stat),
                                content.len() as u64,
                                "stat {name} through {id}"
                            );
                            self.checked_replicas(
                                &format!("stat {name} through {id}"),
                                &stat["replicas"],
                            );
                            stat
                        })
                        .collect();
                    let table = self.json(&[id], &["table"]);
                    let names: Vec<&String> = table
                        .as_object()
                        .map(|t| t.keys().collect())
                        .unwrap_or_default();
                    assert!(
                        names.iter().copied().eq(self.files.keys()),
                        "table through {id} names {names:?}, want {:?}",
                        self.files.keys().collect::<Vec<_>>()
                    );
                    for (name, stat) in self.files.keys().zip(&stats) {
                        if table[name] != stat["replicas"] {
                            return Err(format!(
                                "{name}: table {} but stat {}",
                                table[name], stat["replicas"]
                            ));
                        }
                    }
                    Ok((stats, table))
                },
            );
            let these = (ls, stats, table);
            match &answers {
                None => answers = Some(these),
                Some(first) => assert_eq!(
                    first, &these,
                    "node {id} answers ls/stat/table differently from node {}",
                    through[0]
                ),
            }
        }
    }

    /// Waits until `status` through `via` shows node `down` as down.
    fn wait_marked_down(&self, via: u64, down: u64) {
        self.wait_for(
            &format!("node {down} marked down through {via}"),
            FAILOVER_DEADLINE,
            || {
                let status = self.try_json(&[via], &["status"])?;
                let entry = status
                    .as_array()
                    .and_then(|a| a.iter().find(|n| n["id"] == down))
                    .ok_or_else(|| format!("node {down} missing: {status}"))?;
                if entry["up"] == false {
                    Ok(())
                } else {
                    Err(format!("still up: {status}"))
                }
            },
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.iter_mut().for_each(Node::kill9);
        if std::thread::panicking() {
            if let Some(tmp) = self.tmp.take() {
                eprintln!(
                    "cluster test failed; data and logs kept in {}",
                    tmp.keep().display()
                );
            }
            for node in &self.nodes {
                eprintln!("{}", node.log_tail());
            }
        }
    }
}

/// `n` distinct free loopback ports (held at once, so no two are the same).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

fn size(v: &Value) -> u64 {
    v["size"].as_u64().unwrap_or(u64::MAX)
}

/// A file's content for a failure message: not found, or its length and start.
fn shown(content: Option<&[u8]>) -> String {
    match content {
        None => "not found".to_owned(),
        Some(bytes) => {
            let head = &bytes[..bytes.len().min(120)];
            format!("{} bytes {:?}", bytes.len(), String::from_utf8_lossy(head))
        }
    }
}

/// Deterministic bytes of any length, distinct per `seed`.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i * 7 + usize::from(seed) * 13) % 26) as u8)
        .collect()
}

/// `table --json` as name -> set of node ids (the order, primary first, may change when a
/// node leaves and returns).
fn replica_sets(table: &Value) -> BTreeMap<String, BTreeSet<u64>> {
    table
        .as_object()
        .expect("table is an object")
        .iter()
        .map(|(name, ids)| {
            let ids = ids.as_array().expect("replicas array");
            (name.clone(), ids.iter().filter_map(Value::as_u64).collect())
        })
        .collect()
}

/// The node ids other than these.
fn others(ids: &[u64]) -> Vec<u64> {
    IDS.into_iter().filter(|id| !ids.contains(id)).collect()
}

#[test]
fn three_nodes_r2_every_operation() {
    let mut c = Cluster::start(2);

    // Every write operation, through different nodes.
    c.create(&[1], "docs/a.txt");
    c.append(&[2], "docs/a.txt", "hello ");
    c.append(&[3], "docs/a.txt", "world");
    c.append(&[3], "logs/new.log", "append creates\n");
    c.put(&[1], "bin/stdin", b"from stdin");
    let big = pattern(1, 1_000_000);
    let local = c.tmp.as_ref().expect("tmp").path().join("big.bin");
    std::fs::write(&local, &big).expect("local file");
    let local = local.to_str().expect("utf-8 path").to_owned();
    c.change(
        &[2],
        "bin/big",
        &["put", "bin/big", &local],
        None,
        Some(big),
    );
    c.put(&[3], "bin/stdin", b"replaced");
    c.create(&[2], "gone.txt");
    c.append(&[1], "gone.txt", "short-lived");
    let err = fails(&c.run(&[3], &["create", "docs/a.txt"], None));
    assert!(err.contains("already exists"), "{err}");

    // Same bytes, ls, stat and table through every node; R=2 replicas everywhere.
    c.check_all(&IDS);
    for id in IDS {
        let part = ok(&c.run(
            &[id],
            &["cat", "docs/a.txt", "--offset", "6", "--len", "3"],
            None,
        ));
        assert_eq!(part, "wor", "ranged read through {id}");
        let ls = c.json(&[id], &["ls", "docs/"]);
        assert_eq!(
            ls.as_array().map(Vec::len),
            Some(1),
            "ls docs/ through {id}: {ls}"
        );
        assert_eq!(ls[0]["version"], 2, "create + 2 appends through {id}: {ls}");
    }
    let stat = c.json(&[3], &["stat", "docs/a.txt"]);
    assert_eq!(stat["name"], "docs/a.txt");
    assert_eq!(stat["version"], 2);

    // delete through one node: gone through all of them.
    c.delete(&[2], "gone.txt");
    c.check_all(&IDS);
    for id in IDS {
        let err = fails(&c.run(&[id], &["stat", "gone.txt"], None));
        assert!(
            err.contains("not found"),
            "stat after delete through {id}: {err}"
        );
        let err = fails(&c.run(&[id], &["delete", "gone.txt"], None));
        assert!(
            err.contains("not found"),
            "second delete through {id}: {err}"
        );
    }

    // status: three nodes, all up, one leader, the same term everywhere.
    let mut views = BTreeSet::new();
    for id in IDS {
        let status = c.json(&[id], &["status"]);
        let view = c.leader_and_term(&status).unwrap_or_else(|e| c.fail(&e));
        for node in status.as_array().expect("array") {
            let nid = node["id"].as_u64().expect("id");
            assert_eq!(node["addr"], c.node(nid).addr.as_str(), "{status}");
            // Another follower's role may be unknown to a follower; only one leads.
            let leads = node["role"] == "leader";
            assert_eq!(leads, nid == view.0, "{status}");
        }
        let text = ok(&c.run(&[id], &["status"], None));
        assert!(text.contains(&c.node(1).addr), "{text}");
        views.insert(view);
    }
    assert_eq!(
        views.len(),
        1,
        "nodes disagree on leader and term: {views:?}"
    );
}

/// Length of every record of the concurrent-append test.
const RECORD_LEN: usize = 19;

/// Writer `i`'s record: `record-NN-` then eight letters that depend on `i`, then a newline.
fn record(i: usize) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    let r = format!("record-{i:02}-{}\n", letter.to_string().repeat(8));
    assert_eq!(r.len(), RECORD_LEN);
    r
}

#[test]
fn concurrent_appends_through_different_nodes() {
    const WRITERS: usize = 24;
    let mut c = Cluster::start(2);
    c.create(&[1], "log");
    let writers: Vec<Child> = (0..WRITERS)
        .map(|i| {
            client_cmd(&c.node(IDS[i % IDS.len()]).addr)
                .args(["write", "log", &record(i)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dfs-client")
        })
        .collect();
    for (i, writer) in writers.into_iter().enumerate() {
        let out = writer.wait_with_output().expect("dfs-client output");
        assert!(
            out.status.success(),
            "writer {i} through node {}: {}",
            IDS[i % IDS.len()],
            stderr(&out)
        );
    }

    let content = c
        .try_read(&[1], "log")
        .unwrap_or_else(|e| c.fail(&e))
        .expect("log exists");
    assert_eq!(
        content.len(),
        WRITERS * RECORD_LEN,
        "{}",
        shown(Some(&content))
    );
    let mut seen = Vec::new();
    for (at, chunk) in content.chunks(RECORD_LEN).enumerate() {
        match (0..WRITERS).find(|&i| record(i).as_bytes() == chunk) {
            Some(i) => seen.push(i),
            None => c.fail(&format!(
                "record {at} is torn or interleaved: {:?}",
                String::from_utf8_lossy(chunk)
            )),
        }
    }
    let once: BTreeSet<usize> = seen.iter().copied().collect();
    assert_eq!(
        once.len(),
        WRITERS,
        "a record is missing or repeated: {seen:?}"
    );
    eprintln!("appends applied in the order {seen:?}");

    // Every node serves the same bytes in the same order, with one version per append.
    c.files.insert("log".to_owned(), content);
    c.check_all(&IDS);
    assert_eq!(c.json(&[2], &["stat", "log"])["version"], WRITERS);
}

#[test]
fn sigkill_of_a_holder_then_failover_and_return() {
    let mut c = Cluster::start(2);
    c.create(&[1], "f");
    c.append(&[1], "f", "before the kill\n");
    let holders = c.replicas(1, "f");
    let (primary, second) = (holders[0], holders[1]);
    let bystander = others(&holders)[0];

    // The primary dies: through the node that holds no copy, writes go on after a failover.
    let killed_at = Instant::now();
    c.kill(primary);
    c.append(&[bystander], "f", "after the kill\n");
    eprintln!(
        "first append after killing node {primary} acknowledged {:?} after the kill",
        killed_at.elapsed()
    );
    c.check_read(&[bystander], "f");
    c.check_read(&[second], "f");
    c.wait_marked_down(bystander, primary);

    // It returns and catches up: the file is on two replicas again, one of them the node.
    c.restart(&[primary]);
    let returned_at = Instant::now();
    c.wait_for(
        &format!("f back on node {primary}"),
        FAILOVER_DEADLINE,
        || {
            let stat = c.try_json(&[primary], &["stat", "f"])?;
            let replicas = c.replica_ids(&stat["replicas"])?;
            if replicas.len() == 2 && replicas.contains(&primary) {
                Ok(())
            } else {
                Err(format!("replicas {replicas:?}"))
            }
        },
    );
    eprintln!(
        "node {primary} caught up {:?} after its restart",
        returned_at.elapsed()
    );
    c.append(&[primary], "f", "after the return\n");

    // The other original holder dies: the returned node alone serves the latest content.
    c.kill(second);
    c.check_read(&[primary], "f");
    c.append(&[primary], "f", "after the second kill\n");
    c.check_all(&[primary, bystander]);
}

#[test]
fn changes_while_a_node_is_down_are_right_after_it_returns() {
    const ON_3: usize = 4;
    let mut c = Cluster::start(2);
    // Files until four of them have a copy on node 3, which is about to go down.
    let mut held_by_3 = Vec::new();
    for i in 0..24 {
        let name = format!("pre/{i}");
        c.append(&[IDS[i % 3]], &name, &format!("old content of {name}\n"));
        if c.replicas(1, &name).contains(&3) {
            held_by_3.push(name);
        }
        if held_by_3.len() == ON_3 {
            break;
        }
    }
    assert_eq!(held_by_3.len(), ON_3, "placement never chose node 3");

    c.kill(3);
    let live = [1, 2];
    c.delete(&live, &held_by_3[0]);
    c.append(&live, &held_by_3[1], "appended while 3 was down\n");
    c.put(&live, &held_by_3[2], b"replaced while 3 was down\n");
    c.create(&live, "new/empty");
    c.append(&live, "new/a", "created while 3 was down\n");
    c.put(&live, "new/b", &pattern(2, 300_000));
    c.check_all(&live);

    // Through node 3 alone: nothing stale, nothing missing.
    c.restart(&[3]);
    c.check_all(&[3]);
    c.append(&[3], &held_by_3[3], "appended through 3 after its return\n");
    c.wait_replicated(3);
    c.check_all(&IDS);
}

#[test]
fn full_restart_keeps_every_file() {
    let mut c = Cluster::start(2);
    for (i, id) in IDS.iter().cycle().take(6).enumerate() {
        let name = format!("f/{i}");
        c.append(&[*id], &name, &format!("first line of {name}\n"));
        if i % 2 == 0 {
            c.append(&[*id], &name, "second line\n");
        }
    }
    c.put(&[2], "f/big", &pattern(3, 600_000));
    c.delete(&[3], "f/5");
    let placement = replica_sets(&c.json(&[1], &["table"]));

    for id in IDS {
        c.kill(id);
    }
    c.restart(&IDS);
    c.wait_replicated(2);
    c.check_all(&IDS);
    assert_eq!(
        replica_sets(&c.json(&[2], &["table"])),
        placement,
        "files moved to other nodes"
    );
    c.append(&[3], "f/0", "after the restart\n");
    c.check_all(&IDS);
}

#[test]
fn replication_factor_one_and_three() {
    {
        let mut c = Cluster::start(1);
        for id in IDS {
            c.append(
                &[id],
                &format!("r1/{id}"),
                &format!("written through {id}\n"),
            );
        }
        c.put(&[2], "r1/big", &pattern(4, 300_000));
        c.check_all(&IDS);
    }

    let mut c = Cluster::start(3);
    for id in IDS {
        c.append(
            &[id],
            &format!("r3/{id}"),
            &format!("written through {id}\n"),
        );
    }
    c.check_all(&IDS);
    for id in IDS {
        let replicas: BTreeSet<u64> = c.replicas(id, "r3/1").into_iter().collect();
        assert!(
            replicas.iter().copied().eq(IDS),
            "R=3 on 3 nodes: {replicas:?}"
        );
    }

    c.kill(1);
    let live = [2, 3];
    c.check_all(&live);
    c.append(&live, "r3/1", "appended with node 1 down\n");
    c.put(&[3], "r3/2", b"replaced with node 1 down\n");
    c.check_all(&live);
}

/// The line writer `w` appends as its `seq`th record in the library failover test.
fn line(w: u64, seq: u64) -> String {
    format!("w{w}-s{seq:03}\n")
}

#[test]
fn the_library_fails_over_and_retries_exactly_once() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 30;
    let mut c = Cluster::start(2);
    c.create(&[1], "log");
    let primary = c.replicas(1, "log")[0];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ClientConfig::new(IDS.iter().map(|id| c.node(*id).addr.clone()));
    config.retry_deadline = FAILOVER_DEADLINE;
    let client = rt
        .block_on(Client::with_config(config))
        .expect("client connects");

    // Writers append their numbered lines one after another, each waiting for its ack.
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            rt.spawn(async move {
                for seq in 0..EACH {
                    client.append("log", line(w, seq)).await?;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<(), ClientError>(())
            })
        })
        .collect();

    // The file's primary dies with a third of the appends acknowledged, others in flight.
    c.wait_for("a third of the appends", START_DEADLINE, || {
        let n = acked.load(Ordering::SeqCst);
        if n >= WRITERS * EACH / 3 {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    });
    c.kill(primary);
    for (w, writer) in rt.block_on(join_all(writers)).into_iter().enumerate() {
        match writer {
            Ok(Ok(())) => {}
            Ok(Err(e)) => c.fail(&format!("writer {w} failed across the failover: {e}")),
            Err(e) => c.fail(&format!("writer {w} panicked: {e}")),
        }
    }

    // Every line once, each writer's in its order, nothing else.
    let content = rt
        .block_on(client.read("log", 0, None))
        .unwrap_or_else(|e| c.fail(&format!("read after the failover: {e}")));
    let text = String::from_utf8_lossy(&content).into_owned();
    let mut next = vec![0u64; WRITERS as usize];
    for l in text.lines() {
        let parsed = l
            .strip_prefix('w')
            .and_then(|l| l.split_once("-s"))
            .and_then(|(w, s)| Some((w.parse::<usize>().ok()?, s.parse::<u64>().ok()?)));
        match parsed {
            Some((w, seq)) if w < next.len() && seq == next[w] => next[w] += 1,
            _ => c.fail(&format!(
                "line {l:?} is torn, repeated or out of order in:\n{text}"
            )),
        }
    }
    assert_eq!(next, vec![EACH; WRITERS as usize], "lines per writer");
    drop(client);
    drop(rt);
    let live = others(&[primary]);
    c.files.insert("log".to_owned(), content.to_vec());
    c.check_all(&live);
}

#[test]
fn a_file_created_but_never_written_survives_its_primary() {
    let mut c = Cluster::start(2);
    c.create(&[1], "empty");
    c.create(&[2], "kept-empty");
    let holders = c.replicas(1, "empty");
    let primary = holders[0];
    let live = others(&[primary]);

    // No replica ever made a copy of it: the new primary knows it is the empty file.
    c.kill(primary);
    c.check_all(&live);
    c.append(&live, "empty", "first words\n");
    c.check_all(&live);

    // Back, the old primary serves neither an old copy nor a missing one.
    c.restart(&[primary]);
    c.wait_replicated(primary);
    c.check_all(&IDS);
}
