//! Which worker thread the current code runs on.
//!
//! Each worker has its own runtime and reactor; a socket is registered with the reactor of the
//! thread that opened it. Using a server connection from another worker works, but every
//! readiness event then crosses threads (an extra wakeup and syscalls), so pools hand out
//! connections opened on the caller's own worker first.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The current thread's worker index (0 outside worker threads).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Marks the current thread as worker `index`.
pub fn set_current(index: usize) {
    WORKER.with(|w| w.set(index));
}
