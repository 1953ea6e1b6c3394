//! `dfs-failover`: measures how long a file stays unwritable after its primary is killed.
//!
//! Starts three real `dfs-server` processes (the binary next to this one, or `--server`) on
//! free loopback ports with data in a fresh temporary directory, replication factor 2 and
//! every other setting at its default. Each run then:
//!
//! 1. picks a new file whose primary is not the cluster map's leader (with
//!    `--kill-leader`: whose primary *is* the leader) and appends a line to it;
//! 2. SIGKILLs that primary and appends through the two surviving nodes with the client
//!    library (its normal retries), timing from the kill to the first acknowledged append;
//! 3. reads the file back and checks it holds every acknowledged append exactly once;
//! 4. restarts the killed node on the same data directory and waits until every node
//!    reports the cluster up, with one leader, and the file is on two replicas again.
//!
//! Finally it prints every run's time, then the median, mean and worst (`--json`: one JSON
//! object). Every process it started is killed and its data removed when it ends, on an
//! error too (and on Ctrl-C).

use std::fs::OpenOptions;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use dfs::client::{Client, ClientConfig, ClientError};

/// Node ids of the cluster.
const IDS: [u64; 3] = [1, 2, 3];
/// Replicas per file.
const REPLICATION: usize = 2;
/// How long the cluster may take to start, or a node to come back.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the first append after a kill may keep failing before the run fails.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);
/// How many names to try for a file with the wanted primary.
const NAME_TRIES: usize = 200;
/// Pause between two single attempts with `--tight`.
const TIGHT_PAUSE: Duration = Duration::from_millis(10);
/// Lines of each node's log shown when a run fails.
const LOG_TAIL_LINES: usize = 15;

/// Measure the failover time of a three-node dfs cluster (R = 2, default settings).
#[derive(Parser, Debug)]
#[command(name = "dfs-failover", version, about)]
struct Cli {
    /// How many kills to time.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Kill a file's primary that is also the cluster map's leader (a new map leader must
    /// be elected first); by default the killed primary is not the leader.
    #[arg(long)]
    kill_leader: bool,
    /// The `dfs-server` binary [default: the one next to this program].
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Instead of one append with the client library's retries (pauses of 20 ms doubling
    /// up to 250 ms), send a fresh single attempt every 10 ms: the cluster's failover time
    /// without the client's back-off.
    #[arg(long)]
    tight: bool,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the data directories and logs (their path is printed) instead of removing them.
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let server = match &cli.server {
        Some(path) => path.clone(),
        None => default_server()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut cluster = Cluster::new(server, cli.keep)?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = measure(&mut cluster, &cli) => r,
            r = tokio::signal::ctrl_c() => {
                r.context("cannot watch SIGINT")?;
                bail!("interrupted")
            }
        }
    });
    if result.is_err() {
        cluster.print_log_tails();
    }
    drop(cluster);
    let runs = result?;
    report(&cli, &runs)
}

/// `dfs-server` in the directory of this executable.
fn default_server() -> anyhow::Result<PathBuf> {
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

/// One timed kill.
#[derive(Debug)]
struct Run {
    file: String,
    killed: u64,
    leader: u64,
    /// From the SIGKILL to the first acknowledged append through a survivor.
    failover: Duration,
    /// Appends sent (each a fresh call with the library's retries) until one was acknowledged.
    attempts: usize,
    /// From the restart to the node being back in service.
    rejoin: Duration,
}

async fn measure(cluster: &mut Cluster, cli: &Cli) -> anyhow::Result<Vec<Run>> {
    cluster.start().await?;
    eprintln!(
        "three dfs-server processes on {} (R = {REPLICATION}, default settings), data in {}",
        cluster.servers(&IDS).join(", "),
        cluster.root.display()
    );
    let client = Client::connect(cluster.servers(&IDS)).await?;
    let mut runs = Vec::with_capacity(cli.runs);
    for run in 1..=cli.runs {
        let r = one_run(cluster, &client, run, cli)
            .await
            .with_context(|| format!("run {run}"))?;
        eprintln!(
            "run {run:>3}: killed node {} (primary of {}, map leader {}): first append \
             acknowledged {:.3} s after the kill ({} attempt{}); node back in service {:.3} s \
             after its restart",
            r.killed,
            r.file,
            r.leader,
            r.failover.as_secs_f64(),
            r.attempts,
            if r.attempts == 1 { "" } else { "s" },
            r.rejoin.as_secs_f64(),
        );
        runs.push(r);
    }
    Ok(runs)
}

async fn one_run(
    cluster: &mut Cluster,
    client: &Client,
    run: usize,
    cli: &Cli,
) -> anyhow::Result<Run> {
    let leader = cluster.wait_ready().await?;
    let (file, primary) = pick_file(client, run, leader, cli.kill_leader).await?;
    let survivors: Vec<u64> = IDS.into_iter().filter(|&id| id != primary).collect();
    let first = format!("run {run}: before the kill\n");
    client
        .append(&file, first.clone())
        .await
        .with_context(|| format!("append to {file} before the kill"))?;
    // Connected before the kill, so the timing does not include a connection set-up.
    let mut config = ClientConfig::new(cluster.servers(&survivors));
    if cli.tight {
        config.retry_deadline = Duration::ZERO;
    }
    let through = Client::with_config(config).await?;
    through.status().await?;

    let killed_at = Instant::now();
    cluster.kill(primary);
    let mut acked = vec![first];
    let mut unknown = Vec::new();
    let mut attempts = 0;
    let failover = loop {
        attempts += 1;
        let line = format!("run {run}: after the kill, attempt {attempts}\n");
        match through.append(&file, line.clone()).await {
            Ok(_) => {
                let took = killed_at.elapsed();
                acked.push(line);
                break took;
            }
            Err(e) if killed_at.elapsed() < FAILOVER_LIMIT => {
                if cli.tight {
                    tokio::time::sleep(TIGHT_PAUSE).await;
                } else {
                    eprintln!("  attempt {attempts} failed: {e}");
                }
                unknown.push(line);
            }
            Err(e) => {
                return Err(e).context(format!(
                    "no append acknowledged within {FAILOVER_LIMIT:?} of the kill"
                ));
            }
        }
    };
    let content = through
        .read(&file, 0, None)
        .await
        .with_context(|| format!("read {file} after the failover"))?;
    verify(&content, &acked, &unknown).with_context(|| format!("content of {file}"))?;

    let restarted_at = Instant::now();
    cluster.restart(primary)?;
    cluster.wait_ready().await?;
    wait_until(
        &format!("{file} back on {REPLICATION} replicas"),
        START_LIMIT,
        || {
            let client = client.clone();
            let file = file.clone();
            async move {
                let info = client.stat(&file).await.map_err(|e| e.to_string())?;
                if info.replicas.len() == REPLICATION && info.replicas.contains(&primary) {
                    Ok(())
                } else {
                    Err(format!("replicas {:?}", info.replicas))
                }
            }
        },
    )
    .await?;
    Ok(Run {
        file,
        killed: primary,
        leader,
        failover,
        attempts,
        rejoin: restarted_at.elapsed(),
    })
}

/// A new file whose primary is (`kill_leader`) or is not the map's `leader`, and its primary.
async fn pick_file(
    client: &Client,
    run: usize,
    leader: u64,
    kill_leader: bool,
) -> anyhow::Result<(String, u64)> {
    for k in 0..NAME_TRIES {
        let name = format!("failover/run{run}-{k}");
        let info = match client.create(&name).await {
            Ok(info) => info,
            Err(ClientError::AlreadyExists(_)) => client.stat(&name).await?,
            Err(e) => return Err(e).with_context(|| format!("create {name}")),
        };
        let Some(&primary) = info.replicas.first() else {
            bail!("{name} has no replicas: {info:?}");
        };
        if info.replicas.len() != REPLICATION {
            bail!("{name} has replicas {:?}, not {REPLICATION}", info.replicas);
        }
        if (primary == leader) == kill_leader {
            return Ok((name, primary));
        }
        client
            .delete(&name)
            .await
            .with_context(|| format!("delete {name}"))?;
    }
    bail!("no file among {NAME_TRIES} names had the wanted primary (leader {leader})")
}

/// Every acknowledged line exactly once and in order; a line whose append failed at most
/// once; nothing else.
fn verify(content: &[u8], acked: &[String], unknown: &[String]) -> anyhow::Result<()> {
    let text = std::str::from_utf8(content).context("not UTF-8")?;
    let mut next_acked = 0;
    let mut seen_unknown = Vec::new();
    for line in text.split_inclusive('\n') {
        if acked.get(next_acked).is_some_and(|a| a == line) {
            next_acked += 1;
        } else if unknown.iter().any(|u| u == line) && !seen_unknown.contains(&line) {
            seen_unknown.push(line);
        } else {
            bail!("unexpected, repeated or out-of-order line {line:?} in {text:?}");
        }
    }
    if next_acked != acked.len() {
        bail!(
            "acknowledged append {:?} is missing from {text:?}",
            acked[next_acked]
        );
    }
    Ok(())
}

fn report(cli: &Cli, runs: &[Run]) -> anyhow::Result<()> {
    let mut secs: Vec<f64> = runs.iter().map(|r| r.failover.as_secs_f64()).collect();
    secs.sort_by(f64::total_cmp);
    let median = if secs.len() % 2 == 1 {
        secs[secs.len() / 2]
    } else {
        (secs[secs.len() / 2 - 1] + secs[secs.len() / 2]) / 2.0
    };
    let mean = secs.iter().sum::<f64>() / secs.len() as f64;
    let (best, worst) = (secs[0], secs[secs.len() - 1]);
    let mode = if cli.kill_leader {
        "primary-and-leader"
    } else {
        "primary-only"
    };
    if cli.json {
        let value = serde_json::json!({
            "mode": mode,
            "tight": cli.tight,
            "replication_factor": REPLICATION,
            "runs": runs.iter().map(|r| serde_json::json!({
                "file": r.file,
                "killed": r.killed,
                "leader": r.leader,
                "failover_s": r.failover.as_secs_f64(),
                "attempts": r.attempts,
                "rejoin_s": r.rejoin.as_secs_f64(),
            })).collect::<Vec<_>>(),
            "median_s": median,
            "mean_s": mean,
            "best_s": best,
            "worst_s": worst,
        });
        println!("{value}");
    } else {
        let what = match (cli.kill_leader, cli.tight) {
            (true, false) => "the killed primary was also the map's leader",
            (false, false) => "the killed primary was not the map's leader",
            (true, true) => "the killed primary was also the map's leader; --tight",
            (false, true) => "the killed primary was not the map's leader; --tight",
        };
        println!("failover times, kill -9 to the first acknowledged append ({what}):");
        for (i, r) in runs.iter().enumerate() {
            println!("  run {:>3}: {:.3} s", i + 1, r.failover.as_secs_f64());
        }
        println!(
            "{} runs: median {median:.3} s, mean {mean:.3} s, worst {worst:.3} s, best {best:.3} s",
            runs.len()
        );
    }
    Ok(())
}

/// Polls `attempt` until it succeeds, or fails with its last reason after `limit`.
async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(reason) if start.elapsed() >= limit => {
                bail!("{what}: not within {limit:?}; last: {reason}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// One `dfs-server` process slot.
struct Node {
    id: u64,
    addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The three processes and their temporary directory: killed and removed on drop.
struct Cluster {
    server: PathBuf,
    root: PathBuf,
    keep: bool,
    members: String,
    nodes: Vec<Node>,
}

impl Cluster {
    fn new(server: PathBuf, keep: bool) -> anyhow::Result<Cluster> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let root =
            std::env::temp_dir().join(format!("dfs-failover-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Cluster {
            server,
            root,
            keep,
            members: String::new(),
            nodes: Vec::new(),
        })
    }

    /// Starts the three nodes on free ports (new ports if one exits at start-up: a port
    /// found free can be taken before the node binds it).
    async fn start(&mut self) -> anyhow::Result<()> {
        for attempt in 0..3 {
            self.kill_all();
            let ports = free_ports(IDS.len())?;
            self.nodes = IDS
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
            for id in IDS {
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

    fn servers(&self, ids: &[u64]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| ids.contains(&n.id))
            .map(|n| n.addr.clone())
            .collect()
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let (server, members) = (self.server.clone(), self.members.clone());
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", server.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL (`Child::kill` on unix), and reap.
    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for id in IDS {
            if self.nodes.iter().any(|n| n.id == id) {
                self.kill(id);
            }
        }
    }

    fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)
    }

    fn any_exited(&mut self) -> bool {
        self.nodes.iter_mut().any(|n| {
            n.child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        })
    }

    /// Waits until every node answers `status` with all three up and the same leader;
    /// returns the leader.
    async fn wait_ready(&mut self) -> anyhow::Result<u64> {
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
            if status.nodes.len() != IDS.len() {
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

    fn print_log_tails(&self) {
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
