//! Faults injected into three real `dfs-server` processes (R = 2) while clients work:
//! SIGKILLs of random nodes under load, a SIGKILL of the whole cluster under load, and one
//! node's disk filling up.
//!
//! Under load, writer tasks (the client library, every node in their server list) append
//! self-identifying lines (`w{writer}-{seq}`) to a few files, replace two others with
//! self-identifying contents, and read all of them; every operation and its outcome is
//! recorded ([`crate::history`]) and checked afterwards: every acknowledged append is in
//! the file exactly once, at its acknowledged offset and in real-time order (so each
//! writer's in its order), an append with an unknown outcome is there at most once, and no
//! read missed an append acknowledged before it began or held one never made. The final
//! contents are read through every node on its own and must be identical.
//!
//! Randomness (the kill schedule, each writer's operations) comes from one seed, printed at
//! the start; `DFS_FAULT_SEED=N` repeats it, `DFS_FAULT_SECS=N` makes the kill loop last N
//! seconds instead of 15 (a soak).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dfs::client::{Client, ClientConfig, ClientError};
use dfs::proto::ErrorCode;
use futures::future::join_all;
use tokio::runtime::Runtime;

use crate::harness::{
    Cluster, FAILOVER_DEADLINE, IDS, Node, TmpfsMount, pattern, replica_sets, stderr,
};
use crate::history::{self, Op, Outcome, Recorder, Ret, check_append_file, check_register_file};

/// Files the writers append lines to.
const APPEND_FILES: [&str; 3] = ["load/a", "load/b", "load/c"];
/// Files the writers replace whole.
const PUT_FILES: [&str; 2] = ["load/p0", "load/p1"];
/// Writer tasks.
const WRITERS: u64 = 4;
/// How long the kill loop runs unless `DFS_FAULT_SECS` says otherwise.
const DEFAULT_FAULT_SECS: u64 = 15;
/// How long one reply may take before a writer counts the attempt as timed out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A small deterministic generator (SplitMix64): the same seed, the same choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A duration between `lo` and `hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// The seed: `DFS_FAULT_SEED`, else the clock; printed so a run can be repeated.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("DFS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {seed} (DFS_FAULT_SEED={seed} repeats it)");
    seed
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A client of these nodes only, retrying for the failover deadline.
fn client_config(c: &Cluster, ids: &[u64]) -> ClientConfig {
    let mut config = ClientConfig::new(ids.iter().map(|&id| c.node(id).addr.clone()));
    config.retry_deadline = FAILOVER_DEADLINE;
    config.request_timeout = REQUEST_TIMEOUT;
    config
}

/// Writer `w`'s `seq`th put: a first line naming it, then `len` letters.
fn put_content(w: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut data = format!("w{w}-put{seq:05}\n").into_bytes();
    data.extend(pattern((seq % 251) as u8, len));
    data
}

/// The writer tasks, recording into one history.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    recorder: Recorder,
}

impl Load {
    /// Starts `WRITERS` tasks, each with its own client of all three nodes.
    fn start(rt: &Runtime, c: &Cluster, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = Recorder::new();
        let tasks = (0..WRITERS)
            .map(|w| {
                let config = client_config(c, &IDS);
                let (stop, rec) = (stop.clone(), recorder.clone());
                let rng = Rng::new(seed ^ (w + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
                rt.spawn(writer(w, config, rng, stop, rec))
            })
            .collect();
        Load {
            stop,
            tasks,
            recorder,
        }
    }

    /// Acknowledged writes invoked at or after `since` (recorder time).
    fn acked_writes_since(&self, since: u64) -> usize {
        self.recorder
            .entries()
            .iter()
            .filter(|e| e.invoked_at >= since && !matches!(e.op, Op::Read))
            .filter(|e| matches!(e.outcome, Some(Outcome::Ok(_))))
            .count()
    }

    /// Stops the writers after their current operation and waits for them.
    fn stop(self, rt: &Runtime) -> Recorder {
        self.stop.store(true, Ordering::SeqCst);
        for (w, done) in rt.block_on(join_all(self.tasks)).into_iter().enumerate() {
            if let Err(e) = done {
                panic!("writer {w} panicked: {e}");
            }
        }
        self.recorder
    }
}

/// One writer: appends (60 %), puts (15 %, one in eight of them over a chunk long) and
/// reads (25 %), one at a time, until told to stop.
async fn writer(w: u64, config: ClientConfig, mut rng: Rng, stop: Arc<AtomicBool>, rec: Recorder) {
    let client = loop {
        match Client::with_config(config.clone()).await {
            Ok(client) => break client,
            Err(_) if !stop.load(Ordering::SeqCst) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => return,
        }
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let roll = rng.below(100);
        if roll < 60 {
            let file = APPEND_FILES[rng.below(APPEND_FILES.len() as u64) as usize];
            let line = format!("w{w}-{seq:05}\n").into_bytes();
            let id = rec.invoke(w, file, Op::Append(line.clone()));
            let outcome = match client.append(file, line.clone()).await {
                Ok(ack) => Outcome::Ok(Ret::Appended {
                    offset: ack.size - line.len() as u64,
                }),
                Err(e) => Outcome::Unknown(e.to_string()),
            };
            rec.complete(id, outcome);
        } else if roll < 75 {
            let file = PUT_FILES[rng.below(PUT_FILES.len() as u64) as usize];
            let len = if rng.below(8) == 0 {
                300_000
            } else {
                rng.below(2000) as usize
            };
            let data = put_content(w, seq, len);
            let id = rec.invoke(w, file, Op::Put(data.clone()));
            let outcome = match client.put(file, data).await {
                Ok(_) => Outcome::Ok(Ret::Done),
                Err(e) => Outcome::Unknown(e.to_string()),
            };
            rec.complete(id, outcome);
        } else {
            let all: Vec<&str> = APPEND_FILES.iter().chain(&PUT_FILES).copied().collect();
            let file = all[rng.below(all.len() as u64) as usize];
            let id = rec.invoke(w, file, Op::Read);
            let outcome = match client.read(file, 0, None).await {
                Ok(content) => Outcome::Ok(Ret::Value(content.to_vec())),
                Err(ClientError::NotFound(_)) => Outcome::NotFound,
                Err(e) => Outcome::Failed(e.to_string()),
            };
            rec.complete(id, outcome);
        }
    }
}

/// Creates the load's files (empty) through the CLI, so the model knows them.
fn create_load_files(c: &mut Cluster) {
    for (i, file) in APPEND_FILES.iter().chain(&PUT_FILES).enumerate() {
        c.create(&[IDS[i % IDS.len()]], file);
    }
}

/// Reads `file` through node `id` alone, retrying within the failover deadline.
fn read_through(c: &Cluster, rt: &Runtime, id: u64, file: &str) -> Vec<u8> {
    let mut config = ClientConfig::new([c.node(id).addr.clone()]);
    config.retry_deadline = Duration::ZERO;
    c.wait_for(
        &format!("read {file} through node {id}"),
        FAILOVER_DEADLINE,
        || {
            rt.block_on(async {
                let client = Client::with_config(config.clone()).await?;
                client.read(file, 0, None).await
            })
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
        },
    )
}

/// Once every node is up and every file back on R replicas: the final contents through
/// every node are identical, the history checks pass, every replica holds the same content
/// (each node is killed in turn and the files read from the others), and `ls`, `stat`,
/// `table` and reads agree through every node. Prints what the writers did.
fn settle_and_verify(c: &mut Cluster, rt: &Runtime, rec: &Recorder, what: &str) {
    c.wait_replicated(1);
    let mut finals: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for &file in APPEND_FILES.iter().chain(&PUT_FILES) {
        let mut through: Vec<(u64, Vec<u8>)> = IDS
            .iter()
            .map(|&id| (id, read_through(c, rt, id, file)))
            .collect();
        let (first_id, first) = through.remove(0);
        for (id, content) in &through {
            if content != &first {
                c.fail(&format!(
                    "{file} differs through node {id} ({} bytes) and node {first_id} ({} bytes)",
                    content.len(),
                    first.len()
                ));
            }
        }
        finals.insert(file, first);
    }

    let entries = rec.entries();
    let mut errors = Vec::new();
    let mut report = Vec::new();
    let mut checked = |file: &str, result: Result<history::Counts, Vec<String>>| match result {
        Ok(n) => report.push(format!(
            "{file}: {} writes acknowledged, {} unknown ({} of them applied), {} reads ({} failed)",
            n.writes_acked,
            n.writes_unknown,
            n.unknown_applied,
            n.reads_ok + n.reads_failed,
            n.reads_failed
        )),
        Err(e) => errors.extend(e),
    };
    for file in APPEND_FILES {
        checked(file, check_append_file(&entries, file, b"", &finals[file]));
    }
    for file in PUT_FILES {
        checked(
            file,
            check_register_file(&entries, file, b"", &finals[file]),
        );
    }
    let latency = entries
        .iter()
        .filter(|e| matches!(e.outcome, Some(Outcome::Ok(_))))
        .filter_map(|e| Some(e.returned_at? - e.invoked_at))
        .max()
        .unwrap_or(0);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        if let Some(Outcome::Failed(why) | Outcome::Unknown(why)) = &e.outcome {
            *failures
                .entry(format!("{}: {why}", e.op.kind()))
                .or_default() += 1;
        }
    }
    eprintln!(
        "{what}: {} operations; slowest success {:.2} s\n  {}",
        entries.len(),
        latency as f64 / 1e9,
        report.join("\n  ")
    );
    for (why, n) in failures {
        eprintln!("  {n} x {why}");
    }
    if !errors.is_empty() {
        let dump = c
            .tmp
            .as_ref()
            .map(|t| t.path().join("history.txt"))
            .filter(|p| std::fs::write(p, rec.dump()).is_ok());
        c.fail(&format!(
            "{what}: {} violations (history in {}):\n{}",
            errors.len(),
            dump.map_or("-".to_owned(), |p| p.display().to_string()),
            errors
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    for w in 0..WRITERS {
        let acked = entries
            .iter()
            .filter(|e| e.process == w && !matches!(e.op, Op::Read))
            .any(|e| matches!(e.outcome, Some(Outcome::Ok(_))));
        assert!(acked, "{what}: writer {w} had no write acknowledged");
    }

    // Reads go to a file's primary; every other replica's copy is checked by killing each
    // node in turn (its files are then served by their other replica).
    for victim in IDS {
        c.kill(victim);
        let via = IDS
            .into_iter()
            .find(|&id| id != victim)
            .expect("another node");
        for (file, content) in &finals {
            let got = read_through(c, rt, via, file);
            if &got != content {
                c.fail(&format!(
                    "{what}: with node {victim} down, {file} reads {} bytes, not the {} read \
                     before",
                    got.len(),
                    content.len()
                ));
            }
        }
        c.restart(&[victim]);
        c.wait_replicated(via);
    }
    for (file, content) in finals {
        c.files.insert(file.to_owned(), content);
    }
    c.check_all(&IDS);
}

fn fault_secs() -> u64 {
    std::env::var("DFS_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_FAULT_SECS)
}

#[test]
fn sigkill_loop_under_load() {
    let seed = seed("sigkill_loop_under_load");
    let mut rng = Rng::new(seed);
    let mut c = Cluster::start(2);
    create_load_files(&mut c);
    let rt = runtime();
    let load = Load::start(&rt, &c, seed);

    // Every 1-3 s kill a node and start it again 0.2-1.2 s later; the restart waits until
    // it serves and the cluster agrees on a leader, so one node is down at a time. Victims
    // come in shuffled rounds of all three, so each is killed, the map's leader among them.
    let secs = fault_secs();
    let observer = rt
        .block_on(Client::with_config(client_config(&c, &IDS)))
        .expect("client connects");
    let started = Instant::now();
    let mut kills = Vec::new();
    let mut round = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(rng.millis(1000, 3000));
        if round.is_empty() {
            round = IDS.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let victim = round.pop().expect("a round has nodes");
        let leader = rt.block_on(observer.status()).ok().and_then(|s| s.leader);
        c.kill(victim);
        let label = if leader == Some(victim) {
            format!("{victim} (the leader)")
        } else {
            victim.to_string()
        };
        kills.push((load.recorder.now(), label));
        std::thread::sleep(rng.millis(200, 1200));
        c.restart(&[victim]);
    }
    let rec = load.stop(&rt);
    // For each kill, the slowest write among those in flight at the kill or begun within
    // two seconds after it: how long writes stalled.
    let entries = rec.entries();
    let stalls: Vec<String> = kills
        .iter()
        .map(|(at, label)| {
            let stall = entries
                .iter()
                .filter(|e| !matches!(e.op, Op::Read) && e.invoked_at <= at + 2_000_000_000)
                .filter_map(|e| Some((e.invoked_at, e.returned_at?)))
                .filter(|&(_, returned)| returned >= *at)
                .map(|(invoked, returned)| returned - invoked)
                .max()
                .unwrap_or(0);
            format!("{label}: {:.2} s", stall as f64 / 1e9)
        })
        .collect();
    eprintln!(
        "{} kills in {:.1} s; node killed and how long writes stalled after it: {}",
        kills.len(),
        started.elapsed().as_secs_f64(),
        stalls.join(", ")
    );
    settle_and_verify(&mut c, &rt, &rec, "sigkill loop");
}

#[test]
fn full_cluster_sigkill_under_load() {
    // Acknowledged writes before the kill, and again after the restart.
    const BUSY: usize = 400;
    let seed = seed("full_cluster_sigkill_under_load");
    let mut rng = Rng::new(seed);
    let mut c = Cluster::start(2);
    create_load_files(&mut c);
    let rt = runtime();
    let load = Load::start(&rt, &c, seed);
    c.wait_for("writes under way", FAILOVER_DEADLINE, || {
        match load.acked_writes_since(0) {
            n if n >= BUSY => Ok(()),
            n => Err(format!("{n} writes acknowledged")),
        }
    });

    // All three at once, while the writers are busy; back after a moment.
    for id in IDS {
        c.kill(id);
    }
    std::thread::sleep(rng.millis(100, 1000));
    c.restart(&IDS);
    let restarted = load.recorder.now();
    c.wait_for(
        "writes acknowledged after the restart",
        FAILOVER_DEADLINE,
        || match load.acked_writes_since(restarted) {
            n if n >= BUSY => Ok(()),
            n => Err(format!("{n} writes acknowledged")),
        },
    );
    let rec = load.stop(&rt);
    settle_and_verify(&mut c, &rt, &rec, "full-cluster SIGKILL");
}

/// The node whose store is on a small tmpfs in the full-disk test.
const SMALL: u64 = 3;
/// Its size.
const SMALL_DISK: &str = "4m";

/// Whether this process runs as root (from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether `e` says, clearly, that a disk is full.
fn says_disk_full(e: &ClientError) -> bool {
    e.code() == ErrorCode::NoSpace && e.to_string().starts_with("disk full: ")
}

#[test]
fn a_full_disk_on_one_node() {
    if !is_root() {
        eprintln!("SKIPPED a_full_disk_on_one_node: mounting a small tmpfs needs root");
        return;
    }
    let started = Cluster::start_with(2, |node: &Node| {
        if node.id == SMALL {
            TmpfsMount::new(&node.data_dir.join("store"), SMALL_DISK).map(Some)
        } else {
            Ok(None)
        }
    });
    let mut c = match started {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED a_full_disk_on_one_node: {e}");
            return;
        }
    };
    let rt = runtime();
    let client = rt
        .block_on(Client::with_config(client_config(&c, &IDS)))
        .expect("client connects");

    // Files by where node SMALL is in their replica set: primary, second, absent.
    let mut primary = Vec::new();
    let mut second = None;
    let mut absent = None;
    for i in 0..200 {
        let name = format!("disk/{i}");
        let info = rt.block_on(client.create(&name)).expect("create");
        match info.replicas.iter().position(|&id| id == SMALL) {
            Some(0) if primary.len() < 3 => primary.push(name),
            Some(1) if second.is_none() => second = Some(name),
            None if absent.is_none() => absent = Some(name),
            _ => rt.block_on(client.delete(&name)).expect("delete"),
        }
        if primary.len() == 3 && second.is_some() && absent.is_some() {
            break;
        }
    }
    let (Some(second), Some(absent)) = (second, absent) else {
        panic!("placement never gave the wanted files: {primary:?}");
    };
    let [fill, on_small, later] = <[String; 3]>::try_from(primary).expect("three files");
    eprintln!(
        "node {SMALL} is primary of {fill}, {on_small}, {later}; second of {second}; not in {absent}"
    );

    // Content before the disk fills.
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, name) in [&fill, &on_small, &later, &second, &absent]
        .into_iter()
        .enumerate()
    {
        let data = pattern(i as u8, 100_000);
        rt.block_on(client.put(name, data.clone())).expect("put");
        model.insert(name.clone(), data);
    }

    // Fill node SMALL's disk by appending to a file it is primary of, in ever smaller
    // pieces, until even a 4 KiB append does not fit.
    let mut first_error = None;
    for size in [256 << 10, 64 << 10, 16 << 10, 4 << 10] {
        for n in 0.. {
            assert!(
                n < 64,
                "a {SMALL_DISK} disk took 64 appends of {size} bytes"
            );
            let data = pattern(n as u8, size);
            match rt.block_on(client.append(&fill, data.clone())) {
                Ok(_) => model
                    .get_mut(&fill)
                    .expect("known")
                    .extend_from_slice(&data),
                Err(e) => {
                    eprintln!("append of {size} bytes to {fill} failed: {e:?}");
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
    }
    let err = first_error.expect("the disk filled");
    assert!(
        says_disk_full(&err),
        "the error does not say the disk is full: {err:?}"
    );

    // While it is full: writes to files it is primary of fail clearly (append and put), and
    // change nothing.
    let big = pattern(9, 64 << 10);
    let append = rt.block_on(client.append(&on_small, big.clone()));
    let put = rt.block_on(client.put(&on_small, big.clone()));
    for (what, result) in [("append", append), ("put", put)] {
        match result {
            Err(e) if says_disk_full(&e) => eprintln!("{what} to {on_small}: {e}"),
            other => panic!("{what} to {on_small} on a full disk: {other:?}"),
        }
    }
    // The CLI shows the same one-line error.
    let out = c.run(&[1], &["write", &on_small, "--random", "100000"], None);
    let line = stderr(&out);
    assert!(
        !out.status.success() && line.starts_with("error: disk full: "),
        "dfs-client write on a full disk: {line}"
    );
    eprintln!("dfs-client: {line}");

    // A file it is only second replica of: the write is acknowledged, and the full node
    // leaves the file's replica set (a replica that cannot take a write leaves before the
    // acknowledgement).
    rt.block_on(client.append(&second, big.clone()))
        .expect("append to a file whose second replica is full");
    model
        .get_mut(&second)
        .expect("known")
        .extend_from_slice(&big);
    let replicas = rt.block_on(client.stat(&second)).expect("stat").replicas;
    assert!(
        !replicas.contains(&SMALL) && replicas.len() == 1,
        "{second} after its second replica's disk filled: replicas {replicas:?}"
    );
    eprintln!("{second}: replicas {replicas:?} after a write its full replica could not take");
    rt.block_on(client.append(&absent, big.clone()))
        .expect("append to a file not on the full node");
    model
        .get_mut(&absent)
        .expect("known")
        .extend_from_slice(&big);

    // Everything reads back right through every node, the full one included.
    for id in IDS {
        for (name, content) in &model {
            let got = read_through(&c, &rt, id, name);
            assert!(
                &got == content,
                "{name} through node {id} while node {SMALL}'s disk is full: {} bytes, want {}",
                got.len(),
                content.len()
            );
        }
    }

    // Space freed: writes succeed again, and the file that lost its replica gets it back.
    rt.block_on(client.delete(&fill))
        .expect("delete the filler");
    model.remove(&fill);
    c.deleted.insert(fill.clone());
    rt.block_on(client.append(&on_small, big.clone()))
        .expect("append after space was freed");
    model
        .get_mut(&on_small)
        .expect("known")
        .extend_from_slice(&big);
    rt.block_on(client.put(&later, big.clone()))
        .expect("put after space was freed");
    model.insert(later.clone(), big.clone());
    c.files = model;
    c.wait_replicated(1);
    c.check_all(&IDS);

    // Nothing on the full node's disk is damaged: it restarts (recovery checks every
    // file) and serves the same bytes.
    c.kill(SMALL);
    c.restart(&[SMALL]);
    c.wait_replicated(SMALL);
    c.check_all(&IDS);
}

/// Flips one byte of the content of file `id`'s copy under `data_dir` (past the store's two
/// 4 KiB header slots), as disk rot would.
fn rot(data_dir: &std::path::Path, id: u64, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = data_dir
        .join("store")
        .join("files")
        .join(format!("{id:016x}"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let offset = 8192 + at;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read the byte");
    byte[0] ^= 0x20;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("write the byte");
    file.sync_all().expect("sync");
}

/// A replica's bytes corrupted on disk (BRIEF 4), on a file's second replica and on
/// another file's primary: `dfs-client scrub` finds both damaged copies, each node leaves
/// the replica set and drops its copy, repair installs good copies back, and every node
/// serves the original content; a second scrub finds nothing.
#[test]
fn a_corrupted_copy_is_found_by_scrub_and_repaired() {
    let mut c = Cluster::start(2);
    let content = pattern(3, 300_000);
    let names = ["rot/second", "rot/primary"];
    let mut victims = BTreeMap::new();
    for (which, name) in names.into_iter().enumerate() {
        c.put(&IDS, name, &content);
        let stat = c.json(&[1], &["stat", name]);
        let replicas = c.checked_replicas(name, &stat["replicas"]);
        let id = stat["file_id"].as_u64().expect("a file id");
        // The first file's second replica, the second file's primary.
        let victim = replicas[1 - which];
        rot(&c.node(victim).data_dir, id, 123_456);
        victims.insert(name.to_owned(), (victim, id));
    }

    let reports = c.json(&[1], &["scrub"]);
    let reports = reports.as_array().expect("one report per node");
    assert_eq!(reports.len(), IDS.len(), "{reports:?}");
    for (name, (victim, id)) in &victims {
        let report = reports
            .iter()
            .find(|r| r["node"].as_u64() == Some(*victim))
            .unwrap_or_else(|| panic!("no report from node {victim}: {reports:?}"));
        let bad = report["bad"].as_array().expect("bad copies");
        let found = bad
            .iter()
            .find(|b| b["name"].as_str() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("node {victim} did not report {name}: {report}"));
        assert_eq!(found["file_id"].as_u64(), Some(*id));
        assert_eq!(found["replaced"], true, "{found}");
    }
    let total_bad: usize = reports
        .iter()
        .map(|r| r["bad"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(total_bad, 2, "only the two damaged copies: {reports:?}");
    let text = c.run(&[2], &["scrub"], None);
    assert!(text.status.success(), "{}", stderr(&text));
    eprintln!("{}", String::from_utf8_lossy(&text.stdout));

    // Repaired: R copies again (on the file's home nodes: the victim again, or another
    // node), the original content through every node, and nothing damaged left anywhere.
    for (name, (victim, id)) in &victims {
        c.wait_for(
            &format!("{name} has 2 replicas again"),
            FAILOVER_DEADLINE,
            || {
                let stat = c.try_json(&[1], &["stat", name])?;
                let replicas: Vec<u64> = stat["replicas"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default();
                let damaged = c
                    .node(*victim)
                    .data_dir
                    .join("store")
                    .join("files")
                    .join(format!("{id:016x}"));
                if replicas.len() == 2 && (replicas.contains(victim) || !damaged.exists()) {
                    eprintln!("{name}: replicas {replicas:?} (node {victim} had the damaged copy)");
                    Ok(())
                } else {
                    Err(format!("replicas {replicas:?}"))
                }
            },
        );
        for id in IDS {
            let read = c.try_read(&[id], name);
            assert_eq!(
                read.as_ref().map(|r| r.as_ref().map(Vec::len)),
                Ok(Some(content.len())),
                "{name} through node {id}"
            );
            assert!(
                read == Ok(Some(content.clone())),
                "{name} through node {id} differs"
            );
        }
    }
    let again = c.json(&[3], &["scrub"]);
    for report in again.as_array().expect("reports") {
        assert_eq!(report["bad"].as_array().map(Vec::len), Some(0), "{report}");
        assert!(report["error"].is_null(), "{report}");
    }
}

/// A primary's copy damaged on disk is never served (BRIEF 3, "a replica whose bytes do
/// not match never serves them"), without waiting for a scrub: a read of a whole file
/// checks its bytes against the checksum before the last chunk goes out, and a read of
/// part of a small file checks the whole file first. The damaged copy leaves its replica
/// set at once, the library's retry is served by the other replica, and repair installs
/// a good copy.
#[test]
fn a_damaged_primary_copy_is_never_served() {
    let mut c = Cluster::start(2);
    let rt = runtime();
    let whole = pattern(5, 300_000);
    let small = pattern(6, 20_000);
    let files = [("rot/whole", &whole), ("rot/part", &small)];
    for (name, data) in files {
        c.put(&IDS, name, data);
        let stat = c.json(&[1], &["stat", name]);
        let replicas = c.checked_replicas(name, &stat["replicas"]);
        let id = stat["file_id"].as_u64().expect("a file id");
        rot(&c.node(replicas[0]).data_dir, id, 4_321);
    }
    let client = rt
        .block_on(Client::with_config(client_config(&c, &IDS)))
        .expect("a client");
    let read = rt
        .block_on(client.read("rot/whole", 0, None))
        .expect("read");
    assert!(read[..] == whole[..], "the damaged bytes were served");
    let part = rt
        .block_on(client.read("rot/part", 1000, Some(5000)))
        .expect("read a part");
    assert_eq!(
        &part[..],
        &small[1000..6000],
        "the damaged bytes were served"
    );

    // Both files get their second copy back, and read the same through every node.
    for (name, data) in files {
        c.wait_for(
            &format!("{name} has 2 replicas again"),
            FAILOVER_DEADLINE,
            || {
                let stat = c.try_json(&[1], &["stat", name])?;
                let n = stat["replicas"].as_array().map_or(0, Vec::len);
                if n == 2 {
                    Ok(())
                } else {
                    Err(format!("{n} replicas"))
                }
            },
        );
        for id in IDS {
            let read = c.try_read(&[id], name);
            assert!(read == Ok(Some(data.clone())), "{name} through node {id}");
        }
    }
}

/// A full disk under a node's raft log: its consensus engine stops (it cannot persist what
/// it votes for or appends), and `dfs-server` then exits with an error rather than keep
/// accepting clients it can no longer serve; the two others go on serving.
#[test]
fn a_full_raft_log_disk_stops_the_node() {
    if !is_root() {
        eprintln!("SKIPPED a_full_raft_log_disk_stops_the_node: mounting a small tmpfs needs root");
        return;
    }
    let started = Cluster::start_with(2, |node: &Node| {
        if node.id == SMALL {
            TmpfsMount::new(&node.data_dir.join("raft"), "2m").map(Some)
        } else {
            Ok(None)
        }
    });
    let mut c = match started {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED a_full_raft_log_disk_stops_the_node: {e}");
            return;
        }
    };
    let rt = runtime();
    let others = [1, 2];
    let client = rt
        .block_on(Client::with_config(client_config(&c, &others)))
        .expect("client connects");
    // Every create is a log entry on every node: node SMALL's 2 MiB fill up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut created = 0u64;
    while !c.node_mut(SMALL).exited() {
        assert!(
            Instant::now() < deadline,
            "node {SMALL} still runs after {created} creates filled its raft disk"
        );
        let name = format!("log/{created:06}/{}", "x".repeat(200));
        rt.block_on(client.create(&name))
            .expect("create through the others");
        created += 1;
    }
    let status = c
        .node_mut(SMALL)
        .child
        .as_mut()
        .and_then(|child| child.try_wait().ok().flatten());
    eprintln!("node {SMALL} exited after {created} creates: {status:?}");
    assert!(
        status.is_some_and(|s| !s.success()),
        "node {SMALL} exited without an error status: {status:?}"
    );
    let log = std::fs::read_to_string(&c.node(SMALL).log).expect("the node's log");
    assert!(
        log.contains("the cluster map stopped"),
        "{}",
        c.node(SMALL).log_tail()
    );
    // The others still serve.
    rt.block_on(client.put("log/after", b"still here".to_vec()))
        .expect("the others serve");
    c.kill(SMALL);
}

/// A node that lost its disk (SIGKILLed, its whole data directory wiped, restarted with the
/// same id and flags) is not taken for the first member of a new cluster: its peers' maps
/// record it, so it rejoins their group (a learner, taken out of every replica set, then a
/// voter again) and registers, and repair copies back onto it every file of its home
/// placement: every file has its two replicas again, node 3 holds a new copy of each file
/// it held before, and every file reads back its exact content through every node. It
/// counts in the quorum again: with node 1 then killed, nodes 2 and 3 alone (a map leader
/// needs both of their votes and acknowledgements) mark node 1 down, commit a new file and
/// acknowledge a write to it, and serve every file, those on nodes 1 and 3 from node 3's
/// new copies.
#[test]
fn a_node_that_lost_its_disk_rejoins_and_gets_its_files_back() {
    const LOST: u64 = 3;
    let mut c = Cluster::start(2);
    // Made by `create` (every node up), so each file sits on its home placement, where
    // repair puts it back; then filled, each with its own content.
    for i in 0..12u8 {
        let name = format!("lost/{i:02}");
        let mut data = format!("{name}\n").into_bytes();
        data.extend(pattern(i, 2_000 + usize::from(i) * 8_500));
        c.create(&IDS, &name);
        c.put(&IDS, &name, &data);
    }
    let before = replica_sets(&c.json(&[1], &["table"]));
    let file_ids: BTreeMap<String, u64> = before
        .keys()
        .map(|name| {
            let stat = c.json(&[1], &["stat", name]);
            (name.clone(), stat["file_id"].as_u64().expect("a file id"))
        })
        .collect();
    let held: Vec<&String> = before
        .iter()
        .filter(|(_, ids)| ids.contains(&LOST))
        .map(|(name, _)| name)
        .collect();
    assert!(!held.is_empty(), "node {LOST} holds no file: {before:?}");
    eprintln!(
        "node {LOST} holds {} of {} files: {held:?}",
        held.len(),
        before.len()
    );

    // The disk is lost: SIGKILL, everything under the data directory removed.
    c.kill(LOST);
    let dir = c.node(LOST).data_dir.clone();
    for entry in std::fs::read_dir(&dir).expect("read the data directory") {
        let path = entry.expect("a directory entry").path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
    assert!(
        std::fs::read_dir(&dir)
            .expect("read the data directory")
            .next()
            .is_none(),
        "{} is not empty",
        dir.display()
    );
    // Waits until `status` through every node shows the three up, with one leader.
    c.restart(&[LOST]);

    // Every file back on its home placement. A copy under node LOST's (wiped) data
    // directory can only have been installed since the restart, so a map still listing
    // node LOST from before the loss does not pass.
    let copy = |name: &str| {
        dir.join("store")
            .join("files")
            .join(format!("{:016x}", file_ids[name]))
    };
    c.wait_for(
        &format!("every file on its two replicas again, with a new copy on node {LOST}"),
        FAILOVER_DEADLINE,
        || {
            let mut wrong = Vec::new();
            for (name, want) in &before {
                let stat = c.try_json(&[1], &["stat", name])?;
                let got: BTreeSet<u64> = stat["replicas"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default();
                let copied = !want.contains(&LOST) || copy(name).exists();
                if &got != want || !copied {
                    wrong.push(format!(
                        "{name}: replicas {}, want {want:?}, copy on node {LOST}: {copied}",
                        stat["replicas"]
                    ));
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        },
    );
    c.full_replicas = true;
    // Reads through each node, `ls`, `stat` and `table` through each, all alike.
    c.check_all(&IDS);

    // Node LOST votes again: without node 1, only nodes 2 and 3 can elect a map leader (if
    // node 1 led) and commit anything.
    let status = c.json(&[2], &["status"]);
    let (leader, term) = c.leader_and_term(&status).unwrap_or_else(|e| c.fail(&e));
    eprintln!("map leader before node 1 is killed: node {leader} (term {term})");
    c.kill(1);
    for via in [2, LOST] {
        c.wait_marked_down(via, 1);
    }
    let name = "lost/after";
    let mut data = format!("{name}\n").into_bytes();
    data.extend(pattern(99, 50_000));
    c.put(&[2, LOST], name, &data);
    let replicas: BTreeSet<u64> = c.replicas(2, name).into_iter().collect();
    assert_eq!(
        replicas,
        BTreeSet::from([2, LOST]),
        "{name} written with node 1 down"
    );
    let names: Vec<String> = c.files.keys().cloned().collect();
    for via in [2, LOST] {
        for name in &names {
            c.check_read(&[via], name);
        }
    }
}
