//! The strict lock: pottery's `Redlock` rules (`crate::lease`) on a lease
//! kept in the strict keyspace at `redlock:<key>`.
//!
//! Not reentrant: acquiring again while holding draws a new token and waits
//! for the old lease like any other contender (pottery's behaviour). Waiters
//! park with the GIL released and wake on release or on lease expiry.

use std::sync::Arc;
use std::time::Instant;

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;

use crate::gil::lock_detached;

use super::db::{deadline_after, Keyspace, StrictDb, Value};
use crate::lease::{
    acquire_slot, extend_slot, release_slot, remaining_in_slot, Lease, LockLease, Wait,
    DEFAULT_NUM_EXTENSIONS,
};

#[pyclass(frozen, module = "madsci_cache_rs._native")]
pub struct StrictRedlock {
    db: Arc<StrictDb>,
    store_key: Vec<u8>,
    /// Taken with `lock_detached`: `extend` holds it while it waits for the
    /// keyspace, so a thread waiting for it must not keep the GIL.
    lease: Mutex<LockLease>,
    /// How `with lock:` acquires (pottery's `context_manager_blocking`/`_timeout`).
    context: Mutex<(bool, f64)>,
}

/// The lease at `key` as an `Option<Lease>` slot, run `f` on it, write it back.
/// A key of another type counts as held by someone else (`SET NX` fails).
fn with_slot<T>(
    state: &mut Keyspace,
    key: &[u8],
    now: Instant,
    f: impl FnOnce(&mut Option<Lease>) -> T,
    foreign: T,
) -> T {
    let mut slot = match state.live(key, now) {
        None => None,
        Some(Value::Lease(l)) => Some(l.clone()),
        Some(_) => return foreign,
    };
    let out = f(&mut slot);
    match slot {
        Some(l) => state.map.insert(key.to_vec(), Value::Lease(l)),
        None => state.map.remove(key),
    };
    out
}

impl StrictRedlock {
    pub fn build(db: Arc<StrictDb>, key: &str, auto_release_time: f64) -> PyResult<Self> {
        let lease = LockLease::new(key, auto_release_time, DEFAULT_NUM_EXTENSIONS)?;
        Ok(Self {
            db,
            store_key: lease.store_key().into_bytes(),
            lease: Mutex::new(lease),
            context: Mutex::new((true, -1.0)),
        })
    }

    fn acquire_with(&self, py: Python<'_>, wait: Wait) -> PyResult<bool> {
        let (token, ttl) = {
            let mut lease = lock_detached(py, &self.lease);
            (lease.start_attempt(), lease.auto_release())
        };
        let key = self.store_key.as_slice();
        let try_take = move |state: &mut Keyspace, now: Instant| -> Result<(), Option<Instant>> {
            let taken = with_slot(
                state,
                key,
                now,
                |slot| acquire_slot(slot, &token, ttl, now),
                false,
            );
            if taken {
                state.version += 1;
                return Ok(());
            }
            // Wake when the holder's lease runs out, if nobody releases it.
            match state.map.get(key) {
                Some(Value::Lease(l)) => Err(Some(l.expires)),
                _ => Err(None),
            }
        };
        // One try without leaving the interpreter: the common, uncontended case.
        if try_take(&mut self.db.lock(py), Instant::now()).is_ok() {
            return Ok(true);
        }
        let deadline = match wait {
            Wait::Once => Some(Instant::now()),
            Wait::Forever => None,
            Wait::For(d) => deadline_after(Some(d)),
        };
        Ok(self.db.wait_for(py, deadline, try_take)?.is_some())
    }
}

#[pymethods]
impl StrictRedlock {
    #[pyo3(signature = (*, blocking = true, timeout = -1.0))]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: f64) -> PyResult<bool> {
        let wait = Wait::from_args(blocking, timeout)?;
        self.acquire_with(py, wait)
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let lease = lock_detached(py, &self.lease);
        let removed = match lease.token() {
            None => false,
            Some(token) => {
                let mut state = self.db.lock(py);
                let now = Instant::now();
                let removed = with_slot(
                    &mut state,
                    &self.store_key,
                    now,
                    |slot| release_slot(slot, token, now),
                    false,
                );
                state.version += 1;
                removed
            }
        };
        let outcome = lease.released(removed);
        drop(lease);
        if removed {
            self.db.freed.notify_all();
        }
        Ok(outcome?)
    }

    /// Seconds left on our lease (less pottery's drift allowance), `0` if we
    /// do not hold it.
    fn locked(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let lease = lock_detached(py, &self.lease);
        let remaining = lease.token().and_then(|token| {
            let mut state = self.db.lock(py);
            let now = Instant::now();
            with_slot(
                &mut state,
                &self.store_key,
                now,
                |slot| remaining_in_slot(slot, token, now),
                None,
            )
        });
        let validity = lease.validity(remaining);
        drop(lease);
        match validity {
            Some(seconds) => seconds.into_py_any(py),
            None => 0.into_py_any(py),
        }
    }

    /// Renew the lease to a full `auto_release_time`, at most
    /// `num_extensions` times per acquisition.
    fn extend(&self, py: Python<'_>) -> PyResult<()> {
        let mut lease = lock_detached(py, &self.lease);
        lease.check_extend()?;
        let renewed = match lease.token() {
            None => false,
            Some(token) => {
                let ttl = lease.auto_release();
                let mut state = self.db.lock(py);
                let now = Instant::now();
                with_slot(
                    &mut state,
                    &self.store_key,
                    now,
                    |slot| extend_slot(slot, token, ttl, now),
                    false,
                )
            }
        };
        Ok(lease.extended(renewed)?)
    }

    /// Acquire as `context_manager_blocking`/`_timeout` say; `QuorumNotAchieved`
    /// if that fails.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let (blocking, timeout) = *slf.get().context.lock();
        let wait = Wait::from_args(blocking, timeout)?;
        if slf.get().acquire_with(slf.py(), wait)? {
            Ok(slf)
        } else {
            Err(lock_detached(slf.py(), &slf.get().lease)
                .not_acquired()
                .into())
        }
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: Bound<'_, PyTuple>) -> PyResult<()> {
        self.release(py)
    }

    /// pottery's name for the lock's store key: `redlock:<key>`.
    #[getter]
    fn key(&self) -> String {
        String::from_utf8_lossy(&self.store_key).into_owned()
    }

    #[getter]
    fn auto_release_time(&self, py: Python<'_>) -> f64 {
        lock_detached(py, &self.lease).auto_release().as_secs_f64()
    }

    #[getter]
    fn context_manager_blocking(&self) -> bool {
        self.context.lock().0
    }

    #[setter]
    fn set_context_manager_blocking(&self, blocking: bool) {
        self.context.lock().0 = blocking;
    }

    #[getter]
    fn context_manager_timeout(&self) -> f64 {
        self.context.lock().1
    }

    #[setter]
    fn set_context_manager_timeout(&self, timeout: f64) {
        self.context.lock().1 = timeout;
    }

    #[getter]
    fn num_extensions(&self, py: Python<'_>) -> u32 {
        lock_detached(py, &self.lease).num_extensions()
    }

    fn __repr__(&self) -> String {
        format!("<StrictRedlock key={:?}>", self.key())
    }
}
