//! `InMemoryRedlock`: madsci's process-wide, per-key, reentrant lock. The
//! state it shares with every lock object of its name is a
//! `reentrant::ReentrantLock` from the registry.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::reentrant::{unacquired, ReentrantLock};
use super::registry;

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
