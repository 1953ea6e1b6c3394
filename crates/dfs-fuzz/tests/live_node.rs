//! A live node under fuzzed input: a real one-member node in this process, and fuzzed
//! byte streams and fuzzed-but-well-framed frames thrown at it over loopback on several
//! connections at once (before any hello, after a client's or a forwarder's hello, after a
//! peer's). Afterwards the node must serve a normal client promptly, and no thread of it
//! may have panicked.
//!
//! Peer messages are trusted to mean what they say (dfs has no authentication yet: a peer
//! that knows the cluster id may legitimately vote, replicate entries or propose changes),
//! so the consensus requests sent after the peer hello are defanged after mutation: their
//! vote is made stale (term 0) so the node refuses them, and proposals and readmits become
//! read-index requests. What is fuzzed is everything a malformed message can reach, not a
//! byzantine member's authority.
//!
//! `DFS_FUZZ_ITERS` (inputs in all, default 2,000) and `DFS_FUZZ_SEED` set the run; see
//! `FUZZING.md`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dfs_cluster::RaftRpc;
use dfs_fuzz::{
    CLUSTER_PAYLOADS, Campaign, DATA_PAYLOADS, Mutator, SERVER_FRAMES, frame, hex, samples,
    save_artifact, starting_inputs,
};
use dfs_node::{Limits, Node, NodeConfig};
use dfs_proto::{ClientCodec, ClientFrame, Hello, PeerMessage, Role, ServerFrame};
use futures::{SinkExt, StreamExt};
use openraft::Vote;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The node's threads are named so: a panic on one of them is the node's.
const THREADS: &str = "dfs-fuzz-node";

/// Inputs in all, by default: the test takes a few seconds.
const ITERS: usize = 2_000;

/// Every wait in this test is bounded by this.
const DEADLINE: Duration = Duration::from_secs(20);

/// How long one write to the node may take before the connection is dropped (a node that
/// stops reading a connection is within its rights).
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// How long the node's answers are read after a raw stream is sent.
const DRAIN_WAIT: Duration = Duration::from_millis(200);

/// Panics seen on the node's threads.
static NODE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|n| n.starts_with(THREADS))
                && let Ok(mut panics) = NODE_PANICS.lock()
            {
                panics.push(info.to_string());
            }
            previous(info);
        }));
    });
}

/// The inputs sent, for the failure report: `lane: hex`.
type Log = Arc<Mutex<Vec<String>>>;

fn log(log: &Log, lane: &str, input: &[u8]) {
    if let Ok(mut l) = log.lock() {
        l.push(format!("{lane}: {}", hex(input)));
    }
}

#[test]
fn a_live_node_survives_fuzzed_streams_and_frames_and_still_serves() {
    watch_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()
        .expect("a runtime");
    let campaign = Campaign::new("live_node", ITERS);
    if campaign.replay().is_some() || campaign.iters() == 0 {
        return;
    }
    let inputs: Log = Arc::default();
    let outcome = runtime.block_on(fuzz_a_node(
        campaign.seed(),
        campaign.iters(),
        inputs.clone(),
    ));
    let panics = NODE_PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    if outcome.is_err() || !panics.is_empty() {
        let sent = inputs.lock().map(|l| l.join("\n")).unwrap_or_default();
        let saved = save_artifact(
            "live_node",
            &format!("stable-{:#x}.txt", campaign.seed()),
            sent.as_bytes(),
        );
        panic!(
            "the node did not survive: {:?}; panics on its threads: {panics:#?}\n  \
             DFS_FUZZ_SEED={:#x} DFS_FUZZ_ITERS={}\n  inputs sent (lane: hex): {}",
            outcome.err(),
            campaign.seed(),
            campaign.iters(),
            saved.map_or_else(|| "(not saved)".into(), |p| p.display().to_string()),
        );
    }
    drop(runtime);
}

async fn fuzz_a_node(seed: u64, iters: usize, inputs: Log) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = NodeConfig::single(dir.path(), "127.0.0.1:0");
    config.limits = Limits {
        hello_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_secs(2),
        body_chunk_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_millis(500),
        ..Limits::default()
    };
    let node = Node::start(config)
        .await
        .map_err(|e| format!("start: {e}"))?;
    let addr = node.local_addr().to_string();
    let cluster_id = match hello(&addr, Role::Client).await {
        Some((_, ServerFrame::Welcome(w))) => w.cluster_id,
        other => return Err(format!("no welcome: {other:?}")),
    };

    let raw = tokio::spawn(raw_streams(addr.clone(), seed, iters / 4, inputs.clone()));
    let client = tokio::spawn(client_sessions(
        addr.clone(),
        seed ^ 1,
        iters * 3 / 8,
        cluster_id,
        inputs.clone(),
    ));
    let peer = tokio::spawn(peer_sessions(
        addr.clone(),
        seed ^ 2,
        iters * 3 / 8,
        cluster_id,
        inputs.clone(),
    ));
    for (lane, task) in [("raw", raw), ("client", client), ("peer", peer)] {
        tokio::time::timeout(DEADLINE * 3, task)
            .await
            .map_err(|_| format!("the {lane} lane did not finish"))?
            .map_err(|e| format!("the {lane} lane failed: {e}"))?;
    }

    if let Ok(sent) = inputs_len(&inputs) {
        eprintln!("live_node: {sent} inputs sent, seed {seed:#x}");
    }
    // The node serves a normal client, promptly; and the files the fuzzed requests named
    // most (streamed writes whose chunks never came among them) are writable again: no
    // lock is left held.
    let probe = async {
        let c = dfs_client::Client::connect([addr.clone()]).await?;
        let name = format!("fuzz/probe-{seed:x}");
        c.append(&name, "alive").await?;
        let back = c.read(&name, 0, None).await?;
        c.status().await?;
        for touched in ["docs/a.txt", "docs/b.bin", "logs/big"] {
            c.put(touched, "reclaimed").await?;
        }
        Ok::<_, dfs_client::ClientError>(back)
    };
    let back = tokio::time::timeout(DEADLINE, probe)
        .await
        .map_err(|_| "the node did not serve a client in time after the fuzzing".to_owned())?
        .map_err(|e| format!("the node failed a client after the fuzzing: {e}"))?;
    if &back[..] != b"alive" {
        return Err(format!("read back {back:?}"));
    }
    tokio::time::timeout(DEADLINE, node.shutdown())
        .await
        .map_err(|_| "the node did not shut down in time".to_owned())?;
    Ok(())
}

fn inputs_len(log: &Log) -> Result<usize, String> {
    log.lock().map(|l| l.len()).map_err(|e| e.to_string())
}

/// Connects and says hello as `role`: the connection and the node's answer.
async fn hello(addr: &str, role: Role) -> Option<(Framed<TcpStream, ClientCodec>, ServerFrame)> {
    let socket = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut framed = Framed::new(socket, ClientCodec::new());
    tokio::time::timeout(
        WRITE_WAIT,
        framed.send(ClientFrame::Hello(Hello::new(role))),
    )
    .await
    .ok()?
    .ok()?;
    let answer = tokio::time::timeout(DEADLINE, framed.next())
        .await
        .ok()??
        .ok()?;
    Some((framed, answer))
}

/// Fuzzed byte streams on fresh connections, from their first byte: garbage, broken
/// hellos, hellos followed by fuzzed frames, half frames, oversized prefixes.
async fn raw_streams(addr: String, seed: u64, n: usize, inputs: Log) {
    let seeds = starting_inputs(SERVER_FRAMES);
    let mut m = Mutator::new(seed);
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..n {
        let base = &seeds[m.below(seeds.len())];
        let stream = match m.below(4) {
            0 => m.bytes(base, &seeds),
            3 => m.random_bytes(256),
            _ => m.frames(base, &seeds),
        };
        log(&inputs, "raw", &stream);
        // A few connections at a time.
        if running.len() >= 4 {
            let _ = running.join_next().await;
        }
        let addr = addr.clone();
        running.spawn(async move {
            let Ok(Ok(mut socket)) =
                tokio::time::timeout(DEADLINE, TcpStream::connect(&addr)).await
            else {
                return;
            };
            let sent = tokio::time::timeout(WRITE_WAIT, async {
                socket.write_all(&stream).await?;
                socket.shutdown().await
            })
            .await;
            if matches!(sent, Ok(Ok(()))) {
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(DRAIN_WAIT, socket.read_to_end(&mut answer)).await;
            }
        });
    }
    while running.join_next().await.is_some() {}
}

/// The bodies of the frames a session sends after its hello.
fn session_bodies() -> Vec<Vec<u8>> {
    samples::client_frames()
        .into_iter()
        .filter(|(_, f)| !matches!(f, ClientFrame::Hello(_)))
        .map(|(_, f)| postcard::to_stdvec(&f).expect("encodes"))
        .collect()
}

/// A mutated frame for a session: a sample's body mutated and framed with its length, or
/// now and then the framing itself broken.
fn session_frame(m: &mut Mutator, bodies: &[Vec<u8>]) -> Vec<u8> {
    let body = &bodies[m.below(bodies.len())];
    let mutated = m.bytes(body, bodies);
    if m.chance(0.1) {
        m.frames(&frame(&mutated), &[])
    } else {
        frame(&mutated)
    }
}

/// Sends `bytes` on a session, reading and dropping whatever the node answers meanwhile;
/// `false` once the connection is closed or stuck.
async fn send_on(framed: &mut Framed<TcpStream, ClientCodec>, bytes: &[u8]) -> bool {
    let sent = tokio::time::timeout(WRITE_WAIT, framed.get_mut().write_all(bytes)).await;
    if !matches!(sent, Ok(Ok(()))) {
        return false;
    }
    // Take what is already there, without waiting for it.
    loop {
        match tokio::time::timeout(Duration::ZERO, framed.next()).await {
            Ok(Some(Ok(ServerFrame::Goodbye(_)))) | Ok(Some(Err(_))) | Ok(None) => return false,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return true,
        }
    }
}

/// Client (and forwarder) sessions: a valid hello, then fuzzed frames (requests of every
/// kind, chunks, cancels, stray hellos and peer messages) until the node closes the
/// connection, then a new session.
async fn client_sessions(addr: String, seed: u64, n: usize, cluster_id: u64, inputs: Log) {
    let bodies = session_bodies();
    let mut m = Mutator::new(seed);
    let mut session = None;
    let (mut sessions, mut sent) = (0, 0);
    for _ in 0..n {
        if session.is_none() {
            sessions += 1;
            let role = if m.chance(0.25) {
                Role::Forwarder {
                    cluster_id,
                    node_id: 9,
                }
            } else {
                Role::Client
            };
            session = match hello(&addr, role).await {
                Some((framed, ServerFrame::Welcome(_))) => Some(framed),
                _ => None,
            };
        }
        let Some(framed) = session.as_mut() else {
            continue;
        };
        let bytes = session_frame(&mut m, &bodies);
        log(&inputs, "client", &bytes);
        sent += 1;
        if !send_on(framed, &bytes).await {
            session = None;
        }
    }
    eprintln!("live_node: {sent} frames on {sessions} client sessions");
}

/// Makes a consensus request harmless (see the module's documentation): a stale vote, so
/// the node refuses it; proposals and readmits replaced by a read index. Anything else is
/// left as it is (and most of it does not decode).
fn defang(payload: Vec<u8>) -> Vec<u8> {
    let stale = Vote::new(0, 2);
    let rpc = match RaftRpc::decode(&payload) {
        Ok(RaftRpc::AppendEntries(mut r)) => {
            r.vote = stale;
            RaftRpc::AppendEntries(r)
        }
        Ok(RaftRpc::Vote(mut r)) => {
            r.vote = stale;
            RaftRpc::Vote(r)
        }
        Ok(RaftRpc::InstallSnapshot(mut r)) => {
            r.vote = stale;
            RaftRpc::InstallSnapshot(r)
        }
        Ok(RaftRpc::Propose(_) | RaftRpc::Readmit { .. }) => RaftRpc::ReadIndex,
        _ => return payload,
    };
    rpc.encode().unwrap_or_default()
}

/// Peer sessions: a valid `Role::Peer` hello, then peer messages whose payloads are
/// mutated consensus and data-layer messages (defanged) or noise, and now and then a
/// mutated frame of another kind, which ends the session.
async fn peer_sessions(addr: String, seed: u64, n: usize, cluster_id: u64, inputs: Log) {
    let cluster = starting_inputs(CLUSTER_PAYLOADS);
    let data = starting_inputs(DATA_PAYLOADS);
    let wrapped: Vec<Vec<u8>> = data
        .iter()
        .map(|d| RaftRpc::Data(d.clone()).encode().expect("encodes"))
        .collect();
    let bodies = session_bodies();
    let mut m = Mutator::new(seed);
    let mut session = None;
    let (mut sessions, mut sent) = (0, 0);
    for id in 0..n as u64 {
        if session.is_none() {
            sessions += 1;
            let role = Role::Peer {
                cluster_id,
                node_id: 2,
            };
            session = match hello(&addr, role).await {
                Some((framed, ServerFrame::Welcome(_))) => Some(framed),
                _ => None,
            };
        }
        let Some(framed) = session.as_mut() else {
            continue;
        };
        let bytes = if m.chance(0.05) {
            session_frame(&mut m, &bodies)
        } else {
            let payload = match m.below(10) {
                0..=5 => {
                    let base = &cluster[m.below(cluster.len())];
                    m.bytes(base, &cluster)
                }
                6 | 7 => {
                    // A mutated data-layer message in an intact `Data` envelope.
                    let base = &data[m.below(data.len())];
                    RaftRpc::Data(m.bytes(base, &data))
                        .encode()
                        .unwrap_or_default()
                }
                8 => {
                    let base = &wrapped[m.below(wrapped.len())];
                    m.bytes(base, &wrapped)
                }
                _ => m.random_bytes(128),
            };
            let message = ClientFrame::Peer(PeerMessage {
                id,
                payload: Bytes::from(defang(payload)),
            });
            frame(&postcard::to_stdvec(&message).expect("encodes"))
        };
        log(&inputs, "peer", &bytes);
        sent += 1;
        if !send_on(framed, &bytes).await {
            session = None;
        }
    }
    eprintln!("live_node: {sent} frames on {sessions} peer sessions");
    // The session still answers a harmless request at the end (if it is still open).
    if let Some(framed) = session.as_mut() {
        let status = ClientFrame::Peer(PeerMessage {
            id: u64::MAX,
            payload: Bytes::from(RaftRpc::Standing(1).encode().unwrap_or_default()),
        });
        let _ = tokio::time::timeout(WRITE_WAIT, framed.send(status)).await;
    }
}
