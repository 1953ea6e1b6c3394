//! A cluster of real `dfs-server` processes (three by default, [`Cluster::node_count`])
//! on free loopback ports, for the measuring binaries (`dfs-failover`, `dfs-bench`):
//! replication factor 2, every other
//! setting at its default (fsync on), data and logs in a fresh temporary directory. Every
//! process is killed and the directory removed when the [`Cluster`] is dropped, so on an
//! error or an interruption too, unless it was asked to keep them.
//!
//! Not every binary uses every part (`dfs-bench` never kills or restarts a node), hence
//! the `dead_code` allowances.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use dfs::client::{Client, ClientConfig};

/// Node ids of the default three-node cluster (a cluster of N nodes has ids `1..=N`).
pub const IDS: [u64; 3] = [1, 2, 3];
/// The most nodes a cluster may have (each is a process with its own ports and data).
pub const NODES_MAX: usize = 32;
/// Replicas per file.
pub const REPLICATION: usize = 2;
/// How long the cluster may take to start, or a node to come back.
pub const START_LIMIT: Duration = Duration::from_secs(60);
/// Pause between two polls of a condition.
pub const POLL: Duration = Duration::from_millis(20);
/// Lines of each node's log shown when a run fails.
const LOG_TAIL_LINES: usize = 15;

/// `dfs-server` in the directory of this executable.
pub fn default_server() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let path = exe
        .parent()
        .context("this program's path has no directory")?
        .join(format!("dfs-server{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "no dfs-server next to this program ({}); build it first \
             (cargo build --release --bins) or pass --server PATH",
            path.display()
        );
    }
    Ok(path)
}

/// One `dfs-server` process slot.
struct Node {
    id: u64,
    addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The processes and their temporary directory: killed and removed on drop.
pub struct Cluster {
    server: PathBuf,
    /// The temporary directory holding every node's data and log.
    pub root: PathBuf,
    keep: bool,
    members: String,
    nodes: Vec<Node>,
    /// Extra arguments every server is started with (after the ones this module sets).
    pub extra_args: Vec<String>,
    /// How many nodes [`start`](Self::start) starts (ids `1..=node_count`): three unless
    /// set before, at least [`REPLICATION`] and at most [`NODES_MAX`].
    pub node_count: usize,
}

impl Cluster {
    /// A cluster of `server` processes, not started yet, in a new temporary directory
    /// whose name starts with `prefix`; `keep` keeps the directory when it ends.
    pub fn new(server: PathBuf, prefix: &str, keep: bool) -> anyhow::Result<Cluster> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let root = std::env::temp_dir().join(format!("{prefix}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Cluster {
            server,
            root,
            keep,
            members: String::new(),
            nodes: Vec::new(),
            extra_args: Vec::new(),
            node_count: IDS.len(),
        })
    }

    /// Starts the [`node_count`](Self::node_count) nodes on free ports (new ports if one
    /// exits at start-up: a port found free can be taken before the node binds it) and
    /// waits until they are ready (see [`wait_ready`](Self::wait_ready)).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if !(REPLICATION..=NODES_MAX).contains(&self.node_count) {
            bail!(
                "a cluster has {REPLICATION} to {NODES_MAX} nodes (R = {REPLICATION}), not {}",
                self.node_count
            );
        }
        let ids: Vec<u64> = (1..=self.node_count as u64).collect();
        for attempt in 0..3 {
            self.kill_all();
            let ports = free_ports(ids.len())?;
            self.nodes = ids
                .iter()
                .zip(ports)
                .map(|(&id, port)| {
                    let data_dir = self.root.join(format!("try{attempt}-node{id}"));
                    Node {
                        id,
                        addr: format!("127.0.0.1:{port}"),
                        log: data_dir.with_extension("log"),
                        data_dir,
                        child: None,
                    }
                })
                .collect();
            self.members = self
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.id, n.addr))
                .collect::<Vec<_>>()
                .join(",");
            for &id in &ids {
                self.spawn(id)?;
            }
            let started = Instant::now();
            while started.elapsed() < START_LIMIT {
                if self.any_exited() {
                    break;
                }
                if self.wait_ready_once().await.is_ok() {
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
            eprintln!("the cluster did not start (attempt {attempt}); trying new ports");
        }
        bail!("the cluster did not start")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("known node id")
    }

    /// The ids of the nodes, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The client addresses of the nodes `ids`.
    pub fn servers(&self, ids: &[u64]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| ids.contains(&n.id))
            .map(|n| n.addr.clone())
            .collect()
    }

    /// Each running node's id and process id.
    #[allow(dead_code)]
    pub fn pids(&self) -> Vec<(u64, u32)> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(|c| (n.id, c.id())))
            .collect()
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let (server, members) = (self.server.clone(), self.members.clone());
        let extra = self.extra_args.clone();
        let node = self.node_mut(id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        let child = Command::new(&server)
            .args(["--id", &id.to_string(), "--cluster", &members])
            .args(["--replication-factor", &REPLICATION.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", server.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL (`Child::kill` on unix), and reap.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Starts node `id` again on its port and data directory.
    #[allow(dead_code)]
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)
    }

    fn any_exited(&mut self) -> bool {
        self.nodes.iter_mut().any(|n| {
            n.child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        })
    }

    /// Waits until every node answers `status` with every node up and the same leader;
    /// returns the leader.
    #[allow(dead_code)]
    pub async fn wait_ready(&mut self) -> anyhow::Result<u64> {
        let started = Instant::now();
        loop {
            if self.any_exited() {
                bail!("a dfs-server process exited");
            }
            match self.wait_ready_once().await {
                Ok(leader) => return Ok(leader),
                Err(reason) if started.elapsed() >= START_LIMIT => {
                    bail!("the cluster was not ready within {START_LIMIT:?}; last: {reason}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// One look: every node up in every node's `status`, all naming the same leader.
    async fn wait_ready_once(&self) -> Result<u64, String> {
        let mut leaders = Vec::new();
        for node in &self.nodes {
            let mut config = ClientConfig::new([node.addr.clone()]);
            config.connect_timeout = Duration::from_secs(1);
            config.request_timeout = Duration::from_secs(2);
            config.retry_deadline = Duration::ZERO;
            let client = Client::with_config(config)
                .await
                .map_err(|e| format!("node {}: {e}", node.id))?;
            let status = client
                .status()
                .await
                .map_err(|e| format!("node {}: {e}", node.id))?;
            if let Some(down) = status.nodes.iter().find(|n| !n.up) {
                return Err(format!("node {} sees node {} down", node.id, down.id));
            }
            if status.nodes.len() != self.nodes.len() {
                return Err(format!("node {} lists {:?}", node.id, status.nodes));
            }
            leaders.push(
                status
                    .leader
                    .ok_or_else(|| format!("node {} knows no leader", node.id))?,
            );
        }
        leaders.dedup();
        match leaders[..] {
            [leader] => Ok(leader),
            _ => Err(format!("nodes name different leaders: {leaders:?}")),
        }
    }

    /// Prints the last lines of every node's log on stderr (after a failure).
    pub fn print_log_tails(&self) {
        for node in &self.nodes {
            let text = std::fs::read(&node.log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- node {} ({}), last {} lines of its log:\n{}",
                node.id,
                node.addr,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        if self.keep {
            eprintln!("data and logs kept in {}", self.root.display());
        } else if let Err(e) = remove_dir(&self.root) {
            eprintln!("cannot remove {}: {e}", self.root.display());
        }
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `n` distinct free loopback ports (held at once, so no two are the same).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}
