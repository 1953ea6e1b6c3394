//! SIGKILL in the middle of a stream of appends: after a restart every acknowledged append
//! is there, whole, exactly once, and nothing is torn.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dfs::client::{Client, ClientConfig};

use crate::util::*;

const RECORD: usize = 64;
const WRITERS: u64 = 4;

fn record(writer: u64, seq: u64) -> Vec<u8> {
    let mut r = format!("w{writer}:s{seq:08}:").into_bytes();
    r.resize(RECORD - 1, b'.');
    r.push(b'\n');
    r
}

fn parse(r: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(r).ok()?;
    let rest = text.strip_prefix('w')?;
    let (w, rest) = rest.split_once(":s")?;
    let (s, pad) = rest.split_once(':')?;
    let whole = pad.len() == RECORD - 1 - 1 - w.len() - 2 - s.len()
        && pad.trim_end_matches('\n').bytes().all(|b| b == b'.')
        && text.ends_with('\n');
    whole.then_some((w.parse().ok()?, s.parse().ok()?))
}

async fn quick_client(addr: &str) -> Client {
    let mut config = ClientConfig::new([addr.to_owned()]);
    // After the kill, give up quickly rather than retry: the test restarts the node itself.
    config.retry_deadline = Duration::from_millis(100);
    config.request_timeout = Duration::from_secs(10);
    Client::with_config(config).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_appends_keeps_every_acknowledged_append_and_nothing_torn() {
    let mut s = Server::start();
    let mut acked: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); WRITERS as usize];
    let mut next_seq = vec![0u64; WRITERS as usize];
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let c = quick_client(&s.addr()).await;
            let stop = stop.clone();
            let mut seq = next_seq[w as usize];
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match c.append("log", record(w, seq)).await {
                        Ok(_) => mine.push(seq),
                        Err(_) => break,
                    }
                    seq += 1;
                }
                (mine, seq + 1)
            }));
        }
        // Wait until the writers are well under way, then kill the node mid-stream.
        let c = quick_client(&s.addr()).await;
        let target = ((round + 1) * 200 * RECORD) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while c.stat("log").await.map(|i| i.size).unwrap_or(0) < target {
            assert!(tokio::time::Instant::now() < deadline, "appends too slow");
            tokio::task::yield_now().await;
        }
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for (w, t) in tasks.into_iter().enumerate() {
            let (mine, next) = t.await.expect("writer");
            acked[w].extend(mine);
            next_seq[w] = next;
        }
        s.restart();

        let c = Client::connect([s.addr()])
            .await
            .expect("connect after restart");
        let bytes = c.read("log", 0, None).await.expect("read after restart");
        assert_eq!(bytes.len() % RECORD, 0, "a torn record at the end");
        let mut seen: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); WRITERS as usize];
        let mut last = vec![None; WRITERS as usize];
        for r in bytes.chunks(RECORD) {
            let (w, seq) = parse(r)
                .unwrap_or_else(|| panic!("torn or mixed record {:?}", String::from_utf8_lossy(r)));
            assert!(
                seen[w as usize].insert(seq),
                "record w{w} s{seq} applied twice"
            );
            assert!(
                last[w as usize] < Some(seq),
                "writer {w}'s records out of order"
            );
            last[w as usize] = Some(seq);
        }
        for w in 0..WRITERS as usize {
            let missing: Vec<_> = acked[w].difference(&seen[w]).collect();
            assert!(
                missing.is_empty(),
                "round {round}: acknowledged appends lost: w{w} {missing:?}"
            );
            // At most the one append in flight at the kill may be there unacknowledged.
            assert!(
                seen[w].len() <= acked[w].len() + round + 1,
                "unexpected extra records"
            );
        }
    }
}
