//! `write` (append): adds bytes to the end of a file, creating it if missing. Each append
//! is applied whole and exactly once, even when the client retries it on another node.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example write
//! ```

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    // The first append creates the file; the others add to its end.
    for line in ["started\n", "request served\n", "stopped\n"] {
        let ack = client.append("logs/app.log", line).await?;
        println!(
            "appended {:>2} bytes: size {:>2}, version {}, crc32c {:08x}",
            line.len(),
            ack.size,
            ack.version,
            ack.checksum
        );
    }

    // A whole stream can be one atomic append too.
    let more = b"flushed\nexited\n";
    let ack = client.append_stream("logs/app.log", &more[..]).await?;
    println!(
        "appended a stream of {} bytes: size {}",
        more.len(),
        ack.size
    );

    let content = client.read("logs/app.log", 0, None).await?;
    print!(
        "logs/app.log now holds:\n{}",
        String::from_utf8_lossy(&content)
    );

    node.shutdown().await;
    Ok(())
}
