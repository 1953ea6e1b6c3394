//! `lock`: lock leases with fencing tokens. Two workers, each with its own client, take
//! turns incrementing one counter file: each round takes the exclusive lock (waiting while
//! the other holds it), reads the counter, writes it back plus one with
//! `Condition::fenced(token)`, and unlocks. At the end the counter equals the number of
//! increments: no update was lost.
//!
//! Then a holder pauses past its lease: the lock goes to the other worker, and the paused
//! one's fenced write is refused with [`ClientError::Fenced`] (the file's primary checks
//! the token), as is its `renew` with [`ClientError::LeaseExpired`].
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example lock
//! ```

use std::time::{Duration, Instant};

use dfs::client::{Client, ClientError, Condition, LockMode};
use dfs::node::LocalCluster;

/// The file both workers increment.
const COUNTER: &str = "jobs/counter";
/// Increments per worker.
const ROUNDS: u64 = 5;
/// A lease lapses this long after its grant unless renewed; a round takes far less.
const TTL: Duration = Duration::from_secs(10);
/// How long a worker waits for the lock while the other holds it.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; each worker's client knows all three.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let (a, b) = (cluster.client().await?, cluster.client().await?);
    a.put(COUNTER, "0").await?;

    // Two workers at once; the lock makes their read-modify-writes take turns.
    let workers = [
        tokio::spawn(worker("A", a.clone())),
        tokio::spawn(worker("B", b.clone())),
    ];
    for w in workers {
        w.await??;
    }
    let total = read_counter(&a).await?;
    println!("counter = {total} after {} increments", 2 * ROUNDS);
    assert_eq!(total, 2 * ROUNDS, "an increment was lost");

    // A holder that pauses past its lease: A locks for 300 ms, then "freezes" (a GC
    // pause, a stopped VM) without renewing.
    let paused = a
        .lock(
            COUNTER,
            LockMode::Exclusive,
            Duration::from_millis(300),
            WAIT,
        )
        .await?;
    println!(
        "A: locked with token {} for 300 ms, then pauses",
        paused.token
    );
    // B asks meanwhile and waits; it gets the lock once A's lease has lapsed.
    let start = Instant::now();
    let grant = b.lock(COUNTER, LockMode::Exclusive, TTL, WAIT).await?;
    println!(
        "B: waited {} ms for the lock, token {}",
        start.elapsed().as_millis(),
        grant.token
    );
    b.put_if(COUNTER, "100", Condition::fenced(grant.token))
        .await?;
    println!("B: wrote 100 with token {}", grant.token);
    // A wakes up and writes as if it still held the lock: the store refuses.
    match a
        .put_if(COUNTER, "11", Condition::fenced(paused.token))
        .await
    {
        Err(ClientError::Fenced(why)) => println!("A: write refused: {why}"),
        other => anyhow::bail!("A's stale write was not refused: {other:?}"),
    }
    match a.renew(paused.lease).await {
        Err(ClientError::LeaseExpired(why)) => println!("A: renew refused: {why}"),
        other => anyhow::bail!("A's lapsed lease was renewed: {other:?}"),
    }
    b.unlock(grant.lease).await?;
    let total = read_counter(&a).await?;
    println!("counter = {total}: B's write stands");
    assert_eq!(total, 100);

    cluster.shutdown().await;
    Ok(())
}

/// `ROUNDS` increments of the counter, each under the exclusive lock and fenced with its
/// token.
async fn worker(id: &'static str, client: Client) -> anyhow::Result<()> {
    for _ in 0..ROUNDS {
        let grant = client.lock(COUNTER, LockMode::Exclusive, TTL, WAIT).await?;
        let value = read_counter(&client).await?;
        client
            .put_if(
                COUNTER,
                (value + 1).to_string(),
                Condition::fenced(grant.token),
            )
            .await?;
        println!(
            "{id}: token {:>2}: counter {value} -> {}",
            grant.token,
            value + 1
        );
        client.unlock(grant.lease).await?;
    }
    Ok(())
}

async fn read_counter(client: &Client) -> anyhow::Result<u64> {
    let bytes = client.read(COUNTER, 0, None).await?;
    Ok(std::str::from_utf8(&bytes)?.trim().parse()?)
}
