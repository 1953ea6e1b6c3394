//! `status`: the cluster as the answering node sees it: every member's address, whether it
//! is up and its role, plus the cluster map's leader, term and replication factor.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example status
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

    // One node's view: every member, and the map's leader and term.
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

    // Every node agrees on who leads the map, in which term.
    for (id, addr) in (1..).zip(cluster.addrs()) {
        let seen = Client::connect([addr]).await?.status().await?;
        let leader = seen
            .leader
            .map_or_else(|| "unknown".to_owned(), |id| format!("node {id}"));
        println!("node {id} sees leader {leader}, term {}", seen.term);
    }

    cluster.shutdown().await;
    Ok(())
}
