//! `create`: makes an empty file, then shows that creating the same name again fails with
//! [`ClientError::AlreadyExists`].
//!
//! Starts its own one-node cluster in a temporary directory (which also shows how to embed
//! a node), so no server is needed:
//!
//! ```sh
//! cargo run --example create
//! ```

use dfs::client::{Client, ClientError};
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

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

    node.shutdown().await;
    Ok(())
}
