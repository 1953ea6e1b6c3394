//! `list`: every file whose name starts with a prefix, sorted by name, with its size and
//! version. The client follows the pages of a long listing for you.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example list
//! ```

use dfs::node::LocalCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; the client knows all three addresses.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let client = cluster.client().await?;

    // Files under two prefixes, spread over the three nodes.
    client.append("logs/app.log", "started\n").await?;
    client.append("logs/app.log", "stopped\n").await?;
    client.put("logs/db.log", "opened\n").await?;
    client.create("logs/empty.log").await?;
    client.put("photos/cat.jpg", vec![0u8; 4096]).await?;
    client.put("photos/dog.jpg", vec![0u8; 8192]).await?;

    // A listing covers the whole cluster, whichever nodes hold the files.
    println!("files under logs/:");
    for entry in client.list("logs/").await? {
        println!(
            "  {:<16} {:>5} bytes  version {}",
            entry.name, entry.size, entry.version
        );
    }
    println!("files in all: {}", client.list("").await?.len());

    cluster.shutdown().await;
    Ok(())
}
