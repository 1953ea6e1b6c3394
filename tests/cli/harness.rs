//! The harness of the end-to-end cluster tests (`cluster.rs`, `faults.rs`): three real
//! `dfs-server` processes on free loopback ports, started, SIGKILLed and restarted, driven by
//! the real `dfs-client`, with a model of what every file must hold.
//!
//! What must happen eventually (a leader, a failover, a catch-up, a node marked down) is
//! polled with a deadline, never waited for with a fixed sleep; what must never happen (a
//! stale, torn or duplicated read) fails at once. After a node is killed, commands are
//! retried until the failover deadline, and a failed write is checked by reading the file
//! before it is sent again, so a retry never applies it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{client_cmd, run_with_stdin, welcomes};

/// Node ids of every cluster here.
pub(crate) const IDS: [u64; 3] = [1, 2, 3];
/// How long a cluster may take to start (or nodes to restart) and agree on a leader.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a failover, a catch-up or a down-marking may take.
pub(crate) const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);
/// Pause between two polls of an eventual condition.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// Anything waited for at least this long has its time printed.
pub(crate) const SLOW: Duration = Duration::from_millis(200);
/// Attempts at starting a cluster: a port found free can be taken before a node binds it.
pub(crate) const START_ATTEMPTS: usize = 3;
/// Lines of each node's log shown when a test fails.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// One `dfs-server` process (or its absence, between a kill and a restart).
pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
}

impl Node {
    /// Starts the node's `dfs-server` with these common flags and `extra` ones.
    pub(crate) fn spawn(&mut self, members: &str, replication: usize, extra: &[String]) {
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
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dfs-server");
        self.child = Some(child);
    }

    /// SIGKILL, and reap; nothing if the node is not running.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    pub(crate) fn log_tail(&self) -> String {
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
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    pub(crate) members: String,
    pub(crate) replication: usize,
    /// Further `dfs-server` flags every node gets (at every start).
    pub(crate) server_args: Vec<String>,
    /// Every file that must exist, with its content.
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    /// Files deleted through the cluster: reads must say not found.
    pub(crate) deleted: BTreeSet<String>,
    /// Whether every file must have R replicas now: until a node is killed, and again once
    /// [`Cluster::wait_replicated`] saw it.
    pub(crate) full_replicas: bool,
    /// How long a command may keep failing before the test fails: nothing in a healthy
    /// cluster, the failover deadline once a node has been killed.
    pub(crate) patience: Duration,
    /// Kept (not removed) when a test fails, for the logs.
    pub(crate) tmp: Option<tempfile::TempDir>,
    /// File systems mounted under `tmp` for this cluster: unmounted once the nodes are
    /// killed, before `tmp` is removed.
    pub(crate) mounts: Vec<TmpfsMount>,
}

impl Cluster {
    /// Starts three nodes on free loopback ports, each with replication factor `replication`,
    /// and waits until every node serves and all agree on a leader.
    pub(crate) fn start(replication: usize) -> Cluster {
        Self::start_with(replication, |_| Ok(None)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Cluster::start`], calling `prepare` with each node before its first start (to give
    /// it a small disk, say); an error from `prepare` stops the start and is returned. A
    /// mount it returns lasts as long as the cluster.
    pub(crate) fn start_with(
        replication: usize,
        prepare: impl FnMut(&Node) -> Result<Option<TmpfsMount>, String>,
    ) -> Result<Cluster, String> {
        Self::start_configured(replication, &[], prepare)
    }

    /// [`Cluster::start`], every node started with these further `dfs-server` flags.
    pub(crate) fn start_with_args(replication: usize, server_args: &[&str]) -> Cluster {
        Self::start_configured(replication, server_args, |_| Ok(None))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_configured(
        replication: usize,
        server_args: &[&str],
        mut prepare: impl FnMut(&Node) -> Result<Option<TmpfsMount>, String>,
    ) -> Result<Cluster, String> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            members: String::new(),
            replication,
            server_args: server_args.iter().map(|a| (*a).to_owned()).collect(),
            files: BTreeMap::new(),
            deleted: BTreeSet::new(),
            full_replicas: true,
            patience: Duration::ZERO,
            tmp: Some(tmp),
            mounts: Vec::new(),
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
            for node in &cluster.nodes {
                if let Some(mount) = prepare(node)? {
                    cluster.mounts.push(mount);
                }
            }
            if cluster.spawn_and_listen(&IDS) {
                cluster.wait_ready();
                return Ok(cluster);
            }
            eprintln!("a node exited during start-up (attempt {attempt}); new ports");
            cluster.nodes.iter_mut().for_each(Node::kill9);
        }
        cluster.fail("the cluster did not start")
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        &self.nodes[usize::try_from(id - 1).expect("small id")]
    }

    pub(crate) fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[usize::try_from(id - 1).expect("small id")]
    }

    pub(crate) fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// `--servers` for these nodes.
    pub(crate) fn servers(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&id| self.node(id).addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Spawns these nodes and waits until each answers a hello; false if one exited.
    pub(crate) fn spawn_and_listen(&mut self, ids: &[u64]) -> bool {
        let (members, replication) = (self.members.clone(), self.replication);
        let extra = self.server_args.clone();
        for &id in ids {
            self.node_mut(id).spawn(&members, replication, &extra);
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
    pub(crate) fn wait_ready(&self) {
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
    pub(crate) fn leader_and_term(&self, status: &Value) -> Result<(u64, u64), String> {
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
    pub(crate) fn kill(&mut self, id: u64) {
        assert!(self.node(id).child.is_some(), "node {id} is not running");
        self.node_mut(id).kill9();
        self.patience = FAILOVER_DEADLINE;
        self.full_replicas = false;
        eprintln!("killed node {id} (SIGKILL)");
    }

    /// Starts these (killed) nodes again with the same flags and data directories, and waits
    /// until the cluster is ready with them.
    pub(crate) fn restart(&mut self, ids: &[u64]) {
        if !self.spawn_and_listen(ids) {
            self.fail(&format!("nodes {ids:?} exited while restarting"));
        }
        self.wait_ready();
        eprintln!("restarted nodes {ids:?}");
    }

    /// Polls `attempt` until it succeeds; past `limit` the test fails with the last reason.
    /// A zero limit means one attempt.
    pub(crate) fn wait_for<T>(
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
    pub(crate) fn patiently<T>(&self, what: &str, attempt: impl FnMut() -> Result<T, String>) -> T {
        self.wait_for(what, self.patience, attempt)
    }

    #[track_caller]
    pub(crate) fn fail(&self, message: &str) -> ! {
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("node {} log: {}", n.id, n.log.display()))
            .collect();
        panic!("{message}\n{}", logs.join("\n"))
    }

    /// Runs `dfs-client --servers <ids> ARGS`.
    pub(crate) fn run(&self, ids: &[u64], args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = client_cmd(&self.servers(ids));
        cmd.args(args);
        match stdin {
            Some(data) => run_with_stdin(&mut cmd, data),
            None => cmd.output().expect("run dfs-client"),
        }
    }

    /// `ARGS --json` through `ids`: the JSON, or the error line.
    pub(crate) fn try_json(&self, ids: &[u64], args: &[&str]) -> Result<Value, String> {
        let out = self.run(ids, &[&["--json"], args].concat(), None);
        if !out.status.success() {
            return Err(stderr(&out));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON ({e}): {out:?}"))
    }

    /// `ARGS --json` through `ids`, retried within the patience.
    pub(crate) fn json(&self, ids: &[u64], args: &[&str]) -> Value {
        self.patiently(&format!("{args:?} through {ids:?}"), || {
            self.try_json(ids, args)
        })
    }

    /// A file's content through `ids`: `Ok(None)` if the cluster says it does not exist,
    /// `Err` for any other failure.
    pub(crate) fn try_read(&self, ids: &[u64], name: &str) -> Result<Option<Vec<u8>>, String> {
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
    pub(crate) fn check_read(&self, ids: &[u64], name: &str) {
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
    pub(crate) fn change(
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

    pub(crate) fn create(&mut self, ids: &[u64], name: &str) {
        self.change(ids, name, &["create", name], None, Some(Vec::new()));
    }

    pub(crate) fn append(&mut self, ids: &[u64], name: &str, text: &str) {
        let mut after = self.files.get(name).cloned().unwrap_or_default();
        after.extend_from_slice(text.as_bytes());
        self.change(ids, name, &["write", name, text], None, Some(after));
    }

    pub(crate) fn put(&mut self, ids: &[u64], name: &str, data: &[u8]) {
        self.change(
            ids,
            name,
            &["put", name, "-"],
            Some(data),
            Some(data.to_vec()),
        );
    }

    pub(crate) fn delete(&mut self, ids: &[u64], name: &str) {
        self.change(ids, name, &["delete", name], None, None);
    }

    /// The replica ids `stat` reports for `name` through `id` (see [`Cluster::replica_ids`]).
    pub(crate) fn replicas(&self, id: u64, name: &str) -> Vec<u64> {
        let stat = self.json(&[id], &["stat", name]);
        self.checked_replicas(&format!("stat {name} through {id}"), &stat["replicas"])
    }

    /// The node ids in a `replicas` array: distinct members, at most R of them, and exactly
    /// R unless a node has been killed since every file last had R copies (a node marked
    /// down leaves the replica sets until it returns).
    pub(crate) fn replica_ids(&self, replicas: &Value) -> Result<Vec<u64>, String> {
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

    pub(crate) fn checked_replicas(&self, what: &str, replicas: &Value) -> Vec<u64> {
        self.replica_ids(replicas)
            .unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    /// Waits until `table` through `via` shows R replicas for every file; from then on
    /// every check expects R.
    pub(crate) fn wait_replicated(&mut self, via: u64) {
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
    pub(crate) fn check_all(&self, through: &[u64]) {
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
    pub(crate) fn wait_marked_down(&self, via: u64, down: u64) {
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
        self.mounts.clear();
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

/// Three `dfs-server` processes (nodes [`IDS`]) on fresh ports, started with `extra`
/// flags (a secret, tokens, TLS), keeping R = `replication` replicas, their data and logs
/// in `dir`. Not a [`Cluster`]: its clients need the flags too. Returns the nodes and the
/// addresses for `--servers`. Run the test in [`then_kill`].
pub(crate) fn spawn_flagged(
    dir: &Path,
    replication: usize,
    extra: &[String],
) -> (Vec<Node>, String) {
    let ports = free_ports(IDS.len());
    let members = IDS
        .iter()
        .zip(&ports)
        .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = IDS
        .iter()
        .zip(&ports)
        .map(|(&id, port)| Node {
            id,
            addr: format!("127.0.0.1:{port}"),
            data_dir: dir.join(format!("node{id}")),
            log: dir.join(format!("node{id}.log")),
            child: None,
        })
        .collect();
    for node in &mut nodes {
        node.spawn(&members, replication, extra);
    }
    let servers = nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    (nodes, servers)
}

/// Waits until `status` (a `dfs-client --json status` run) shows every node up.
pub(crate) fn wait_all_up(status: impl Fn() -> Output) {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let out = status();
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.matches("\"up\":true").count() == IDS.len() {
            return;
        }
        assert!(Instant::now() < deadline, "not ready: {}", stderr(&out));
        std::thread::sleep(POLL);
    }
}

/// Runs `test`, then kills every node; if it panicked, prints their logs' tails and
/// panics on.
pub(crate) fn then_kill(nodes: &mut [Node], test: impl FnOnce() + std::panic::UnwindSafe) {
    let result = std::panic::catch_unwind(test);
    for node in nodes.iter_mut() {
        node.kill9();
    }
    if let Err(panic) = result {
        for node in nodes.iter() {
            eprintln!("{}", node.log_tail());
        }
        std::panic::resume_unwind(panic);
    }
}

/// `n` distinct free loopback ports (held at once, so no two are the same).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

pub(crate) fn size(v: &Value) -> u64 {
    v["size"].as_u64().unwrap_or(u64::MAX)
}

/// A file's content for a failure message: not found, or its length and start.
pub(crate) fn shown(content: Option<&[u8]>) -> String {
    match content {
        None => "not found".to_owned(),
        Some(bytes) => {
            let head = &bytes[..bytes.len().min(120)];
            format!("{} bytes {:?}", bytes.len(), String::from_utf8_lossy(head))
        }
    }
}

/// Deterministic bytes of any length, distinct per `seed`.
pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i * 7 + usize::from(seed) * 13) % 26) as u8)
        .collect()
}

/// `table --json` as name -> set of node ids (the order, primary first, may change when a
/// node leaves and returns).
pub(crate) fn replica_sets(table: &Value) -> BTreeMap<String, BTreeSet<u64>> {
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
pub(crate) fn others(ids: &[u64]) -> Vec<u64> {
    IDS.into_iter().filter(|id| !ids.contains(id)).collect()
}

/// A tmpfs of a fixed size mounted on a directory (root only); unmounted on drop.
pub(crate) struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    /// Creates `path` and mounts a tmpfs of `size` (`mount -o size=`, such as `4m`) on it;
    /// the reason if it cannot (not root, no `mount`, no permission in this container).
    pub(crate) fn new(path: &Path, size: &str) -> Result<TmpfsMount, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(TmpfsMount {
                path: path.to_owned(),
            })
        } else {
            Err(format!(
                "mount -t tmpfs on {} failed ({}): {}",
                path.display(),
                out.status,
                stderr(&out)
            ))
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // The processes that used it have been killed; the kernel may need a moment to let go.
        for _ in 0..50 {
            match Command::new("umount").arg(&self.path).output() {
                Ok(out) if out.status.success() => return,
                _ => std::thread::sleep(POLL),
            }
        }
        let lazy = Command::new("umount").arg("-l").arg(&self.path).output();
        if !lazy.is_ok_and(|o| o.status.success()) {
            eprintln!("cannot unmount {}", self.path.display());
        }
    }
}
