//! [`Client`]: every operation of the data model, with failover and exactly-once retries.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dfs_net::{SharedTransport, Tcp};
use dfs_proto::{
    Body, CHUNK_BYTES_MAX, Chunk, ClientFrame, ClusterStatus, Condition, FileInfo, Hello,
    ListEntry, LockGrant, LockMode, Name, Op, OpTag, PAGE_ENTRIES_MAX, Reply, Request, Role,
    ScrubReport, ServerFrame, TableEntry, WriteAck, validate_prefix,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::ClientError;
use crate::connection::{Connection, Replies, from_wire, lost};

/// How long [`Client::scrub`] waits for the cluster's answer (every node reads every copy).
pub const SCRUB_TIMEOUT: Duration = Duration::from_secs(900);

/// The longest pause between two attempts of a request (the pause starts at 20 ms and
/// doubles): short, so a request goes through soon after a failover (well under a second).
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// How a [`Client`] finds nodes, proves who it is, and how long it waits for them.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of the nodes to use; any node serves any request.
    pub servers: Vec<String>,
    /// How long one connection attempt (TCP connect plus hello) may take.
    pub connect_timeout: Duration,
    /// How long to wait for each reply frame before the attempt counts as timed out.
    pub request_timeout: Duration,
    /// How long to keep retrying a request on other nodes after a retryable failure.
    pub retry_deadline: Duration,
    /// How connections are made: [`Tcp`](dfs_net::Tcp) unless a program (or the
    /// simulator) supplies another transport (TLS: `dfs_net::tls`).
    pub transport: SharedTransport,
    /// The access token sent in every hello, for a cluster that requires one (see
    /// [`token_from_env`]). Not shown by `Debug`.
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("servers", &self.servers)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry_deadline", &self.retry_deadline)
            .field("transport", &self.transport)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The access token a program should use: the content of `file` if given (white space
/// trimmed), else a non-empty `$DFS_TOKEN`, else none.
pub fn token_from_env(file: Option<&std::path::Path>) -> Result<Option<String>, ClientError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Config(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ClientError::Config(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(token.to_owned()));
    }
    Ok(std::env::var("DFS_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

impl ClientConfig {
    /// A configuration with default timeouts for these servers.
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(10),
            transport: Tcp::shared(),
            token: None,
        }
    }

    /// Parses a comma-separated list such as `127.0.0.1:6000,127.0.0.1:7000`.
    pub fn from_list(list: &str) -> Self {
        Self::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }
}

/// A handle to a dfs cluster. Cheap to clone; clones share one connection and pipeline
/// their requests over it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    client_id: u64,
    seq: AtomicU64,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    next_server: AtomicUsize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.inner.config.servers)
            .field("client_id", &self.inner.client_id)
            .finish()
    }
}

enum WriteKind {
    Append,
    Put,
    At(u64),
}

impl WriteKind {
    fn op(&self, name: &str, body: Body, tag: OpTag, cond: Condition) -> Op {
        let (name, tag) = (name.to_owned(), Some(tag));
        match self {
            WriteKind::Append => Op::Append {
                name,
                body,
                tag,
                cond,
            },
            WriteKind::Put => Op::Put {
                name,
                body,
                tag,
                cond,
            },
            WriteKind::At(offset) => Op::Write {
                name,
                offset: *offset,
                body,
                tag,
                cond,
            },
        }
    }
}

impl Client {
    /// Connects to the first reachable node of `servers` (tried in order from a random
    /// start, so clients spread over the cluster).
    pub async fn connect<I, S>(servers: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_config(ClientConfig::new(servers)).await
    }

    /// Connects with explicit timeouts.
    pub async fn with_config(config: ClientConfig) -> Result<Client, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::Config("no server address given".into()));
        }
        let start = dfs_net::random::below(config.servers.len());
        let client = Client {
            inner: Arc::new(Inner {
                config,
                client_id: dfs_net::random::next_u64(),
                seq: AtomicU64::new(1),
                current: tokio::sync::Mutex::new(None),
                next_server: AtomicUsize::new(start),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// This client's id in the [`OpTag`]s of its writes.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// Creates an empty file. Fails with [`ClientError::AlreadyExists`] if the name exists.
    pub async fn create(&self, name: &str) -> Result<FileInfo, ClientError> {
        Name::parse(name)?;
        let op = Op::Create {
            name: name.to_owned(),
            tag: Some(self.next_tag()),
        };
        match self.call(op).await? {
            Reply::Created(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Appends `data` (creating the file if missing). Applied whole and exactly once, even
    /// when the request is retried on another node.
    pub async fn append(
        &self,
        name: &str,
        data: impl Into<Bytes>,
    ) -> Result<WriteAck, ClientError> {
        self.append_if(name, data, Condition::NONE).await
    }

    /// [`append`](Self::append) only if `cond` holds: refused with
    /// [`ClientError::Fenced`] if its fencing token was superseded, with
    /// [`ClientError::VersionMismatch`] if the file is at another version. The file's
    /// primary checks, not this client.
    pub async fn append_if(
        &self,
        name: &str,
        data: impl Into<Bytes>,
        cond: Condition,
    ) -> Result<WriteAck, ClientError> {
        self.write_bytes(WriteKind::Append, name, data.into(), cond)
            .await
    }

    /// Replaces the whole content with `data` (creating the file if missing); readers see
    /// the old content or the new, never a mix.
    pub async fn put(&self, name: &str, data: impl Into<Bytes>) -> Result<WriteAck, ClientError> {
        self.put_if(name, data, Condition::NONE).await
    }

    /// [`put`](Self::put) only if `cond` holds (see [`append_if`](Self::append_if)):
    /// `Condition::if_version(v)` is a compare-and-set, `Condition::if_version(0)` a
    /// create-if-absent.
    pub async fn put_if(
        &self,
        name: &str,
        data: impl Into<Bytes>,
        cond: Condition,
    ) -> Result<WriteAck, ClientError> {
        self.write_bytes(WriteKind::Put, name, data.into(), cond)
            .await
    }

    /// Writes `data` at `offset` of an existing file ([`ClientError::NotFound`] if
    /// missing): bytes below the file's size are overwritten, the rest extends it, and a
    /// write past the end fills the gap with zeros. At most
    /// [`WRITE_BYTES_MAX`](dfs_proto::WRITE_BYTES_MAX) bytes ([`ClientError::TooLarge`]
    /// otherwise, before anything is sent). Applied whole and exactly once on every
    /// replica, even when the request is retried on another node; version + 1.
    pub async fn write_at(
        &self,
        name: &str,
        offset: u64,
        data: impl Into<Bytes>,
    ) -> Result<WriteAck, ClientError> {
        self.write_at_if(name, offset, data, Condition::NONE).await
    }

    /// [`write_at`](Self::write_at) only if `cond` holds (see
    /// [`append_if`](Self::append_if)).
    pub async fn write_at_if(
        &self,
        name: &str,
        offset: u64,
        data: impl Into<Bytes>,
        cond: Condition,
    ) -> Result<WriteAck, ClientError> {
        let data = data.into();
        if data.len() > dfs_proto::WRITE_BYTES_MAX {
            return Err(ClientError::TooLarge(format!(
                "a write at an offset carries at most {} bytes, not {}",
                dfs_proto::WRITE_BYTES_MAX,
                data.len()
            )));
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(ClientError::TooLarge(format!(
                "a write of {} bytes at {offset} ends past 2^64",
                data.len()
            )));
        }
        self.write_bytes(WriteKind::At(offset), name, data, cond)
            .await
    }

    /// Sets the size of an existing file ([`ClientError::NotFound`] if missing): cuts the
    /// end off, or extends it with zeros. Applied whole and exactly once on every replica;
    /// version + 1 (also when the size does not change).
    pub async fn truncate(&self, name: &str, size: u64) -> Result<WriteAck, ClientError> {
        self.truncate_if(name, size, Condition::NONE).await
    }

    /// [`truncate`](Self::truncate) only if `cond` holds (see
    /// [`append_if`](Self::append_if)).
    pub async fn truncate_if(
        &self,
        name: &str,
        size: u64,
        cond: Condition,
    ) -> Result<WriteAck, ClientError> {
        Name::parse(name)?;
        let op = Op::Truncate {
            name: name.to_owned(),
            size,
            tag: Some(self.next_tag()),
            cond,
        };
        match self.call(op).await? {
            Reply::Written(ack) => Ok(ack),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces the content with everything `reader` yields, streamed in chunks, so a file
    /// of any size takes bounded memory. A body that fits in one chunk is retried like
    /// [`put`](Self::put); a longer one is not retried once it has started.
    pub async fn put_stream<R>(&self, name: &str, reader: R) -> Result<WriteAck, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        self.put_stream_if(name, reader, Condition::NONE).await
    }

    /// [`put_stream`](Self::put_stream) only if `cond` holds.
    pub async fn put_stream_if<R>(
        &self,
        name: &str,
        reader: R,
        cond: Condition,
    ) -> Result<WriteAck, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        self.write_stream(WriteKind::Put, name, reader, cond).await
    }

    /// Appends everything `reader` yields as one atomic append, streamed in chunks.
    pub async fn append_stream<R>(&self, name: &str, reader: R) -> Result<WriteAck, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        self.append_stream_if(name, reader, Condition::NONE).await
    }

    /// [`append_stream`](Self::append_stream) only if `cond` holds.
    pub async fn append_stream_if<R>(
        &self,
        name: &str,
        reader: R,
        cond: Condition,
    ) -> Result<WriteAck, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        self.write_stream(WriteKind::Append, name, reader, cond)
            .await
    }

    /// Reads `len` bytes (to the end if `None`) from `offset` into memory.
    pub async fn read(
        &self,
        name: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Bytes, ClientError> {
        let op = self.read_op(name, offset, len)?;
        // The whole read is retried (a fresh snapshot, on another node if need be) when
        // its stream breaks off, not only when it fails to start: nothing was handed out.
        self.retrying(|conn| {
            let op = op.clone();
            async move {
                let mut stream = self.start_read(conn, op).await?;
                let mut out = BytesMut::with_capacity(stream.len().min(64 << 20) as usize);
                while let Some(chunk) = stream.next_chunk().await {
                    let chunk = chunk.map_err(|e| match e {
                        // Broken off mid-stream: worth another attempt here, unlike for a
                        // caller who was handed part of the stream already.
                        ClientError::Interrupted(why) => ClientError::Unavailable(why),
                        other => other,
                    })?;
                    out.extend_from_slice(&chunk);
                }
                Ok(out.freeze())
            }
        })
        .await
    }

    /// Streams a read into `writer`; returns the file's info and the bytes written.
    pub async fn read_to<W>(
        &self,
        name: &str,
        offset: u64,
        len: Option<u64>,
        mut writer: W,
    ) -> Result<(FileInfo, u64), ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let mut stream = self.read_stream(name, offset, len).await?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next_chunk().await {
            let chunk = chunk?;
            writer.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
        writer.flush().await?;
        Ok((stream.info, written))
    }

    /// Starts a read and returns the stream of its chunks. The read is a consistent
    /// snapshot: writes that complete after it started are not part of it.
    pub async fn read_stream(
        &self,
        name: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadStream, ClientError> {
        let op = self.read_op(name, offset, len)?;
        self.retrying(|conn| self.start_read(conn, op.clone()))
            .await
    }

    fn read_op(&self, name: &str, offset: u64, len: Option<u64>) -> Result<Op, ClientError> {
        Name::parse(name)?;
        Ok(Op::Read {
            name: name.to_owned(),
            offset,
            len,
        })
    }

    /// One attempt at starting read `op` on `conn`.
    async fn start_read(&self, conn: Arc<Connection>, op: Op) -> Result<ReadStream, ClientError> {
        let timeout = self.inner.config.request_timeout;
        let (id, mut rx) = conn.register();
        let guard = Forget(conn.clone(), id);
        conn.send(ClientFrame::Request(Request { id, op })).await?;
        match recv(&conn, &mut rx, timeout).await? {
            ServerFrame::Response(r) => match r.result.map_err(from_wire)? {
                Reply::ReadStart { info, offset, len } => Ok(ReadStream {
                    _guard: guard,
                    rx,
                    conn,
                    info,
                    offset,
                    len,
                    received: 0,
                    done: false,
                    timeout,
                }),
                other => Err(unexpected(&other)),
            },
            other => Err(unexpected_frame(&other)),
        }
    }

    /// Deletes a file from every replica and from the table.
    pub async fn delete(&self, name: &str) -> Result<(), ClientError> {
        self.delete_if(name, Condition::NONE).await
    }

    /// [`delete`](Self::delete) only if `cond` holds (see [`append_if`](Self::append_if)).
    pub async fn delete_if(&self, name: &str, cond: Condition) -> Result<(), ClientError> {
        Name::parse(name)?;
        let op = Op::Delete {
            name: name.to_owned(),
            tag: Some(self.next_tag()),
            cond,
        };
        match self.call(op).await? {
            Reply::Deleted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes an advisory lock lease on `name` (the file need not exist): shared with other
    /// shared holders, or exclusive. While others hold it in a conflicting mode, waits up
    /// to `wait` (zero: not at all), then fails with [`ClientError::LockHeld`].
    ///
    /// The lease lasts `ttl` from its grant as the cluster saw it; count it from before
    /// this call and [`renew`](Self::renew) well before it runs out. Pass the grant's
    /// `token` with writes ([`Condition::fenced`]): the store refuses them once the lock
    /// has gone to someone else, even if this holder paused past its ttl without knowing.
    /// Lease state lives in the cluster map, so it survives the loss of any node.
    pub async fn lock(
        &self,
        name: &str,
        mode: LockMode,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGrant, ClientError> {
        Name::parse(name)?;
        let op = Op::Lock {
            name: name.to_owned(),
            mode,
            ttl_ms: millis(ttl),
            wait_ms: millis(wait),
            tag: Some(self.next_tag()),
        };
        let timeout = self.inner.config.request_timeout + wait;
        match self.call_within(op, timeout).await? {
            Reply::Locked(grant) => Ok(grant),
            other => Err(unexpected(&other)),
        }
    }

    /// Renews a lease: it lasts its ttl again from now. Fails with
    /// [`ClientError::LeaseExpired`] once it has run out (the lock may be someone else's).
    pub async fn renew(&self, lease: u64) -> Result<LockGrant, ClientError> {
        let op = Op::Renew {
            lease,
            tag: Some(self.next_tag()),
        };
        match self.call(op).await? {
            Reply::Renewed(grant) => Ok(grant),
            other => Err(unexpected(&other)),
        }
    }

    /// Releases a lease. Fails with [`ClientError::LeaseExpired`] if it had run out.
    pub async fn unlock(&self, lease: u64) -> Result<(), ClientError> {
        let op = Op::Unlock {
            lease,
            tag: Some(self.next_tag()),
        };
        match self.call(op).await? {
            Reply::Unlocked => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Every file whose name starts with `prefix`, sorted by name.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, ClientError> {
        validate_prefix(prefix)?;
        let mut all = Vec::new();
        let mut start_after = None;
        loop {
            let op = Op::List {
                prefix: prefix.to_owned(),
                start_after: start_after.take(),
                limit: PAGE_ENTRIES_MAX,
            };
            match self.call(op).await? {
                Reply::Listing { entries, next } => {
                    all.extend(entries);
                    match next {
                        Some(n) => start_after = Some(n),
                        None => return Ok(all),
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Size, version, replicas, checksum and modification time of a file.
    pub async fn stat(&self, name: &str) -> Result<FileInfo, ClientError> {
        Name::parse(name)?;
        match self
            .call(Op::Stat {
                name: name.to_owned(),
            })
            .await?
        {
            Reply::Stat(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The replica-placement table: every file and the nodes holding it.
    pub async fn table(&self) -> Result<Vec<TableEntry>, ClientError> {
        let mut all = Vec::new();
        let mut start_after = None;
        loop {
            let op = Op::Table {
                start_after: start_after.take(),
                limit: PAGE_ENTRIES_MAX,
            };
            match self.call(op).await? {
                Reply::Table { entries, next } => {
                    all.extend(entries);
                    match next {
                        Some(n) => start_after = Some(n),
                        None => return Ok(all),
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Scrubs every node now: each re-reads its copies and checks their checksums, and a
    /// damaged copy is replaced by a good one from another replica. Answers what each node
    /// found (this can take as long as reading every copy; not retried on other nodes
    /// once it started, as a scrub is not cheap).
    pub async fn scrub(&self) -> Result<Vec<ScrubReport>, ClientError> {
        let conn = self.connection().await?;
        let (id, mut rx) = conn.register();
        let _guard = Forget(conn.clone(), id);
        conn.send(ClientFrame::Request(Request { id, op: Op::Scrub }))
            .await?;
        match response(&conn, &mut rx, SCRUB_TIMEOUT).await? {
            Reply::Scrub(reports) => Ok(reports),
            other => Err(unexpected(&other)),
        }
    }

    /// Every node's state, and the cluster map's leader and term.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.call(Op::Status).await? {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    fn next_tag(&self) -> OpTag {
        OpTag {
            client_id: self.inner.client_id,
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sends a request whose body is in memory, retrying with the same tag.
    async fn write_bytes(
        &self,
        kind: WriteKind,
        name: &str,
        data: Bytes,
        cond: Condition,
    ) -> Result<WriteAck, ClientError> {
        Name::parse(name)?;
        let tag = self.next_tag();
        let timeout = self.inner.config.request_timeout;
        let reply = self
            .retrying(|conn| {
                let first = data.slice(..data.len().min(CHUNK_BYTES_MAX));
                let rest = data.slice(first.len()..);
                let op = kind.op(
                    name,
                    Body {
                        data: first,
                        more: !rest.is_empty(),
                    },
                    tag,
                    cond,
                );
                async move {
                    let (id, mut rx) = conn.register();
                    let _guard = Forget(conn.clone(), id);
                    conn.send(ClientFrame::Request(Request { id, op })).await?;
                    let mut rest = rest;
                    while !rest.is_empty() {
                        let part = rest.split_to(rest.len().min(CHUNK_BYTES_MAX));
                        let last = rest.is_empty();
                        conn.send(ClientFrame::Chunk(Chunk {
                            id,
                            data: part,
                            last,
                        }))
                        .await?;
                    }
                    response(&conn, &mut rx, timeout).await
                }
            })
            .await?;
        match reply {
            Reply::Written(ack) => Ok(ack),
            other => Err(unexpected(&other)),
        }
    }

    async fn write_stream<R>(
        &self,
        kind: WriteKind,
        name: &str,
        mut reader: R,
        cond: Condition,
    ) -> Result<WriteAck, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        Name::parse(name)?;
        let first = read_chunk(&mut reader).await?;
        if first.len() < CHUNK_BYTES_MAX {
            // The whole body is in hand: send it like an in-memory write, with retries.
            return self.write_bytes(kind, name, first, cond).await;
        }
        let mut next = read_chunk(&mut reader).await?;
        let tag = self.next_tag();
        let timeout = self.inner.config.request_timeout;
        let conn = self.connection().await?;
        let (id, mut rx) = conn.register();
        let _guard = Forget(conn.clone(), id);
        let op = kind.op(
            name,
            Body {
                data: first,
                more: !next.is_empty(),
            },
            tag,
            cond,
        );
        let interrupted = |e: ClientError| match e {
            ClientError::Unavailable(m) => ClientError::Interrupted(m),
            other => other,
        };
        conn.send(ClientFrame::Request(Request { id, op }))
            .await
            .map_err(interrupted)?;
        while !next.is_empty() {
            // The node may refuse early (for example when it is busy): stop sending then.
            if let Ok(frame) = rx.try_recv() {
                return reply_of(frame)
                    .map(|r| r.map_err(from_wire))?
                    .and_then(written);
            }
            let data = next;
            next = match read_chunk(&mut reader).await {
                Ok(n) => n,
                Err(e) => {
                    // Best effort: the node aborts the write when the body stops anyway.
                    let _ = conn.send(ClientFrame::Cancel { id }).await;
                    return Err(e.into());
                }
            };
            let last = next.is_empty();
            conn.send(ClientFrame::Chunk(Chunk { id, data, last }))
                .await
                .map_err(interrupted)?;
        }
        response(&conn, &mut rx, timeout)
            .await
            .map_err(interrupted)
            .and_then(written)
    }

    async fn call(&self, op: Op) -> Result<Reply, ClientError> {
        self.call_within(op, self.inner.config.request_timeout)
            .await
    }

    /// [`call`](Self::call), waiting up to `timeout` for the reply.
    async fn call_within(&self, op: Op, timeout: Duration) -> Result<Reply, ClientError> {
        self.retrying(|conn| {
            let op = op.clone();
            async move {
                let (id, mut rx) = conn.register();
                let _guard = Forget(conn.clone(), id);
                conn.send(ClientFrame::Request(Request { id, op })).await?;
                response(&conn, &mut rx, timeout).await
            }
        })
        .await
    }

    /// Runs `attempt` on a connection, moving to the next node and trying again after a
    /// retryable failure until the retry deadline.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.inner.config.retry_deadline;
        let mut backoff = Duration::from_millis(20);
        loop {
            let result = match self.connection().await {
                Ok(conn) => {
                    let result = attempt(conn.clone()).await;
                    if matches!(&result, Err(e) if e.is_retryable()) {
                        self.discard(&conn).await;
                    }
                    result
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, ?backoff, "retrying on another node");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                other => return other,
            }
        }
    }

    /// The current connection, or a new one to the next reachable node.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut current = self.inner.current.lock().await;
        if let Some(conn) = current.as_ref()
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let servers = &self.inner.config.servers;
        let mut failures = Vec::new();
        for _ in 0..servers.len() {
            let i = self.inner.next_server.load(Ordering::Relaxed) % servers.len();
            let config = &self.inner.config;
            match Connection::open(
                config.transport.as_ref(),
                &servers[i],
                Hello::new(Role::Client).with_token(config.token.clone()),
                None,
                config.connect_timeout,
            )
            .await
            {
                Ok(conn) => {
                    *current = Some(conn.clone());
                    return Ok(conn);
                }
                Err(ClientError::Unavailable(why)) => {
                    failures.push(why);
                    self.inner.next_server.store(i + 1, Ordering::Relaxed);
                }
                Err(e) if e.is_retryable() => {
                    failures.push(e.to_string());
                    self.inner.next_server.store(i + 1, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Unavailable(failures.join("; ")))
    }

    /// Drops `conn` if it is the current connection, so the next attempt uses another node.
    async fn discard(&self, conn: &Arc<Connection>) {
        let mut current = self.inner.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
            self.inner.next_server.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The chunks of a read, in order. Dropping it abandons the rest of the read.
pub struct ReadStream {
    _guard: Forget,
    rx: Replies,
    conn: Arc<Connection>,
    info: FileInfo,
    offset: u64,
    len: u64,
    received: u64,
    done: bool,
    timeout: Duration,
}

impl std::fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStream")
            .field("info", &self.info)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("received", &self.received)
            .finish()
    }
}

impl ReadStream {
    /// The file as of the read.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// The offset of the first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes the read delivers in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the read delivers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next chunk, or `None` after the last.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        if self.done {
            return None;
        }
        let frame = match recv(&self.conn, &mut self.rx, self.timeout).await {
            Ok(f) => f,
            Err(e) => {
                self.done = true;
                return Some(Err(match e {
                    ClientError::Unavailable(m) => ClientError::Interrupted(m),
                    other => other,
                }));
            }
        };
        let result = match frame {
            ServerFrame::Chunk(c) => {
                self.received += c.data.len() as u64;
                if self.received > self.len || (c.last && self.received != self.len) {
                    self.done = true;
                    return Some(Err(ClientError::Protocol(format!(
                        "read announced {} bytes, got {}",
                        self.len, self.received
                    ))));
                }
                self.done = c.last;
                if c.data.is_empty() && c.last {
                    return None;
                }
                Ok(c.data)
            }
            ServerFrame::StreamError { error, .. } => {
                self.done = true;
                Err(from_wire(error))
            }
            other => {
                self.done = true;
                Err(unexpected_frame(&other))
            }
        };
        Some(result)
    }
}

/// Forgets a request's route when dropped, however the request ends.
struct Forget(Arc<Connection>, u64);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

async fn recv(
    conn: &Connection,
    rx: &mut Replies,
    timeout: Duration,
) -> Result<ServerFrame, ClientError> {
    match tokio::time::timeout(timeout, rx.recv()).await {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(lost(&conn.addr)),
        Err(_) => Err(ClientError::Timeout(format!(
            "{}: no answer within {timeout:?}",
            conn.addr
        ))),
    }
}

async fn response(
    conn: &Connection,
    rx: &mut Replies,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let frame = recv(conn, rx, timeout).await?;
    reply_of(frame)?.map_err(from_wire)
}

fn reply_of(frame: ServerFrame) -> Result<Result<Reply, dfs_proto::WireError>, ClientError> {
    match frame {
        ServerFrame::Response(r) => Ok(r.result),
        other => Err(unexpected_frame(&other)),
    }
}

fn written(reply: Reply) -> Result<WriteAck, ClientError> {
    match reply {
        Reply::Written(ack) => Ok(ack),
        other => Err(unexpected(&other)),
    }
}

/// Reads up to one chunk, filling it unless the reader ends first (empty at the end).
async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// A duration in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {reply:?}"))
}

fn unexpected_frame(frame: &ServerFrame) -> ClientError {
    ClientError::Protocol(format!("unexpected frame {frame:?}"))
}
