//! How results look: JSON values for `--json`, short text for people. Pure functions, so
//! the shapes are tested without a cluster.

use std::fmt::Write as _;

use dfs_client::{
    ClusterStatus, FileInfo, ListEntry, LockGrant, ScrubReport, TableEntry, WriteAck,
};
use serde_json::{Value, json};

/// A CRC-32C as scripts compare it: 8 lower-case hex digits.
pub fn checksum_hex(checksum: u32) -> String {
    format!("{checksum:08x}")
}

/// `stat` and `create`: everything known about a file.
pub fn file_info_json(info: &FileInfo) -> Value {
    json!({
        "name": info.name,
        "file_id": info.file_id,
        "size": info.size,
        "version": info.version,
        "replicas": info.replicas,
        "checksum": checksum_hex(info.checksum),
        "modified_ms": info.modified_ms,
    })
}

/// `ls`: an array of `{name, size, version}`.
pub fn list_json(entries: &[ListEntry]) -> Value {
    entries
        .iter()
        .map(|e| json!({ "name": e.name, "size": e.size, "version": e.version }))
        .collect()
}

/// `table`: an object from each name to the ids of the nodes holding it, primary first.
pub fn table_json(entries: &[TableEntry]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|e| (e.name.clone(), json!(e.replicas)))
            .collect(),
    )
}

/// `status`: an array with one object per node; `term` is the cluster map's and `leader`
/// says whether this node leads it; `down_for_ms` how long a down node has been down
/// (`null` for one that is up). Like `term`, the cluster-wide `replication_factor` and
/// `under_replicated` (files with fewer replicas than that) are on every node's object.
pub fn status_json(status: &ClusterStatus) -> Value {
    status
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "addr": n.addr,
                "up": n.up,
                "role": n.role.as_str(),
                "term": status.term,
                "leader": status.leader == Some(n.id),
                "down_for_ms": n.down_for_ms,
                "replication_factor": status.replication_factor,
                "under_replicated": status.under_replicated,
            })
        })
        .collect()
}

/// `write` and `put`: the file's state after the write; `text` holds `--random`'s letters.
pub fn write_json(name: &str, ack: &WriteAck, text: Option<&str>) -> Value {
    let mut v = json!({
        "name": name,
        "version": ack.version,
        "size": ack.size,
        "checksum": checksum_hex(ack.checksum),
        "duplicate": ack.duplicate,
    });
    if let (Some(text), Value::Object(map)) = (text, &mut v) {
        map.insert("text".into(), Value::String(text.to_owned()));
    }
    v
}

/// `delete`.
pub fn delete_json(name: &str) -> Value {
    json!({ "name": name, "deleted": true })
}

/// `get`: where the file went and how many bytes it got.
pub fn get_json(name: &str, file: &str, bytes: u64) -> Value {
    json!({ "name": name, "file": file, "bytes": bytes })
}

/// `lock` and `renew`: the lease, with the fencing token to pass to writes (`--fence`).
pub fn lock_json(grant: &LockGrant) -> Value {
    json!({
        "name": grant.name,
        "mode": grant.mode.as_str(),
        "lease": grant.lease,
        "token": grant.token,
        "ttl_ms": grant.ttl_ms,
    })
}

/// `unlock`.
pub fn unlock_json(lease: u64) -> Value {
    json!({ "lease": lease, "unlocked": true })
}

/// `lock` and `renew`, for people:
/// `locked counter (exclusive, ttl 10s): lease 3, fencing token 7`.
pub fn lock_text(verb: &str, grant: &LockGrant) -> String {
    format!(
        "{verb} {} ({}, ttl {}): lease {}, fencing token {}\n",
        grant.name,
        grant.mode.as_str(),
        format_duration(grant.ttl_ms),
        grant.lease,
        grant.token
    )
}

/// A duration of milliseconds exactly, in the largest unit the duration flags take that
/// divides it: `500ms`, `10s`, `2m`, `1h`.
pub fn format_duration(ms: u64) -> String {
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Node ids as `1,2`.
pub fn node_list(ids: &[u64]) -> String {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    ids.join(",")
}

/// `create`, for people.
pub fn created_text(info: &FileInfo) -> String {
    format!(
        "created {} (replicas {})\n",
        info.name,
        node_list(&info.replicas)
    )
}

/// `write` and `put`, for people: `appended 40 bytes to NAME (size 40, version 1)`.
pub fn write_text(verb: &str, bytes: u64, name: &str, ack: &WriteAck) -> String {
    let dup = if ack.duplicate {
        ", already applied"
    } else {
        ""
    };
    format!(
        "{verb} {bytes} {} to {name} (size {}, version {}{dup})\n",
        plural(bytes, "byte"),
        ack.size,
        ack.version
    )
}

/// `truncate`, for people: `truncated NAME to 40 bytes (version 3)`.
pub fn truncated_text(name: &str, ack: &WriteAck) -> String {
    let dup = if ack.duplicate {
        ", already applied"
    } else {
        ""
    };
    format!(
        "truncated {name} to {} {} (version {}{dup})\n",
        ack.size,
        plural(ack.size, "byte"),
        ack.version
    )
}

/// `stat`, for people: one `key: value` line each.
pub fn stat_text(info: &FileInfo) -> String {
    let rows = [
        ("name", info.name.clone()),
        ("size", info.size.to_string()),
        ("version", info.version.to_string()),
        ("replicas", node_list(&info.replicas)),
        ("checksum", checksum_hex(info.checksum)),
        ("modified", format_ms(info.modified_ms)),
        ("file id", info.file_id.to_string()),
    ];
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<10}{value}", format!("{key}:"));
    }
    out
}

/// `ls`, for people: aligned columns name, size, version; nothing for no files.
pub fn list_text(entries: &[ListEntry]) -> String {
    let rows: Vec<[String; 3]> = entries
        .iter()
        .map(|e| [e.name.clone(), e.size.to_string(), e.version.to_string()])
        .collect();
    columns(&rows, &[Align::Left, Align::Right, Align::Right])
}

/// `table`, for people: `name  1,2  2/2`, one file a line: the nodes holding it (primary
/// first) and how many of the replicas it should have; a file with fewer is marked
/// `under-replicated`.
pub fn table_text(entries: &[TableEntry]) -> String {
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                node_list(&e.replicas),
                format!("{}/{}", e.replicas.len(), e.replication_factor),
                if e.is_under_replicated() {
                    "under-replicated".to_owned()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    columns(
        &rows,
        &[Align::Left, Align::Left, Align::Right, Align::Left],
    )
}

/// `scrub`: an array with one object per node (`error` set if it was not scrubbed).
pub fn scrub_json(reports: &[ScrubReport]) -> Value {
    reports
        .iter()
        .map(|r| {
            json!({
                "node": r.node,
                "files": r.files,
                "bytes": r.bytes,
                "error": r.error,
                "bad": r.bad.iter().map(|b| json!({
                    "name": b.name,
                    "file_id": b.file_id,
                    "replaced": b.replaced,
                    "action": b.action,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// `scrub`, for people: one line per node, then one per damaged copy.
pub fn scrub_text(reports: &[ScrubReport]) -> String {
    let mut out = String::new();
    for r in reports {
        if let Some(why) = &r.error {
            let _ = writeln!(out, "node {}: not scrubbed: {why}", r.node);
            continue;
        }
        let verdict = match r.bad.len() {
            0 => "all good".to_owned(),
            1 => "1 damaged copy".to_owned(),
            n => format!("{n} damaged copies"),
        };
        let _ = writeln!(
            out,
            "node {}: {} copies ({} bytes) checked, {verdict}",
            r.node, r.files, r.bytes
        );
        for b in &r.bad {
            let what = if b.replaced {
                "replaced"
            } else {
                "NOT REPAIRED"
            };
            let _ = writeln!(out, "  {} ({what}): {}", b.name, b.action);
        }
    }
    out
}

/// `status`, for people: one line per node (a down one with how long it has been down),
/// then the leader and term, then how many files have fewer replicas than they should.
pub fn status_text(status: &ClusterStatus) -> String {
    let rows: Vec<[String; 5]> = status
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.to_string(),
                n.addr.clone(),
                if n.up { "up" } else { "down" }.to_owned(),
                n.role.as_str().to_owned(),
                n.down_for_ms
                    .filter(|_| !n.up)
                    .map(|ms| format!("for {}", format_span(ms)))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = columns(
        &rows,
        &[
            Align::Right,
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Left,
        ],
    );
    let leader = status
        .leader
        .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
    let _ = writeln!(
        out,
        "leader {leader}, term {}, replication factor {}",
        status.term, status.replication_factor
    );
    let _ = write!(
        out,
        "under-replicated: {} {}",
        status.under_replicated,
        plural(status.under_replicated, "file")
    );
    if status.under_replicated > 0 && status.rereplicate_after_ms > 0 {
        let _ = write!(
            out,
            " (copied to another live node after {} short)",
            format_span(status.rereplicate_after_ms)
        );
    }
    out.push('\n');
    out
}

/// A span of milliseconds for people: `850ms`, `42s`, `5m07s`, `3h05m`, `2d04h`.
pub fn format_span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Milliseconds since the Unix epoch as `2024-05-01 12:00:00.000 UTC`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Rows as text columns two spaces apart; the last column is not padded on the right.
fn columns<const N: usize>(rows: &[[String; N]], align: &[Align; N]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            match align[i] {
                Align::Left if i + 1 < N => {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
                Align::Left => line.push_str(cell),
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use dfs_client::{NodeRole, NodeStatus};

    fn info() -> FileInfo {
        FileInfo {
            name: "notes/today.txt".into(),
            file_id: 77,
            size: 40,
            version: 1,
            checksum: 0x00ab_12cd,
            replicas: vec![2, 3],
            modified_ms: 1_700_000_000_123,
        }
    }

    fn ack() -> WriteAck {
        WriteAck {
            version: 3,
            size: 45,
            checksum: 0xdead_beef,
            duplicate: false,
        }
    }

    fn cluster() -> ClusterStatus {
        ClusterStatus {
            nodes: vec![
                NodeStatus {
                    id: 1,
                    addr: "127.0.0.1:6000".into(),
                    up: true,
                    role: NodeRole::Leader,
                    down_for_ms: None,
                },
                NodeStatus {
                    id: 2,
                    addr: "127.0.0.1:7000".into(),
                    up: true,
                    role: NodeRole::Follower,
                    down_for_ms: None,
                },
                NodeStatus {
                    id: 3,
                    addr: "127.0.0.1:8000".into(),
                    up: false,
                    role: NodeRole::Unknown,
                    down_for_ms: Some(42_300),
                },
            ],
            leader: Some(1),
            term: 4,
            replication_factor: 2,
            under_replicated: 3,
            rereplicate_after_ms: 60_000,
        }
    }

    #[test]
    fn stat_json_shape() {
        assert_eq!(
            file_info_json(&info()),
            json!({
                "name": "notes/today.txt",
                "file_id": 77,
                "size": 40,
                "version": 1,
                "replicas": [2, 3],
                "checksum": "00ab12cd",
                "modified_ms": 1_700_000_000_123u64,
            })
        );
    }

    #[test]
    fn checksum_is_eight_lowercase_hex_digits() {
        assert_eq!(checksum_hex(0), "00000000");
        assert_eq!(checksum_hex(0xDEAD_BEEF), "deadbeef");
        assert_eq!(checksum_hex(0x1f), "0000001f");
    }

    #[test]
    fn list_json_shape() {
        let entries = vec![
            ListEntry {
                name: "a".into(),
                size: 0,
                version: 0,
            },
            ListEntry {
                name: "b/c".into(),
                size: 12,
                version: 3,
            },
        ];
        assert_eq!(
            list_json(&entries),
            json!([
                { "name": "a", "size": 0, "version": 0 },
                { "name": "b/c", "size": 12, "version": 3 },
            ])
        );
        assert_eq!(list_json(&[]), json!([]));
    }

    #[test]
    fn table_json_shape() {
        let entries = vec![
            TableEntry {
                name: "file1".into(),
                file_id: 1,
                replicas: vec![2, 3],
                epoch: 1,
                replication_factor: 2,
            },
            TableEntry {
                name: "x/y".into(),
                file_id: 2,
                replicas: vec![1],
                epoch: 5,
                replication_factor: 2,
            },
        ];
        assert_eq!(table_json(&entries), json!({ "file1": [2, 3], "x/y": [1] }));
        assert_eq!(table_json(&[]), json!({}));
    }

    #[test]
    fn status_json_shape() {
        assert_eq!(
            status_json(&cluster()),
            json!([
                { "id": 1, "addr": "127.0.0.1:6000", "up": true, "role": "leader", "term": 4, "leader": true,
                  "down_for_ms": null, "replication_factor": 2, "under_replicated": 3 },
                { "id": 2, "addr": "127.0.0.1:7000", "up": true, "role": "follower", "term": 4, "leader": false,
                  "down_for_ms": null, "replication_factor": 2, "under_replicated": 3 },
                { "id": 3, "addr": "127.0.0.1:8000", "up": false, "role": "unknown", "term": 4, "leader": false,
                  "down_for_ms": 42_300, "replication_factor": 2, "under_replicated": 3 },
            ])
        );
        let mut no_leader = cluster();
        no_leader.leader = None;
        no_leader.nodes[0].role = NodeRole::Candidate;
        let v = status_json(&no_leader);
        assert_eq!(v[0]["role"], "candidate");
        assert!(
            v.as_array()
                .expect("array")
                .iter()
                .all(|n| n["leader"] == false)
        );
    }

    #[test]
    fn write_json_shape() {
        assert_eq!(
            write_json("f", &ack(), None),
            json!({ "name": "f", "version": 3, "size": 45, "checksum": "deadbeef", "duplicate": false })
        );
        assert_eq!(
            write_json("f", &ack(), Some("abcde")),
            json!({ "name": "f", "version": 3, "size": 45, "checksum": "deadbeef", "duplicate": false, "text": "abcde" })
        );
    }

    #[test]
    fn delete_and_get_json_shape() {
        assert_eq!(delete_json("f"), json!({ "name": "f", "deleted": true }));
        assert_eq!(
            get_json("f", "out/f.bin", 12),
            json!({ "name": "f", "file": "out/f.bin", "bytes": 12 })
        );
    }

    #[test]
    fn json_is_one_line() {
        let line = serde_json::to_string(&file_info_json(&info())).expect("serializes");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn human_stat() {
        assert_eq!(
            stat_text(&info()),
            "name:     notes/today.txt\n\
             size:     40\n\
             version:  1\n\
             replicas: 2,3\n\
             checksum: 00ab12cd\n\
             modified: 2023-11-14 22:13:20.123 UTC\n\
             file id:  77\n"
        );
    }

    #[test]
    fn human_list_is_aligned() {
        let entries = vec![
            ListEntry {
                name: "a".into(),
                size: 5,
                version: 1,
            },
            ListEntry {
                name: "long/name.txt".into(),
                size: 12345,
                version: 10,
            },
        ];
        assert_eq!(
            list_text(&entries),
            "a                  5   1\nlong/name.txt  12345  10\n"
        );
        assert_eq!(list_text(&[]), "");
    }

    #[test]
    fn human_table() {
        let entries = vec![
            TableEntry {
                name: "file1".into(),
                file_id: 1,
                replicas: vec![2, 3],
                epoch: 1,
                replication_factor: 2,
            },
            TableEntry {
                name: "test_synchronization.txt".into(),
                file_id: 2,
                replicas: vec![1],
                epoch: 2,
                replication_factor: 2,
            },
        ];
        assert_eq!(
            table_text(&entries),
            "file1                     2,3  2/2\n\
             test_synchronization.txt  1    1/2  under-replicated\n"
        );
    }

    #[test]
    fn human_status() {
        assert_eq!(
            status_text(&cluster()),
            "1  127.0.0.1:6000  up    leader\n\
             2  127.0.0.1:7000  up    follower\n\
             3  127.0.0.1:8000  down  unknown   for 42s\n\
             leader 1, term 4, replication factor 2\n\
             under-replicated: 3 files (copied to another live node after 1m00s short)\n"
        );
        let mut healed = cluster();
        healed.leader = None;
        healed.under_replicated = 0;
        assert!(
            status_text(&healed).ends_with(
                "leader unknown, term 4, replication factor 2\nunder-replicated: 0 files\n"
            ),
            "{}",
            status_text(&healed)
        );
        let mut all_up = cluster();
        all_up.nodes[2].up = true;
        all_up.nodes[2].down_for_ms = None;
        all_up.under_replicated = 1;
        assert_eq!(
            status_text(&all_up),
            "1  127.0.0.1:6000  up  leader\n\
             2  127.0.0.1:7000  up  follower\n\
             3  127.0.0.1:8000  up  unknown\n\
             leader 1, term 4, replication factor 2\n\
             under-replicated: 1 file (copied to another live node after 1m00s short)\n"
        );
    }

    #[test]
    fn spans() {
        assert_eq!(format_span(0), "0ms");
        assert_eq!(format_span(850), "850ms");
        assert_eq!(format_span(42_300), "42s");
        assert_eq!(format_span(307_000), "5m07s");
        assert_eq!(format_span(11_100_000), "3h05m");
        assert_eq!(format_span(187_200_000), "2d04h");
    }

    #[test]
    fn human_and_json_scrub() {
        use dfs_client::BadCopy;
        let reports = vec![
            ScrubReport {
                node: 1,
                files: 3,
                bytes: 1200,
                bad: vec![BadCopy {
                    name: "a".into(),
                    file_id: 9,
                    replaced: true,
                    action: "left the replica set".into(),
                }],
                error: None,
            },
            ScrubReport {
                node: 2,
                files: 0,
                bytes: 0,
                bad: Vec::new(),
                error: Some("the node is down".into()),
            },
        ];
        assert_eq!(
            scrub_text(&reports),
            "node 1: 3 copies (1200 bytes) checked, 1 damaged copy\n  \
             a (replaced): left the replica set\n\
             node 2: not scrubbed: the node is down\n"
        );
        let v = scrub_json(&reports);
        assert_eq!(v[0]["bad"][0]["file_id"], 9);
        assert_eq!(v[1]["error"], "the node is down");
    }

    #[test]
    fn human_writes() {
        let first = WriteAck {
            version: 1,
            size: 40,
            checksum: 1,
            duplicate: false,
        };
        assert_eq!(
            write_text("appended", 40, "f", &first),
            "appended 40 bytes to f (size 40, version 1)\n"
        );
        assert_eq!(
            write_text(
                "wrote",
                1,
                "f",
                &WriteAck {
                    duplicate: true,
                    ..first
                }
            ),
            "wrote 1 byte to f (size 40, version 1, already applied)\n"
        );
        assert_eq!(
            created_text(&info()),
            "created notes/today.txt (replicas 2,3)\n"
        );
    }

    #[test]
    fn lock_shapes() {
        use dfs_client::LockMode;
        let grant = LockGrant {
            name: "counter".into(),
            mode: LockMode::Exclusive,
            lease: 3,
            token: 7,
            ttl_ms: 10_000,
        };
        assert_eq!(
            lock_json(&grant),
            json!({ "name": "counter", "mode": "exclusive", "lease": 3, "token": 7, "ttl_ms": 10_000 })
        );
        assert_eq!(
            lock_text("locked", &grant),
            "locked counter (exclusive, ttl 10s): lease 3, fencing token 7\n"
        );
        let shared = LockGrant {
            mode: LockMode::Shared,
            ttl_ms: 1500,
            ..grant
        };
        assert_eq!(lock_json(&shared)["mode"], "shared");
        assert_eq!(
            lock_text("renewed", &shared),
            "renewed counter (shared, ttl 1500ms): lease 3, fencing token 7\n"
        );
        assert_eq!(unlock_json(3), json!({ "lease": 3, "unlocked": true }));
    }

    #[test]
    fn durations_print_exactly() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(500), "500ms");
        assert_eq!(format_duration(1500), "1500ms");
        assert_eq!(format_duration(10_000), "10s");
        assert_eq!(format_duration(90_000), "90s");
        assert_eq!(format_duration(120_000), "2m");
        assert_eq!(format_duration(86_400_000), "24h");
    }

    #[test]
    fn dates() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(format_ms(1_709_251_199_999), "2024-02-29 23:59:59.999 UTC");
        assert_eq!(format_ms(4_102_444_800_000), "2100-01-01 00:00:00.000 UTC");
    }
}
