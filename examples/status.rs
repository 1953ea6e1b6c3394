//! `status`: the cluster as the answering node sees it: every member's address, whether it
//! is up and its role, plus the cluster map's leader, term and replication factor.
//!
//! Starts its own one-node cluster in a temporary directory, so no server is needed:
//!
//! ```sh
//! cargo run --example status
//! ```

use dfs::client::Client;
use dfs::node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A node in this process, on a free port, keeping its data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeConfig::single(dir.path(), "127.0.0.1:0")).await?;
    let client = Client::connect([node.local_addr().to_string()]).await?;

    let status = client.status().await?;
    let leader = status
        .leader
        .map_or_else(|| "unknown".to_owned(), |id| format!("node {id}"));
    println!(
        "leader: {leader}, term {}, replication factor {}",
        status.term, status.replication_factor
    );
    for n in &status.nodes {
        let state = if n.up { "up" } else { "down" };
        println!(
            "  node {} at {:<16} {:<4} {}",
            n.id,
            n.addr,
            state,
            n.role.as_str()
        );
    }

    node.shutdown().await;
    Ok(())
}
