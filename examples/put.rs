//! `put`: replaces a file's whole content atomically (creating it if missing), from bytes in
//! memory with `put` or from any `AsyncRead` with `put_stream`, which streams a file of any
//! size through bounded memory.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example put
//! ```

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    // From memory: the second put replaces the first; readers see one or the other.
    client.put("config.toml", "threads = 4\n").await?;
    let ack = client.put("config.toml", "threads = 8\n").await?;
    let content = client.read("config.toml", 0, None).await?;
    println!(
        "put config.toml twice: version {}, content {:?}",
        ack.version,
        String::from_utf8_lossy(&content)
    );

    // From a local file: 3 MiB uploaded in chunks, never all in memory at once.
    let local = dir.path().join("upload.bin");
    let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    tokio::fs::write(&local, &data).await?;
    let file = tokio::fs::File::open(&local).await?;
    let ack = client.put_stream("images/upload.bin", file).await?;
    println!(
        "put_stream images/upload.bin: {} bytes, crc32c {:08x}",
        ack.size, ack.checksum
    );
    anyhow::ensure!(client.read("images/upload.bin", 0, None).await? == data);
    println!("read back and compared: identical");

    node.shutdown().await;
    Ok(())
}
