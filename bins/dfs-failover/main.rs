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

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use dfs::client::{Client, ClientConfig, ClientError};

#[path = "../shared/cluster.rs"]
mod cluster;

use cluster::{Cluster, IDS, POLL, REPLICATION, START_LIMIT, default_server};

/// How long the first append after a kill may keep failing before the run fails.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// How many names to try for a file with the wanted primary.
const NAME_TRIES: usize = 200;
/// Pause between two single attempts with `--tight`.
const TIGHT_PAUSE: Duration = Duration::from_millis(10);

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
    let mut cluster = Cluster::new(server, "dfs-failover", cli.keep)?;
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
