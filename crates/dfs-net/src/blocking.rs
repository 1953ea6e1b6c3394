//! Where blocking work (file I/O, fsync) runs: on tokio's blocking thread pool, or, in a
//! deterministic simulation, inline on the calling thread.
//!
//! Threads of the blocking pool finish in an order the operating system decides, so a
//! simulation whose nodes hand work to them cannot replay a run exactly. The simulator
//! calls [`run_inline_on_this_thread`] on the thread that drives the simulation; every
//! [`run`] from that thread then runs its work at once, in simulated time zero.

use std::cell::Cell;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Makes [`run`] run its work inline on the calling thread (`true`), or
/// on tokio's blocking pool (`false`, the default), for this thread only.
pub fn run_inline_on_this_thread(inline: bool) {
    INLINE.with(|i| i.set(inline));
}

/// Whether blocking work runs inline on this thread (see [`run_inline_on_this_thread`]).
pub fn is_inline() -> bool {
    INLINE.with(Cell::get)
}

/// Blocking work that did not finish: it panicked, or its runtime shut down.
#[derive(Debug)]
pub struct TaskFailed(pub String);

impl std::fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocking task failed: {}", self.0)
    }
}

impl std::error::Error for TaskFailed {}

/// Runs blocking `work` off the async threads (see the module docs) and returns its result.
///
/// # Errors
///
/// [`TaskFailed`] if the work panicked or its runtime shut down first.
pub async fn run<T, F>(work: F) -> Result<T, TaskFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if is_inline() {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TaskFailed(e.to_string()))
}
