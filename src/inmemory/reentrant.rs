//! The reentrant lock behind `InMemoryRedlock` and each store's `SharedLock`.
//!
//! The lock state is pure Rust so waiting never needs the GIL: a waiter
//! detaches, parks on a condition variable and is woken by the release, so
//! the hand-off costs microseconds, not a polling interval.

use std::thread::ThreadId;
use std::time::Instant;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::errors::run_detached;
use crate::gil::{lock_detached, SIGNAL_CHECK};
use crate::sync::{Condvar, Mutex};

#[derive(Default)]
struct Owner {
    thread: Option<ThreadId>,
    depth: usize,
}

/// A reentrant mutex whose owner is an OS thread (one per Python thread).
#[derive(Default)]
pub struct ReentrantLock {
    owner: Mutex<Owner>,
    freed: Condvar,
}

impl ReentrantLock {
    /// Take the lock if it is free or already ours.
    fn try_take(owner: &mut Owner, me: ThreadId) -> bool {
        match owner.thread {
            None => {
                owner.thread = Some(me);
                owner.depth = 1;
                true
            }
            Some(t) if t == me => {
                owner.depth += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// Block (with the GIL released) until this thread holds the lock.
    ///
    /// The wait is cut into slices of `SIGNAL_CHECK` so that Ctrl-C (any
    /// pending signal handler that raises) interrupts it, as it interrupts
    /// `threading.RLock.acquire()`.
    pub fn acquire(&self, py: Python<'_>) -> PyResult<()> {
        let me = std::thread::current().id();
        if Self::try_take(&mut lock_detached(py, &self.owner), me) {
            return Ok(());
        }
        loop {
            let taken = run_detached(py, || {
                let until = Instant::now() + SIGNAL_CHECK;
                let mut owner = self.owner.lock();
                loop {
                    if Self::try_take(&mut owner, me) {
                        return Ok(true);
                    }
                    let timed_out;
                    (owner, timed_out) = self.freed.wait_until(owner, until);
                    if timed_out {
                        return Ok(Self::try_take(&mut owner, me));
                    }
                }
            })?;
            if taken {
                return Ok(());
            }
            py.check_signals()?;
        }
    }

    pub fn try_acquire(&self, py: Python<'_>) -> bool {
        let me = std::thread::current().id();
        Self::try_take(&mut lock_detached(py, &self.owner), me)
    }

    /// Undo one `acquire` by this thread; `false` if this thread does not hold it.
    pub fn release(&self, py: Python<'_>) -> bool {
        let me = std::thread::current().id();
        let mut owner = lock_detached(py, &self.owner);
        if owner.thread != Some(me) {
            return false;
        }
        owner.depth -= 1;
        if owner.depth == 0 {
            owner.thread = None;
            drop(owner);
            self.freed.notify_one();
        }
        true
    }

    /// Held by a thread other than the caller (madsci's `locked()`).
    pub fn held_by_other(&self, py: Python<'_>) -> bool {
        let me = std::thread::current().id();
        let owner = lock_detached(py, &self.owner);
        matches!(owner.thread, Some(t) if t != me)
    }
}

/// The error `threading.RLock.release()` raises, which madsci's callers see.
pub(crate) fn unacquired() -> PyErr {
    PyRuntimeError::new_err("cannot release un-acquired lock")
}
