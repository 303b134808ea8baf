//! The process-wide registries that make objects with the same name share
//! data: dicts and lists by (client, key), locks by key alone (madsci's rule).
//!
//! madsci keys clients by `id(client)` without keeping the client alive, so a
//! new client can inherit a dead one's data when CPython reuses the address.
//! Our own client carries a serial number that is never reused instead;
//! foreign client objects fall back to `id()` as in madsci.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::client::InMemoryRedisClient;
use super::reentrant::{unacquired, ReentrantLock};
use crate::gil::lock_detached;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ClientKey {
    /// One of our `InMemoryRedisClient`s (serial numbers are never reused).
    Ours(u64),
    /// Any other object, by address, as madsci does.
    Foreign(usize),
}

pub fn client_key(redis: &Bound<'_, PyAny>) -> ClientKey {
    match redis.cast::<InMemoryRedisClient>() {
        Ok(client) => ClientKey::Ours(client.get().serial()),
        Err(_) => ClientKey::Foreign(redis.as_ptr() as usize),
    }
}

/// The shared state behind every dict (or list) object of one (client, key).
pub struct Entry {
    pub store: Py<PyAny>,
    pub lock: Py<SharedLock>,
}

type Registry = Mutex<HashMap<(ClientKey, String), Arc<Entry>>>;

static DICTS: LazyLock<Registry> = LazyLock::new(Registry::default);
static LISTS: LazyLock<Registry> = LazyLock::new(Registry::default);
static LOCK_NAMES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn entry_in(
    py: Python<'_>,
    registry: &Registry,
    client: ClientKey,
    key: &str,
    new_store: impl FnOnce() -> Py<PyAny>,
) -> PyResult<Arc<Entry>> {
    // Build the candidate before locking: creating Python objects is cheap
    // and keeps the critical section free of any interpreter work.
    let mut map = lock_detached(py, registry);
    if let Some(entry) = map.get(&(client, key.to_owned())) {
        return Ok(entry.clone());
    }
    let entry = Arc::new(Entry {
        store: new_store(),
        lock: Py::new(py, SharedLock::default())?,
    });
    map.insert((client, key.to_owned()), entry.clone());
    Ok(entry)
}

pub fn dict_entry(py: Python<'_>, client: ClientKey, key: &str) -> PyResult<Arc<Entry>> {
    entry_in(py, &DICTS, client, key, || {
        PyDict::new(py).into_any().unbind()
    })
}

pub fn list_entry(py: Python<'_>, client: ClientKey, key: &str) -> PyResult<Arc<Entry>> {
    entry_in(py, &LISTS, client, key, || {
        PyList::empty(py).into_any().unbind()
    })
}

/// `InMemoryRedlock._locks`: lock name -> `SharedLock`, a real Python dict
/// because madsci's tests inspect it (`"name" in InMemoryRedlock._locks`).
pub fn lock_names(py: Python<'_>) -> &Py<PyDict> {
    LOCK_NAMES.get_or_init(py, || PyDict::new(py).unbind())
}

/// The lock shared by every `InMemoryRedlock` of this name.
pub fn lock_for(py: Python<'_>, key: &Bound<'_, PyString>) -> PyResult<Arc<ReentrantLock>> {
    let names = lock_names(py).bind(py);
    if let Some(found) = names.get_item(key)? {
        if let Ok(shared) = found.cast::<SharedLock>() {
            return Ok(shared.get().core.clone());
        }
    }
    // `setdefault` is one atomic dict operation: two threads racing here
    // end up with the same lock.
    let fresh = Py::new(py, SharedLock::default())?;
    let chosen = names.call_method1("setdefault", (key, fresh))?;
    Ok(chosen.cast::<SharedLock>()?.get().core.clone())
}

/// `clear_all_registries()`: forget every dict, list and lock name.
///
/// Objects already built keep their stores and locks (as in madsci); new
/// objects start afresh. The old entries are dropped after the registry
/// mutexes are released, since dropping stored values can run `__del__`.
#[pyfunction]
pub fn clear_all_registries(py: Python<'_>) -> PyResult<()> {
    let dicts = std::mem::take(&mut *lock_detached(py, &DICTS));
    let lists = std::mem::take(&mut *lock_detached(py, &LISTS));
    lock_names(py).bind(py).clear();
    drop((dicts, lists));
    Ok(())
}

/// The lock object shared by all views of one store (`_lock` in madsci) and
/// the value type of `InMemoryRedlock._locks`.
///
/// Single operations on the stores are atomic without it; it is a reentrant
/// lock callers may hold to make several operations atomic together.
#[pyclass(frozen, module = "madsci_cache_rs._native")]
#[derive(Default)]
pub struct SharedLock {
    pub(crate) core: Arc<ReentrantLock>,
}

#[pymethods]
impl SharedLock {
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
    fn __exit__(&self, py: Python<'_>, _args: Bound<'_, PyTuple>) -> PyResult<()> {
        self.release(py)
    }
}
