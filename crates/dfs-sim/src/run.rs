//! One simulated run: the cluster, the workload, the fault schedule and the check.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dfs_check::{Completion, ErrorKind, History, Op, OpId, Outcome, Ret, Verdict};
use dfs_client::{Client, ClientConfig, ClientError, Condition, LockMode};
use dfs_node::{Member, Node, NodeConfig};

use crate::Simulated;

/// The port every simulated node listens on.
const PORT: u16 = 7000;
/// Longest simulated time a run may take before it counts as stuck.
const SIM_TIME_MAX: Duration = Duration::from_secs(600);
/// How long the verifier keeps retrying a read through one node after the heal.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Search steps the checker may take per file (its default is one million). A long fault
/// leaves many writes, puts and deletes of unknown outcome, any of which may take effect
/// at any later moment, and while one is pending the checker's read-prefix pruning is off:
/// seed 210 of the creates-and-deletes workload needs between 15 and 30 million steps
/// (11 s and 1.3 GB in a release build). At most one memo entry per step (the memo grew
/// about 31 bytes a step there): under 2 GB at this limit, reached only by such a seed.
const CHECK_STEPS: u64 = 40_000_000;

/// The shape of a run. The seed decides everything else.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the cluster (at least 3).
    pub nodes: usize,
    /// Replicas per file.
    pub replication_factor: usize,
    /// Concurrent clients running the workload.
    pub clients: usize,
    /// Operations each client runs.
    pub ops_per_client: usize,
    /// Files the workload touches.
    pub files: usize,
    /// Inject faults while the clients run.
    pub faults: bool,
    /// Mix creates and deletes into the workload (else only appends, puts, reads, writes at
    /// an offset and truncations).
    pub deletes: bool,
    /// Add message loss to the faults: for a while, every link (clients' included) fails
    /// at random moments, losing what it carries, and is repaired a few milliseconds
    /// later. A TCP stream that lost a segment stalls for good, as one whose peer vanished
    /// does: the nodes' timeouts must notice and reconnect. Off, the fault schedule of a
    /// seed is what it was before this fault existed.
    pub message_loss: bool,
    /// Add disk loss to the faults: a crashed node's data directory is emptied before it
    /// restarts, so it must be taken back by the others and get its copies back. Only if
    /// the map (asked by a monitoring client after the crash) lists another replica of
    /// every file: a disk with a file's only copy is not lost, as R = 2 promises to
    /// survive one fault, not a write acknowledged by one replica and then that one's
    /// disk.
    pub disk_loss: bool,
    /// Clients that increment a counter file under its exclusive lock lease, fenced with
    /// the lease's token (none: the run is what it was before locks existed). The counter
    /// must end equal to the acknowledged increments (plus at most those whose outcome is
    /// unknown): two holders at once would lose some.
    pub lockers: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            replication_factor: 2,
            clients: 3,
            ops_per_client: 80,
            files: 2,
            faults: true,
            deletes: true,
            message_loss: false,
            disk_loss: false,
            lockers: 0,
        }
    }
}

/// The file the lockers increment.
const COUNTER: &str = "counter";
/// Increments each locker attempts.
const LOCKER_ROUNDS: usize = 12;
/// The lockers' lease ttl and how long they wait for the lock (simulated time): shorter
/// than many faults, so leases lapse under partitions and stale holders meet the fence.
const LOCK_TTL: Duration = Duration::from_secs(2);
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What the lockers saw.
#[derive(Debug, Default)]
struct LockTally {
    acked: Cell<u64>,
    fenced: Cell<u64>,
    unknown: Cell<u64>,
    tokens: RefCell<Vec<u64>>,
    /// The counter read after the heal.
    last: Cell<Option<u64>>,
}

/// What a run that passed did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Operations in the history (workload and verifier).
    pub ops: usize,
    /// Operations that ended without a definite answer (timeouts, lost connections).
    pub unknown: usize,
    /// The faults injected, in order, with their simulated times.
    pub faults: Vec<String>,
    /// Simulated time the run took.
    pub sim_time: Duration,
    /// A digest of the history's events: two runs of one seed must have the same.
    pub fingerprint: u64,
    /// The lockers' acknowledged increments.
    pub increments: u64,
    /// The lockers' writes refused for a stale fencing token.
    pub fenced: u64,
    /// Writes at an offset in the history, and how many of them were acknowledged.
    pub writes_at: (usize, usize),
    /// Truncations in the history, and how many of them were acknowledged.
    pub truncates: (usize, usize),
}

/// Why a run failed, with what is needed to replay and debug it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed that fails.
    pub seed: u64,
    /// What went wrong: the checker's explanation, or the simulation's error.
    pub reason: String,
    /// The faults injected before the failure.
    pub faults: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.reason)?;
        writeln!(f, "faults injected:")?;
        for fault in &self.faults {
            writeln!(f, "  {fault}")?;
        }
        let replay = if crate::REPLAYS_EXACTLY {
            "replays this run exactly"
        } else {
            "same workload and fault schedule, but this build lacks `--cfg tokio_unstable`, \
             so tokio's choices may differ"
        };
        write!(
            f,
            "rerun: DFS_SIM_SEED={} cargo test -p dfs-sim --test sim -- --nocapture ({replay})",
            self.seed
        )
    }
}

impl std::error::Error for SimFailure {}

/// SplitMix64: a small, fast generator whose output depends only on its seed (the run must
/// not depend on any library's choice of algorithm).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

fn host(id: usize) -> String {
    format!("n{id}")
}

/// One fault in force, and how it is undone.
#[derive(Debug, Clone)]
enum Fault {
    Crash(String),
    Partition(String, Vec<String>),
    OneWay(String, String),
    Hold(String, String),
    /// Every link fails with this probability per millisecond (and is repaired with
    /// [`LINK_REPAIR_RATE`]).
    Lossy(#[expect(dead_code, reason = "shown in the fault log")] f64),
    /// The node crashed and its data directory was emptied; it restarts on heal.
    DiskLost(String),
}

/// The chance per millisecond that a link failed by message loss is repaired.
const LINK_REPAIR_RATE: f64 = 0.1;

impl Fault {
    fn heal(&self, sim: &mut turmoil::Sim<'_>) {
        match self {
            Fault::Crash(h) | Fault::DiskLost(h) => sim.bounce(h.as_str()),
            Fault::Partition(h, others) => {
                for o in others {
                    sim.repair(h.as_str(), o.as_str());
                }
            }
            Fault::OneWay(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
            Fault::Hold(a, b) => sim.release(a.as_str(), b.as_str()),
            // Links failed meanwhile are repaired at the repair rate.
            Fault::Lossy(_) => sim.set_fail_rate(0.0),
        }
    }
}

/// Runs the simulation of `seed`; `Ok` only if the cluster stayed linearizable and every
/// acknowledged write was there at the end.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    let faults = Rc::new(RefCell::new(Vec::<String>::new()));
    let fail = |reason: String, faults: &Rc<RefCell<Vec<String>>>| SimFailure {
        seed,
        reason,
        faults: faults.borrow().clone(),
    };
    // One simulation at a time in this process, each starting from the same task ids.
    let _alone = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    align_task_ids().map_err(|e| fail(format!("aligning tokio's task ids: {e}"), &faults))?;
    let root = tempfile::tempdir().map_err(|e| fail(format!("temp dir: {e}"), &faults))?;
    // Every host runs on this thread; their file work too, so that it happens at a point
    // of the simulation the seed decides, not when a pool thread gets to it; and their
    // random ids come from the seed (a stream of its own: the workload and faults of a
    // seed stay what they were before ids were seeded).
    let _this_thread = SimThread::on(Rng::new(!seed).next());
    let mut rng = Rng::new(seed);
    let max_latency = rng.millis(1, 20);
    let mut sim = turmoil::Builder::new()
        .rng_seed(rng.next())
        .simulation_duration(SIM_TIME_MAX)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(max_latency)
        // Like a kernel's listen backlog: connects that timed out while a link was held
        // still arrive when it is released.
        .tcp_capacity(4096)
        .repair_rate(LINK_REPAIR_RATE)
        .build();

    let members: Vec<Member> = (1..=config.nodes)
        .map(|id| Member {
            id: id as u64,
            addr: format!("{}:{PORT}", host(id)),
        })
        .collect();
    // Fixed, distinct election timeouts per node (openraft draws from [min, max): a width
    // of one makes the draw deterministic); which node is quickest varies with the seed.
    let mut slots: Vec<u64> = (0..config.nodes as u64).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for id in 1..=config.nodes {
        let mut node = NodeConfig::new(id as u64, members.clone(), root.path().join(host(id)));
        node.replication_factor = Some(config.replication_factor);
        node.fsync = false;
        node.transport = Simulated::shared();
        let min = 300 + slots[id - 1] * 150 + rng.below(50);
        node.election_timeout_ms = (min, min + 1);
        sim.host(host(id), move || {
            let node = node.clone();
            async move {
                // As under a supervisor (systemd's Restart=on-failure): a start that fails
                // (the cluster could not take the node in time) is tried again. A node that
                // never starts fails the run at the end, unable to serve the checks.
                let running = loop {
                    match Node::start(node.clone()).await {
                        Ok(running) => break running,
                        Err(e) => {
                            tracing::warn!(node = node.id, error = %e, "start failed; again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                };
                std::future::pending::<()>().await;
                drop(running);
                Ok(())
            }
        });
    }

    let servers: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    let history = Rc::new(RefCell::new(History::new()));
    let workers_done = Rc::new(Cell::new(0usize));
    let healed = Rc::new(Cell::new(false));
    for c in 0..config.clients {
        let mut servers = servers.clone();
        let n = servers.len();
        servers.rotate_left(c % n);
        let stream = rng.next();
        let mut rng = Rng::new(stream);
        let mut shapes = Rng::new(stream ^ SHAPES);
        let history = history.clone();
        let done = workers_done.clone();
        let (ops, files, deletes) = (config.ops_per_client, config.files, config.deletes);
        sim.client(format!("c{c}"), async move {
            // Patient: the cluster may still be forming, under a fault, when a client starts.
            let client = connect(servers, SETTLE_DEADLINE).await?;
            for seq in 0..ops {
                tokio::time::sleep(rng.millis(0, 150)).await;
                let file = format!("f{}", rng.below(files as u64));
                let op = match rng.below(if deletes { 100 } else { 85 }) {
                    0..45 => Op::Append(format!("{c}.{seq};").into_bytes()),
                    45..75 => Op::Read,
                    75..85 => Op::Put(format!("[{c}.{seq}]").into_bytes()),
                    85..92 => Op::Create,
                    _ => Op::Delete,
                };
                // Some appends and reads become writes at an offset and truncations,
                // drawn from a stream of their own (see `reshape`).
                let op = reshape(op, &mut shapes, c, seq);
                perform(&client, &history, c as u64, &file, op).await;
            }
            done.set(done.get() + 1);
            Ok(())
        });
    }
    let tally = Rc::new(LockTally::default());
    // Their own random stream: a run without lockers is what it was before they existed.
    let mut locker_rng = Rng::new(seed ^ 0x6c6f_636b);
    for l in 0..config.lockers {
        let mut servers = servers.clone();
        let n = servers.len();
        servers.rotate_left(l % n);
        let mut rng = Rng::new(locker_rng.next());
        let (tally, done) = (tally.clone(), workers_done.clone());
        sim.client(format!("l{l}"), async move {
            let client = connect(servers, SETTLE_DEADLINE).await?;
            for _ in 0..LOCKER_ROUNDS {
                tokio::time::sleep(rng.millis(0, 300)).await;
                increment(&client, &tally).await;
            }
            done.set(done.get() + 1);
            Ok(())
        });
    }
    {
        let history = history.clone();
        let healed = healed.clone();
        let files = config.files;
        let servers = servers.clone();
        let (tally, lockers) = (tally.clone(), config.lockers);
        sim.client("verifier", async move {
            while !healed.get() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for (n, server) in servers.iter().enumerate() {
                let client = connect(vec![server.clone()], SETTLE_DEADLINE).await?;
                for f in 0..files {
                    let file = format!("f{f}");
                    verify_read(&client, &history, 1000 + n as u64, &file).await?;
                }
            }
            if lockers > 0 {
                let client = connect(servers.clone(), SETTLE_DEADLINE).await?;
                tally.last.set(Some(read_counter(&client).await?));
            }
            Ok(())
        });
    }

    // A crash in a run with disk loss becomes a disk loss only if, asked after the crash
    // (when the crashed node can acknowledge nothing more), the map lists a replica other
    // than that node for every file: else its disk held a file's only copy, which R = 2
    // does not promise to keep (a write acknowledged by one replica, the other having
    // failed, then the loss of that one's disk: two faults).
    let wipe_asked: Rc<Cell<Option<(u64, u64)>>> = Rc::new(Cell::new(None));
    let wipe_answer: Rc<Cell<Option<(u64, bool)>>> = Rc::new(Cell::new(None));
    if config.disk_loss {
        let (asked, answer) = (wipe_asked.clone(), wipe_answer.clone());
        let healed = healed.clone();
        let servers = servers.clone();
        sim.client("monitor", async move {
            let client = connect(servers, SETTLE_DEADLINE).await?;
            while !healed.get() {
                if let Some((victim, request)) = asked.get()
                    && answer.get().is_none_or(|(r, _)| r != request)
                {
                    let safe = match client.table().await {
                        Ok(table) => table
                            .iter()
                            .all(|e| e.replicas.iter().any(|n| *n != victim)),
                        Err(_) => false,
                    };
                    answer.set(Some((request, safe)));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        });
    }
    let mut wipe_requests = 0u64;
    let mut pending_wipe: Option<(String, u64)> = None;

    // The fault schedule, driven between simulation steps.
    let mut active: Option<(Fault, Duration)> = None;
    let mut next_fault = rng.millis(300, 1500);
    loop {
        let now = sim.elapsed();
        let workers_finished = workers_done.get() == config.clients + config.lockers;
        if let Some((victim, request)) = &pending_wipe
            && let Some((answered, safe)) = wipe_answer.get()
            && answered == *request
        {
            if safe {
                let dir = root.path().join(victim);
                let emptied =
                    std::fs::remove_dir_all(&dir).and_then(|()| std::fs::create_dir_all(&dir));
                if let Err(e) = emptied {
                    return Err(fail(format!("emptying {}: {e}", dir.display()), &faults));
                }
                faults.borrow_mut().push(format!(
                    "{now:?}: DiskLost({victim:?}): its directory emptied"
                ));
                if let Some((fault, _)) = &mut active {
                    *fault = Fault::DiskLost(victim.clone());
                }
            } else {
                faults.borrow_mut().push(format!(
                    "{now:?}: {victim:?} keeps its disk: it held a file's only listed copy"
                ));
            }
            pending_wipe = None;
        }
        // A crash whose disk loss is still being decided is healed once it is decided.
        if let Some((fault, until)) = &active
            && (now >= *until || workers_finished)
            && pending_wipe.is_none()
        {
            fault.heal(&mut sim);
            faults
                .borrow_mut()
                .push(format!("{now:?}: healed {fault:?}"));
            active = None;
            next_fault = now + rng.millis(200, 1500);
        }
        // Healed once no fault is left (a crash whose disk loss is being decided waits).
        if workers_finished && active.is_none() && !healed.get() {
            faults.borrow_mut().push(format!("{now:?}: all healed"));
            healed.set(true);
        }
        if config.faults && !workers_finished && active.is_none() && now >= next_fault {
            let victim = host(1 + rng.below(config.nodes as u64) as usize);
            let others: Vec<String> = (1..=config.nodes)
                .map(host)
                .filter(|h| *h != victim)
                .collect();
            let other = others[rng.below(others.len() as u64) as usize].clone();
            let kind = rng.below(4 + u64::from(config.message_loss));
            let fault = match kind {
                0 => {
                    sim.crash(victim.as_str());
                    if config.disk_loss {
                        wipe_requests += 1;
                        let id = victim.trim_start_matches('n').parse().unwrap_or(0);
                        wipe_asked.set(Some((id, wipe_requests)));
                        pending_wipe = Some((victim.clone(), wipe_requests));
                    }
                    Fault::Crash(victim)
                }
                1 => {
                    for o in &others {
                        sim.partition(victim.as_str(), o.as_str());
                    }
                    Fault::Partition(victim, others)
                }
                2 => {
                    sim.partition_oneway(victim.as_str(), other.as_str());
                    Fault::OneWay(victim, other)
                }
                3 => {
                    sim.hold(victim.as_str(), other.as_str());
                    Fault::Hold(victim, other)
                }
                _ => {
                    // One failure per link every 0.5 to 5 s.
                    let rate = 0.0002 + rng.below(1800) as f64 / 1_000_000.0;
                    sim.set_fail_rate(rate);
                    Fault::Lossy(rate)
                }
            };
            let until = now + rng.millis(300, 4000);
            faults
                .borrow_mut()
                .push(format!("{now:?}: {fault:?} until {until:?}"));
            active = Some((fault, until));
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(fail(format!("the simulation stopped: {e}"), &faults)),
        }
    }
    let sim_time = sim.elapsed();
    drop(sim);

    let history = history.borrow();
    let unknown = history
        .entries()
        .iter()
        .filter(|e| e.completion.at().is_none())
        .count();
    if config.lockers > 0 {
        check_counter(&tally).map_err(|why| fail(why, &faults))?;
    }
    let budget = dfs_check::CheckOptions {
        max_steps_per_file: CHECK_STEPS,
    };
    match dfs_check::check_with(&history, &budget) {
        Verdict::Linearizable => Ok(SimReport {
            seed,
            ops: history.len(),
            unknown,
            faults: faults.borrow().clone(),
            sim_time,
            fingerprint: fingerprint(&history),
            increments: tally.acked.get(),
            fenced: tally.fenced.get(),
            writes_at: tally_ops(&history, |op| matches!(op, Op::WriteAt { .. })),
            truncates: tally_ops(&history, |op| matches!(op, Op::Truncate { .. })),
        }),
        other => Err(fail(format!("{other}"), &faults)),
    }
}

/// A client over the simulated network, retrying until a node answers (nodes may still be
/// electing a map leader when the clients start).
async fn connect(servers: Vec<String>, patience: Duration) -> Result<Client, ClientError> {
    let mut config = ClientConfig::new(servers);
    config.transport = Simulated::shared();
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(3);
    config.retry_deadline = Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match Client::with_config(config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Held by the simulation running in this process (see [`align_task_ids`]).
static RUNNING: Mutex<()> = Mutex::new(());

/// The task ids [`align_task_ids`] aligns to: a multiple of tokio's number of task-list
/// shards in a current-thread runtime (4 in tokio 1.54), with room to spare.
const TASK_ID_ALIGN: u64 = 64;

/// Moves tokio's process-wide task id counter to the next multiple of [`TASK_ID_ALIGN`].
///
/// A runtime keeps its tasks in lists chosen by task id, and when turmoil crashes a host
/// it drops the host's runtime, which drops the tasks list by list: the order in which a
/// crashed node's connections close (and so which message draws which latency) depends on
/// the tasks' ids modulo the number of lists. Ids come from one counter for the whole
/// process, so a run aligns it first, and runs one at a time ([`RUNNING`]). Tokio runtimes
/// of other threads spawning tasks meanwhile would still shift the ids.
fn align_task_ids() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    loop {
        // Never polled: dropped with the runtime.
        let task = runtime.spawn(async {});
        let id: u64 =
            task.id().to_string().parse().map_err(|e| {
                std::io::Error::other(format!("a task id that is not a number: {e}"))
            })?;
        if id % TASK_ID_ALIGN == TASK_ID_ALIGN - 1 {
            return Ok(());
        }
    }
}

/// While it lives: blocking work inline on this thread (see `dfs_net::blocking`), and
/// random ids drawn on it from a seeded generator (see `dfs_net::random`).
struct SimThread;

impl SimThread {
    fn on(seed: u64) -> Self {
        dfs_net::blocking::run_inline_on_this_thread(true);
        dfs_net::random::seed_this_thread(Some(seed));
        SimThread
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        dfs_net::blocking::run_inline_on_this_thread(false);
        dfs_net::random::seed_this_thread(None);
    }
}

/// XORed into a client's stream seed to seed its [`reshape`] choices.
const SHAPES: u64 = 0x7772_6974_655f_6174;

/// Turns some of a client's operations into writes at an offset and truncations: of the
/// appends, one in five becomes a `write_at` of `<client.seq>` at an offset in `0..64`
/// (inside the file or a little past its end, as files hold a few dozen bytes); of the
/// reads, one in six becomes a `truncate` to a size in `0..48`. The choices come from
/// `shapes`, a stream of the client's own drawn twice per operation, so the main streams
/// (which operation, on which file, when; the fault schedule) draw what they drew before.
fn reshape(op: Op, shapes: &mut Rng, client: usize, seq: usize) -> Op {
    let (roll, n) = (shapes.below(30), shapes.next());
    match op {
        Op::Append(_) if roll < 6 => Op::WriteAt {
            offset: n % 64,
            data: format!("<{client}.{seq}>").into_bytes(),
        },
        Op::Read if roll < 5 => Op::Truncate { size: n % 48 },
        op => op,
    }
}

/// Runs `op` on `file` and records its invocation and outcome.
async fn perform(client: &Client, history: &RefCell<History>, process: u64, file: &str, op: Op) {
    let id = history.borrow_mut().invoke(process, file, op.clone());
    tracing::debug!(process, file, ?id, ?op, "invoke");
    let outcome = match &op {
        Op::Create => outcome(client.create(file).await.map(|_| Ret::Done)),
        Op::Append(data) => {
            let len = data.len() as u64;
            outcome(
                client
                    .append(file, data.clone())
                    .await
                    .map(|ack| Ret::Appended {
                        offset: ack.size.saturating_sub(len),
                    }),
            )
        }
        Op::Put(data) => outcome(client.put(file, data.clone()).await.map(|_| Ret::Done)),
        Op::WriteAt { offset, data } => outcome(
            client
                .write_at(file, *offset, data.clone())
                .await
                .map(|ack| Ret::Size(ack.size)),
        ),
        Op::Truncate { size } => outcome(
            client
                .truncate(file, *size)
                .await
                .map(|ack| Ret::Size(ack.size)),
        ),
        Op::Read => outcome(
            client
                .read(file, 0, None)
                .await
                .map(|b| Ret::Value(b.to_vec())),
        ),
        Op::Delete => outcome(client.delete(file).await.map(|()| Ret::Done)),
    };
    tracing::debug!(process, file, ?id, ?outcome, "complete");
    record(history, id, outcome);
}

/// One fenced increment of the counter under its exclusive lock; tallied.
async fn increment(client: &Client, tally: &LockTally) {
    let grant = match client
        .lock(COUNTER, LockMode::Exclusive, LOCK_TTL, LOCK_WAIT)
        .await
    {
        Ok(grant) => grant,
        Err(e) => {
            tracing::debug!(error = %e, "no lock");
            return;
        }
    };
    tally.tokens.borrow_mut().push(grant.token);
    let current = match client.read(COUNTER, 0, None).await {
        Ok(bytes) => parse_counter(&bytes),
        Err(ClientError::NotFound(_)) => Some(0),
        Err(_) => None,
    };
    if let Some(current) = current {
        let next = (current + 1).to_string();
        match client
            .put_if(COUNTER, next, Condition::fenced(grant.token))
            .await
        {
            Ok(_) => tally.acked.set(tally.acked.get() + 1),
            Err(ClientError::Fenced(_)) => tally.fenced.set(tally.fenced.get() + 1),
            Err(e) => {
                tracing::debug!(error = %e, "increment outcome unknown");
                tally.unknown.set(tally.unknown.get() + 1);
            }
        }
    }
    let _ = client.unlock(grant.lease).await;
}

fn parse_counter(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The counter after the heal, retried while the cluster settles.
async fn read_counter(client: &Client) -> Result<u64, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + SETTLE_DEADLINE;
    loop {
        match client.read(COUNTER, 0, None).await {
            Ok(bytes) => {
                return parse_counter(&bytes)
                    .ok_or_else(|| format!("the counter holds {bytes:?}").into());
            }
            Err(ClientError::NotFound(_)) => return Ok(0),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("the counter is unreadable after the heal: {e}").into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The counter equals the acknowledged increments, plus at most the unknown ones; no
/// token was granted twice.
fn check_counter(tally: &LockTally) -> Result<(), String> {
    let (acked, unknown) = (tally.acked.get(), tally.unknown.get());
    let Some(last) = tally.last.get() else {
        return Err("the counter was not read after the heal".into());
    };
    let tokens = tally.tokens.borrow();
    let mut distinct = tokens.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != tokens.len() {
        return Err(format!("a fencing token was granted twice: {tokens:?}"));
    }
    if last < acked || last > acked + unknown {
        return Err(format!(
            "the counter is {last} after {acked} acknowledged increments ({unknown} unknown, \
             {} fenced): two holders at once, or a lost increment",
            tally.fenced.get()
        ));
    }
    tracing::info!(
        acked,
        unknown,
        fenced = tally.fenced.get(),
        last,
        "counter checked"
    );
    Ok(())
}

/// A read after the heal, retried while the cluster settles; its answer must be definite.
async fn verify_read(
    client: &Client,
    history: &RefCell<History>,
    process: u64,
    file: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + SETTLE_DEADLINE;
    loop {
        let id = history.borrow_mut().invoke(process, file, Op::Read);
        let result = client.read(file, 0, None).await;
        let settled = !matches!(
            &result,
            Err(ClientError::Unavailable(_) | ClientError::Timeout(_))
        );
        let result_text = format!("{result:?}");
        record(history, id, outcome(result.map(|b| Ret::Value(b.to_vec()))));
        if settled {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{file} unreadable after the heal: {result_text}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn outcome(result: Result<Ret, ClientError>) -> Outcome {
    match result {
        Ok(ret) => Outcome::Ok(ret),
        Err(ClientError::NotFound(_)) => Outcome::Failed(ErrorKind::NotFound),
        Err(ClientError::AlreadyExists(_)) => Outcome::Failed(ErrorKind::AlreadyExists),
        Err(ClientError::InvalidName(_)) => Outcome::Failed(ErrorKind::Rejected),
        Err(_) => Outcome::Unknown,
    }
}

fn record(history: &RefCell<History>, id: OpId, outcome: Outcome) {
    // The id comes from this history's own invoke: completing it cannot fail.
    let _ = history.borrow_mut().complete(id, outcome);
}

/// How many operations of the history `kind` selects, and how many of those succeeded.
fn tally_ops(history: &History, kind: impl Fn(&Op) -> bool) -> (usize, usize) {
    let selected = history.entries().iter().filter(|e| kind(&e.op));
    let acked = selected
        .clone()
        .filter(|e| matches!(e.completion, Completion::Ok { .. }))
        .count();
    (selected.count(), acked)
}

/// FNV-1a over the history's events, in order.
fn fingerprint(history: &History) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for entry in history.entries() {
        for b in format!("{entry:?}").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
