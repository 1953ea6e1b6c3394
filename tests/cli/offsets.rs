//! `write --offset` and `truncate` through the real `dfs-client` on three real
//! `dfs-server` processes: the bytes every node serves and every replica holds on disk,
//! a replica that missed the changes catching up, and a read-only token refused.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::harness::{Cluster, IDS, Node, spawn_flagged, stderr, then_kill, wait_all_up};
use crate::util::client_cmd;

/// Where every data file's content starts (two 4 KiB header slots before it).
const CONTENT_AT: usize = 8192;

/// CRC-32C, bit by bit (the tests compare a few bytes' checksums with `stat`'s).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    out
}

/// The content of file `file_id` in a node's store, read from its data file on disk
/// (`None`: the node holds no copy).
fn copy_on_disk(node: &Node, file_id: u64) -> Option<Vec<u8>> {
    let path = node
        .data_dir
        .join("store")
        .join("files")
        .join(format!("{file_id:016x}"));
    let bytes = std::fs::read(path).ok()?;
    Some(bytes.get(CONTENT_AT..).unwrap_or_default().to_vec())
}

/// Checks that `name` reads as `want` through every node, that `stat` agrees on size and
/// checksum, and that every replica's copy on disk holds exactly `want`.
fn check_everywhere(cluster: &Cluster, name: &str, want: &[u8]) {
    for id in IDS {
        cluster.check_read(&[id], name);
    }
    let stat = cluster.json(&[1], &["stat", name]);
    assert_eq!(stat["size"].as_u64(), Some(want.len() as u64), "{stat}");
    assert_eq!(
        stat["checksum"].as_str(),
        Some(format!("{:08x}", crc32c(want)).as_str()),
        "{stat}"
    );
    let file_id = stat["file_id"].as_u64().expect("file id");
    let replicas = cluster.checked_replicas("stat", &stat["replicas"]);
    assert_eq!(replicas.len(), 3, "{stat}");
    for id in replicas {
        // Committed before the client's answer on every replica: no waiting needed.
        let got = copy_on_disk(cluster.node(id), file_id).expect("a copy on disk");
        assert_eq!(got, want, "node {id}'s copy of {name}");
    }
}

#[test]
fn write_at_offsets_and_truncate_through_the_cli() {
    let mut cluster = Cluster::start(3);
    cluster.append(&[1], "f", "hello world");
    check_everywhere(&cluster, "f", b"hello world");

    // From a local file, in the middle; text output.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("part.bin");
    std::fs::write(&local, b"WORLD").expect("local file");
    let out = ok(
        cluster.run(
            &[2],
            &[
                "write",
                "f",
                "--offset",
                "6",
                local.to_str().expect("utf-8"),
            ],
            None,
        ),
        "write --offset FILE",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wrote at 6: 5 bytes to f (size 11, version 2)\n"
    );
    cluster.files.insert("f".into(), b"hello WORLD".to_vec());
    check_everywhere(&cluster, "f", b"hello WORLD");

    // From standard input, past the end (a gap of zeros); JSON output like append's.
    let out = ok(
        cluster.run(
            &[3],
            &["--json", "write", "f", "--offset", "14", "-"],
            Some(b"xy"),
        ),
        "write --offset -",
    );
    let ack: Value = serde_json::from_slice(&out.stdout).expect("json");
    let want = b"hello WORLD\0\0\0xy".to_vec();
    assert_eq!(ack["size"].as_u64(), Some(16), "{ack}");
    assert_eq!(ack["version"].as_u64(), Some(3), "{ack}");
    assert_eq!(ack["duplicate"].as_bool(), Some(false), "{ack}");
    assert_eq!(
        ack["checksum"].as_str(),
        Some(format!("{:08x}", crc32c(&want)).as_str())
    );
    cluster.files.insert("f".into(), want.clone());
    check_everywhere(&cluster, "f", &want);

    // Truncate down, then up.
    let out = ok(cluster.run(&[1], &["truncate", "f", "5"], None), "truncate");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "truncated f to 5 bytes (version 4)\n"
    );
    cluster.files.insert("f".into(), b"hello".to_vec());
    check_everywhere(&cluster, "f", b"hello");
    let ack = cluster.json(&[2], &["truncate", "f", "7"]);
    assert_eq!(
        (ack["size"].as_u64(), ack["version"].as_u64()),
        (Some(7), Some(5))
    );
    cluster.files.insert("f".into(), b"hello\0\0".to_vec());
    check_everywhere(&cluster, "f", b"hello\0\0");

    // Conditions as for append: a wrong version changes nothing.
    let out = cluster.run(&[1], &["truncate", "f", "0", "--if-version", "1"], None);
    assert!(!out.status.success(), "must be refused");
    assert!(stderr(&out).contains("version"), "{}", stderr(&out));
    check_everywhere(&cluster, "f", b"hello\0\0");

    // Missing files are not created.
    for args in [
        &["truncate", "nope", "3"][..],
        &[
            "write",
            "nope",
            "--offset",
            "0",
            local.to_str().expect("utf-8"),
        ][..],
    ] {
        let out = cluster.run(&[1], args, None);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    }
    cluster.check_read(&[1], "nope");
}

#[test]
fn a_replica_that_missed_writes_at_offsets_and_truncations_catches_up() {
    let mut cluster = Cluster::start(3);
    cluster.append(&[1], "g", "0123456789");
    cluster.kill(3);
    let local = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(local.path(), b"abc").expect("local file");
    let path = local.path().to_str().expect("utf-8").to_owned();
    cluster.json(&[1, 2], &["write", "g", "--offset", "4", &path]);
    cluster.json(&[1, 2], &["truncate", "g", "8"]);
    cluster.json(&[1, 2], &["write", "g", "--offset", "10", &path]);
    let want = b"0123abc7\0\0abc".to_vec();
    cluster.files.insert("g".into(), want.clone());
    cluster.restart(&[3]);
    cluster.wait_replicated(1);
    // Repair brings node 3 back into the replica set with a copy equal to the others'.
    cluster.wait_for(
        "node 3's copy to converge",
        crate::harness::FAILOVER_DEADLINE,
        || {
            let stat = cluster.try_json(&[1], &["stat", "g"])?;
            let file_id = stat["file_id"].as_u64().ok_or("no file id")?;
            match copy_on_disk(cluster.node(3), file_id) {
                Some(copy) if copy == want => Ok(()),
                other => Err(format!("node 3 holds {other:?}")),
            }
        },
    );
    check_everywhere(&cluster, "g", &want);
    cluster.check_all(&IDS);
}

fn server_tool(args: &[&str]) -> Output {
    ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .args(args)
            .output()
            .expect("run dfs-server"),
        "dfs-server tool",
    )
}

fn add_token(tokens: &Path, name: &str, right: &str) -> String {
    let tokens = tokens.to_str().expect("utf-8 path");
    let out = server_tool(&[
        "token",
        "add",
        name,
        "--right",
        right,
        "--tokens-file",
        tokens,
    ]);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn a_read_only_token_may_neither_write_at_an_offset_nor_truncate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let tokens = dir.join("tokens.json");
    let admin = add_token(&tokens, "admin", "read-write");
    let reader = add_token(&tokens, "reader", "read");
    // Tokens need a cluster secret (else anyone could pass for a node).
    let secret = dir.join("secret");
    server_tool(&["secret", secret.to_str().expect("utf-8")]);
    let extra = vec![
        "--tokens-file".to_owned(),
        tokens.to_str().expect("utf-8").to_owned(),
        "--secret-file".to_owned(),
        secret.to_str().expect("utf-8").to_owned(),
    ];
    let (mut nodes, servers) = spawn_flagged(dir, 3, &extra);
    let client = |token: &str, args: &[&str]| {
        client_cmd(&servers)
            .env("DFS_TOKEN", token)
            .args(args)
            .output()
            .expect("run dfs-client")
    };
    then_kill(&mut nodes, || {
        wait_all_up(|| client(&admin, &["--json", "status"]));
        ok(client(&admin, &["write", "f", "hello"]), "admin appends");
        let local = dir.join("x");
        std::fs::write(&local, b"XX").expect("local file");
        let local = local.to_str().expect("utf-8");
        for args in [
            &["write", "f", "--offset", "1", local][..],
            &["truncate", "f", "1"][..],
        ] {
            let out = client(&reader, args);
            assert!(!out.status.success(), "{args:?} must be refused");
            assert!(stderr(&out).contains("read-write"), "{}", stderr(&out));
        }
        let out = ok(client(&reader, &["read", "f"]), "reader reads");
        assert_eq!(out.stdout, b"hello", "nothing changed");
        // The admin may do both.
        ok(
            client(&admin, &["write", "f", "--offset", "1", local]),
            "admin writes",
        );
        ok(client(&admin, &["truncate", "f", "4"]), "admin truncates");
        let out = ok(client(&reader, &["read", "f"]), "reader reads");
        assert_eq!(out.stdout, b"hXXl");
    });
}
