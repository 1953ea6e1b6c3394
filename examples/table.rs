//! `table`: the replica-placement table, which maps every file to the nodes holding it
//! (primary first) and to the id its bytes are stored under.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example table
//! ```

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    for name in ["a.txt", "docs/readme.md", "logs/app.log"] {
        client.put(name, format!("content of {name}\n")).await?;
    }

    let table = client.table().await?;
    println!("{} file(s) placed:", table.len());
    println!(
        "  {:<16} {:<18} {:<10} epoch",
        "name", "file id", "replicas"
    );
    for entry in table {
        let replicas = format!("{:?}", entry.replicas);
        println!(
            "  {:<16} {:016x}   {:<10} {}",
            entry.name, entry.file_id, replicas, entry.epoch
        );
    }

    node.shutdown().await;
    Ok(())
}
