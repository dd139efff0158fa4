//! Timers for code that may run on a worker thread.
//!
//! Worker runtimes have no time driver of their own. A driver reads the clock and walks its
//! wheel on every park, twice per transaction at low load, to serve deadlines that almost
//! never fire (login, checkout, idle, write deadlines). A worker's timers live on the main
//! runtime's driver instead: each worker thread records that runtime's handle when it starts
//! ([`use_timers_of`]), and the functions here create their timers there. Anywhere else (the
//! main runtime, in-process tests) they are tokio's own, on the current runtime.
//!
//! The pooler crate's `clippy.toml` forbids `tokio::time`'s timer functions, so no timer can
//! reach a worker runtime and panic there for want of a driver.
#![allow(clippy::disallowed_methods)]

use std::cell::OnceCell;
use std::future::IntoFuture;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::{Instant, Sleep, Timeout};

thread_local! {
    static TIMERS: OnceCell<Handle> = const { OnceCell::new() };
}

/// Makes this thread's timers run on `handle`'s runtime (which must have time enabled and
/// outlive the thread's tasks). A thread names its timer runtime once; later calls are ignored.
pub fn use_timers_of(handle: Handle) {
    TIMERS.with(|t| {
        let _ = t.set(handle);
    });
}

/// Runs `make` with this thread's timer runtime as the current one, if it has one. The handle
/// is borrowed, not cloned: this runs for every timer, some on the hot path (checkout waits).
fn on_timer_runtime<R>(make: impl FnOnce() -> R) -> R {
    TIMERS.with(|t| match t.get() {
        Some(handle) => {
            let _entered = handle.enter();
            make()
        }
        None => make(),
    })
}

/// [`tokio::time::sleep`], on this thread's timer runtime.
pub fn sleep(duration: Duration) -> Sleep {
    on_timer_runtime(|| tokio::time::sleep(duration))
}

/// [`tokio::time::sleep_until`], on this thread's timer runtime.
pub fn sleep_until(deadline: Instant) -> Sleep {
    on_timer_runtime(|| tokio::time::sleep_until(deadline))
}

/// [`tokio::time::timeout`], on this thread's timer runtime.
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    on_timer_runtime(|| tokio::time::timeout(duration, future))
}

/// [`tokio::time::timeout_at`], on this thread's timer runtime.
pub fn timeout_at<F: IntoFuture>(deadline: Instant, future: F) -> Timeout<F::IntoFuture> {
    on_timer_runtime(|| tokio::time::timeout_at(deadline, future))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread whose runtime has no time driver still gets working timers once it names a
    /// runtime that has one.
    #[test]
    fn timers_work_on_a_runtime_without_a_driver() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("main runtime");
        let handle = main.handle().clone();
        let worker = std::thread::spawn(move || {
            use_timers_of(handle);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("worker runtime");
            rt.block_on(async {
                let started = std::time::Instant::now();
                sleep(Duration::from_millis(30)).await;
                assert!(started.elapsed() >= Duration::from_millis(30));
                let late = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
                assert!(late.is_err(), "the timeout fires");
                let on_time = timeout_at(
                    Instant::now() + Duration::from_secs(5),
                    std::future::ready(7),
                )
                .await;
                assert_eq!(on_time.ok(), Some(7));
            });
        });
        worker.join().expect("worker thread");
    }
}
