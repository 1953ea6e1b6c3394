//! The messages: what a client (or a peer) sends, and what a node answers.
//!
//! Names travel as plain strings and are checked by the node that serves the request, so
//! a bad name gets an [`ErrorCode::InvalidName`](crate::ErrorCode) reply for that request
//! rather than a closed connection.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::WireError;

/// A node's id in the cluster (`--id`).
pub type NodeId = u64;

/// The first frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`](crate::MAGIC).
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: u16,
    /// Who is calling.
    pub role: Role,
    /// A fresh random value from a peer or forwarder (zeros from a client): the node's
    /// proof of the cluster secret in its [`Challenge`] covers it, so an old answer cannot
    /// be replayed to the caller.
    #[serde(default)]
    pub nonce: [u8; crate::PROOF_BYTES],
    /// A client's access token (at most [`TOKEN_BYTES_MAX`](crate::TOKEN_BYTES_MAX)
    /// bytes), for a node that requires one.
    #[serde(default)]
    pub token: Option<String>,
}

impl Hello {
    /// The hello this crate's version sends for `role`, with no nonce and no token.
    pub fn new(role: Role) -> Self {
        Self {
            magic: crate::MAGIC,
            version: crate::PROTOCOL_VERSION,
            role,
            nonce: [0; crate::PROOF_BYTES],
            token: None,
        }
    }

    /// The same hello carrying `nonce`.
    pub fn with_nonce(mut self, nonce: [u8; crate::PROOF_BYTES]) -> Self {
        self.nonce = nonce;
        self
    }

    /// The same hello carrying an access token.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }
}

/// A node's answer to the hello of a peer or forwarder when the cluster has a secret: the
/// node's own nonce, and its proof that it knows the secret (an HMAC over both nonces).
/// The caller checks the proof, then answers with [`ClientFrame::Proof`]; the node then
/// sends [`ServerFrame::Welcome`] or a goodbye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The node's fresh random value; the caller's proof must cover it.
    pub nonce: [u8; crate::PROOF_BYTES],
    /// The node's HMAC-SHA256 proof of the secret over both nonces.
    pub proof: [u8; crate::PROOF_BYTES],
}

/// Who opened a connection: a client, or another node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A client: sends [`Request`]s.
    Client,
    /// A node of cluster `cluster_id` (refused if it is not ours).
    Peer {
        /// The cluster the peer belongs to.
        cluster_id: u64,
        /// The peer's node id.
        node_id: NodeId,
    },
    /// A node of cluster `cluster_id` forwarding its clients' requests to the node that
    /// serves them: a client session whose requests are served here or refused, never
    /// forwarded again.
    Forwarder {
        /// The cluster the forwarding node belongs to.
        cluster_id: u64,
        /// The forwarding node's id.
        node_id: NodeId,
    },
}

/// A node's answer to an accepted hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The node's id.
    pub node_id: NodeId,
    /// The node's cluster id.
    pub cluster_id: u64,
    /// The protocol version the node speaks.
    pub version: u16,
}

/// Every frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The first frame of a connection.
    Hello(Hello),
    /// A request; its id must be unique among the connection's requests in flight.
    Request(Request),
    /// More body bytes for the request with the chunk's id.
    Chunk(Chunk),
    /// Abandon the request with this id (a write whose body stream failed is not applied).
    Cancel {
        /// The request to abandon.
        id: u64,
    },
    /// A message between the nodes of a cluster (only after a `Role::Peer` hello): a request
    /// whose answer is a [`ServerFrame::Peer`] with the same id.
    Peer(PeerMessage),
    /// A peer's or forwarder's answer to a [`ServerFrame::Challenge`]: its HMAC-SHA256
    /// proof of the cluster secret over both nonces.
    Proof([u8; crate::PROOF_BYTES]),
}

/// Every frame a node sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The hello was accepted.
    Welcome(Welcome),
    /// The answer to one request.
    Response(Response),
    /// Bytes of a read, after its `ReadStart` response.
    Chunk(Chunk),
    /// A read stream failed part-way; no more chunks follow for `id`.
    StreamError {
        /// The request whose stream ended.
        id: u64,
        /// Why.
        error: WireError,
    },
    /// The node closes the connection, and says why (bad hello, malformed frame, shutdown).
    Goodbye(WireError),
    /// The answer to a [`ClientFrame::Peer`] request, with the request's id (peer
    /// connections only).
    Peer(PeerMessage),
    /// The node asks a peer or forwarder to prove it knows the cluster secret (and proves
    /// it knows it too); answered with [`ClientFrame::Proof`].
    Challenge(Challenge),
}

/// A message between the nodes of a cluster: an id that pairs a request with its answer, and
/// a payload this crate does not interpret (the cluster crate encodes its consensus messages
/// in it).
///
/// The whole frame must stay under [`FRAME_BYTES_MAX`](crate::FRAME_BYTES_MAX): senders
/// split large state (snapshots) into several messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMessage {
    /// Chosen by the sender of a request, unique among its requests in flight on the
    /// connection; the answer carries it back.
    pub id: u64,
    /// The encoded message, opaque to this crate.
    pub payload: Bytes,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; the response carries it back.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// Identifies a write across retries so it is applied at most once: a client picks a
/// random `client_id` once and numbers its writes with `seq`; a retry reuses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpTag {
    /// Random per client instance.
    pub client_id: u64,
    /// Grows with each new write of that client; a retry keeps its number.
    pub seq: u64,
}

/// The body of a write: the first part inline; if `more`, [`Chunk`]s with the request's id
/// follow until one has `last` set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// The first (often the only) bytes, at most [`CHUNK_BYTES_MAX`](crate::CHUNK_BYTES_MAX).
    pub data: Bytes,
    /// Whether chunks follow.
    pub more: bool,
}

/// A part of a streamed body (client to node: a write; node to client: a read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The request this belongs to.
    pub id: u64,
    /// At most [`CHUNK_BYTES_MAX`](crate::CHUNK_BYTES_MAX) bytes.
    pub data: Bytes,
    /// The final chunk of the stream.
    pub last: bool,
}

/// The operations of the data model (BRIEF 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new empty file; `AlreadyExists` if the name is taken.
    Create {
        /// The file.
        name: String,
        /// Retry identity.
        tag: Option<OpTag>,
    },
    /// Append bytes, creating the file if missing. Applied whole or not at all.
    Append {
        /// The file.
        name: String,
        /// The bytes.
        body: Body,
        /// Retry identity.
        tag: Option<OpTag>,
        /// Applied only if this holds (fencing token, expected version).
        cond: Condition,
    },
    /// Replace the whole content atomically, creating the file if missing.
    Put {
        /// The file.
        name: String,
        /// The new content.
        body: Body,
        /// Retry identity.
        tag: Option<OpTag>,
        /// Applied only if this holds (fencing token, expected version).
        cond: Condition,
    },
    /// Read `len` bytes (to the end if `None`) from `offset`.
    Read {
        /// The file.
        name: String,
        /// First byte.
        offset: u64,
        /// How many bytes at most; `None` reads to the end.
        len: Option<u64>,
    },
    /// Remove the file from every replica and from the table.
    Delete {
        /// The file.
        name: String,
        /// Retry identity.
        tag: Option<OpTag>,
        /// Applied only if this holds (fencing token, expected version).
        cond: Condition,
    },
    /// One page of the names starting with `prefix`, sorted.
    List {
        /// Only names starting with this.
        prefix: String,
        /// Resume after this name (from the previous page's `next`).
        start_after: Option<String>,
        /// Page size, at most [`PAGE_ENTRIES_MAX`](crate::PAGE_ENTRIES_MAX).
        limit: u32,
    },
    /// Size, version, replicas, checksum and time of one file.
    Stat {
        /// The file.
        name: String,
    },
    /// One page of the placement table.
    Table {
        /// Resume after this name.
        start_after: Option<String>,
        /// Page size, at most [`PAGE_ENTRIES_MAX`](crate::PAGE_ENTRIES_MAX).
        limit: u32,
    },
    /// Every node's state and the cluster map's leader and term.
    Status,
    /// Checks every copy on every node that is up against its checksum now (a scrub), and
    /// has each bad copy replaced by a good one; answers what each node found.
    Scrub,
    /// Takes an advisory lock lease on a name ([`Reply::Locked`]): shared with other
    /// shared holders, or exclusive. Served by any node (the grant is a change of the
    /// cluster map). While the lock is held in a conflicting mode, waits up to `wait_ms`
    /// for it, then fails with [`ErrorCode::LockHeld`](crate::ErrorCode::LockHeld).
    Lock {
        /// The name locked (a file's name; the file need not exist).
        name: String,
        /// Shared or exclusive.
        mode: LockMode,
        /// How long the lease lasts without a renewal, in milliseconds, between
        /// [`LOCK_TTL_MS_MIN`](crate::LOCK_TTL_MS_MIN) and
        /// [`LOCK_TTL_MS_MAX`](crate::LOCK_TTL_MS_MAX).
        ttl_ms: u64,
        /// How long to wait for a lock held by others, in milliseconds (0: do not wait),
        /// at most [`LOCK_WAIT_MS_MAX`](crate::LOCK_WAIT_MS_MAX).
        wait_ms: u64,
        /// Retry identity: a retry whose first attempt was granted gets that grant.
        tag: Option<OpTag>,
    },
    /// Extends a lease by its ttl from now ([`Reply::Renewed`]);
    /// [`ErrorCode::LeaseExpired`](crate::ErrorCode::LeaseExpired) once it has expired or
    /// was released.
    Renew {
        /// The lease id from [`Reply::Locked`].
        lease: u64,
        /// Retry identity.
        tag: Option<OpTag>,
    },
    /// Releases a lease ([`Reply::Unlocked`]);
    /// [`ErrorCode::LeaseExpired`](crate::ErrorCode::LeaseExpired) once it has expired.
    Unlock {
        /// The lease id from [`Reply::Locked`].
        lease: u64,
        /// Retry identity.
        tag: Option<OpTag>,
    },
    /// Writes the body at `offset` of an existing file ([`Reply::Written`];
    /// [`ErrorCode::NotFound`](crate::ErrorCode::NotFound) if missing): bytes below the
    /// size are overwritten, the rest extends the file, and a write that starts past the
    /// end fills the gap with zeros. At most [`WRITE_BYTES_MAX`](crate::WRITE_BYTES_MAX)
    /// bytes. Applied whole or not at all.
    Write {
        /// The file.
        name: String,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        body: Body,
        /// Retry identity.
        tag: Option<OpTag>,
        /// Applied only if this holds (fencing token, expected version).
        cond: Condition,
    },
    /// Sets the size of an existing file ([`Reply::Written`]): cuts the end off, or
    /// extends the file with zeros. Applied whole or not at all.
    Truncate {
        /// The file.
        name: String,
        /// The new size.
        size: u64,
        /// Retry identity.
        tag: Option<OpTag>,
        /// Applied only if this holds (fencing token, expected version).
        cond: Condition,
    },
}

/// What a write or delete requires to be applied. The file's primary checks it under the
/// file's exclusive lock, after a retry of a request already applied was answered (a
/// condition never turns an applied request into a refusal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// A fencing token from [`Reply::Locked`]: the request is refused with
    /// [`ErrorCode::Fenced`](crate::ErrorCode::Fenced) if the file's lock has been granted
    /// since to a holder that does not share with this token's (any exclusive grant, or a
    /// shared one after every holder of this token's group let go).
    pub fence: Option<u64>,
    /// The version the file must be at, else
    /// [`ErrorCode::VersionMismatch`](crate::ErrorCode::VersionMismatch) (compare-and-set).
    /// `0` also matches a file that does not exist (create-if-absent).
    pub if_version: Option<u64>,
}

impl Condition {
    /// No condition: the request is applied unconditionally.
    pub const NONE: Condition = Condition {
        fence: None,
        if_version: None,
    };

    /// Only while no newer conflicting grant of the file's lock than `token` exists.
    pub fn fenced(token: u64) -> Self {
        Condition {
            fence: Some(token),
            ..Condition::NONE
        }
    }

    /// Only while the file is at `version`.
    pub fn if_version(version: u64) -> Self {
        Condition {
            if_version: Some(version),
            ..Condition::NONE
        }
    }

    /// This condition, also requiring fencing token `token`.
    pub fn with_fence(self, token: u64) -> Self {
        Condition {
            fence: Some(token),
            ..self
        }
    }

    /// This condition, also requiring the file to be at `version`.
    pub fn with_version(self, version: u64) -> Self {
        Condition {
            if_version: Some(version),
            ..self
        }
    }

    /// Whether nothing is required.
    pub fn is_none(&self) -> bool {
        self.fence.is_none() && self.if_version.is_none()
    }
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// With other shared holders; excludes an exclusive one.
    Shared,
    /// Alone.
    Exclusive,
}

impl LockMode {
    /// Lower-case name, as the CLI prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }
}

/// A lock lease granted (or renewed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockGrant {
    /// The name locked.
    pub name: String,
    /// How it is held.
    pub mode: LockMode,
    /// The lease's id, for `renew` and `unlock`.
    pub lease: u64,
    /// The fencing token: unique, and greater than every token granted before it (for
    /// any name), across failovers of any node. Pass it with writes
    /// ([`Condition::fence`]).
    pub token: u64,
    /// The lease's time to live, in milliseconds: it lapses that long after its grant or
    /// last renewal as the cluster map's leader saw them. The holder should count from
    /// when it sent the request and renew well before.
    pub ttl_ms: u64,
}

impl Op {
    /// The file the operation is about, if it is about one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Op::Create { name, .. }
            | Op::Append { name, .. }
            | Op::Put { name, .. }
            | Op::Read { name, .. }
            | Op::Delete { name, .. }
            | Op::Stat { name }
            | Op::Lock { name, .. }
            | Op::Write { name, .. }
            | Op::Truncate { name, .. } => Some(name),
            Op::List { .. }
            | Op::Table { .. }
            | Op::Status
            | Op::Scrub
            | Op::Renew { .. }
            | Op::Unlock { .. } => None,
        }
    }

    /// The write body, for the operations that carry one.
    pub fn body(&self) -> Option<&Body> {
        match self {
            Op::Append { body, .. } | Op::Put { body, .. } | Op::Write { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// What happened.
    pub result: Result<Reply, WireError>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// `create` done.
    Created(FileInfo),
    /// `append`, `put`, `write` or `truncate` done, durable on every replica.
    Written(WriteAck),
    /// A read's bytes follow as exactly `len` bytes of [`Chunk`]s, the final one `last`.
    ReadStart {
        /// The file as of the read.
        info: FileInfo,
        /// The first byte sent.
        offset: u64,
        /// How many bytes follow.
        len: u64,
    },
    /// `delete` done.
    Deleted,
    /// A page of `list`.
    Listing {
        /// Sorted by name.
        entries: Vec<ListEntry>,
        /// Pass as `start_after` for the next page; `None` when this was the last.
        next: Option<String>,
    },
    /// `stat`.
    Stat(FileInfo),
    /// A page of the placement table.
    Table {
        /// Sorted by name.
        entries: Vec<TableEntry>,
        /// Pass as `start_after` for the next page; `None` when this was the last.
        next: Option<String>,
    },
    /// `status`.
    Status(ClusterStatus),
    /// `scrub`: one report per node asked, in node order.
    Scrub(Vec<ScrubReport>),
    /// `lock` granted.
    Locked(LockGrant),
    /// `renew` done: the lease lasts its ttl from now.
    Renewed(LockGrant),
    /// `unlock` done.
    Unlocked,
}

/// What one node's scrub found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// The node.
    pub node: NodeId,
    /// Copies checked.
    pub files: u64,
    /// Bytes read to check them.
    pub bytes: u64,
    /// Copies whose content did not match their checksum.
    pub bad: Vec<BadCopy>,
    /// Why the node could not scrub (it did not answer, or failed), if so.
    pub error: Option<String>,
}

/// A copy a scrub found damaged, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadCopy {
    /// The file's name.
    pub name: String,
    /// The file's id.
    pub file_id: u64,
    /// `true` once the damaged copy was taken out of service (the node left the file's
    /// replica set and removed it, so a good copy is installed in its place); `false` when
    /// no other replica could take over (the message says why).
    pub replaced: bool,
    /// What was done, or why nothing could be.
    pub action: String,
}

/// What `stat` tells about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file's name.
    pub name: String,
    /// The id its bytes are stored under (new for every create of the name).
    pub file_id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Count of applied writes since create (0 for a new file).
    pub version: u64,
    /// CRC-32C of the whole content.
    pub checksum: u32,
    /// The nodes holding it, primary first.
    pub replicas: Vec<NodeId>,
    /// Last write, in milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// The result of an append or put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    /// The file's version after the write.
    pub version: u64,
    /// The file's size after the write.
    pub size: u64,
    /// CRC-32C of the content after the write.
    pub checksum: u32,
    /// True when this was a retry of a write already applied (nothing applied again).
    pub duplicate: bool,
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The file's name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Version.
    pub version: u64,
}

/// One line of the placement table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The file's name.
    pub name: String,
    /// The id its bytes are stored under.
    pub file_id: u64,
    /// The nodes holding it, primary first.
    pub replicas: Vec<NodeId>,
    /// Bumped on every change of the replica set.
    pub epoch: u64,
    /// The replicas it should have (the answering node's replication factor): fewer
    /// `replicas` than this means it is under-replicated (a replica's node went down and the
    /// file has not been copied back or elsewhere yet).
    #[serde(default)]
    pub replication_factor: u32,
}

impl TableEntry {
    /// Whether the file has fewer replicas than it should.
    pub fn is_under_replicated(&self) -> bool {
        self.replicas.len() < self.replication_factor as usize
    }
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Every member.
    pub nodes: Vec<NodeStatus>,
    /// The cluster map's leader, if known.
    pub leader: Option<NodeId>,
    /// The cluster map's term.
    pub term: u64,
    /// The replication factor new files get.
    pub replication_factor: u32,
    /// Files with fewer replicas than the replication factor, per the answering node's map
    /// (0 once self-healing has caught up).
    #[serde(default)]
    pub under_replicated: u64,
    /// How long a file runs short of replicas (while none of its home nodes is up to take
    /// it back) before its primary copies it to another live node, in milliseconds (the
    /// answering node's setting, `--rereplicate-after`).
    #[serde(default)]
    pub rereplicate_after_ms: u64,
}

/// One member's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Where it serves clients and peers.
    pub addr: String,
    /// Whether it is up as far as the answering node knows.
    pub up: bool,
    /// Its role in the cluster map.
    pub role: NodeRole,
    /// For a node that is down: how long it has been, in milliseconds, as the answering
    /// node saw it (since that node first found it down in its map, so at most as long as
    /// the answering node has run). `None` for a node that is up, or that has not yet
    /// registered in the map.
    #[serde(default)]
    pub down_for_ms: Option<u64>,
}

/// A node's role in the cluster map's consensus group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Leads the map.
    Leader,
    /// Follows the leader.
    Follower,
    /// Running an election.
    Candidate,
    /// Not known (the node is down or unreachable).
    Unknown,
}

impl NodeRole {
    /// Lower-case name, as the CLI prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Leader => "leader",
            NodeRole::Follower => "follower",
            NodeRole::Candidate => "candidate",
            NodeRole::Unknown => "unknown",
        }
    }
}
