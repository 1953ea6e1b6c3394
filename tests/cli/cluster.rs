//! Three real `dfs-server` processes on loopback ports, driven by the real `dfs-client`:
//! every operation through every node, concurrent appends through different nodes, SIGKILL
//! of replica holders with failover and catch-up, changes made while a node is down, a full
//! restart, replication factors 1 and 3, and the client library failing over with
//! exactly-once retries while the primary of the file it appends to is killed.
//!
//! The harness (`harness.rs`) keeps a model of what every file must hold. What must happen
//! eventually (a leader, a failover, a catch-up, a node marked down) is polled with a
//! deadline, never waited for with a fixed sleep; what must never happen (a stale, torn or
//! duplicated read) fails at once. After a node is killed, commands are retried until the
//! failover deadline, and a failed write is checked by reading the file before it is sent
//! again, so a retry never applies it twice.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dfs::client::{Client, ClientConfig, ClientError};
use futures::future::join_all;

use crate::harness::{
    Cluster, FAILOVER_DEADLINE, IDS, START_DEADLINE, others, pattern, replica_sets, shown, stderr,
};
use crate::util::{client_cmd, fails, ok};

#[test]
fn three_nodes_r2_every_operation() {
    let mut c = Cluster::start(2);

    // Every write operation, through different nodes.
    c.create(&[1], "docs/a.txt");
    c.append(&[2], "docs/a.txt", "hello ");
    c.append(&[3], "docs/a.txt", "world");
    c.append(&[3], "logs/new.log", "append creates\n");
    c.put(&[1], "bin/stdin", b"from stdin");
    let big = pattern(1, 1_000_000);
    let local = c.tmp.as_ref().expect("tmp").path().join("big.bin");
    std::fs::write(&local, &big).expect("local file");
    let local = local.to_str().expect("utf-8 path").to_owned();
    c.change(
        &[2],
        "bin/big",
        &["put", "bin/big", &local],
        None,
        Some(big),
    );
    c.put(&[3], "bin/stdin", b"replaced");
    c.create(&[2], "gone.txt");
    c.append(&[1], "gone.txt", "short-lived");
    let err = fails(&c.run(&[3], &["create", "docs/a.txt"], None));
    assert!(err.contains("already exists"), "{err}");

    // Same bytes, ls, stat and table through every node; R=2 replicas everywhere.
    c.check_all(&IDS);
    for id in IDS {
        let part = ok(&c.run(
            &[id],
            &["cat", "docs/a.txt", "--offset", "6", "--len", "3"],
            None,
        ));
        assert_eq!(part, "wor", "ranged read through {id}");
        let ls = c.json(&[id], &["ls", "docs/"]);
        assert_eq!(
            ls.as_array().map(Vec::len),
            Some(1),
            "ls docs/ through {id}: {ls}"
        );
        assert_eq!(ls[0]["version"], 2, "create + 2 appends through {id}: {ls}");
    }
    let stat = c.json(&[3], &["stat", "docs/a.txt"]);
    assert_eq!(stat["name"], "docs/a.txt");
    assert_eq!(stat["version"], 2);

    // delete through one node: gone through all of them.
    c.delete(&[2], "gone.txt");
    c.check_all(&IDS);
    for id in IDS {
        let err = fails(&c.run(&[id], &["stat", "gone.txt"], None));
        assert!(
            err.contains("not found"),
            "stat after delete through {id}: {err}"
        );
        let err = fails(&c.run(&[id], &["delete", "gone.txt"], None));
        assert!(
            err.contains("not found"),
            "second delete through {id}: {err}"
        );
    }

    // status: three nodes, all up, one leader, the same term everywhere.
    let mut views = BTreeSet::new();
    for id in IDS {
        let status = c.json(&[id], &["status"]);
        let view = c.leader_and_term(&status).unwrap_or_else(|e| c.fail(&e));
        for node in status.as_array().expect("array") {
            let nid = node["id"].as_u64().expect("id");
            assert_eq!(node["addr"], c.node(nid).addr.as_str(), "{status}");
            // Another follower's role may be unknown to a follower; only one leads.
            let leads = node["role"] == "leader";
            assert_eq!(leads, nid == view.0, "{status}");
        }
        let text = ok(&c.run(&[id], &["status"], None));
        assert!(text.contains(&c.node(1).addr), "{text}");
        views.insert(view);
    }
    assert_eq!(
        views.len(),
        1,
        "nodes disagree on leader and term: {views:?}"
    );
}

/// Length of every record of the concurrent-append test.
const RECORD_LEN: usize = 19;

/// Writer `i`'s record: `record-NN-` then eight letters that depend on `i`, then a newline.
fn record(i: usize) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    let r = format!("record-{i:02}-{}\n", letter.to_string().repeat(8));
    assert_eq!(r.len(), RECORD_LEN);
    r
}

#[test]
fn concurrent_appends_through_different_nodes() {
    const WRITERS: usize = 24;
    let mut c = Cluster::start(2);
    c.create(&[1], "log");
    let writers: Vec<Child> = (0..WRITERS)
        .map(|i| {
            client_cmd(&c.node(IDS[i % IDS.len()]).addr)
                .args(["write", "log", &record(i)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dfs-client")
        })
        .collect();
    for (i, writer) in writers.into_iter().enumerate() {
        let out = writer.wait_with_output().expect("dfs-client output");
        assert!(
            out.status.success(),
            "writer {i} through node {}: {}",
            IDS[i % IDS.len()],
            stderr(&out)
        );
    }

    let content = c
        .try_read(&[1], "log")
        .unwrap_or_else(|e| c.fail(&e))
        .expect("log exists");
    assert_eq!(
        content.len(),
        WRITERS * RECORD_LEN,
        "{}",
        shown(Some(&content))
    );
    let mut seen = Vec::new();
    for (at, chunk) in content.chunks(RECORD_LEN).enumerate() {
        match (0..WRITERS).find(|&i| record(i).as_bytes() == chunk) {
            Some(i) => seen.push(i),
            None => c.fail(&format!(
                "record {at} is torn or interleaved: {:?}",
                String::from_utf8_lossy(chunk)
            )),
        }
    }
    let once: BTreeSet<usize> = seen.iter().copied().collect();
    assert_eq!(
        once.len(),
        WRITERS,
        "a record is missing or repeated: {seen:?}"
    );
    eprintln!("appends applied in the order {seen:?}");

    // Every node serves the same bytes in the same order, with one version per append.
    c.files.insert("log".to_owned(), content);
    c.check_all(&IDS);
    assert_eq!(c.json(&[2], &["stat", "log"])["version"], WRITERS);
}

#[test]
fn sigkill_of_a_holder_then_failover_and_return() {
    let mut c = Cluster::start(2);
    c.create(&[1], "f");
    c.append(&[1], "f", "before the kill\n");
    let holders = c.replicas(1, "f");
    let (primary, second) = (holders[0], holders[1]);
    let bystander = others(&holders)[0];

    // The primary dies: through the node that holds no copy, writes go on after a failover.
    let killed_at = Instant::now();
    c.kill(primary);
    c.append(&[bystander], "f", "after the kill\n");
    eprintln!(
        "first append after killing node {primary} acknowledged {:?} after the kill",
        killed_at.elapsed()
    );
    c.check_read(&[bystander], "f");
    c.check_read(&[second], "f");
    c.wait_marked_down(bystander, primary);

    // It returns and catches up: the file is on two replicas again, one of them the node.
    c.restart(&[primary]);
    let returned_at = Instant::now();
    c.wait_for(
        &format!("f back on node {primary}"),
        FAILOVER_DEADLINE,
        || {
            let stat = c.try_json(&[primary], &["stat", "f"])?;
            let replicas = c.replica_ids(&stat["replicas"])?;
            if replicas.len() == 2 && replicas.contains(&primary) {
                Ok(())
            } else {
                Err(format!("replicas {replicas:?}"))
            }
        },
    );
    eprintln!(
        "node {primary} caught up {:?} after its restart",
        returned_at.elapsed()
    );
    c.append(&[primary], "f", "after the return\n");

    // The other original holder dies: the returned node alone serves the latest content.
    c.kill(second);
    c.check_read(&[primary], "f");
    c.append(&[primary], "f", "after the second kill\n");
    c.check_all(&[primary, bystander]);
}

#[test]
fn changes_while_a_node_is_down_are_right_after_it_returns() {
    const ON_3: usize = 4;
    let mut c = Cluster::start(2);
    // Files until four of them have a copy on node 3, which is about to go down.
    let mut held_by_3 = Vec::new();
    for i in 0..24 {
        let name = format!("pre/{i}");
        c.append(&[IDS[i % 3]], &name, &format!("old content of {name}\n"));
        if c.replicas(1, &name).contains(&3) {
            held_by_3.push(name);
        }
        if held_by_3.len() == ON_3 {
            break;
        }
    }
    assert_eq!(held_by_3.len(), ON_3, "placement never chose node 3");

    c.kill(3);
    let live = [1, 2];
    c.delete(&live, &held_by_3[0]);
    c.append(&live, &held_by_3[1], "appended while 3 was down\n");
    c.put(&live, &held_by_3[2], b"replaced while 3 was down\n");
    c.create(&live, "new/empty");
    c.append(&live, "new/a", "created while 3 was down\n");
    c.put(&live, "new/b", &pattern(2, 300_000));
    c.check_all(&live);

    // Through node 3 alone: nothing stale, nothing missing.
    c.restart(&[3]);
    c.check_all(&[3]);
    c.append(&[3], &held_by_3[3], "appended through 3 after its return\n");
    c.wait_replicated(3);
    c.check_all(&IDS);
}

#[test]
fn full_restart_keeps_every_file() {
    let mut c = Cluster::start(2);
    for (i, id) in IDS.iter().cycle().take(6).enumerate() {
        let name = format!("f/{i}");
        c.append(&[*id], &name, &format!("first line of {name}\n"));
        if i % 2 == 0 {
            c.append(&[*id], &name, "second line\n");
        }
    }
    c.put(&[2], "f/big", &pattern(3, 600_000));
    c.delete(&[3], "f/5");
    let placement = replica_sets(&c.json(&[1], &["table"]));

    for id in IDS {
        c.kill(id);
    }
    c.restart(&IDS);
    c.wait_replicated(2);
    c.check_all(&IDS);
    assert_eq!(
        replica_sets(&c.json(&[2], &["table"])),
        placement,
        "files moved to other nodes"
    );
    c.append(&[3], "f/0", "after the restart\n");
    c.check_all(&IDS);
}

#[test]
fn replication_factor_one_and_three() {
    {
        let mut c = Cluster::start(1);
        for id in IDS {
            c.append(
                &[id],
                &format!("r1/{id}"),
                &format!("written through {id}\n"),
            );
        }
        c.put(&[2], "r1/big", &pattern(4, 300_000));
        c.check_all(&IDS);
    }

    let mut c = Cluster::start(3);
    for id in IDS {
        c.append(
            &[id],
            &format!("r3/{id}"),
            &format!("written through {id}\n"),
        );
    }
    c.check_all(&IDS);
    for id in IDS {
        let replicas: BTreeSet<u64> = c.replicas(id, "r3/1").into_iter().collect();
        assert!(
            replicas.iter().copied().eq(IDS),
            "R=3 on 3 nodes: {replicas:?}"
        );
    }

    c.kill(1);
    let live = [2, 3];
    c.check_all(&live);
    c.append(&live, "r3/1", "appended with node 1 down\n");
    c.put(&[3], "r3/2", b"replaced with node 1 down\n");
    c.check_all(&live);
}

/// The line writer `w` appends as its `seq`th record in the library failover test.
fn line(w: u64, seq: u64) -> String {
    format!("w{w}-s{seq:03}\n")
}

#[test]
fn the_library_fails_over_and_retries_exactly_once() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 30;
    let mut c = Cluster::start(2);
    c.create(&[1], "log");
    let primary = c.replicas(1, "log")[0];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ClientConfig::new(IDS.iter().map(|id| c.node(*id).addr.clone()));
    config.retry_deadline = FAILOVER_DEADLINE;
    let client = rt
        .block_on(Client::with_config(config))
        .expect("client connects");

    // Writers append their numbered lines one after another, each waiting for its ack.
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            rt.spawn(async move {
                for seq in 0..EACH {
                    client.append("log", line(w, seq)).await?;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<(), ClientError>(())
            })
        })
        .collect();

    // The file's primary dies with a third of the appends acknowledged, others in flight.
    c.wait_for("a third of the appends", START_DEADLINE, || {
        let n = acked.load(Ordering::SeqCst);
        if n >= WRITERS * EACH / 3 {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    });
    c.kill(primary);
    for (w, writer) in rt.block_on(join_all(writers)).into_iter().enumerate() {
        match writer {
            Ok(Ok(())) => {}
            Ok(Err(e)) => c.fail(&format!("writer {w} failed across the failover: {e}")),
            Err(e) => c.fail(&format!("writer {w} panicked: {e}")),
        }
    }

    // Every line once, each writer's in its order, nothing else.
    let content = rt
        .block_on(client.read("log", 0, None))
        .unwrap_or_else(|e| c.fail(&format!("read after the failover: {e}")));
    let text = String::from_utf8_lossy(&content).into_owned();
    let mut next = vec![0u64; WRITERS as usize];
    for l in text.lines() {
        let parsed = l
            .strip_prefix('w')
            .and_then(|l| l.split_once("-s"))
            .and_then(|(w, s)| Some((w.parse::<usize>().ok()?, s.parse::<u64>().ok()?)));
        match parsed {
            Some((w, seq)) if w < next.len() && seq == next[w] => next[w] += 1,
            _ => c.fail(&format!(
                "line {l:?} is torn, repeated or out of order in:\n{text}"
            )),
        }
    }
    assert_eq!(next, vec![EACH; WRITERS as usize], "lines per writer");
    drop(client);
    drop(rt);
    let live = others(&[primary]);
    c.files.insert("log".to_owned(), content.to_vec());
    c.check_all(&live);
}

#[test]
fn a_file_created_but_never_written_survives_its_primary() {
    let mut c = Cluster::start(2);
    c.create(&[1], "empty");
    c.create(&[2], "kept-empty");
    let holders = c.replicas(1, "empty");
    let primary = holders[0];
    let live = others(&[primary]);

    // No replica ever made a copy of it: the new primary knows it is the empty file.
    c.kill(primary);
    c.check_all(&live);
    c.append(&live, "empty", "first words\n");
    c.check_all(&live);

    // Back, the old primary serves neither an old copy nor a missing one.
    c.restart(&[primary]);
    c.wait_replicated(primary);
    c.check_all(&IDS);
}
