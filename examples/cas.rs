//! Compare-and-set with `put_if(.., Condition::if_version(v))`: read a file and its
//! version, compute the new content from the old, and write it only if the file is still
//! at that version. A writer that lost the race is refused with
//! [`ClientError::VersionMismatch`] (nothing is changed) and retries from a fresh read.
//! `Condition::if_version(0)` creates a file only if it does not exist.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example cas
//! ```

use dfs::client::{Client, ClientError, Condition};
use dfs::node::LocalCluster;

/// The file every writer updates: a number.
const LIMIT: &str = "config/limit";
/// Writers adding one each, at once, in the last part.
const WRITERS: u64 = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; each client knows all three.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let (alice, bob) = (cluster.client().await?, cluster.client().await?);

    // Create-if-absent: version 0 matches only a file that does not exist.
    let ack = alice.put_if(LIMIT, "10", Condition::if_version(0)).await?;
    println!("alice created {LIMIT} = 10 (version {})", ack.version);
    match bob.put_if(LIMIT, "99", Condition::if_version(0)).await {
        Err(ClientError::VersionMismatch(why)) => println!("bob's create refused: {why}"),
        other => anyhow::bail!("a second create-if-absent went through: {other:?}"),
    }

    // A lost race: both read the same version; bob writes first; alice's write, still
    // based on what she read, is refused, and she retries from a fresh read.
    let (alice_value, alice_version) = read(&alice).await?;
    let (bob_value, bob_version) = read(&bob).await?;
    println!("alice and bob both read {alice_value} at version {alice_version}");
    let ack = bob
        .put_if(
            LIMIT,
            (bob_value * 2).to_string(),
            Condition::if_version(bob_version),
        )
        .await?;
    println!(
        "bob doubled it to {} (version {})",
        bob_value * 2,
        ack.version
    );
    match alice
        .put_if(
            LIMIT,
            (alice_value + 5).to_string(),
            Condition::if_version(alice_version),
        )
        .await
    {
        Err(ClientError::VersionMismatch(why)) => println!("alice's +5 refused: {why}"),
        other => anyhow::bail!("alice's stale write went through: {other:?}"),
    }
    let retries = add(&alice, 5).await?;
    let (value, version) = read(&alice).await?;
    println!("alice retried ({retries} more refusals): {LIMIT} = {value} (version {version})");
    assert_eq!(value, 25, "both updates count: 10 * 2 + 5");

    // Many writers at once, each adding 1 in a compare-and-set loop: every refusal is a
    // retry, and no update is lost.
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let client = if i % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            };
            tokio::spawn(async move { add(&client, 1).await })
        })
        .collect();
    let mut refusals = 0;
    for task in tasks {
        refusals += task.await??;
    }
    let (value, version) = read(&bob).await?;
    println!(
        "{WRITERS} writers added 1 each ({refusals} refusals retried): {LIMIT} = {value} (version {version})"
    );
    assert_eq!(value, 25 + WRITERS);

    cluster.shutdown().await;
    Ok(())
}

/// The number in the file and the file's version, from one consistent read.
async fn read(client: &Client) -> anyhow::Result<(u64, u64)> {
    let mut bytes = Vec::new();
    let (info, _) = client.read_to(LIMIT, 0, None, &mut bytes).await?;
    Ok((std::str::from_utf8(&bytes)?.trim().parse()?, info.version))
}

/// Adds `n` with compare-and-set, retrying after each refusal; returns how many there were.
async fn add(client: &Client, n: u64) -> anyhow::Result<u64> {
    let mut refusals = 0;
    loop {
        let (value, version) = read(client).await?;
        match client
            .put_if(
                LIMIT,
                (value + n).to_string(),
                Condition::if_version(version),
            )
            .await
        {
            Ok(_) => return Ok(refusals),
            Err(ClientError::VersionMismatch(_)) => refusals += 1,
            Err(e) => return Err(e.into()),
        }
    }
}
