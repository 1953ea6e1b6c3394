//! Lock leases and conditional writes on one engine: grants, waits, expiry, fencing,
//! compare-and-set, and exactly-once lock requests.

use std::time::Duration;

use dfs_proto::{Condition, ErrorCode, LockMode};

use crate::test::{engine, read_all, tag};
use crate::*;

const LONG: u64 = 60_000;

fn put(data: &'static str) -> BodyStream {
    BodyStream::from_bytes(data)
}

#[tokio::test]
async fn an_exclusive_lock_excludes_until_released_and_tokens_grow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let a = e
        .lock("f", LockMode::Exclusive, LONG, Duration::ZERO, tag(1))
        .await
        .expect("granted");
    for mode in [LockMode::Exclusive, LockMode::Shared] {
        let err = e
            .lock("f", mode, LONG, Duration::ZERO, tag(2))
            .await
            .expect_err("held");
        assert_eq!(err.code(), ErrorCode::LockHeld, "{err}");
    }
    // Another name is independent.
    e.lock("g", LockMode::Exclusive, LONG, Duration::ZERO, tag(3))
        .await
        .expect("other name");
    e.unlock(a.lease, tag(4)).await.expect("unlock");
    let err = e.unlock(a.lease, tag(5)).await.expect_err("gone");
    assert_eq!(err.code(), ErrorCode::LeaseExpired);
    let b = e
        .lock("f", LockMode::Exclusive, LONG, Duration::ZERO, tag(6))
        .await
        .expect("free again");
    assert!(b.token > a.token, "{} after {}", b.token, a.token);
    assert_ne!(b.lease, a.lease);
}

#[tokio::test]
async fn shared_locks_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let a = e
        .lock("f", LockMode::Shared, LONG, Duration::ZERO, tag(1))
        .await
        .expect("first");
    let b = e
        .lock("f", LockMode::Shared, LONG, Duration::ZERO, tag(2))
        .await
        .expect("second shares");
    let err = e
        .lock("f", LockMode::Exclusive, LONG, Duration::ZERO, tag(3))
        .await
        .expect_err("held shared");
    assert_eq!(err.code(), ErrorCode::LockHeld);
    // Both shared holders' tokens are good for writes.
    for (i, t) in [a.token, b.token].into_iter().enumerate() {
        e.write(
            WriteMode::Append,
            "f",
            put("x"),
            tag(10 + i as u64),
            Condition::fenced(t),
        )
        .await
        .expect("shared holder writes");
    }
}

#[tokio::test]
async fn a_retried_lock_request_gets_its_first_grant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let first = e
        .lock("f", LockMode::Exclusive, LONG, Duration::ZERO, tag(1))
        .await
        .expect("granted");
    let retry = e
        .lock("f", LockMode::Exclusive, LONG, Duration::ZERO, tag(1))
        .await
        .expect("the retry is answered the grant, not refused as held");
    assert_eq!(retry, first);
}

#[tokio::test]
async fn a_waiting_lock_is_granted_once_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let a = e
        .lock("f", LockMode::Exclusive, LONG, Duration::ZERO, tag(1))
        .await
        .expect("granted");
    let waiter = {
        let e = e.clone();
        tokio::spawn(async move {
            e.lock(
                "f",
                LockMode::Exclusive,
                LONG,
                Duration::from_secs(30),
                tag(2),
            )
            .await
        })
    };
    e.unlock(a.lease, tag(3)).await.expect("unlock");
    let b = waiter
        .await
        .expect("joins")
        .expect("granted after the release");
    assert!(b.token > a.token);
}

#[tokio::test]
async fn a_lease_not_renewed_lapses_and_its_token_is_fenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    // A holds the lock with a short ttl and writes with its token.
    let a = e
        .lock("counter", LockMode::Exclusive, 300, Duration::ZERO, tag(1))
        .await
        .expect("granted");
    e.write(
        WriteMode::Put,
        "counter",
        put("1"),
        tag(2),
        Condition::fenced(a.token),
    )
    .await
    .expect("A writes while it holds the lock");
    // A pauses (renews nothing); B waits for the lock and gets it once A's lease lapses.
    let b = e
        .lock(
            "counter",
            LockMode::Exclusive,
            LONG,
            Duration::from_secs(30),
            tag(3),
        )
        .await
        .expect("granted after A's ttl");
    assert!(b.token > a.token);
    let err = e
        .renew(a.lease, tag(4))
        .await
        .expect_err("A's lease is gone");
    assert_eq!(err.code(), ErrorCode::LeaseExpired);
    e.write(
        WriteMode::Put,
        "counter",
        put("2"),
        tag(5),
        Condition::fenced(b.token),
    )
    .await
    .expect("B writes");
    // A wakes and writes with its old token: refused, nothing changed.
    let err = e
        .write(
            WriteMode::Put,
            "counter",
            put("A was here"),
            tag(6),
            Condition::fenced(a.token),
        )
        .await
        .expect_err("A's token is stale");
    assert_eq!(err.code(), ErrorCode::Fenced, "{err}");
    let err = e
        .delete("counter", tag(7), Condition::fenced(a.token))
        .await
        .expect_err("A's delete is fenced too");
    assert_eq!(err.code(), ErrorCode::Fenced, "{err}");
    assert_eq!(read_all(&e, "counter").await, b"2");
    // A token never granted is not taken for a current one.
    let err = e
        .write(
            WriteMode::Append,
            "counter",
            put("?"),
            tag(8),
            Condition::fenced(b.token + 1000),
        )
        .await
        .expect_err("unknown token");
    assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
}

#[tokio::test]
async fn writes_and_deletes_compare_and_set_on_the_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    // Version 0 matches a missing file: create-if-absent.
    let ack = e
        .write(
            WriteMode::Put,
            "f",
            put("a"),
            tag(1),
            Condition::if_version(0),
        )
        .await
        .expect("absent");
    assert_eq!(ack.version, 1);
    let err = e
        .write(
            WriteMode::Put,
            "f",
            put("b"),
            tag(2),
            Condition::if_version(0),
        )
        .await
        .expect_err("exists now");
    assert_eq!(err.code(), ErrorCode::VersionMismatch, "{err}");
    e.write(
        WriteMode::Put,
        "f",
        put("b"),
        tag(3),
        Condition::if_version(1),
    )
    .await
    .expect("at version 1");
    // A retry of that applied write is answered, not refused for the version it moved.
    let again = e
        .write(
            WriteMode::Put,
            "f",
            put("b"),
            tag(3),
            Condition::if_version(1),
        )
        .await
        .expect("duplicate answered");
    assert!(again.duplicate);
    let err = e
        .write(
            WriteMode::Append,
            "f",
            put("c"),
            tag(4),
            Condition::if_version(1),
        )
        .await
        .expect_err("stale version");
    assert_eq!(err.code(), ErrorCode::VersionMismatch);
    let err = e
        .delete("f", tag(5), Condition::if_version(1))
        .await
        .expect_err("stale version");
    assert_eq!(err.code(), ErrorCode::VersionMismatch);
    assert_eq!(read_all(&e, "f").await, b"b");
    e.delete("f", tag(6), Condition::if_version(2))
        .await
        .expect("delete at version 2");
    let err = e
        .write(
            WriteMode::Put,
            "g",
            put("x"),
            tag(7),
            Condition::if_version(3),
        )
        .await
        .expect_err("no such version of a missing file");
    assert_eq!(err.code(), ErrorCode::VersionMismatch);
    let err = e
        .stat("g")
        .await
        .expect_err("the refused write left no file");
    assert_eq!(err.code(), ErrorCode::NotFound);
}
