//! Lock leases under a node failure, on three real `dfs-server` processes (R = 2).
//!
//! Many clients increment one counter file, each increment under the file's exclusive
//! lock: take the lock (waiting for it), read the counter, put counter + 1 fenced with the
//! lock's token, release. Meanwhile a holder vanishes without releasing (its lease must
//! lapse after its ttl for the others to go on), and the node leading the cluster map (the
//! one that granted the leases) is killed. If two clients ever held the lock at once and
//! both wrote, increments would be lost: the final counter would be below the number of
//! acknowledged increments. It must equal that number (plus at most the increments whose
//! outcome is unknown, none of which may be lost either).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dfs::client::{Client, ClientConfig, ClientError, Condition, LockMode};
use futures::future::join_all;

use crate::harness::{Cluster, FAILOVER_DEADLINE, IDS};

const COUNTER: &str = "locks/counter";
/// Concurrent clients.
const WORKERS: usize = 8;
/// Acknowledged increments before the kill, and in all.
const BEFORE_KILL: u64 = 24;
const TOTAL: u64 = 64;
/// Each lease's ttl: longer than a failover of the map's leader takes, so a holder does
/// not lose the lock to the failover alone (it may, under load; it is then fenced).
const TTL: Duration = Duration::from_secs(4);
/// The vanishing holder's ttl.
const VANISH_TTL: Duration = Duration::from_secs(2);
/// The whole test's deadline.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    fenced: AtomicU64,
    unknown: AtomicU64,
    tokens: Mutex<Vec<u64>>,
}

fn config(c: &Cluster) -> ClientConfig {
    let mut config = ClientConfig::new(IDS.iter().map(|&id| c.node(id).addr.clone()));
    config.retry_deadline = FAILOVER_DEADLINE;
    config.request_timeout = Duration::from_secs(10);
    config
}

fn value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("the counter holds {bytes:?}"))
}

/// One client's loop: increments under the lock until the tally reaches `TOTAL`.
async fn worker(client: Client, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) && tally.acked.load(Ordering::SeqCst) < TOTAL {
        let grant = match client
            .lock(COUNTER, LockMode::Exclusive, TTL, Duration::from_secs(30))
            .await
        {
            Ok(g) => g,
            // Held past the wait, or no node reachable during the failover: try again.
            Err(e) => {
                eprintln!("lock: {e}; again");
                continue;
            }
        };
        tally.tokens.lock().expect("tokens").push(grant.token);
        let current = match client.read(COUNTER, 0, None).await {
            Ok(bytes) => value(&bytes),
            Err(ClientError::NotFound(_)) => 0,
            Err(_) => {
                let _ = client.unlock(grant.lease).await;
                continue;
            }
        };
        let next = (current + 1).to_string();
        match client
            .put_if(COUNTER, next, Condition::fenced(grant.token))
            .await
        {
            Ok(_) => {
                tally.acked.fetch_add(1, Ordering::SeqCst);
            }
            // Lost the lock (its lease lapsed during a stall): nothing was written.
            Err(ClientError::Fenced(_)) => {
                tally.fenced.fetch_add(1, Ordering::SeqCst);
            }
            // Anything else leaves the outcome unknown (it may have been applied).
            Err(e) => {
                eprintln!("fenced put: {e}");
                tally.unknown.fetch_add(1, Ordering::SeqCst);
            }
        }
        // May have lapsed meanwhile.
        let _ = client.unlock(grant.lease).await;
    }
}

#[test]
fn a_fenced_counter_under_many_clients_and_a_leader_kill_loses_no_increment() {
    let mut c = Cluster::start(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let observer = rt
        .block_on(Client::with_config(config(&c)))
        .expect("client connects");

    // A holder that vanishes: it takes the lock and is never heard from again. The others
    // can only go on once its lease lapses.
    let vanished = rt
        .block_on(observer.lock(COUNTER, LockMode::Exclusive, VANISH_TTL, Duration::ZERO))
        .expect("the first lock is free");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<Client> = (0..WORKERS)
        .map(|_| {
            rt.block_on(Client::with_config(config(&c)))
                .expect("client connects")
        })
        .collect();
    let workers = rt.spawn(join_all(
        clients
            .into_iter()
            .map(|client| worker(client, tally.clone(), stop.clone())),
    ));

    // Kill the map's leader (which granted the leases so far) once the workers are well
    // under way.
    c.wait_for("increments before the kill", DEADLINE, || {
        let acked = tally.acked.load(Ordering::SeqCst);
        (acked >= BEFORE_KILL)
            .then_some(())
            .ok_or_else(|| format!("{acked} increments acknowledged"))
    });
    let leader = c.patiently("a map leader", || {
        rt.block_on(observer.status())
            .map_err(|e| e.to_string())?
            .leader
            .ok_or_else(|| "no leader".to_owned())
    });
    let acked_at_kill = tally.acked.load(Ordering::SeqCst);
    c.kill(leader);
    c.wait_for("increments after the kill", DEADLINE, || {
        let acked = tally.acked.load(Ordering::SeqCst);
        (acked >= TOTAL)
            .then_some(())
            .ok_or_else(|| format!("{acked} increments acknowledged"))
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(workers).expect("workers end");

    let acked = tally.acked.load(Ordering::SeqCst);
    let unknown = tally.unknown.load(Ordering::SeqCst);
    let fenced = tally.fenced.load(Ordering::SeqCst);
    let final_value = c.patiently("the counter's final value", || {
        rt.block_on(observer.read(COUNTER, 0, None))
            .map(|b| value(&b))
            .map_err(|e| e.to_string())
    });
    let tokens = tally.tokens.lock().expect("tokens").clone();
    eprintln!(
        "{acked} increments acknowledged ({acked_at_kill} before node {leader}, the map's \
         leader, was killed), {fenced} fenced, {unknown} unknown; {} grants; counter {final_value}; \
         {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        final_value >= acked,
        "increments lost: the counter is {final_value} after {acked} acknowledged increments \
         (two holders at once?)"
    );
    assert!(
        final_value <= acked + unknown,
        "the counter {final_value} counts more than the {acked} acknowledged and {unknown} \
         unknown increments"
    );
    assert!(acked > acked_at_kill, "no increment after the kill");
    let distinct: BTreeSet<u64> = tokens.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "a fencing token was granted twice"
    );
    // The vanished holder's lease lapsed: it cannot renew, and its token is fenced.
    let renew = rt.block_on(observer.renew(vanished.lease));
    assert!(
        matches!(renew, Err(ClientError::LeaseExpired(_))),
        "renew of the vanished lease: {renew:?}"
    );
    let late = rt.block_on(observer.put_if(COUNTER, "0", Condition::fenced(vanished.token)));
    assert!(
        matches!(late, Err(ClientError::Fenced(_))),
        "the vanished holder's late write: {late:?}"
    );
}
