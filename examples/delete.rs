//! `delete`: removes a file from every replica and from the placement table; afterwards
//! every operation on the name fails with [`ClientError::NotFound`].
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example delete
//! ```

use dfs::client::ClientError;
use dfs::node::LocalCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; the client knows all three addresses.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let client = cluster.client().await?;

    client.put("tmp/scratch.txt", "short-lived\n").await?;
    let replicas = client.stat("tmp/scratch.txt").await?.replicas;
    println!(
        "before: {} file(s) under tmp/, tmp/scratch.txt on nodes {replicas:?}",
        client.list("tmp/").await?.len()
    );

    // One call removes it from both replicas.
    client.delete("tmp/scratch.txt").await?;
    println!("deleted tmp/scratch.txt");
    println!(
        "after: {} file(s) under tmp/",
        client.list("tmp/").await?.len()
    );

    match client.read("tmp/scratch.txt", 0, None).await {
        Err(ClientError::NotFound(message)) => {
            println!("reading it now fails with NotFound: {message}")
        }
        other => anyhow::bail!("expected NotFound, got {other:?}"),
    }
    match client.delete("tmp/scratch.txt").await {
        Err(ClientError::NotFound(message)) => {
            println!("deleting it again fails with NotFound: {message}")
        }
        other => anyhow::bail!("expected NotFound, got {other:?}"),
    }

    cluster.shutdown().await;
    Ok(())
}
