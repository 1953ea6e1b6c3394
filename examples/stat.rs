//! `stat`: a file's size, version, replicas, CRC-32C checksum and modification time,
//! without reading its content.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example stat
//! ```

use std::time::{Duration, UNIX_EPOCH};

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    client.create("notes/todo.txt").await?;
    client.append("notes/todo.txt", "buy milk\n").await?;
    client.append("notes/todo.txt", "call Ada\n").await?;

    let info = client.stat("notes/todo.txt").await?;
    let modified = UNIX_EPOCH + Duration::from_millis(info.modified_ms);
    println!("name:     {}", info.name);
    println!("size:     {} bytes", info.size);
    println!("version:  {} (writes since create)", info.version);
    println!("checksum: {:08x} (CRC-32C)", info.checksum);
    println!("replicas: {:?} (primary first)", info.replicas);
    println!("file id:  {:016x}", info.file_id);
    let age = modified.elapsed().unwrap_or_default();
    println!(
        "modified: {} (ms since the Unix epoch), {} ms ago",
        info.modified_ms,
        age.as_millis()
    );

    node.shutdown().await;
    Ok(())
}
