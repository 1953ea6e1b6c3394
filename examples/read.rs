//! `read`: reads a whole file or a byte range into memory, or streams it into any
//! `AsyncWrite` with `read_to`. A read is a consistent snapshot of the file, and any node
//! answers it: a node that is not the file's primary forwards the read to the primary.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example read
//! ```

use dfs::client::Client;
use dfs::node::LocalCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; the client knows all three addresses.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let client = cluster.client().await?;

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

    // A client that knows only one node gets the same bytes from each of the three: the
    // primary serves the read, the other two forward it to the primary.
    let primary = info.replicas.first().copied();
    for (id, addr) in (1..).zip(cluster.addrs()) {
        let one_node = Client::connect([addr.as_str()]).await?;
        let bytes = one_node.read("greeting.txt", 0, None).await?;
        anyhow::ensure!(bytes == all, "node {id} returned different bytes");
        let how = if primary == Some(id) {
            "primary, serves it"
        } else if info.replicas.contains(&id) {
            "backup, forwards"
        } else {
            "no replica, forwards"
        };
        println!(
            "via node {id} only ({addr}, {how}): {} bytes, identical",
            bytes.len()
        );
    }

    cluster.shutdown().await;
    Ok(())
}
