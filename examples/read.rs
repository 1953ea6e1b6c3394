//! `read`: reads a whole file or a byte range into memory, or streams it into any
//! `AsyncWrite` with `read_to`. A read is a consistent snapshot of the file.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example read
//! ```

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    client
        .put("greeting.txt", "hello, distributed world\n")
        .await?;

    // The whole file: offset 0, no length.
    let all = client.read("greeting.txt", 0, None).await?;
    println!(
        "whole file ({} bytes): {:?}",
        all.len(),
        String::from_utf8_lossy(&all)
    );

    // A range: 11 bytes from offset 7.
    let range = client.read("greeting.txt", 7, Some(11)).await?;
    println!("bytes 7..18: {:?}", String::from_utf8_lossy(&range));

    // Streamed into a writer (here a buffer; a tokio::fs::File works the same way).
    let mut out = Vec::new();
    let (info, written) = client.read_to("greeting.txt", 0, None, &mut out).await?;
    println!(
        "read_to: {written} bytes of {} (version {}, crc32c {:08x})",
        info.name, info.version, info.checksum
    );

    node.shutdown().await;
    Ok(())
}
