//! `list`: every file whose name starts with a prefix, sorted by name, with its size and
//! version. The client follows the pages of a long listing for you.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example list
//! ```

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    // Files under two prefixes.
    client.append("logs/app.log", "started\n").await?;
    client.append("logs/app.log", "stopped\n").await?;
    client.put("logs/db.log", "opened\n").await?;
    client.create("logs/empty.log").await?;
    client.put("photos/cat.jpg", vec![0u8; 4096]).await?;
    client.put("photos/dog.jpg", vec![0u8; 8192]).await?;

    println!("files under logs/:");
    for entry in client.list("logs/").await? {
        println!(
            "  {:<16} {:>5} bytes  version {}",
            entry.name, entry.size, entry.version
        );
    }
    println!("files in all: {}", client.list("").await?.len());

    node.shutdown().await;
    Ok(())
}
