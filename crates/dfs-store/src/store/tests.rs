//! Unit tests of the store.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use crate::DEDUP_ENTRIES_MAX;

fn open_in(dir: &TempDir, fsync: bool) -> (Store, RecoveryReport) {
    Store::open(StoreConfig {
        dir: dir.path().to_path_buf(),
        fsync,
        group_commit: true,
    })
    .expect("open store")
}

fn data_path(dir: &TempDir, id: FileId) -> PathBuf {
    dir.path().join("files").join(format!("{id:016x}"))
}

fn key(client_id: u64, seq: u64) -> Option<DedupKey> {
    Some(DedupKey { client_id, seq })
}

fn assert_send_sync_static<T: Send + Sync + 'static>() {}
fn assert_send_static<T: Send + 'static>() {}

#[test]
fn types_are_thread_safe() {
    assert_send_sync_static::<Store>();
    assert_send_sync_static::<Snapshot>();
    assert_send_static::<AppendTxn>();
    assert_send_static::<PutTxn>();
}

#[test]
fn round_trips() {
    let dir = TempDir::new().expect("tempdir");
    let (store, report) = Store::open(StoreConfig::new(dir.path())).expect("open");
    assert_eq!(report, RecoveryReport::default());

    let meta = store.create(1, "notes.txt").expect("create");
    assert_eq!(
        (meta.id, meta.name.as_str(), meta.size, meta.version),
        (1, "notes.txt", 0, 0)
    );
    assert_eq!(meta.checksum, crc32c::crc32c(b""));
    assert!(data_path(&dir, 1).exists());
    assert_eq!(store.read(1).expect("read"), b"");

    store.append(1, b"hello ", None).expect("append");
    store.append(1, b"world", None).expect("append");
    assert_eq!(store.read(1).expect("read"), b"hello world");

    let out = store.put(1, b"replaced", None).expect("put");
    assert_eq!(out.size, 8);
    assert_eq!(store.read(1).expect("read"), b"replaced");
    assert_eq!(store.meta(1).expect("meta").name, "notes.txt");

    store.create(2, "other").expect("create 2");
    let ids: Vec<FileId> = store.files().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2]);

    store.delete(1).expect("delete");
    assert!(!data_path(&dir, 1).exists());
    assert!(matches!(store.meta(1), Err(StoreError::NotFound(1))));
    assert_eq!(store.files().len(), 1);
    // The id can be reused after a delete.
    store.create(1, "again").expect("re-create");
    assert_eq!(store.read(1).expect("read"), b"");
}

#[test]
fn error_cases() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    assert!(matches!(store.meta(5), Err(StoreError::NotFound(5))));
    assert!(matches!(
        store.append(5, b"x", None),
        Err(StoreError::NotFound(5))
    ));
    assert!(matches!(
        store.put(5, b"x", None),
        Err(StoreError::NotFound(5))
    ));
    assert!(matches!(store.delete(5), Err(StoreError::NotFound(5))));
    assert!(matches!(store.snapshot(5), Err(StoreError::NotFound(5))));
    assert!(matches!(
        store.begin_append(5),
        Err(StoreError::NotFound(5))
    ));
    assert!(matches!(store.verify(5), Err(StoreError::NotFound(5))));

    store.create(5, "a").expect("create");
    assert!(matches!(
        store.create(5, "b"),
        Err(StoreError::AlreadyExists(5))
    ));
    assert_eq!(store.meta(5).expect("meta").name, "a");

    let long = "x".repeat(NAME_MAX + 1);
    assert!(matches!(
        store.create(6, &long),
        Err(StoreError::NameTooLong(1025))
    ));
    let longest = "y".repeat(NAME_MAX);
    store.create(6, &longest).expect("name of NAME_MAX bytes");
    assert_eq!(store.meta(6).expect("meta").name, longest);
    assert!(matches!(store.meta(7), Err(StoreError::NotFound(7))));
}

#[test]
fn versions_and_checksums() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    let mut content = Vec::new();
    for (i, chunk) in [&b"abc"[..], b"", b"defgh", &[0u8; 5000]]
        .iter()
        .enumerate()
    {
        let out = store.append(1, chunk, None).expect("append");
        content.extend_from_slice(chunk);
        assert_eq!(out.version, i as u64 + 1);
        assert_eq!(out.size, content.len() as u64);
        assert_eq!(out.checksum, crc32c::crc32c(&content));
        assert!(!out.duplicate);
        let meta = store.meta(1).expect("meta");
        assert_eq!(
            (meta.version, meta.size, meta.checksum),
            (out.version, out.size, out.checksum)
        );
    }
    let out = store.put(1, b"new content", None).expect("put");
    assert_eq!(out.version, 5);
    assert_eq!(out.checksum, crc32c::crc32c(b"new content"));
    assert!(store.verify(1).expect("verify"));
}

#[test]
fn dedup_applies_once() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    let first = store.append(1, b"abc", key(7, 1)).expect("append");
    let again = store.append(1, b"abc", key(7, 1)).expect("retry");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        WriteOutcome {
            duplicate: false,
            ..again
        },
        first
    );
    assert_eq!(store.read(1).expect("read"), b"abc");
    assert_eq!(
        store
            .dedup_lookup(
                1,
                DedupKey {
                    client_id: 7,
                    seq: 1
                }
            )
            .expect("lookup"),
        Some(again)
    );
    assert_eq!(
        store
            .dedup_lookup(
                1,
                DedupKey {
                    client_id: 7,
                    seq: 2
                }
            )
            .expect("lookup"),
        None
    );

    // Put: dedup applies and the table is carried over.
    let p = store.put(1, b"xyz", key(7, 2)).expect("put");
    let p2 = store.put(1, b"other", key(7, 2)).expect("put retry");
    assert!(p2.duplicate && p2.version == p.version);
    assert_eq!(store.read(1).expect("read"), b"xyz");
    assert!(store.append(1, b"!", key(7, 1)).expect("old key").duplicate);
    assert_eq!(store.read(1).expect("read"), b"xyz");

    // Survives a reopen.
    drop(store);
    let (store, _) = open_in(&dir, false);
    assert!(
        store
            .append(1, b"abc", key(7, 1))
            .expect("after reopen")
            .duplicate
    );
    assert_eq!(store.read(1).expect("read"), b"xyz");

    // Streaming commits check the key first.
    let mut txn = store.begin_append(1).expect("begin");
    txn.write(b"zzz").expect("write");
    let d = txn.commit(key(7, 2)).expect("commit dup");
    assert!(d.duplicate);
    assert_eq!(store.read(1).expect("read"), b"xyz");
    assert_eq!(
        std::fs::metadata(data_path(&dir, 1)).expect("stat").len(),
        HEADER_SIZE + 3
    );
    let mut txn = store.begin_put(1).expect("begin put");
    txn.write(b"zzz").expect("write");
    assert!(txn.commit(key(7, 1)).expect("commit dup").duplicate);
    assert_eq!(store.read(1).expect("read"), b"xyz");
}

#[test]
fn dedup_table_is_bounded() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    let n = DEDUP_ENTRIES_MAX as u64 + 1;
    for seq in 0..n {
        store.append(1, b"x", key(3, seq)).expect("append");
    }
    // The oldest key was evicted: forgotten (it may have been applied), never new; the
    // newest 64 are remembered.
    let forgotten = |store: &Store, id: FileId| {
        let oldest = DedupKey {
            client_id: 3,
            seq: 0,
        };
        matches!(
            store.dedup_lookup(id, oldest),
            Err(StoreError::OutcomeForgotten {
                client_id: 3,
                seq: 0,
                ..
            })
        )
    };
    assert!(forgotten(&store, 1));
    for seq in 1..n {
        assert!(
            store
                .dedup_lookup(1, DedupKey { client_id: 3, seq })
                .expect("lookup")
                .is_some()
        );
    }
    assert_eq!(
        store
            .dedup_lookup(
                1,
                DedupKey {
                    client_id: 3,
                    seq: n
                }
            )
            .expect("lookup"),
        None
    );
    drop(store);
    let (store, report) = open_in(&dir, false);
    assert!(report.damaged.is_empty());
    assert_eq!(store.meta(1).expect("meta").size, n);
    // The floor is in the header: still forgotten after a restart.
    assert!(forgotten(&store, 1));
    assert_eq!(
        store.dedup_entries(1).expect("entries").len(),
        DEDUP_ENTRIES_MAX
    );
    // A copy installed on another replica carries the floor.
    let mut txn = store.begin_install(2, "copy").expect("begin install");
    txn.write(&store.read(1).expect("read")).expect("write");
    let state = InstallState {
        version: n,
        modified_ms: 1,
        dedup: store.dedup_entries(1).expect("entries"),
    };
    txn.commit_install(state).expect("commit install");
    assert!(forgotten(&store, 2));
}

#[test]
fn reopen_keeps_everything() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, true);
    store.create(10, "ten").expect("create");
    store.append(10, b"0123456789", None).expect("append");
    store.create(11, "eleven").expect("create");
    store.put(11, b"eleven bytes", None).expect("put");
    store.create(12, "gone").expect("create");
    store.delete(12).expect("delete");
    let before = store.files();
    drop(store);

    let (store, report) = open_in(&dir, true);
    assert_eq!(
        report,
        RecoveryReport {
            files: 2,
            ..RecoveryReport::default()
        }
    );
    assert_eq!(store.files(), before);
    assert_eq!(store.read(10).expect("read"), b"0123456789");
    assert_eq!(store.read(11).expect("read"), b"eleven bytes");
    assert!(matches!(store.meta(12), Err(StoreError::NotFound(12))));
    // Header writes keep alternating slots correctly after a reopen.
    for _ in 0..3 {
        store.append(10, b"+", None).expect("append");
    }
    drop(store);
    let (store, _) = open_in(&dir, true);
    assert_eq!(store.read(10).expect("read"), b"0123456789+++");
    assert_eq!(store.meta(10).expect("meta").version, 4);
}

#[test]
fn lock_prevents_second_open() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    match Store::open(StoreConfig::new(dir.path())) {
        Err(StoreError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    open_in(&dir, false);
}

#[test]
fn recovery_removes_temp_files() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    drop(store);
    for name in ["0000000000000001.0.tmp", "junk"] {
        std::fs::write(dir.path().join("tmp").join(name), b"partial").expect("write temp");
    }
    let (store, report) = open_in(&dir, false);
    assert_eq!(report.temp_files_removed, 2);
    assert_eq!(report.files, 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp"))
            .expect("ls")
            .count(),
        0
    );
    assert_eq!(store.read(1).expect("read"), b"");
}

#[test]
fn recovery_truncates_torn_append() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"hello", None).expect("append");
    drop(store);
    let mut f = OpenOptions::new()
        .append(true)
        .open(data_path(&dir, 1))
        .expect("open data file");
    f.write_all(b" torn tail").expect("write tail");
    drop(f);

    let (store, report) = open_in(&dir, false);
    assert_eq!(report.torn_appends_truncated, 1);
    assert!(report.damaged.is_empty());
    assert_eq!(store.read(1).expect("read"), b"hello");
    assert_eq!(
        std::fs::metadata(data_path(&dir, 1)).expect("stat").len(),
        HEADER_SIZE + 5
    );
    assert!(store.verify(1).expect("verify"));
    store.append(1, b"!", None).expect("append after recovery");
    assert_eq!(store.read(1).expect("read"), b"hello!");
}

#[test]
fn recovery_reports_damaged_files() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    for id in 1..=3 {
        store.create(id, "f").expect("create");
        store.append(id, b"0123456789", None).expect("append");
    }
    // A put's content is synced before its header names it (no tail to roll back to).
    store.put(2, b"0123456789", None).expect("put");
    drop(store);
    // 1: both slots corrupted.
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 1))
        .expect("open");
    f.write_all_at(&[0xff; 16], 100).expect("corrupt A");
    f.write_all_at(&[0xff; 16], SLOT_SIZE as u64 + 100)
        .expect("corrupt B");
    // 2: content shorter than committed.
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 2))
        .expect("open");
    f.set_len(HEADER_SIZE + 4).expect("shorten");

    let (store, report) = open_in(&dir, false);
    assert_eq!(report.files, 1);
    let damaged: Vec<FileId> = report.damaged.iter().map(|(id, _)| *id).collect();
    assert_eq!(damaged, vec![1, 2]);
    assert!(
        report.damaged[0].1.contains("no valid header slot"),
        "{:?}",
        report.damaged
    );
    assert!(
        report.damaged[1].1.contains("committed"),
        "{:?}",
        report.damaged
    );
    assert_eq!(store.damaged(), report.damaged);
    for id in [1, 2] {
        assert!(matches!(store.meta(id), Err(StoreError::Corrupt { id: i, .. }) if i == id));
        assert!(matches!(
            store.snapshot(id),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.append(id, b"x", None),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.put(id, b"x", None),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.begin_put(id),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(store.verify(id), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            store.create(id, "x"),
            Err(StoreError::AlreadyExists(_))
        ));
    }
    let ids: Vec<FileId> = store.files().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![3]);
    // A damaged file can be deleted and then restored.
    store.delete(1).expect("delete damaged");
    store.create(1, "restored").expect("create");
    assert!(store.damaged().iter().all(|(id, _)| *id != 1));
}

#[test]
fn corrupt_newer_slot_falls_back_to_older() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create"); // slot A, seq 1, size 0
    store.append(1, b"abc", None).expect("append"); // slot B, seq 2, size 3
    drop(store);
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 1))
        .expect("open");
    f.write_all_at(b"garbage", SLOT_SIZE as u64 + 30)
        .expect("corrupt B");

    let (store, report) = open_in(&dir, false);
    assert!(report.damaged.is_empty());
    // Slot A says size 0, so the 3 bytes are an uncommitted tail now.
    assert_eq!(report.torn_appends_truncated, 1);
    let meta = store.meta(1).expect("meta");
    assert_eq!((meta.size, meta.version), (0, 0));
    // The next header write overwrites the broken slot B, and survives a reopen.
    store.append(1, b"xy", None).expect("append");
    drop(store);
    let (store, report) = open_in(&dir, false);
    assert_eq!(report.torn_appends_truncated, 0);
    assert_eq!(store.read(1).expect("read"), b"xy");
}

#[test]
fn an_append_whose_bytes_are_not_all_on_disk_is_rolled_back() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"hello", None).expect("append");
    store.append(1, b" world", None).expect("append");
    drop(store);
    // A crash before the sync: the header of the second append reached the disk, some of
    // its bytes did not.
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 1))
        .expect("open");
    f.write_all_at(b"\0\0\0", HEADER_SIZE + 7)
        .expect("lose bytes");
    drop(f);

    let (store, report) = open_in(&dir, false);
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.torn_appends_truncated, 1);
    let meta = store.meta(1).expect("meta");
    assert_eq!((meta.size, meta.version), (5, 1));
    assert_eq!(store.read(1).expect("read"), b"hello");
    assert!(store.verify(1).expect("verify"));
    // The unfinished slot was overwritten: writes go on, and survive a reopen.
    store.append(1, b"!", None).expect("append after recovery");
    drop(store);
    let (store, report) = open_in(&dir, false);
    assert_eq!(report.torn_appends_truncated, 0);
    assert_eq!(store.read(1).expect("read"), b"hello!");
    assert_eq!(store.meta(1).expect("meta").version, 2);
}

#[test]
fn an_append_cut_short_by_a_crash_is_rolled_back() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"abc", None).expect("append");
    store.append(1, b"defgh", None).expect("append");
    drop(store);
    // The file's new length did not reach the disk in full.
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 1))
        .expect("open");
    f.set_len(HEADER_SIZE + 5).expect("shorten");
    drop(f);

    let (store, report) = open_in(&dir, false);
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.torn_appends_truncated, 1);
    assert_eq!(store.read(1).expect("read"), b"abc");
    assert_eq!(
        std::fs::metadata(data_path(&dir, 1)).expect("stat").len(),
        HEADER_SIZE + 3
    );
}

#[test]
fn a_big_append_synced_before_its_header_is_never_rolled_back() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"abc", None).expect("append");
    let big = vec![7u8; TAIL_MAX as usize + 1];
    store.append(1, &big, None).expect("big append");
    drop(store);
    // Its bytes were synced before its header: losing them is damage, not a crash.
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 1))
        .expect("open");
    f.set_len(HEADER_SIZE + 10).expect("shorten");
    drop(f);

    let (store, report) = open_in(&dir, false);
    let damaged: Vec<FileId> = report.damaged.iter().map(|(id, _)| *id).collect();
    assert_eq!(damaged, vec![1]);
    assert!(matches!(store.meta(1), Err(StoreError::Corrupt { .. })));
}

#[test]
fn group_commit_and_per_file_sync_both_keep_appends() {
    for group_commit in [true, false] {
        let dir = TempDir::new().expect("tempdir");
        let config = StoreConfig {
            dir: dir.path().to_path_buf(),
            fsync: true,
            group_commit,
        };
        let (store, _) = Store::open(config.clone()).expect("open");
        let store = Arc::new(store);
        let threads: Vec<_> = (1..=4u64)
            .map(|id| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.create(id, "f").expect("create");
                    for i in 0..25u8 {
                        store.append(id, &[i; 100], None).expect("append");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        drop(store);
        let (store, report) = Store::open(config).expect("reopen");
        assert_eq!(report.torn_appends_truncated, 0);
        for id in 1..=4 {
            let meta = store.meta(id).expect("meta");
            assert_eq!(
                (meta.size, meta.version),
                (2500, 25),
                "group {group_commit}"
            );
        }
    }
}

#[test]
fn verify_detects_rot() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"precious data", None).expect("append");
    assert!(store.verify(1).expect("verify"));
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(&dir, 1))
        .expect("open");
    f.write_all_at(b"P", HEADER_SIZE).expect("flip");
    assert!(!store.verify(1).expect("verify"));
}

#[test]
fn snapshots_are_stable() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"old bytes", None).expect("append");

    let before_append = store.snapshot(1).expect("snapshot");
    store.append(1, b" and more", None).expect("append");
    let before_put = store.snapshot(1).expect("snapshot");
    store.put(1, b"brand new", None).expect("put");
    let before_delete = store.snapshot(1).expect("snapshot");
    store.delete(1).expect("delete");

    assert_eq!(before_append.read_all().expect("read"), b"old bytes");
    assert_eq!(before_append.meta().size, 9);
    assert_eq!(before_put.read_all().expect("read"), b"old bytes and more");
    assert_eq!(before_delete.read_all().expect("read"), b"brand new");
    assert_eq!(before_delete.meta().version, 3);

    let mut buf = [0u8; 4];
    assert_eq!(before_put.read_at(16, &mut buf).expect("read_at"), 2);
    assert_eq!(&buf[..2], b"re");
    assert_eq!(before_put.read_at(18, &mut buf).expect("read_at"), 0);
    assert_eq!(before_put.read_at(1000, &mut buf).expect("read_at"), 0);
}

#[test]
fn streaming_writes() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, true);
    store.create(1, "f").expect("create");
    store.append(1, b"head:", None).expect("append");

    let mut txn = store.begin_append(1).expect("begin");
    assert!(matches!(store.begin_append(1), Err(StoreError::Busy(1))));
    assert!(matches!(store.begin_put(1), Err(StoreError::Busy(1))));
    assert!(matches!(
        store.append(1, b"x", None),
        Err(StoreError::Busy(1))
    ));
    assert!(matches!(store.put(1, b"x", None), Err(StoreError::Busy(1))));
    assert!(matches!(store.delete(1), Err(StoreError::Busy(1))));
    // Other files are unaffected.
    store.create(2, "g").expect("create other");
    store.append(2, b"free", None).expect("append other");

    let mut expected = b"head:".to_vec();
    // Moved to another thread between chunks, as the node does with spawn_blocking.
    for chunk in [&b"one,"[..], b"two,", b"three"] {
        txn = std::thread::spawn(move || {
            txn.write(chunk).expect("write");
            txn
        })
        .join()
        .expect("thread");
        expected.extend_from_slice(chunk);
        // Uncommitted bytes are invisible.
        assert_eq!(store.read(1).expect("read"), b"head:");
    }
    let out = txn.commit(None).expect("commit");
    assert_eq!(out.size, expected.len() as u64);
    assert_eq!(out.checksum, crc32c::crc32c(&expected));
    assert_eq!(out.version, 2);
    assert_eq!(store.read(1).expect("read"), expected);

    let mut txn = store.begin_put(1).expect("begin put");
    txn.write(b"whole ").expect("write");
    txn.write(b"new body").expect("write");
    assert_eq!(txn.written(), 14);
    assert_eq!(store.read(1).expect("read"), expected);
    let out = txn.commit(key(1, 1)).expect("commit");
    assert_eq!((out.version, out.size), (3, 14));
    assert_eq!(out.checksum, crc32c::crc32c(b"whole new body"));
    assert_eq!(store.read(1).expect("read"), b"whole new body");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp"))
            .expect("ls")
            .count(),
        0
    );
    // The writer slot is free again.
    store.append(1, b".", None).expect("append after commit");
    drop(store);
    let (store, report) = open_in(&dir, true);
    assert_eq!(report.files, 2);
    assert_eq!(store.read(1).expect("read"), b"whole new body.");
}

#[test]
fn aborted_transactions_change_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"base", None).expect("append");
    let meta = store.meta(1).expect("meta");
    let len = || std::fs::metadata(data_path(&dir, 1)).expect("stat").len();

    let mut txn = store.begin_append(1).expect("begin");
    txn.write(&[7u8; 10_000]).expect("write");
    assert_eq!(len(), HEADER_SIZE + 4 + 10_000);
    drop(txn);
    assert_eq!(len(), HEADER_SIZE + 4);
    assert_eq!(store.meta(1).expect("meta"), meta);
    assert_eq!(store.read(1).expect("read"), b"base");

    let mut txn = store.begin_put(1).expect("begin put");
    txn.write(b"never visible").expect("write");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp"))
            .expect("ls")
            .count(),
        1
    );
    drop(txn);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp"))
            .expect("ls")
            .count(),
        0
    );
    assert_eq!(store.meta(1).expect("meta"), meta);
    assert_eq!(store.read(1).expect("read"), b"base");

    // Both released the writer slot.
    store.append(1, b"!", None).expect("append");
    drop(store);
    let (store, report) = open_in(&dir, false);
    assert_eq!(report.torn_appends_truncated, 0);
    assert_eq!(store.read(1).expect("read"), b"base!");
}

#[test]
fn concurrent_appends_to_one_file_all_apply() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "shared").expect("create");
    store.create(2, "other").expect("create");
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    store
                        .append(1, &[t; 3], key(u64::from(t), i))
                        .expect("append");
                    store.append(2, &[t], None).expect("append other");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let meta = store.meta(1).expect("meta");
    assert_eq!((meta.size, meta.version), (8 * 25 * 3, 200));
    let content = store.read(1).expect("read");
    assert_eq!(meta.checksum, crc32c::crc32c(&content));
    // Every 3-byte record is whole (appends never interleave).
    assert!(content.chunks(3).all(|c| c[0] == c[1] && c[1] == c[2]));
    assert_eq!(store.meta(2).expect("meta").size, 200);
}

#[derive(Debug, Clone)]
enum Op {
    Create(FileId),
    Append(FileId, Vec<u8>),
    Put(FileId, Vec<u8>),
    StreamAppend(FileId, Vec<u8>, bool),
    WriteAt(FileId, u64, Vec<u8>, bool),
    Truncate(FileId, u64, bool),
    Delete(FileId),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..4u64;
    let data = proptest::collection::vec(any::<u8>(), 0..48);
    prop_oneof![
        2 => id.clone().prop_map(Op::Create),
        4 => (id.clone(), data.clone()).prop_map(|(i, d)| Op::Append(i, d)),
        2 => (id.clone(), data.clone()).prop_map(|(i, d)| Op::Put(i, d)),
        2 => (id.clone(), data.clone(), any::<bool>()).prop_map(|(i, d, c)| Op::StreamAppend(i, d, c)),
        4 => (id.clone(), 0..80u64, data, any::<bool>())
            .prop_map(|(i, o, d, s)| Op::WriteAt(i, o, d, s)),
        2 => (id.clone(), 0..80u64, any::<bool>()).prop_map(|(i, n, s)| Op::Truncate(i, n, s)),
        1 => id.prop_map(Op::Delete),
        1 => Just(Op::Reopen),
    ]
}

fn check_model(store: &Store, model: &BTreeMap<FileId, Vec<u8>>) {
    let ids: Vec<FileId> = store.files().iter().map(|m| m.id).collect();
    assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
    for (id, content) in model {
        let meta = store.meta(*id).expect("meta");
        assert_eq!(meta.size, content.len() as u64);
        assert_eq!(meta.checksum, crc32c::crc32c(content));
        assert_eq!(&store.read(*id).expect("read"), content);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = TempDir::new().expect("tempdir");
        let (mut store, _) = open_in(&dir, false);
        let mut model: BTreeMap<FileId, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Create(id) => match store.create(id, &format!("file-{id}")) {
                    Ok(_) => prop_assert!(model.insert(id, Vec::new()).is_none()),
                    Err(StoreError::AlreadyExists(_)) => prop_assert!(model.contains_key(&id)),
                    Err(e) => panic!("create: {e}"),
                },
                Op::Append(id, data) => match store.append(id, &data, None) {
                    Ok(_) => model.get_mut(&id).expect("model has it").extend_from_slice(&data),
                    Err(StoreError::NotFound(_)) => prop_assert!(!model.contains_key(&id)),
                    Err(e) => panic!("append: {e}"),
                },
                Op::Put(id, data) => match store.put(id, &data, None) {
                    Ok(_) => *model.get_mut(&id).expect("model has it") = data,
                    Err(StoreError::NotFound(_)) => prop_assert!(!model.contains_key(&id)),
                    Err(e) => panic!("put: {e}"),
                },
                Op::StreamAppend(id, data, commit) => match store.begin_append(id) {
                    Ok(mut txn) => {
                        let (a, b) = data.split_at(data.len() / 2);
                        txn.write(a).expect("write");
                        txn.write(b).expect("write");
                        if commit {
                            txn.commit(None).expect("commit");
                            model.get_mut(&id).expect("model has it").extend_from_slice(&data);
                        }
                    }
                    Err(StoreError::NotFound(_)) => prop_assert!(!model.contains_key(&id)),
                    Err(e) => panic!("begin_append: {e}"),
                },
                // `snap`: a snapshot is open meanwhile (the write copies the file) and must
                // still read what it read before.
                Op::WriteAt(id, offset, data, snap) => {
                    let before = if snap { store.snapshot(id).ok() } else { None };
                    match store.write_at(id, offset, &data, None) {
                        Ok(o) => {
                            let m = model.get_mut(&id).expect("model has it");
                            if let Some(s) = before {
                                prop_assert_eq!(&s.read_all().expect("snapshot"), &*m);
                            }
                            *m = written_at(m, offset as usize, &data);
                            prop_assert_eq!(o.checksum, crc32c::crc32c(m));
                        }
                        Err(StoreError::NotFound(_)) => prop_assert!(!model.contains_key(&id)),
                        Err(e) => panic!("write_at: {e}"),
                    }
                }
                Op::Truncate(id, size, snap) => {
                    let before = if snap { store.snapshot(id).ok() } else { None };
                    match store.truncate(id, size, None) {
                        Ok(o) => {
                            let m = model.get_mut(&id).expect("model has it");
                            if let Some(s) = before {
                                prop_assert_eq!(&s.read_all().expect("snapshot"), &*m);
                            }
                            m.resize(size as usize, 0);
                            prop_assert_eq!(o.checksum, crc32c::crc32c(m));
                        }
                        Err(StoreError::NotFound(_)) => prop_assert!(!model.contains_key(&id)),
                        Err(e) => panic!("truncate: {e}"),
                    }
                }
                Op::Delete(id) => match store.delete(id) {
                    Ok(()) => prop_assert!(model.remove(&id).is_some()),
                    Err(StoreError::NotFound(_)) => prop_assert!(!model.contains_key(&id)),
                    Err(e) => panic!("delete: {e}"),
                },
                Op::Reopen => {
                    drop(store);
                    let (s, report) = open_in(&dir, false);
                    prop_assert!(report.damaged.is_empty());
                    prop_assert_eq!(report.torn_appends_truncated, 0);
                    prop_assert_eq!(report.files, model.len());
                    store = s;
                }
            }
            check_model(&store, &model);
        }
        for id in model.keys() {
            prop_assert!(store.verify(*id).expect("verify"));
        }
    }
}

#[test]
fn install_copies_content_version_and_dedup_table() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, true);
    let key = DedupKey {
        client_id: 7,
        seq: 1,
    };
    store.create(1, "source").expect("create");
    store.append(1, b"hello ", Some(key)).expect("append");
    let source = store.append(1, b"world", None).expect("append");
    let dedup = store.dedup_entries(1).expect("dedup entries");
    assert_eq!(dedup.len(), 1);

    // Into a file that does not exist yet, in two chunks.
    let mut txn = store.begin_install(2, "copy").expect("begin install");
    txn.write(b"hello ").expect("write");
    txn.write(b"world").expect("write");
    let state = InstallState {
        version: source.version,
        modified_ms: 42,
        dedup: dedup.clone(),
    };
    let meta = store
        .begin_install(2, "copy")
        .map(|_| ())
        .expect_err("a second install while one is open");
    assert!(matches!(meta, StoreError::Busy(2)), "one writer at a time");
    let meta = txn.commit_install(state.clone()).expect("commit install");
    assert_eq!((meta.version, meta.size), (2, 11));
    assert_eq!(meta.checksum, source.checksum);
    assert_eq!(meta.modified_ms, 42);
    assert_eq!(store.read(2).expect("read"), b"hello world");
    // The copied dedup table answers the retry of the write it remembers.
    let retry = store.append(2, b"hello ", Some(key)).expect("append");
    assert!(retry.duplicate);
    assert_eq!(retry.version, 1);

    // Over an existing file, replacing whatever it held; survives a reopen.
    let mut txn = store.begin_install(2, "copy").expect("begin install");
    txn.write(b"older").expect("write");
    let state = InstallState {
        version: 1,
        ..state
    };
    assert_eq!(
        txn.commit_install(state).expect("commit install").version,
        1
    );
    drop(store);
    let (store, _) = open_in(&dir, true);
    assert_eq!(store.read(2).expect("read"), b"older");
    assert_eq!(store.meta(2).expect("meta").version, 1);
}

// ---- writes at an offset and truncations ----

/// `content` with `data` written at `offset` (zeros fill a gap), as `write_at` must leave it.
fn written_at(content: &[u8], offset: usize, data: &[u8]) -> Vec<u8> {
    let mut out = content.to_vec();
    if data.is_empty() {
        return out;
    }
    if out.len() < offset + data.len() {
        out.resize(offset + data.len(), 0);
    }
    out[offset..offset + data.len()].copy_from_slice(data);
    out
}

fn assert_content(store: &Store, id: FileId, want: &[u8]) {
    let meta = store.meta(id).expect("meta");
    assert_eq!(meta.size, want.len() as u64);
    assert_eq!(meta.checksum, crc32c::crc32c(want), "recorded checksum");
    assert_eq!(store.read(id).expect("read"), want);
    assert!(store.verify(id).expect("verify"));
}

#[test]
fn write_at_in_the_middle_across_the_end_and_past_it() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, true);
    store.create(1, "f").expect("create");
    store.append(1, b"hello world", None).expect("append");
    let o = store.write_at(1, 6, b"WORLD", None).expect("middle");
    assert_eq!((o.version, o.size), (2, 11));
    assert_content(&store, 1, b"hello WORLD");
    let o = store.write_at(1, 9, b"LDS!", None).expect("across the end");
    assert_eq!((o.version, o.size), (3, 13));
    assert_content(&store, 1, b"hello WORLDS!");
    let o = store.write_at(1, 16, b"xy", None).expect("past the end");
    assert_eq!((o.version, o.size), (4, 18));
    assert_content(&store, 1, b"hello WORLDS!\0\0\0xy");
    let o = store.write_at(1, 0, b"", None).expect("empty");
    assert_eq!((o.version, o.size), (5, 18));
    assert_eq!(o.checksum, crc32c::crc32c(b"hello WORLDS!\0\0\0xy"));
    // Everything survives a reopen, with nothing to recover.
    drop(store);
    let (store, report) = open_in(&dir, true);
    assert_eq!(report.torn_appends_truncated, 0);
    assert!(report.damaged.is_empty());
    assert_content(&store, 1, b"hello WORLDS!\0\0\0xy");
    assert_eq!(store.meta(1).expect("meta").version, 5);
    assert_eq!(
        std::fs::metadata(data_path(&dir, 1)).expect("stat").len(),
        HEADER_SIZE + 18,
        "the staging area is cut off"
    );
}

#[test]
fn truncate_down_up_and_to_zero() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, true);
    store.create(1, "f").expect("create");
    store.append(1, b"0123456789", None).expect("append");
    let o = store.truncate(1, 4, None).expect("down");
    assert_eq!((o.version, o.size), (2, 4));
    assert_content(&store, 1, b"0123");
    let o = store.truncate(1, 7, None).expect("up");
    assert_eq!((o.version, o.size), (3, 7));
    assert_content(&store, 1, b"0123\0\0\0");
    let o = store.truncate(1, 7, None).expect("same");
    assert_eq!((o.version, o.size), (4, 7));
    let o = store.truncate(1, 0, None).expect("zero");
    assert_eq!((o.version, o.size, o.checksum), (5, 0, 0));
    assert_content(&store, 1, b"");
    // A large extension is a hole, and its checksum needs no reading.
    store.truncate(1, 3 << 20, None).expect("big extension");
    assert_content(&store, 1, &vec![0u8; 3 << 20]);
    drop(store);
    let (store, report) = open_in(&dir, true);
    assert!(report.damaged.is_empty());
    assert_content(&store, 1, &vec![0u8; 3 << 20]);
}

#[test]
fn write_at_and_truncate_refuse_what_they_must() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    assert!(matches!(
        store.write_at(9, 0, b"x", None),
        Err(StoreError::NotFound(9))
    ));
    assert!(matches!(
        store.truncate(9, 0, None),
        Err(StoreError::NotFound(9))
    ));
    store.create(1, "f").expect("create");
    assert!(matches!(
        store.write_at(1, u64::MAX, b"xy", None),
        Err(StoreError::OutOfRange(_))
    ));
    // Offsets and sizes past the largest file, where a position in the data file would
    // overflow: refused, nothing changed.
    for offset in [u64::MAX - 1, FILE_SIZE_MAX] {
        assert!(matches!(
            store.write_at(1, offset, b"x", None),
            Err(StoreError::OutOfRange(_))
        ));
    }
    for size in [u64::MAX, FILE_SIZE_MAX + 1] {
        assert!(matches!(
            store.truncate(1, size, None),
            Err(StoreError::OutOfRange(_))
        ));
    }
    assert_eq!(store.meta(1).expect("meta").size, 0);
    let too_big = vec![0u8; WRITE_AT_MAX as usize + 1];
    assert!(matches!(
        store.write_at(1, 0, &too_big, None),
        Err(StoreError::OutOfRange(_))
    ));
    let txn = store.begin_append(1).expect("begin");
    assert!(matches!(
        store.write_at(1, 0, b"x", None),
        Err(StoreError::Busy(1))
    ));
    assert!(matches!(
        store.truncate(1, 0, None),
        Err(StoreError::Busy(1))
    ));
    drop(txn);
    assert_content(&store, 1, b"");
}

#[test]
fn write_at_and_truncate_apply_once_per_key() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"aaaa", None).expect("append");
    let first = store.write_at(1, 1, b"b", key(7, 1)).expect("write");
    let again = store.write_at(1, 1, b"c", key(7, 1)).expect("retry");
    assert!(again.duplicate);
    assert_eq!((again.version, again.size), (first.version, first.size));
    let cut = store.truncate(1, 2, key(7, 2)).expect("truncate");
    store.append(1, b"zz", None).expect("append");
    let again = store.truncate(1, 2, key(7, 2)).expect("retry");
    assert!(again.duplicate);
    assert_eq!(again.version, cut.version);
    assert_content(&store, 1, b"abzz");
}

#[test]
fn snapshots_are_stable_across_writes_at_an_offset_and_truncations() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, true);
    store.create(1, "f").expect("create");
    store.append(1, b"abcdefgh", None).expect("append");
    let before = store.snapshot(1).expect("snapshot");
    store.write_at(1, 2, b"XY", None).expect("write");
    let middle = store.snapshot(1).expect("snapshot");
    store.truncate(1, 3, None).expect("truncate");
    store.append(1, b"123456", None).expect("append");
    assert_eq!(before.read_all().expect("read"), b"abcdefgh");
    assert_eq!(middle.read_all().expect("read"), b"abXYefgh");
    drop((before, middle));
    assert_content(&store, 1, b"abX123456");
    // With no snapshot open the write goes in place (the inode stays).
    let ino = |d: &TempDir| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(data_path(d, 1)).expect("stat"))
    };
    let inode = ino(&dir);
    store.write_at(1, 0, b"__", None).expect("write");
    store.truncate(1, 4, None).expect("truncate");
    assert_eq!(ino(&dir), inode);
    assert_content(&store, 1, b"__X1");
}

/// Runs an in-place write of `new` at 2 into "0123456789" that stops after `step` (as if
/// the process died there), lets `damage` change the disk as a power loss might, reopens,
/// and returns what the store holds then (it must be a whole version: checked).
fn crash_during_write_at(step: u8, damage: impl FnOnce(&Path)) -> (Vec<u8>, u64) {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open_in(&dir, false);
    store.create(1, "f").expect("create");
    store.append(1, b"0123456789", None).expect("append");
    inplace::CRASH_AFTER.set(step);
    let result = store.write_at(1, 2, b"abcdef", key(3, 4));
    inplace::CRASH_AFTER.set(0);
    assert!(result.is_err(), "the write stopped after step {step}");
    drop(store);
    damage(&data_path(&dir, 1));
    let (store, report) = open_in(&dir, false);
    assert!(
        report.damaged.is_empty(),
        "step {step}: {:?}",
        report.damaged
    );
    let content = store.read(1).expect("read");
    let meta = store.meta(1).expect("meta");
    assert_eq!(
        meta.checksum,
        crc32c::crc32c(&content),
        "step {step}: checksum"
    );
    assert!(store.verify(1).expect("verify"));
    assert_eq!(
        std::fs::metadata(data_path(&dir, 1)).expect("stat").len(),
        HEADER_SIZE + content.len() as u64,
        "step {step}: nothing left past the size"
    );
    // The dedup entry went with the write: a retry is answered iff it applied.
    let retry = store.write_at(1, 2, b"abcdef", key(3, 4)).expect("retry");
    assert_eq!(retry.duplicate, meta.version == 2, "step {step}: dedup");
    // And the file takes further writes that survive a reopen.
    store
        .write_at(1, 0, b"Z", None)
        .expect("write after recovery");
    drop(store);
    let (store, report) = open_in(&dir, false);
    assert!(report.damaged.is_empty());
    // The retry applied the write if the crash lost it: the new content either way.
    assert_eq!(store.read(1).expect("read"), b"Z1abcdef89", "step {step}");
    (content, meta.version)
}

#[test]
fn a_crash_at_every_step_of_an_in_place_write_leaves_old_or_new() {
    let old = b"0123456789".to_vec();
    let new = b"01abcdef89".to_vec();
    let nothing = |_: &Path| {};
    // 1: staged only; 2: the redo slot is written; 3: half copied; 4: copied and synced;
    // 5: the clean slot is written, the staging area not cut yet.
    let expected = [
        (1, &old, 1),
        (2, &new, 2),
        (3, &new, 2),
        (4, &new, 2),
        (5, &new, 2),
    ];
    for (step, want, version) in expected {
        let (got, v) = crash_during_write_at(step, nothing);
        assert_eq!((&got, v), (want, version), "crash after step {step}");
    }
    // A power loss before the redo slot's sync completed: the slot is there, some staged
    // bytes are not. Nothing was copied in place yet: the old file.
    let (got, v) = crash_during_write_at(2, |path| {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.write_all_at(b"\0\0", HEADER_SIZE + 10 + 3)
            .expect("lose staged bytes");
    });
    assert_eq!((got, v), (old.clone(), 1));
    // The staging area cut short (its length did not reach the disk): the old file.
    let (got, v) = crash_during_write_at(2, |path| {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.set_len(HEADER_SIZE + 12).expect("cut");
    });
    assert_eq!((got, v), (old.clone(), 1));
    // The redo slot (A: the create wrote A, the append B) torn: the old file (the copy
    // starts only after its sync).
    let (got, v) = crash_during_write_at(2, |path| {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.write_all_at(&[0xff; 16], 100).expect("tear the slot");
    });
    assert_eq!((got, v), (old.clone(), 1));
    // The clean slot (B) torn after the copy: the redo is replayed.
    let (got, v) = crash_during_write_at(5, |path| {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.write_all_at(&[0xff; 16], (SLOT_SIZE + 100) as u64)
            .expect("tear the slot");
    });
    assert_eq!((got, v), (new.clone(), 2));
}

#[test]
fn a_crash_during_a_truncation_leaves_old_or_new() {
    for tear in [false, true] {
        let dir = TempDir::new().expect("tempdir");
        let (store, _) = open_in(&dir, false);
        store.create(1, "f").expect("create");
        store.append(1, b"0123456789", None).expect("append");
        store.truncate(1, 4, None).expect("truncate");
        drop(store);
        let f = OpenOptions::new()
            .write(true)
            .open(data_path(&dir, 1))
            .expect("open");
        // Before the cut reached the disk...
        f.write_all_at(b"0123456789", HEADER_SIZE).expect("uncut");
        if tear {
            // ... and before the new slot (B: the append used A... the create A, the
            // append B, the truncation A) did.
            f.write_all_at(&[0xff; 16], 100).expect("tear");
        }
        drop(f);
        let (store, report) = open_in(&dir, false);
        assert!(report.damaged.is_empty());
        let want: &[u8] = if tear { b"0123456789" } else { b"0123" };
        assert_content(&store, 1, want);
    }
}

/// A tmpfs of a fixed size (root only), unmounted on drop. Mounted with mount(2) from this
/// process, not by a `mount` child: a child holds every open file of this process between
/// its fork and its exec, the LOCK of a store another test just dropped included, which
/// that test's reopen would then find locked.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let data = std::ffi::CString::new(format!("size={size}")).map_err(|e| e.to_string())?;
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| format!("mount -t tmpfs on {}: {e}", path.display()))?;
        Ok(Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Waits until `cond` holds, for at most 10 seconds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_write_on_a_full_disk_waits_for_the_space_a_delete_freed() {
    let dir = TempDir::new().expect("tempdir");
    let _tmpfs = match Tmpfs::mount(dir.path(), "1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: a small tmpfs cannot be mounted here (needs root): {why}");
            return;
        }
    };
    let (store, _) = open_in(&dir, true);
    let big = vec![7u8; 600 << 10];
    store.create(1, "big").expect("create");
    store.create(2, "next").expect("create");
    store
        .put(1, &big, None)
        .expect("put fills most of the disk");
    // With nothing deleted, the second file does not fit.
    let err = store.append(2, &big, None).expect_err("a full disk");
    assert!(err.is_no_space(), "{err}");
    assert_eq!(store.meta(2).expect("meta").size, 0);

    // The reaper is held back: the deleted file's blocks stay in use until it unlinks it.
    let paused = store.inner.reaper.pause();
    store.delete(1).expect("delete");
    assert_eq!(store.inner.reaper.backlog(), (1, 0));
    let writer = {
        let store = store.clone();
        let big = big.clone();
        std::thread::spawn(move || store.append(2, &big, None))
    };
    wait_until("the append waits for the reaper", || {
        store.inner.reaper.backlog() == (1, 1)
    });
    drop(paused);
    let outcome = writer
        .join()
        .expect("writer thread")
        .expect("the append fits once the deleted file is unlinked");
    assert_eq!(outcome.size, big.len() as u64);
    assert_eq!(store.read(2).expect("read"), big);
    assert_eq!(store.inner.reaper.backlog(), (0, 0));
}
