//! [`LocalCluster`]: several nodes in this process on loopback ports, for examples, tests
//! and trying dfs out.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use dfs_client::{Client, ClientConfig, ClientError};
use futures::future::join_all;

use crate::{Member, Node, NodeConfig, NodeError};

/// Times [`LocalCluster::start`] tries with fresh ports before giving up.
const START_ATTEMPTS: usize = 3;

/// A whole cluster running in this process: nodes `1..=n` on free `127.0.0.1` ports, each
/// keeping its data in `dir/node-{id}`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use dfs_node::LocalCluster;
/// let dir = std::env::temp_dir().join("dfs-local-demo");
/// let cluster = LocalCluster::start(&dir, 3, 2).await?;
/// let client = cluster.client().await?;
/// client.append("hello.txt", "hi").await?;
/// cluster.shutdown().await;
/// # Ok(()) }
/// ```
///
/// Dropping it without [`shutdown`](LocalCluster::shutdown) leaves the nodes running until
/// the runtime ends.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Node>,
}

impl LocalCluster {
    /// Starts `nodes` nodes that keep `replication_factor` replicas of every new file, each
    /// in `dir/node-{id}` (use a fresh `dir`: the map a node keeps there records the
    /// addresses of the cluster it was started in).
    ///
    /// The nodes start together, as each waits for the cluster map to have a leader. If
    /// one fails (a probed port can be taken before the node binds it), the others are shut
    /// down and the cluster is started again on fresh ports, up to three times in all.
    pub async fn start(
        dir: &Path,
        nodes: usize,
        replication_factor: usize,
    ) -> Result<LocalCluster, NodeError> {
        Self::start_with(dir, nodes, replication_factor, |_| {}).await
    }

    /// [`start`](Self::start), with `configure` called on each node's configuration before
    /// it starts (to give the nodes a secret, tokens or a TLS transport, say).
    pub async fn start_with(
        dir: &Path,
        nodes: usize,
        replication_factor: usize,
        configure: impl Fn(&mut NodeConfig),
    ) -> Result<LocalCluster, NodeError> {
        if nodes == 0 {
            return Err(NodeError::Config(
                "a cluster needs at least one node".into(),
            ));
        }
        let ids = 1..=nodes as u64;
        let data_dirs: Vec<PathBuf> = ids
            .clone()
            .map(|id| dir.join(format!("node-{id}")))
            .collect();
        // Only directories this call creates are removed before a retry.
        let existed: Vec<bool> = data_dirs.iter().map(|d| d.exists()).collect();
        let mut attempt = 1;
        loop {
            let ports = free_ports(nodes)?;
            let members: Vec<Member> = ids
                .clone()
                .zip(&ports)
                .map(|(id, port)| Member {
                    id,
                    addr: format!("127.0.0.1:{port}"),
                })
                .collect();
            let configs = ids.clone().zip(&data_dirs).map(|(id, data_dir)| {
                let mut config = NodeConfig::new(id, members.clone(), data_dir);
                config.replication_factor = Some(replication_factor);
                configure(&mut config);
                config
            });
            let results = join_all(configs.map(Node::start)).await;
            let mut started = Vec::with_capacity(nodes);
            let mut error = None;
            for result in results {
                match result {
                    Ok(node) => started.push(node),
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            let Some(error) = error else {
                return Ok(LocalCluster { nodes: started });
            };
            join_all(started.into_iter().map(Node::shutdown)).await;
            // A configuration error will not go away with other ports.
            if attempt == START_ATTEMPTS || matches!(error, NodeError::Config(_)) {
                return Err(error);
            }
            tracing::warn!(attempt, %error, "local cluster failed to start; retrying on fresh ports");
            // The failed attempt's maps record its ports; start the next one empty.
            for (data_dir, existed) in data_dirs.iter().zip(&existed) {
                if !existed {
                    let _ = tokio::fs::remove_dir_all(data_dir).await;
                }
            }
            attempt += 1;
        }
    }

    /// Every node's `host:port`, node 1 first.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.local_addr().to_string())
            .collect()
    }

    /// The running nodes, node 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A client that knows every node's address (and so fails over between them).
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::with_config(ClientConfig::new(self.addrs())).await
    }

    /// Shuts node `id` down alone (its data directory is kept), as a crashed or stopped
    /// server would go away; the others go on without it. Whether it was running.
    pub async fn stop(&mut self, id: u64) -> bool {
        let Some(at) = self.nodes.iter().position(|n| n.engine().node_id() == id) else {
            return false;
        };
        self.nodes.remove(at).shutdown().await;
        true
    }

    /// Shuts every node down, all at once.
    pub async fn shutdown(self) {
        join_all(self.nodes.into_iter().map(Node::shutdown)).await;
    }
}

/// `n` distinct ports free on `127.0.0.1` right now: all are held while probing, so none
/// repeats, and released on return.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, NodeError> {
    let listen_error = |source| NodeError::Listen {
        addr: "127.0.0.1:0".into(),
        source,
    };
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(listen_error)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(listen_error)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::LocalCluster;

    #[tokio::test(flavor = "multi_thread")]
    async fn local_cluster_replicates_on_two_of_three_nodes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = async {
            let cluster = LocalCluster::start(dir.path(), 3, 2)
                .await
                .expect("cluster starts");
            assert_eq!(cluster.nodes().len(), 3);
            let addrs: BTreeSet<_> = cluster.addrs().into_iter().collect();
            assert_eq!(addrs.len(), 3, "distinct addresses");

            let client = cluster.client().await.expect("client connects");
            client.create("a.txt").await.expect("create");
            client.append("a.txt", "hello ").await.expect("append");
            client.append("a.txt", "world").await.expect("append");
            let data = client.read("a.txt", 0, None).await.expect("read");
            assert_eq!(&data[..], b"hello world");

            let info = client.stat("a.txt").await.expect("stat");
            let replicas: BTreeSet<_> = info.replicas.iter().copied().collect();
            assert_eq!(info.replicas.len(), 2, "replicas {:?}", info.replicas);
            assert_eq!(replicas.len(), 2, "distinct replicas {:?}", info.replicas);
            assert!(replicas.iter().all(|id| (1..=3).contains(id)));

            drop(client);
            cluster.shutdown().await;
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("finishes in time");
    }
}
