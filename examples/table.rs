//! `table`: the replica-placement table, which maps every file to the nodes holding it
//! (primary first) and to the id its bytes are stored under.
//!
//! Starts its own three-node cluster (replication factor R=2) in a temporary directory, so
//! no server is needed:
//!
//! ```sh
//! cargo run --example table
//! ```

use dfs::node::LocalCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Three nodes in this process on free loopback ports, keeping two replicas of every
    // file, each with its data in `dir/node-{id}`; the client knows all three addresses.
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let client = cluster.client().await?;

    for name in [
        "a.txt",
        "b.txt",
        "docs/readme.md",
        "logs/app.log",
        "logs/db.log",
    ] {
        client.put(name, format!("content of {name}\n")).await?;
    }

    // Each file is on two of the three nodes: its primary, then its backup.
    let table = client.table().await?;
    println!("{} file(s) placed:", table.len());
    println!(
        "  {:<16} {:<18} {:<8} {:<7} epoch",
        "name", "file id", "primary", "backup"
    );
    for entry in &table {
        let node = |i: usize| {
            entry
                .replicas
                .get(i)
                .map_or("-".to_owned(), |id| format!("node {id}"))
        };
        println!(
            "  {:<16} {:016x}   {:<8} {:<7} {}",
            entry.name,
            entry.file_id,
            node(0),
            node(1),
            entry.epoch
        );
    }

    // How the files spread over the nodes.
    for (id, addr) in (1..).zip(cluster.addrs()) {
        let held = table.iter().filter(|e| e.replicas.contains(&id)).count();
        println!("node {id} ({addr}) holds {held} file(s)");
    }

    cluster.shutdown().await;
    Ok(())
}
