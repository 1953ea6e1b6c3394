//! Self-healing (`--rereplicate-after`) with three real `dfs-server` processes, R = 2: a
//! node that stays down has its files copied to the live nodes, `status` and `table` show
//! what is short meanwhile, and when the node returns its stale copies are never served and
//! are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{Cluster, FAILOVER_DEADLINE, IDS, others, pattern, replica_sets};
use crate::util::ok;

/// The node holding the most files in `table --json` (the lowest id among equals), and the
/// names it holds.
fn busiest(table: &Value) -> (u64, BTreeSet<String>) {
    let sets = replica_sets(table);
    let held = |id: u64| -> BTreeSet<String> {
        sets.iter()
            .filter(|(_, ids)| ids.contains(&id))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let id = IDS
        .into_iter()
        .max_by_key(|&id| (held(id).len(), std::cmp::Reverse(id)))
        .expect("three nodes");
    (id, held(id))
}

/// Where node `id` keeps its copy of file `file_id` (`dfs_store`'s layout).
fn copy_path(c: &Cluster, id: u64, file_id: u64) -> PathBuf {
    c.node(id)
        .data_dir
        .join("store")
        .join("files")
        .join(format!("{file_id:016x}"))
}

/// Each file's id, from `stat`.
fn file_ids(c: &Cluster, via: u64) -> BTreeMap<String, u64> {
    c.files
        .keys()
        .map(|name| {
            let stat = c.json(&[via], &["stat", name]);
            let id = stat["file_id"].as_u64().expect("file_id");
            (name.clone(), id)
        })
        .collect()
}

/// `status --json` through `via`: its `under_replicated` count (the same on every node's
/// object) and the entry of node `id`.
fn under_replicated_and_entry(status: &Value, id: u64) -> Result<(u64, Value), String> {
    let nodes = status.as_array().ok_or("status is not an array")?;
    let counts: BTreeSet<u64> = nodes
        .iter()
        .map(|n| n["under_replicated"].as_u64().unwrap_or(u64::MAX))
        .collect();
    let [count] = counts.into_iter().collect::<Vec<_>>()[..] else {
        return Err(format!(
            "under_replicated differs between entries: {status}"
        ));
    };
    let entry = nodes
        .iter()
        .find(|n| n["id"] == id)
        .ok_or_else(|| format!("node {id} missing: {status}"))?;
    Ok((count, entry.clone()))
}

#[test]
fn short_files_show_in_status_and_table_until_their_home_node_returns() {
    // Re-replication an hour away: the files the killed node held stay short, and its
    // return makes them whole at once (a home node that is up is always preferred).
    let mut c = Cluster::start_with_args(2, &["--rereplicate-after", "1h"]);
    // Made by `create`, so each file sits on its home placement (rendezvous over the three
    // nodes): when one of them dies, the third node is no home of the file and nothing can
    // take the file back before the hour is up.
    for i in 0..6u8 {
        let name = format!("short/{i}");
        c.create(&IDS, &name);
        c.append(&IDS, &name, &format!("content of file {i}"));
    }
    let (victim, held) = busiest(&c.json(&[1], &["table"]));
    assert!(!held.is_empty(), "node {victim} holds no file");
    let live = others(&[victim]);
    c.kill(victim);
    c.wait_marked_down(live[0], victim);

    let n = held.len() as u64;
    let (_, entry) = c.wait_for(
        &format!("status through {} counting {n} short files", live[0]),
        FAILOVER_DEADLINE,
        || {
            let status = c.try_json(&[live[0]], &["status"])?;
            let (count, entry) = under_replicated_and_entry(&status, victim)?;
            if count == n && entry["up"] == false {
                Ok((count, entry))
            } else {
                Err(format!("want {n} under-replicated: {status}"))
            }
        },
    );
    assert!(entry["down_for_ms"].is_u64(), "{entry}");
    let text = ok(&c.run(&[live[0]], &["status"], None));
    let files = if n == 1 { "file" } else { "files" };
    assert!(
        text.contains(&format!("under-replicated: {n} {files}")),
        "{text}"
    );
    let victim_line = text
        .lines()
        .find(|l| l.contains(&c.node(victim).addr))
        .unwrap_or_else(|| panic!("no line for node {victim}: {text}"));
    assert!(
        victim_line.contains("down") && victim_line.contains(" for "),
        "{text}"
    );
    // The table marks exactly the short files (the hour is far away).
    let table = ok(&c.run(&[live[0]], &["table"], None));
    for name in c.files.keys() {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no line for {name}: {table}"));
        if held.contains(name) {
            assert!(
                line.contains("1/2") && line.ends_with("under-replicated"),
                "{table}"
            );
        } else {
            assert!(
                line.contains("2/2") && !line.contains("under-replicated"),
                "{table}"
            );
        }
    }
    for name in c.files.keys() {
        c.check_read(&live, name);
    }

    c.restart(&[victim]);
    c.wait_replicated(live[0]);
    c.wait_for("no file counted short", FAILOVER_DEADLINE, || {
        let status = c.try_json(&[victim], &["status"])?;
        match under_replicated_and_entry(&status, victim)? {
            (0, entry) if entry["up"] == true && entry["down_for_ms"].is_null() => Ok(()),
            _ => Err(format!("{status}")),
        }
    });
    // Back on their home placement: the returned node holds its files again.
    let sets = replica_sets(&c.json(&[live[0]], &["table"]));
    for name in &held {
        assert!(sets[name].contains(&victim), "{name}: {sets:?}");
    }
    c.check_all(&IDS);
}

#[test]
fn a_node_down_for_good_has_its_files_copied_to_the_live_nodes() {
    let mut c = Cluster::start_with_args(2, &["--rereplicate-after", "1s"]);
    for i in 0..8u8 {
        let via = [IDS[usize::from(i) % 3]];
        c.put(
            &via,
            &format!("heal/{i}"),
            &pattern(i, 1000 + 300 * usize::from(i)),
        );
    }
    let (victim, held) = busiest(&c.json(&[1], &["table"]));
    assert!(!held.is_empty(), "node {victim} holds no file");
    let live = others(&[victim]);
    let ids = file_ids(&c, live[0]);
    // Every acknowledged write is on every replica's disk: the victim holds these copies.
    for name in &held {
        let path = copy_path(&c, victim, ids[name]);
        assert!(
            path.exists(),
            "node {victim} has no copy of {name} at {path:?}"
        );
    }

    c.kill(victim);
    c.wait_for("every file on two live nodes", FAILOVER_DEADLINE, || {
        let table = c.try_json(&[live[0]], &["table"])?;
        let sets = replica_sets(&table);
        let wrong: Vec<String> = c
            .files
            .keys()
            .filter(|name| {
                sets.get(*name)
                    .is_none_or(|ids| ids.len() != 2 || ids.contains(&victim))
            })
            .cloned()
            .collect();
        match wrong.is_empty() && sets.len() == c.files.len() {
            true => Ok(()),
            false => Err(format!("not yet on two live nodes: {wrong:?} in {table}")),
        }
    });
    c.full_replicas = true;
    for &via in &live {
        c.wait_for(
            &format!("status through {via}: nothing short, node {victim} down"),
            FAILOVER_DEADLINE,
            || {
                let status = c.try_json(&[via], &["status"])?;
                match under_replicated_and_entry(&status, victim)? {
                    (0, entry) if entry["up"] == false && entry["down_for_ms"].is_u64() => Ok(()),
                    _ => Err(format!("{status}")),
                }
            },
        );
    }
    let text = ok(&c.run(&[live[0]], &["status"], None));
    assert!(text.contains("under-replicated: 0 files"), "{text}");
    let table = ok(&c.run(&[live[0]], &["table"], None));
    assert!(
        !table.contains("under-replicated") && table.lines().all(|l| l.contains("2/2")),
        "{table}"
    );
    // The victim's copies become stale: its files change while it is away.
    for name in &held {
        c.append(&live, name, "|written while the node was away");
    }
    c.check_all(&live);

    // It returns with its stale copies on disk: they are never served (reads through it
    // are right at once), and they are removed, as the map no longer lists it for them.
    c.restart(&[victim]);
    for name in c.files.keys() {
        c.check_read(&[victim], name);
    }
    c.wait_for(
        &format!("node {victim} removing its stale copies"),
        FAILOVER_DEADLINE,
        || {
            let left: Vec<&String> = held
                .iter()
                .filter(|name| copy_path(&c, victim, ids[*name]).exists())
                .collect();
            match left.is_empty() {
                true => Ok(()),
                false => Err(format!("still there: {left:?}")),
            }
        },
    );
    let sets = replica_sets(&c.json(&[victim], &["table"]));
    assert!(
        sets.values()
            .all(|ids| ids.len() == 2 && !ids.contains(&victim)),
        "whole files stay where they were healed to: {sets:?}"
    );
    c.check_all(&IDS);
}
