//! `InMemoryRedlock`: madsci's process-wide, per-key, reentrant lock.
//!
//! The lock state is pure Rust (`ReentrantLock`) so waiting never needs the
//! GIL: a waiter detaches, parks on a condition variable and is woken by the
//! release, so the hand-off costs microseconds, not a polling interval.

use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::registry;
use crate::errors::run_detached;
use crate::gil::lock_detached;

/// How long a waiter stays detached before it looks for pending signals.
pub(crate) const SIGNAL_CHECK: Duration = Duration::from_millis(100);

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

/// One lock per key for the whole process (madsci keys locks by name only;
/// `masters` and `auto_release_time` are accepted and ignored, as there).
#[pyclass(frozen, subclass, module = "madsci_cache_rs._native")]
pub struct InMemoryRedlock {
    key: Py<PyString>,
    core: Arc<ReentrantLock>,
}

impl InMemoryRedlock {
    pub fn build(py: Python<'_>, key: Bound<'_, PyString>) -> PyResult<Self> {
        let core = registry::lock_for(py, &key)?;
        Ok(Self {
            key: key.unbind(),
            core,
        })
    }
}

#[pymethods]
impl InMemoryRedlock {
    #[new]
    #[pyo3(signature = (*, key, masters = None, auto_release_time = None))]
    fn new(
        py: Python<'_>,
        key: Bound<'_, PyString>,
        masters: Option<Bound<'_, PyAny>>,
        auto_release_time: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let _ = (masters, auto_release_time);
        Self::build(py, key)
    }

    /// The process-wide registry of lock names (madsci's tests look into it).
    #[classattr]
    fn _locks(py: Python<'_>) -> Py<PyDict> {
        registry::lock_names(py).clone_ref(py)
    }

    #[getter]
    fn _key(&self, py: Python<'_>) -> Py<PyString> {
        self.key.clone_ref(py)
    }

    fn acquire(&self, py: Python<'_>) -> PyResult<bool> {
        self.core.acquire(py)?;
        Ok(true)
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        if self.core.release(py) {
            Ok(())
        } else {
            Err(unacquired())
        }
    }

    fn locked(&self, py: Python<'_>) -> bool {
        self.core.held_by_other(py)
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().core.acquire(slf.py())?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.release(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<InMemoryRedlock key={}>",
            self.key
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )
    }
}
