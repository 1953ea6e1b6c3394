//! A node's configuration and its limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dfs_auth::{ClusterSecret, TokenStore};
use dfs_net::SharedTransport;
use dfs_proto::{CHUNK_BYTES_MAX, FRAME_BYTES_MAX, NAME_BYTES_MAX};
use dfs_replication::{BODY_CHUNK_TIMEOUT, Member, Timing};
use tokio::sync::Semaphore;

use crate::NodeError;

/// The smallest [`Limits::request_bytes_max`] a node accepts: one request carrying a whole
/// body chunk ([`CHUNK_BYTES_MAX`]) under the longest name ([`NAME_BYTES_MAX`]), with room
/// for the rest of its envelope (ids, tag, condition, lengths). Every frame the client
/// library sends fits in it.
pub const REQUEST_BYTES_MIN: usize = CHUNK_BYTES_MAX + NAME_BYTES_MAX + 256;

/// Every bound a node puts on what clients can make it hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most; the next one is refused with `Busy`.
    pub connections_max: usize,
    /// Open connections from one source IP address (any port) at most; the next one from
    /// that address is refused with `Busy`, while other addresses are still served. So one
    /// host (or everything behind one NAT) can hold only part of
    /// [`connections_max`](Self::connections_max). The nodes of the cluster connect to
    /// each other too (a few connections per node), and count like anyone else.
    pub connections_per_address_max: usize,
    /// Requests one connection may have in progress; more get `Busy` answers.
    pub requests_in_flight_max: usize,
    /// The largest frame a client may send, in bytes (a frame over it gets a `TooLarge`
    /// goodbye and the connection is closed); between [`REQUEST_BYTES_MIN`] and
    /// [`FRAME_BYTES_MAX`]. Also bounds the buffer a frame's announced length makes the
    /// node reserve. Connections from other nodes of the cluster (raft, replication,
    /// forwarded requests) keep [`FRAME_BYTES_MAX`]: their messages are built to it, and a
    /// forwarded request is re-framed with an id of its own.
    pub request_bytes_max: usize,
    /// Time to send the hello after connecting.
    pub hello_timeout: Duration,
    /// A connection with nothing in progress and no frame for this long is closed.
    pub idle_timeout: Duration,
    /// A frame that has begun must arrive whole within this (at most twice this, as it is
    /// checked at this interval); a sender that stalls mid-frame is closed.
    pub frame_timeout: Duration,
    /// Time the peer has to take each frame we send (a client that stops reading).
    pub write_timeout: Duration,
    /// Time to wait for each chunk of a streamed body before the write is abandoned.
    pub body_chunk_timeout: Duration,
    /// At shutdown, time given to requests in progress.
    pub shutdown_grace: Duration,
    /// How long a node waits to connect to another when forwarding a request to it.
    pub forward_connect_timeout: Duration,
    /// How long a forwarded request waits for each frame of the primary's answer before
    /// the connection to it counts as dead (the client then retries).
    pub forward_reply_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_max: 1024,
            // A quarter of the connections: one address cannot take the node, yet a NAT
            // gateway or an application server's pool, or a benchmark of 256 clients on
            // loopback (spread over the nodes, plus the peers' own connections), fits.
            connections_per_address_max: 256,
            requests_in_flight_max: 64,
            request_bytes_max: FRAME_BYTES_MAX,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            body_chunk_timeout: BODY_CHUNK_TIMEOUT,
            shutdown_grace: Duration::from_secs(5),
            forward_connect_timeout: Duration::from_secs(2),
            forward_reply_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// Checks that every bound is usable: counts at least 1 (and within what a semaphore
    /// holds), waits longer than zero, the request size between [`REQUEST_BYTES_MIN`] and
    /// [`FRAME_BYTES_MAX`]. Messages name the `dfs-server` flag.
    pub(crate) fn validate(&self) -> Result<(), NodeError> {
        let counts = [
            ("--max-connections", self.connections_max),
            (
                "--max-connections-per-address",
                self.connections_per_address_max,
            ),
            ("--max-requests-in-flight", self.requests_in_flight_max),
        ];
        for (flag, n) in counts {
            if n == 0 || n > Semaphore::MAX_PERMITS {
                return Err(NodeError::Config(format!(
                    "{flag} {n} must be between 1 and {}",
                    Semaphore::MAX_PERMITS
                )));
            }
        }
        let waits = [
            ("--hello-timeout", self.hello_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--frame-timeout", self.frame_timeout),
            ("the write timeout", self.write_timeout),
            ("the body chunk timeout", self.body_chunk_timeout),
        ];
        for (what, wait) in waits {
            if wait.is_zero() {
                return Err(NodeError::Config(format!("{what} must be longer than 0")));
            }
        }
        let bytes = self.request_bytes_max;
        if bytes < REQUEST_BYTES_MIN {
            return Err(NodeError::Config(format!(
                "--max-request-bytes {bytes} is too small: a request must fit a \
                 {CHUNK_BYTES_MAX}-byte body chunk under a {NAME_BYTES_MAX}-byte name, so \
                 at least {REQUEST_BYTES_MIN}"
            )));
        }
        if bytes > FRAME_BYTES_MAX {
            return Err(NodeError::Config(format!(
                "--max-request-bytes {bytes} is over the protocol's frame limit of \
                 {FRAME_BYTES_MAX} bytes"
            )));
        }
        Ok(())
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id; must be one of `members`.
    pub id: u64,
    /// The cluster: every node's id and address, the same list on every node.
    pub members: Vec<Member>,
    /// Where the node keeps its data (the store lives in `data_dir/store`).
    pub data_dir: PathBuf,
    /// Replicas per new file; `None` means 2, or fewer if the cluster is smaller.
    pub replication_factor: Option<usize>,
    /// Sync every write to disk before acknowledging it (default on; turning it off
    /// trades durability across machine crashes for speed).
    pub fsync: bool,
    /// Sync small appends by group commit: one `syncfs` for every append waiting (default
    /// on; see `dfs_store::StoreConfig::group_commit`).
    pub group_commit: bool,
    /// The resource bounds.
    pub limits: Limits,
    /// Leases, failure detection and repair.
    pub timing: Timing,
    /// What the node listens with and connects to its peers with (real TCP by default).
    pub transport: SharedTransport,
    /// The cluster map's election timeout range, in milliseconds (`[min, max)`).
    pub election_timeout_ms: (u64, u64),
    /// The secret the cluster's nodes share: peers and forwarding nodes must prove it in
    /// their hello, and this node proves it to them. `None`: anyone who reaches the port
    /// can act as a peer (fine on a private loopback, not on a network).
    pub secret: Option<ClusterSecret>,
    /// The access tokens clients must present, and their rights. `None`: every client may
    /// do everything. Needs `secret` (else anyone could forward requests as a peer).
    pub tokens: Option<Arc<TokenStore>>,
}

impl NodeConfig {
    /// A configuration for node `id` of `members`.
    pub fn new(id: u64, members: Vec<Member>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            members,
            data_dir: data_dir.into(),
            replication_factor: None,
            fsync: true,
            group_commit: true,
            limits: Limits::default(),
            timing: Timing::default(),
            transport: dfs_net::Tcp::shared(),
            election_timeout_ms: (
                dfs_cluster::ELECTION_TIMEOUT_MIN_MS,
                dfs_cluster::ELECTION_TIMEOUT_MAX_MS,
            ),
            secret: None,
            tokens: None,
        }
    }

    /// A one-member cluster: node 1 at `addr` (port 0 picks a free port).
    pub fn single(data_dir: impl Into<PathBuf>, addr: &str) -> Self {
        Self::new(
            1,
            vec![Member {
                id: 1,
                addr: addr.to_owned(),
            }],
            data_dir,
        )
    }

    /// The replication factor in effect.
    pub fn effective_replication_factor(&self) -> usize {
        self.replication_factor
            .unwrap_or_else(|| 2.min(self.members.len()))
    }

    /// Checks the configuration, returning this node's own member entry.
    pub(crate) fn validate(&self) -> Result<&Member, NodeError> {
        let me = self
            .members
            .iter()
            .find(|m| m.id == self.id)
            .ok_or_else(|| {
                NodeError::Config(format!("--id {} is not in the --cluster list", self.id))
            })?;
        if self.tokens.is_some() && self.secret.is_none() {
            return Err(NodeError::Config(
                "access tokens need a cluster secret (--secret-file): without one, anyone \
                 could connect as a peer and bypass the tokens"
                    .into(),
            ));
        }
        let r = self.effective_replication_factor();
        if r == 0 || r > self.members.len() {
            return Err(NodeError::Config(format!(
                "--replication-factor {r} must be between 1 and the number of members ({})",
                self.members.len()
            )));
        }
        self.limits.validate()?;
        Ok(me)
    }

    /// An id for the cluster, the same on every node started with the same member list.
    pub fn cluster_id(&self) -> u64 {
        let mut members: Vec<_> = self.members.iter().map(|m| (m.id, &m.addr)).collect();
        members.sort();
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (id, addr) in members {
            for b in id.to_be_bytes().iter().chain(addr.as_bytes()) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// Parses `1=127.0.0.1:6000,2=127.0.0.1:7000` into members.
pub fn parse_cluster(spec: &str) -> Result<Vec<Member>, NodeError> {
    let mut members: Vec<Member> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            NodeError::Config(format!("cluster entry {part:?} is not ID=HOST:PORT"))
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| NodeError::Config(format!("node id {id:?} is not a number")))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(NodeError::Config(format!(
                "address {addr:?} of node {id} is not HOST:PORT"
            )));
        }
        if members.iter().any(|m| m.id == id) {
            return Err(NodeError::Config(format!("node id {id} appears twice")));
        }
        members.push(Member {
            id,
            addr: addr.to_owned(),
        });
    }
    if members.is_empty() {
        return Err(NodeError::Config("the cluster list is empty".into()));
    }
    Ok(members)
}
