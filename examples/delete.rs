//! `delete`: removes a file from every replica and from the placement table; afterwards
//! every operation on the name fails with [`ClientError::NotFound`].
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example delete
//! ```

use dfs::client::{Client, ClientError};
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    client.put("tmp/scratch.txt", "short-lived\n").await?;
    println!(
        "before: {} file(s) under tmp/",
        client.list("tmp/").await?.len()
    );

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

    node.shutdown().await;
    Ok(())
}
