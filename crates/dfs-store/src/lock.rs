//! Per-key reader/writer locks: [`LockManager`].
//!
//! Reads of one key share, a write (or delete) excludes, different keys never wait for each
//! other. Each key's lock is a `tokio::sync::RwLock`, which is fair (FIFO): once a writer queues,
//! readers that arrive after it wait behind it, so a stream of readers cannot starve writers.
//! A key's entry exists only while some guard or waiter uses it, so memory is bounded by the keys
//! in use.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// One key's lock and how many guards and waiters use it.
struct Slot {
    lock: Arc<RwLock<()>>,
    users: usize,
}

type Table<K> = Mutex<HashMap<K, Slot>>;

/// Per-key reader/writer locks. Cheap to clone: clones share the same locks.
pub struct LockManager<K> {
    table: Arc<Table<K>>,
}

impl<K> Clone for LockManager<K> {
    fn clone(&self) -> Self {
        LockManager {
            table: Arc::clone(&self.table),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Default for LockManager<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> fmt::Debug for LockManager<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockManager")
            .field("tracked", &self.table.lock().len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> LockManager<K> {
    /// An empty lock manager.
    pub fn new() -> Self {
        LockManager {
            table: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Registers one more user of `key`'s lock (creating the entry if needed).
    fn register(&self, key: K) -> Registration<K> {
        let mut table = self.table.lock();
        let slot = table.entry(key.clone()).or_insert_with(|| Slot {
            lock: Arc::new(RwLock::new(())),
            users: 0,
        });
        slot.users += 1;
        let lock = Arc::clone(&slot.lock);
        drop(table);
        Registration {
            table: Arc::clone(&self.table),
            key,
            lock,
        }
    }

    /// Waits for shared access to `key`. Cancel-safe: dropping the future while it waits leaves
    /// nothing behind.
    pub async fn read(&self, key: K) -> ReadGuard<K> {
        let registration = self.register(key);
        let guard = Arc::clone(&registration.lock).read_owned().await;
        ReadGuard {
            _guard: guard,
            registration,
        }
    }

    /// Waits for exclusive access to `key`. Cancel-safe: dropping the future while it waits
    /// leaves nothing behind.
    pub async fn write(&self, key: K) -> WriteGuard<K> {
        let registration = self.register(key);
        let guard = Arc::clone(&registration.lock).write_owned().await;
        WriteGuard {
            _guard: guard,
            registration,
        }
    }

    /// Shared access to `key` if it is available right now (not if a writer holds it or is
    /// queued for it).
    pub fn try_read(&self, key: K) -> Option<ReadGuard<K>> {
        let registration = self.register(key);
        let guard = Arc::clone(&registration.lock).try_read_owned().ok()?;
        Some(ReadGuard {
            _guard: guard,
            registration,
        })
    }

    /// Exclusive access to `key` if it is available right now.
    pub fn try_write(&self, key: K) -> Option<WriteGuard<K>> {
        let registration = self.register(key);
        let guard = Arc::clone(&registration.lock).try_write_owned().ok()?;
        Some(WriteGuard {
            _guard: guard,
            registration,
        })
    }

    /// How many keys currently have an entry (held or waited for).
    pub fn tracked(&self) -> usize {
        self.table.lock().len()
    }
}

/// One guard's or waiter's claim on a key's entry; the last one to go removes the entry.
struct Registration<K: Hash + Eq> {
    table: Arc<Table<K>>,
    key: K,
    lock: Arc<RwLock<()>>,
}

impl<K: Hash + Eq> Drop for Registration<K> {
    fn drop(&mut self) {
        // The count is only changed under the table mutex, so a new user either registered before
        // this check (and keeps the entry) or will create a fresh one.
        let mut table = self.table.lock();
        if let Some(slot) = table.get_mut(&self.key) {
            slot.users = slot.users.saturating_sub(1);
            if slot.users == 0 {
                table.remove(&self.key);
            }
        }
    }
}

/// Shared access to one key; released on drop. `Send + 'static`: may be held across `.await`.
pub struct ReadGuard<K: Hash + Eq> {
    // Field order matters: the lock is released before the registration is dropped, so the
    // entry is never removed while this guard still holds its lock.
    _guard: OwnedRwLockReadGuard<()>,
    registration: Registration<K>,
}

impl<K: Hash + Eq> ReadGuard<K> {
    /// The locked key.
    pub fn key(&self) -> &K {
        &self.registration.key
    }
}

impl<K: Hash + Eq + fmt::Debug> fmt::Debug for ReadGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("key", &self.registration.key)
            .finish()
    }
}

/// Exclusive access to one key; released on drop. `Send + 'static`: may be held across `.await`.
pub struct WriteGuard<K: Hash + Eq> {
    // Field order matters (see ReadGuard).
    _guard: OwnedRwLockWriteGuard<()>,
    registration: Registration<K>,
}

impl<K: Hash + Eq> WriteGuard<K> {
    /// The locked key.
    pub fn key(&self) -> &K {
        &self.registration.key
    }
}

impl<K: Hash + Eq + fmt::Debug> fmt::Debug for WriteGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard")
            .field("key", &self.registration.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Barrier;
    use tokio::time::timeout;

    const LONG: Duration = Duration::from_secs(5);

    fn assert_send_static<T: Send + 'static>() {}

    #[test]
    fn guards_are_send_and_static() {
        assert_send_static::<ReadGuard<u64>>();
        assert_send_static::<WriteGuard<String>>();
        assert_send_static::<LockManager<u64>>();
    }

    /// Fails with exclusive (mutex-like) locks: the 16 readers must hold their guards at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn readers_share() {
        let lm = LockManager::new();
        let barrier = Arc::new(Barrier::new(16));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let lm = lm.clone();
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                let guard = lm.read(1u64).await;
                timeout(LONG, barrier.wait())
                    .await
                    .expect("all 16 readers hold the lock at the same time");
                drop(guard);
            }));
        }
        for t in tasks {
            t.await.expect("reader task");
        }
        assert_eq!(lm.tracked(), 0);
    }

    /// A writer waits for in-flight readers and gets the lock once they are gone.
    #[tokio::test]
    async fn writer_waits_for_readers() {
        let lm = LockManager::new();
        let r = lm.read(1u64).await;
        assert!(
            lm.try_write(1).is_none(),
            "try_write must fail under a reader"
        );
        assert!(lm.try_read(1).is_some(), "a second reader may join");
        let writer = tokio::spawn({
            let lm = lm.clone();
            async move {
                let _w = lm.write(1).await;
            }
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(
            !writer.is_finished(),
            "writer got in while a reader held the lock"
        );
        drop(r);
        timeout(LONG, writer)
            .await
            .expect("writer completes after the reader leaves")
            .expect("writer task");
        assert_eq!(lm.tracked(), 0);
    }

    /// Fails with one global lock: a write on key A must not block key B.
    #[tokio::test]
    async fn keys_are_independent() {
        let lm = LockManager::new();
        let a = lm.write("a".to_string()).await;
        let b = timeout(LONG, lm.write("b".to_string()))
            .await
            .expect("write(b) while a is write-locked");
        drop(b);
        let b = timeout(LONG, lm.read("b".to_string()))
            .await
            .expect("read(b) while a is write-locked");
        assert_eq!(b.key(), "b");
        assert!(lm.try_read("a".to_string()).is_none());
        assert_eq!(lm.tracked(), 2);
        drop((a, b));
        assert_eq!(lm.tracked(), 0);
    }

    /// A queued writer goes before readers that arrive after it.
    #[tokio::test]
    async fn writers_are_not_starved() {
        let lm = LockManager::new();
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let first = lm.read(9u64).await;

        let writer = tokio::spawn({
            let (lm, order) = (lm.clone(), Arc::clone(&order));
            async move {
                let _w = lm.write(9).await;
                order.lock().push("W");
            }
        });
        // Wait until the writer is queued: then no new reader can get in.
        timeout(LONG, async {
            while lm.try_read(9).is_some() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("writer queues");

        let mut readers = Vec::new();
        for _ in 0..4 {
            let (lm, order) = (lm.clone(), Arc::clone(&order));
            readers.push(tokio::spawn(async move {
                let _r = lm.read(9).await;
                order.lock().push("R");
            }));
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(
            order.lock().is_empty(),
            "late readers overtook the queued writer: {:?}",
            order.lock()
        );
        drop(first);
        timeout(LONG, writer)
            .await
            .expect("writer runs")
            .expect("writer task");
        for r in readers {
            timeout(LONG, r)
                .await
                .expect("reader runs")
                .expect("reader task");
        }
        let order = order.lock().clone();
        assert_eq!(order, vec!["W", "R", "R", "R", "R"]);
        assert_eq!(lm.tracked(), 0);
    }

    /// Entries go away when unused, including after a cancelled waiter and a failed try_*.
    #[tokio::test]
    async fn entries_are_removed() {
        let lm = LockManager::new();
        assert_eq!(lm.tracked(), 0);
        {
            let _a = lm.read(1u64).await;
            let _b = lm.read(2).await;
            let _c = lm.read(2).await;
            assert_eq!(lm.tracked(), 2);
        }
        assert_eq!(lm.tracked(), 0);

        let held = lm.write(7u64).await;
        assert!(lm.try_read(7).is_none());
        assert!(lm.try_write(7).is_none());
        {
            let waiting = lm.write(7);
            tokio::pin!(waiting);
            tokio::select! {
                biased;
                _ = &mut waiting => panic!("write(7) acquired while held"),
                () = std::future::ready(()) => {}
            }
            // The waiter is queued; now cancel it by dropping the future.
        }
        {
            let waiting = lm.read(7);
            tokio::pin!(waiting);
            tokio::select! {
                biased;
                _ = &mut waiting => panic!("read(7) acquired while write-held"),
                () = std::future::ready(()) => {}
            }
        }
        assert_eq!(lm.tracked(), 1);
        drop(held);
        assert_eq!(lm.tracked(), 0);
        // The lock still works after the cancellations.
        let _again = timeout(LONG, lm.write(7))
            .await
            .expect("write after cancel");
        assert_eq!(lm.tracked(), 1);
    }

    /// Cancelling a queued waiter while the lock is held must not disturb the holder's exclusion.
    #[tokio::test]
    async fn exclusion_survives_entry_churn() {
        let lm = LockManager::new();
        for _ in 0..100 {
            let w = lm.write(3u64).await;
            assert!(lm.try_read(3).is_none());
            drop(w);
            let r = lm.read(3).await;
            assert!(lm.try_write(3).is_none());
            drop(r);
        }
        assert_eq!(lm.tracked(), 0);
    }
}
