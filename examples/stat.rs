//! `stat`: a file's size, version, replicas, CRC-32C checksum and modification time,
//! without reading its content.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example stat
//! ```

use std::time::{Duration, UNIX_EPOCH};

use dfs::node::LocalCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; the client knows all three addresses.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let client = cluster.client().await?;

    client.create("notes/todo.txt").await?;
    client.append("notes/todo.txt", "buy milk\n").await?;
    client.append("notes/todo.txt", "call Ada\n").await?;

    let info = client.stat("notes/todo.txt").await?;
    let modified = UNIX_EPOCH + Duration::from_millis(info.modified_ms);
    println!("name:     {}", info.name);
    println!("size:     {} bytes", info.size);
    println!("version:  {} (writes since create)", info.version);
    println!("checksum: {:08x} (CRC-32C)", info.checksum);
    println!("file id:  {:016x}", info.file_id);
    let age = modified.elapsed().unwrap_or_default();
    println!(
        "modified: {} (ms since the Unix epoch), {} ms ago",
        info.modified_ms,
        age.as_millis()
    );

    // Two of the three nodes hold it; the primary orders its writes and serves its reads.
    println!("replicas: {:?} (primary first)", info.replicas);
    for (id, addr) in (1..).zip(cluster.addrs()) {
        let role = match info.replicas.iter().position(|&r| r == id) {
            Some(0) => "primary",
            Some(_) => "backup",
            None => "-",
        };
        println!("  node {id} at {addr:<16} {role}");
    }

    cluster.shutdown().await;
    Ok(())
}
