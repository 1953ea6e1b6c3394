//! `dfs-server`: runs one dfs node (or, with `dev`, a ready-made three-node cluster for a
//! newcomer).
//!
//! Parses flags, sets up logging, and hands over to [`dfs::node::Node`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use dfs::auth::{ClusterSecret, Right, TokenStore, TokensFile, write_private_file};
use dfs::net::Tcp;
use dfs::net::tls::{Tls, TlsFiles, write_dev_certificates};
use dfs::node::{Limits, Node, NodeConfig, parse_cluster};

use crate::duration::parse_duration;

#[path = "../shared/duration.rs"]
mod duration;

/// A replicated distributed file store node.
#[derive(Parser, Debug)]
#[command(
    name = "dfs-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a development cluster of three nodes in this process, on 127.0.0.1:6000,
    /// 7000 and 8000, with data in ./dfs-data/node-1, node-2 and node-3.
    Dev {
        /// Where to keep the data.
        #[arg(long, default_value = "./dfs-data")]
        data_dir: PathBuf,
        /// The first node's port; the others serve 1000 and 2000 above it.
        #[arg(long, default_value_t = 6000)]
        port: u16,
        /// Replicas per new file.
        #[arg(long, default_value_t = 2)]
        replication_factor: usize,
    },
    /// Write a new random cluster secret to FILE (mode 0600), for --secret-file. Copy the
    /// same file to every node of the cluster.
    Secret {
        /// Where to write it.
        file: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Manage the access tokens of a tokens file (--tokens-file); copy the file to every
    /// node after a change (nodes re-read it when it changes).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a development certificate authority and one node certificate for the given
    /// host names and IP addresses (ca.pem, ca-key.pem, node.pem, node-key.pem in DIR),
    /// for --tls-cert, --tls-key and --tls-ca.
    Certs {
        /// Where to write the four files.
        #[arg(long, default_value = "./dfs-tls")]
        dir: PathBuf,
        /// Every name clients and peers use to reach the nodes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
        names: Vec<String>,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
    },
}

/// `dfs-server token ...`.
#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Add a token and print it (the only time it is shown; the file keeps its SHA-256).
    Add {
        /// The token's name (letters, digits, '_', '-', '@').
        name: String,
        /// `read` (read, stat, ls, shared locks) or `read-write` (everything).
        #[arg(long, default_value = "read-write")]
        right: dfs::auth::Right,
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// The tokens file (made if missing).
        #[arg(long, env = "DFS_TOKENS_FILE")]
        tokens_file: PathBuf,
    },
    /// List the tokens' names, rights and prefixes.
    List {
        /// The tokens file.
        #[arg(long, env = "DFS_TOKENS_FILE")]
        tokens_file: PathBuf,
    },
    /// Remove a token: nodes refuse it once they have re-read the file.
    Remove {
        /// The token's name.
        name: String,
        /// The tokens file.
        #[arg(long, env = "DFS_TOKENS_FILE")]
        tokens_file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A file holding the cluster's shared secret (`dfs-server secret FILE` makes one; the
    /// same on every node, mode 0600): peers must prove it to each other. Without it,
    /// anyone who reaches the port can act as a node of the cluster.
    #[arg(long, env = "DFS_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// A tokens file (`dfs-server token add`): clients must present one of its tokens, and
    /// may do only what it allows. Needs --secret-file. Without it, every client may do
    /// everything.
    #[arg(long, env = "DFS_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Serve TLS with this certificate (PEM; with --tls-key and --tls-ca).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The certificate authority the other nodes' certificates are checked against (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's id in the cluster list.
    #[arg(long)]
    id: Option<u64>,
    /// Every node of the cluster as ID=HOST:PORT, comma-separated, the same on every node.
    #[arg(long)]
    cluster: Option<String>,
    /// Where this node keeps its data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Replicas per new file (default 2, or fewer in a smaller cluster).
    #[arg(long)]
    replication_factor: Option<usize>,
    // The abuse limits (`dfs_node::Limits`). Durations as for `--rereplicate-after`.
    /// Most open connections; more get a `Busy` goodbye.
    #[arg(long, default_value_t = Limits::default().connections_max)]
    max_connections: usize,
    /// Most open connections from one source IP address; more from it get a `Busy`
    /// goodbye while other addresses are still served. The cluster's nodes connect to each
    /// other too, a few connections each.
    #[arg(long, default_value_t = Limits::default().connections_per_address_max)]
    max_connections_per_address: usize,
    /// Most requests one connection may have in progress; more get `Busy` answers.
    #[arg(long, default_value_t = Limits::default().requests_in_flight_max)]
    max_requests_in_flight: usize,
    /// Largest frame a client may send, in bytes, from 263424 (a 256 KiB chunk under the
    /// longest name) to 1048576; a larger one gets a `TooLarge` goodbye.
    #[arg(long, default_value_t = Limits::default().request_bytes_max)]
    max_request_bytes: usize,
    /// How long a new connection may take to send its hello. Default 5s.
    #[arg(long, value_parser = parse_duration)]
    hello_timeout: Option<Duration>,
    /// Close connections with nothing in progress and nothing sent for this long
    /// (`--idle-timeout-secs N` still works). Default 5m.
    #[arg(long, alias = "idle-timeout-secs", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Close a connection whose sender stalls in the middle of a frame for this long
    /// (checked at this interval, so up to twice it). Default 30s.
    #[arg(long, value_parser = parse_duration)]
    frame_timeout: Option<Duration>,
    /// Close a connection whose peer does not take a frame we send within this. Default
    /// 30s.
    #[arg(long, value_parser = parse_duration)]
    write_timeout: Option<Duration>,
    /// Abandon a streamed write whose next chunk does not come within this (the writer
    /// holds its file's lock meanwhile). Default 30s.
    #[arg(long, value_parser = parse_duration)]
    body_chunk_timeout: Option<Duration>,
    /// Acknowledge writes before they reach the disk (faster; a machine crash can lose
    /// acknowledged writes). Off by default.
    #[arg(long)]
    no_fsync: bool,
    /// Sync each append's own file (two `fdatasync`s) instead of group commit, which
    /// makes every waiting append durable with one `syncfs` of the data directory's file
    /// system. Use it when that file system is shared with programs writing a lot.
    #[arg(long)]
    no_group_commit: bool,
    /// How long a file may run with fewer replicas than the replication factor (its
    /// replica's node down, none of its home nodes up to take it back) before it is
    /// copied to another live node: a number with a unit (`500ms`, `30s`, `5m`, `1h`; a
    /// bare number is seconds). Default 30s.
    #[arg(long, value_parser = parse_duration)]
    rereplicate_after: Option<Duration>,
    /// How often the node re-reads its copies and checks their checksums (a scrub; a
    /// damaged copy is replaced by a good one from another replica), as for
    /// `--rereplicate-after`. Default 24h. `dfs-client scrub` runs one at once.
    #[arg(long, value_parser = parse_duration)]
    scrub_interval: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft narrates every consensus step at info; its warnings are enough.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (configs, dev_token) = match cli.command {
        Some(Command::Dev {
            data_dir,
            port,
            replication_factor,
        }) => dev_configs(&data_dir, port, replication_factor)?,
        Some(tool) => return run_tool(tool),
        None => {
            let config = run_config(cli.run)?;
            warn_if_open(&config);
            (vec![config], None)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Every node must be serving its peers before any can finish joining: start them
        // together.
        let started = futures::future::join_all(configs.into_iter().map(Node::start)).await;
        let mut nodes = Vec::new();
        let mut failed = None;
        for node in started {
            match node {
                Ok(node) => nodes.push(node),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            for node in nodes {
                node.shutdown().await;
            }
            return Err(e.into());
        }
        if let Some((token, path)) = &dev_token {
            let addrs: Vec<String> = nodes.iter().map(|n| n.local_addr().to_string()).collect();
            println!(
                "dfs dev cluster: {} nodes on {}.\nIts access token (also in {}):\n\n  \
                 export DFS_TOKEN={token}\n\nthen, in that terminal: dfs-client status",
                nodes.len(),
                addrs.join(", "),
                path.display()
            );
        }
        // A node whose cluster map stopped (a raft log it could not write) cannot serve:
        // the process shuts down and exits with an error, for a supervisor to restart it.
        let failed = {
            let failures = nodes.iter().map(|n| Box::pin(n.failed()));
            tokio::select! {
                signal = wait_for_signal() => {
                    signal?;
                    None
                }
                (why, _, _) = futures::future::select_all(failures) => Some(why),
            }
        };
        match &failed {
            None => tracing::info!("signal received, shutting down"),
            Some(why) => tracing::error!(why, "the cluster map stopped; shutting down"),
        }
        futures::future::join_all(nodes.into_iter().map(Node::shutdown)).await;
        match failed {
            None => Ok(()),
            Some(why) => bail!("the cluster map stopped: {why}"),
        }
    })
}

/// The token `dev` made, and the file that keeps it.
type DevToken = (String, PathBuf);

/// The three nodes of `dfs-server dev`: ports `port`, `port + 1000`, `port + 2000`,
/// secured like a real cluster with a secret and a read-write token `dev`, all kept in
/// `data_dir` so a restart keeps them. Returns the token and the file that holds it too.
fn dev_configs(
    data_dir: &std::path::Path,
    port: u16,
    replication_factor: usize,
) -> anyhow::Result<(Vec<NodeConfig>, Option<DevToken>)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot make {}", data_dir.display()))?;
    let secret_path = data_dir.join("secret");
    let secret = if secret_path.exists() {
        ClusterSecret::from_file(&secret_path)?
    } else {
        let secret = ClusterSecret::generate();
        secret.write(&secret_path, false)?;
        secret
    };
    let tokens_path = data_dir.join("tokens.json");
    let token_path = data_dir.join("dev-token");
    let mut tokens = TokensFile::load_or_empty(&tokens_path)?;
    let kept = std::fs::read_to_string(&token_path)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| tokens.grant(t).is_ok());
    let token = match kept {
        Some(token) => token,
        None => {
            tokens.remove("dev");
            let token = tokens.add("dev", Right::ReadWrite, None)?;
            tokens.save(&tokens_path)?;
            write_private_file(&token_path, format!("{token}\n").as_bytes(), true)?;
            token
        }
    };
    let token_store = Arc::new(TokenStore::open(&tokens_path)?);
    let ports: Vec<u16> = (0..3u16)
        .map(|i| port.checked_add(i * 1000))
        .collect::<Option<_>>()
        .context("--port leaves no room for three nodes 1000 apart")?;
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let members = parse_cluster(&cluster)?;
    let configs = (1..=3u64)
        .map(|id| {
            let mut config =
                NodeConfig::new(id, members.clone(), data_dir.join(format!("node-{id}")));
            config.replication_factor = Some(replication_factor);
            config.secret = Some(secret.clone());
            config.tokens = Some(token_store.clone());
            config
        })
        .collect();
    Ok((configs, Some((token, token_path))))
}

fn run_config(args: RunArgs) -> anyhow::Result<NodeConfig> {
    let (Some(id), Some(cluster), Some(data_dir)) = (args.id, args.cluster, args.data_dir) else {
        bail!(
            "--id, --cluster and --data-dir are required (or run `dfs-server dev`); \
             see dfs-server --help"
        );
    };
    let mut config = NodeConfig::new(id, parse_cluster(&cluster)?, data_dir);
    config.replication_factor = args.replication_factor;
    config.fsync = !args.no_fsync;
    config.group_commit = !args.no_group_commit;
    let limits = &mut config.limits;
    limits.connections_max = args.max_connections;
    limits.connections_per_address_max = args.max_connections_per_address;
    limits.requests_in_flight_max = args.max_requests_in_flight;
    limits.request_bytes_max = args.max_request_bytes;
    let waits = [
        (args.hello_timeout, &mut limits.hello_timeout),
        (args.idle_timeout, &mut limits.idle_timeout),
        (args.frame_timeout, &mut limits.frame_timeout),
        (args.write_timeout, &mut limits.write_timeout),
        (args.body_chunk_timeout, &mut limits.body_chunk_timeout),
    ];
    for (flag, limit) in waits {
        if let Some(wait) = flag {
            *limit = wait;
        }
    }
    if let Some(after) = args.rereplicate_after {
        config.timing.rereplicate_after = after;
    }
    if let Some(every) = args.scrub_interval {
        config.timing.scrub_interval = every;
    }
    if let Some(path) = &args.secret_file {
        config.secret = Some(ClusterSecret::from_file(path)?);
    }
    if let Some(path) = &args.tokens_file {
        config.tokens = Some(Arc::new(TokenStore::open(path)?));
    }
    if let (Some(cert), Some(key), Some(ca)) = (args.tls_cert, args.tls_key, args.tls_ca) {
        let tls = Tls::from_files(Tcp::shared(), &TlsFiles::node(ca, cert, key))?;
        config.transport = tls.into_shared();
    }
    Ok(config)
}

/// Warns about a node that anyone can reach as a peer or client.
fn warn_if_open(config: &NodeConfig) {
    if config.secret.is_none() {
        tracing::warn!(
            "no --secret-file: anyone who can reach this node's port can act as a node of \
             the cluster"
        );
    }
    if config.tokens.is_none() {
        tracing::warn!(
            "no --tokens-file: anyone who can reach this node's port can read, write and \
             delete every file"
        );
    }
}

/// Runs `dfs-server secret`, `token` and `certs`: they change files and print, nothing
/// more.
fn run_tool(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev { .. } => bail!("dev is not a tool"),
        Command::Secret { file, force } => {
            ClusterSecret::generate().write(&file, force)?;
            println!(
                "wrote a new cluster secret to {}: copy it to every node (mode 0600) and \
                 start each with --secret-file",
                file.display()
            );
        }
        Command::Token(TokenCommand::Add {
            name,
            right,
            prefix,
            tokens_file,
        }) => {
            let mut file = TokensFile::load_or_empty(&tokens_file)?;
            let token = file.add(&name, right, prefix.as_deref())?;
            file.save(&tokens_file)?;
            eprintln!(
                "added token {name:?} ({right}{}) to {}; it is shown only now:",
                prefix
                    .map(|p| format!(", names under {p:?}"))
                    .unwrap_or_default(),
                tokens_file.display()
            );
            println!("{token}");
        }
        Command::Token(TokenCommand::List { tokens_file }) => {
            let file = TokensFile::load(&tokens_file)?;
            for t in &file.tokens {
                println!(
                    "{}\t{}\t{}",
                    t.name,
                    t.right,
                    t.prefix.as_deref().unwrap_or("*")
                );
            }
        }
        Command::Token(TokenCommand::Remove { name, tokens_file }) => {
            let mut file = TokensFile::load(&tokens_file)?;
            if !file.remove(&name) {
                bail!("{} has no token named {name:?}", tokens_file.display());
            }
            file.save(&tokens_file)?;
            println!("removed token {name:?}");
        }
        Command::Certs { dir, names, force } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            let certs = write_dev_certificates(&dir, &names, force)?;
            println!(
                "wrote {} and {} (the CA: keep ca-key.pem off the nodes), {} and {} (for \
                 every node) for {}",
                certs.ca.display(),
                certs.ca_key.display(),
                certs.cert.display(),
                certs.key.display(),
                names.join(", ")
            );
        }
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_flag_reaches_the_node_config() {
        let cli = Cli::try_parse_from([
            "dfs-server",
            "--id",
            "1",
            "--cluster",
            "1=127.0.0.1:6000",
            "--data-dir",
            "/tmp/x",
            "--rereplicate-after",
            "2s",
            "--scrub-interval",
            "1h",
        ])
        .expect("parses");
        let config = run_config(cli.run).expect("config");
        assert_eq!(config.timing.rereplicate_after, Duration::from_secs(2));
        assert_eq!(config.timing.scrub_interval, Duration::from_secs(3600));
        let cli = Cli::try_parse_from([
            "dfs-server",
            "--id",
            "1",
            "--cluster",
            "1=127.0.0.1:6000",
            "--data-dir",
            "/tmp/x",
        ])
        .expect("parses");
        let config = run_config(cli.run).expect("config");
        assert_eq!(config.timing.rereplicate_after, Duration::from_secs(30));
        assert_eq!(config.timing.scrub_interval, Duration::from_secs(24 * 3600));
        // Without limit flags, the library's defaults.
        let (got, want) = (config.limits, Limits::default());
        assert_eq!(
            (
                got.connections_max,
                got.connections_per_address_max,
                got.requests_in_flight_max,
                got.request_bytes_max,
            ),
            (
                want.connections_max,
                want.connections_per_address_max,
                want.requests_in_flight_max,
                want.request_bytes_max,
            )
        );
        assert_eq!(
            (
                got.hello_timeout,
                got.idle_timeout,
                got.frame_timeout,
                got.write_timeout,
                got.body_chunk_timeout,
            ),
            (
                want.hello_timeout,
                want.idle_timeout,
                want.frame_timeout,
                want.write_timeout,
                want.body_chunk_timeout,
            )
        );
    }

    #[test]
    fn every_limit_flag_reaches_the_node_config() {
        let parse = |flags: &[&str]| {
            let base = [
                "dfs-server",
                "--id",
                "1",
                "--cluster",
                "1=127.0.0.1:6000",
                "--data-dir",
                "/tmp/x",
            ];
            let cli = Cli::try_parse_from(base.iter().chain(flags)).expect("parses");
            run_config(cli.run).expect("config").limits
        };
        let limits = parse(&[
            "--max-connections",
            "100",
            "--max-connections-per-address",
            "10",
            "--max-requests-in-flight",
            "8",
            "--max-request-bytes",
            "300000",
            "--hello-timeout",
            "2s",
            "--idle-timeout",
            "90s",
            "--frame-timeout",
            "750ms",
            "--write-timeout",
            "3s",
            "--body-chunk-timeout",
            "4s",
        ]);
        assert_eq!(limits.connections_max, 100);
        assert_eq!(limits.connections_per_address_max, 10);
        assert_eq!(limits.requests_in_flight_max, 8);
        assert_eq!(limits.request_bytes_max, 300_000);
        assert_eq!(limits.hello_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(limits.frame_timeout, Duration::from_millis(750));
        assert_eq!(limits.write_timeout, Duration::from_secs(3));
        assert_eq!(limits.body_chunk_timeout, Duration::from_secs(4));
        // The range `--max-request-bytes`'s help gives.
        assert_eq!(
            (dfs::node::REQUEST_BYTES_MIN, dfs::proto::FRAME_BYTES_MAX),
            (263_424, 1_048_576)
        );
        // The older spelling of the idle timeout, a number of seconds, still works.
        let limits = parse(&["--idle-timeout-secs", "45"]);
        assert_eq!(limits.idle_timeout, Duration::from_secs(45));
        assert!(
            Cli::try_parse_from(["dfs-server", "--hello-timeout", "soon"]).is_err(),
            "a duration without a number is refused"
        );
    }
}
