//! The per-file locks, proven on the engine's own paths (issue 5, "Lock manager, proven").
//!
//! `LockManager`'s unit tests (`dfs-store`, `lock.rs`) show the locks in isolation; these
//! show that the operations clients call take them as they should: reads share their file's
//! lock, writes and deletes wait for what holds it, a waiting write is not overtaken by
//! later reads, and different files never wait on each other (which one global lock for
//! every file would break).
//!
//! An engine read holds its file's shared lock only while it takes its snapshot, so an
//! in-flight read is stood in for by a guard of `engine.locks` that the test holds. An
//! in-flight write is a real one whose streamed body has not ended: a write holds its file's
//! exclusive lock until the last chunk is in.
//!
//! "Must complete" is checked against a generous deadline ([`DEADLINE`]), never a speed.
//! "Must not complete" is checked while what it waits for is still held, after the waiter
//! has been seen to wait at the lock (new readers are refused) and every other task has
//! run ([`let_others_run`]); where a wait cannot be seen, it is given [`GRACE`] to go
//! wrongly ahead. Only a missing wait can make such a check fail, however slow the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dfs_proto::WriteAck;
use futures::future::join_all;
use tokio::task::{JoinHandle, yield_now};
use tokio::time::timeout;

use crate::test::{engine, read_all};
use crate::*;

/// The bound on anything that must complete: far above what it takes on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long an operation that must wait is given to (wrongly) go ahead when its waiting
/// cannot be seen. Only a missing wait can fail a check after it; a slow machine can only
/// hide one.
const GRACE: Duration = Duration::from_millis(300);

/// Lets every other task run for a while (on a current-thread runtime, each spawned task
/// runs until it waits for something).
async fn let_others_run() {
    for _ in 0..100 {
        yield_now().await;
    }
}

/// Gives `task`, a write or delete of `name`, time to reach the file's lock: returns once
/// new readers are refused (a writer holds the lock or is queued for it: the locks are fair,
/// later readers wait behind a queued writer), once `task` has finished (the caller's checks
/// then say what went wrong), or at the latest after [`GRACE`].
async fn until_at_the_lock<T>(e: &Engine, name: &str, task: &JoinHandle<T>) {
    let _ = timeout(GRACE, async {
        while !task.is_finished() && e.locks.try_read(name.to_owned()).is_some() {
            yield_now().await;
        }
    })
    .await;
}

/// A read of `name` in flight: a guard of its shared lock, as an engine read holds while it
/// takes its snapshot.
async fn read_in_flight(e: &Engine, name: &str) -> dfs_store::ReadGuard<String> {
    timeout(DEADLINE, e.locks.read(name.to_owned()))
        .await
        .unwrap_or_else(|_| panic!("the shared lock of {name:?} was not granted"))
}

/// `task`'s result, which must come before the deadline.
async fn finishes<T>(task: JoinHandle<T>, what: &str) -> T {
    timeout(DEADLINE, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not complete"))
        .unwrap_or_else(|e| panic!("{what}: the task failed: {e}"))
}

async fn put(e: &Engine, name: &str, data: &'static str) -> WriteAck {
    e.write(
        WriteMode::Put,
        name,
        BodyStream::from_bytes(data),
        None,
        Default::default(),
    )
    .await
    .expect("put")
}

fn spawn_write(
    e: &Arc<Engine>,
    mode: WriteMode,
    name: &str,
    body: BodyStream,
) -> JoinHandle<Result<WriteAck, EngineError>> {
    let (e, name) = (e.clone(), name.to_owned());
    tokio::spawn(async move { e.write(mode, &name, body, None, Default::default()).await })
}

fn spawn_delete(e: &Arc<Engine>, name: &str) -> JoinHandle<Result<(), EngineError>> {
    let (e, name) = (e.clone(), name.to_owned());
    tokio::spawn(async move { e.delete(&name, None, Default::default()).await })
}

/// An append to `name` in flight: it holds the file's exclusive lock (checked) until the
/// returned sender sends the body's last chunk.
async fn write_in_flight(
    e: &Arc<Engine>,
    name: &str,
    first: &'static str,
) -> (JoinHandle<Result<WriteAck, EngineError>>, BodyTx) {
    let (body, tx) = BodyStream::streaming(Bytes::from_static(first.as_bytes()));
    let write = spawn_write(e, WriteMode::Append, name, body);
    until_at_the_lock(e, name, &write).await;
    // Nobody else uses the lock: refused readers mean the write holds it.
    assert!(
        !write.is_finished() && e.locks.try_read(name.to_owned()).is_none(),
        "the write of {name:?} holds its lock while its body streams in"
    );
    (write, tx)
}

/// The version and size of this node's copy of `name`, from the store (no lock taken).
fn stored(e: &Engine, name: &str) -> (u64, u64) {
    let id = e.map().lookup(name).expect("in the map").file_id;
    let meta = e.store().meta(id).expect("stored");
    (meta.version, meta.size)
}

/// Engine reads of a file go ahead together, while another read of it holds its shared lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_one_file_proceed_together() {
    const READS: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    put(&e, "f", "shared").await;
    let in_flight = read_in_flight(&e, "f").await;
    let reads = (0..READS).map(|_| {
        let e = e.clone();
        tokio::spawn(async move { read_all(&e, "f").await })
    });
    let results = timeout(DEADLINE, join_all(reads))
        .await
        .expect("engine reads complete while another read of the file holds its lock");
    for bytes in results {
        assert_eq!(bytes.expect("read task"), b"shared");
    }
    drop(in_flight);
}

/// A write waits until every read of its file in flight is done, and then completes.
#[tokio::test]
async fn a_write_waits_for_in_flight_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    let before = put(&e, "f", "old").await;
    let first = read_in_flight(&e, "f").await;
    let second = read_in_flight(&e, "f").await;

    let write = spawn_write(&e, WriteMode::Put, "f", BodyStream::from_bytes("new"));
    until_at_the_lock(&e, "f", &write).await;
    let_others_run().await;
    assert!(!write.is_finished(), "the write went ahead of two reads");
    assert_eq!(stored(&e, "f"), (before.version, 3), "nothing written yet");

    drop(first);
    let_others_run().await;
    assert!(!write.is_finished(), "the write went ahead of a read");
    assert_eq!(stored(&e, "f"), (before.version, 3), "nothing written yet");

    drop(second);
    let ack = finishes(write, "the write, once the reads are done")
        .await
        .expect("write");
    assert_eq!(ack.version, before.version + 1);
    assert_eq!(read_all(&e, "f").await, b"new");
}

/// A delete waits for a read of its file in flight, and for a write of it in flight.
#[tokio::test]
async fn a_delete_waits_for_in_flight_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;

    // A read in flight.
    put(&e, "read", "r").await;
    let read = read_in_flight(&e, "read").await;
    let delete = spawn_delete(&e, "read");
    until_at_the_lock(&e, "read", &delete).await;
    let_others_run().await;
    assert!(!delete.is_finished(), "the delete went ahead of a read");
    assert!(e.map().lookup("read").is_some(), "deleted under a read");
    drop(read);
    finishes(delete, "the delete, once the read is done")
        .await
        .expect("delete");
    assert!(e.map().lookup("read").is_none());

    // A write in flight (its body still streaming in).
    put(&e, "written", "old").await;
    let (write, body) = write_in_flight(&e, "written", "+new").await;
    let mut delete = spawn_delete(&e, "written");
    // Readers are refused whether or not the delete waits behind the write: give it a while.
    let_others_run().await;
    let early = timeout(GRACE, &mut delete).await;
    assert!(
        early.is_err(),
        "the delete went ahead of a write: {early:?}"
    );
    assert!(e.map().lookup("written").is_some(), "deleted under a write");
    body.send((Bytes::from_static(b"!"), true))
        .await
        .expect("the write takes its last chunk");
    let ack = finishes(write, "the write").await.expect("write");
    assert_eq!(ack.size, 8, "the whole write landed before the delete");
    finishes(delete, "the delete, once the write is done")
        .await
        .expect("delete");
    assert!(e.map().lookup("written").is_none());
}

/// Reads that keep coming do not keep a write out: once the write waits, later reads wait
/// behind it (none of them goes first), and it completes while they keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_readers_does_not_starve_a_writer() {
    const READERS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    put(&e, "f", "old").await;
    let in_flight = read_in_flight(&e, "f").await;
    let write = spawn_write(&e, WriteMode::Put, "f", BodyStream::from_bytes("new"));
    until_at_the_lock(&e, "f", &write).await;

    // From now on, engine reads of the file one after another, in several tasks at once.
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<Vec<u8>>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (e, seen, stop) = (e.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let bytes = read_all(&e, "f").await;
                    seen.lock().push(bytes);
                }
            })
        })
        .collect();
    let_others_run().await;
    assert!(
        seen.lock().is_empty(),
        "reads that came after the waiting write went first"
    );

    drop(in_flight);
    finishes(write, "the write, with reads still coming")
        .await
        .expect("write");
    // The readers were still at it: each gets through a few more reads.
    timeout(DEADLINE, async {
        while seen.lock().len() < 2 * READERS {
            yield_now().await;
        }
    })
    .await
    .expect("the reads go on after the write");
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        finishes(reader, "a reader").await;
    }
    let seen = seen.lock();
    assert!(
        seen.iter().all(|bytes| bytes == b"new"),
        "a read that came after the waiting write saw the file before it"
    );
}

/// While one file's exclusive lock is held (a write of it in flight), a write, a read and a
/// delete of another file complete.
#[tokio::test]
async fn operations_on_different_files_never_wait_on_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path()).await;
    put(&e, "a", "a").await;
    let (write_a, body_a) = write_in_flight(&e, "a", "+1").await;

    let ack = timeout(DEADLINE, put(&e, "b", "b"))
        .await
        .expect("a write of b while a is locked");
    assert_eq!(ack.size, 1);
    let bytes = timeout(DEADLINE, read_all(&e, "b"))
        .await
        .expect("a read of b while a is locked");
    assert_eq!(bytes, b"b");
    timeout(DEADLINE, e.delete("b", None, Default::default()))
        .await
        .expect("a delete of b while a is locked")
        .expect("delete");
    assert!(e.map().lookup("b").is_none());

    assert!(
        !write_a.is_finished() && e.locks.try_read("a".to_owned()).is_none(),
        "a stayed locked throughout"
    );
    body_a
        .send((Bytes::from_static(b"+2"), true))
        .await
        .expect("the write takes its last chunk");
    finishes(write_a, "the write of a").await.expect("write");
    assert_eq!(read_all(&e, "a").await, b"a+1+2");
}
