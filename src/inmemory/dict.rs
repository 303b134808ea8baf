//! `InMemoryRedisDict`: madsci's shared, value-preserving mapping.
//!
//! Every object of one (client, key) holds the same Python `dict`; each
//! method is a single operation of that dict (see `mod.rs` for why that is
//! both atomic and free of deadlocks). Methods madsci inherits from
//! `MutableMapping` (`pop`, `setdefault`, `popitem`, `keys`, `values`,
//! `__eq__`) are native here with the same results.

use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyIterator, PyList, PyMapping, PyString, PyTuple, PyType};
use pyo3::{intern, IntoPyObjectExt};

use super::registry::{self, Entry, SharedLock};

#[pyclass(frozen, subclass, mapping, module = "madsci_cache_rs._native")]
pub struct InMemoryRedisDict {
    key: Py<PyString>,
    redis: Py<PyAny>,
    entry: Arc<Entry>,
}

static KEYS_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static VALUES_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A marker no caller can pass, for "no default given".
static MISSING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(crate) fn missing(py: Python<'_>) -> &Bound<'_, PyAny> {
    MISSING
        .get_or_init(py, || pyo3::types::PyList::empty(py).into_any().unbind())
        .bind(py)
}

impl InMemoryRedisDict {
    pub fn build(
        py: Python<'_>,
        key: Bound<'_, PyString>,
        redis: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let entry = registry::dict_entry(py, registry::client_key(&redis), key.to_str()?)?;
        Ok(Self {
            key: key.unbind(),
            redis: redis.unbind(),
            entry,
        })
    }

    fn store<'py>(&self, py: Python<'py>) -> &Bound<'py, PyDict> {
        // SAFETY: dict entries are created with a `dict` store (registry::dict_entry).
        unsafe { self.entry.store.bind(py).cast_unchecked::<PyDict>() }
    }

    /// `dict(other.items())` for any mapping, as `Mapping.__eq__` builds it.
    fn as_plain_dict<'py>(other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let py = other.py();
        if let Ok(ours) = other.cast::<InMemoryRedisDict>() {
            return ours.get().store(py).copy();
        }
        let items = other.call_method0(intern!(py, "items"))?;
        let plain = PyDict::new(py);
        plain.call_method1(intern!(py, "update"), (items,))?;
        Ok(plain)
    }
}

#[pymethods]
impl InMemoryRedisDict {
    #[new]
    #[pyo3(signature = (*, key, redis))]
    fn new(py: Python<'_>, key: Bound<'_, PyString>, redis: Bound<'_, PyAny>) -> PyResult<Self> {
        Self::build(py, key, redis)
    }

    #[getter]
    fn _store<'py>(&self, py: Python<'py>) -> Bound<'py, PyDict> {
        self.store(py).clone()
    }

    #[getter]
    fn _lock(&self, py: Python<'_>) -> Py<SharedLock> {
        self.entry.lock.clone_ref(py)
    }

    #[getter]
    fn _key(&self, py: Python<'_>) -> Py<PyString> {
        self.key.clone_ref(py)
    }

    #[getter]
    fn _redis(&self, py: Python<'_>) -> Py<PyAny> {
        self.redis.clone_ref(py)
    }

    #[getter]
    fn _client_id(&self) -> usize {
        self.redis.as_ptr() as usize
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.store(py).get_item(&key)? {
            Some(value) => Ok(value),
            None => Err(PyKeyError::new_err((key.unbind(),))),
        }
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: Bound<'_, PyAny>,
        value: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.store(py).set_item(key, value)
    }

    fn __delitem__(&self, py: Python<'_>, key: Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py).del_item(key)
    }

    fn __contains__(&self, py: Python<'_>, key: Bound<'_, PyAny>) -> PyResult<bool> {
        self.store(py).contains(key)
    }

    /// Iterates a snapshot of the keys, so mutation while iterating is safe.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.store(py).keys().try_iter()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.store(py).len()
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.store(py).get_item(&key)? {
            Some(value) => Ok(value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// A live `KeysView`, as `Mapping.keys()` returns.
    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let view = KEYS_VIEW.import(slf.py(), "collections.abc", "KeysView")?;
        view.call1((slf,))
    }

    /// A live `ValuesView`, as `Mapping.values()` returns.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let view = VALUES_VIEW.import(slf.py(), "collections.abc", "ValuesView")?;
        view.call1((slf,))
    }

    /// A snapshot list of `(key, value)` pairs (madsci returns a list too).
    fn items<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.store(py).items()
    }

    /// `dict.update` semantics; arguments that are not plain dicts are read
    /// into a scratch dict first, so the shared store changes in one step.
    #[pyo3(signature = (*args, **kwargs))]
    fn update(
        &self,
        py: Python<'_>,
        args: Bound<'_, PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let store = self.store(py);
        if args.len() == 1 {
            let arg = args.get_item(0)?;
            let source = if let Ok(ours) = arg.cast::<InMemoryRedisDict>() {
                Some(ours.get().store(py).copy()?)
            } else if arg.is_exact_instance_of::<PyDict>() {
                Some(arg.cast_into::<PyDict>()?)
            } else {
                None
            };
            if let Some(source) = source {
                store.update(source.as_mapping())?;
                if let Some(kwargs) = kwargs {
                    store.update(kwargs.as_mapping())?;
                }
                return Ok(());
            }
        }
        let scratch = PyDict::new(py);
        scratch.call_method(intern!(py, "update"), args, kwargs.as_ref())?;
        store.update(scratch.as_mapping())
    }

    fn clear(&self, py: Python<'_>) {
        self.store(py).clear();
    }

    /// `pop(key[, default])`: an explicit `None` default is a default.
    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        default: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut args = vec![key];
        args.extend(default.iter());
        self.store(py)
            .call_method1(intern!(py, "pop"), PyTuple::new(py, args)?)
    }

    /// Removes and returns the *first* pair in iteration order, as
    /// `MutableMapping.popitem` does (a plain dict pops the last).
    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let store = self.store(py);
        let marker = missing(py);
        loop {
            let first = store.iter().next().map(|(k, _)| k);
            let Some(key) = first else {
                return Err(PyKeyError::new_err(()));
            };
            let value = store.call_method1(intern!(py, "pop"), (&key, marker))?;
            // Another thread may have taken that key between the two steps.
            if !value.is(marker) {
                return PyTuple::new(py, [key, value]);
            }
        }
    }

    #[pyo3(signature = (key, default = None))]
    fn setdefault<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        self.store(py)
            .call_method1(intern!(py, "setdefault"), (key, default))
    }

    /// A plain `dict` copy.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.store(py).copy()
    }

    /// `Mapping.__eq__`: equal to any mapping with the same items.
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let equal = match op {
            CompareOp::Eq | CompareOp::Ne if other.cast::<PyMapping>().is_ok() => {
                let mine = self.store(py).copy()?;
                mine.eq(Self::as_plain_dict(&other)?)?
            }
            _ => return Ok(py.NotImplemented()),
        };
        (equal == matches!(op, CompareOp::Eq)).into_py_any(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("InMemoryRedisDict{}", self.store(py).repr()?))
    }
}
