//! `create`: makes an empty file, then shows that creating the same name again fails with
//! [`ClientError::AlreadyExists`].
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory
//! (which also shows how to embed a cluster), so no server is needed:
//!
//! ```sh
//! cargo run --example create
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

    // The new file is placed on two of the three nodes, primary first.
    let info = client.create("notes/today.txt").await?;
    println!(
        "created {}: {} bytes, version {}, replicas {:?}",
        info.name, info.size, info.version, info.replicas
    );

    match client.create("notes/today.txt").await {
        Err(ClientError::AlreadyExists(message)) => {
            println!("creating it again fails: {message}");
        }
        other => anyhow::bail!("expected AlreadyExists, got {other:?}"),
    }

    cluster.shutdown().await;
    Ok(())
}
