//! `write` (append): adds bytes to the end of a file, creating it if missing. Each append
//! is applied whole and exactly once, even when the client retries it on another node.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example write
//! ```

use dfs::node::LocalCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; the client knows all three addresses.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let client = cluster.client().await?;

    // The first append creates the file; the others add to its end. Each is acknowledged
    // once both replicas have applied it.
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

    let info = client.stat("logs/app.log").await?;
    let content = client.read("logs/app.log", 0, None).await?;
    print!(
        "logs/app.log (on nodes {:?}) now holds:\n{}",
        info.replicas,
        String::from_utf8_lossy(&content)
    );

    cluster.shutdown().await;
    Ok(())
}
