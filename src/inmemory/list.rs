//! `InMemoryRedisList`: madsci's shared, value-preserving list, with the
//! whole sequence API of `RedisList` (madsci's has only `append`,
//! `remove`, iteration, `len` and `in`; the rest matches `list`/pottery).
//! It is registered as a `MutableSequence`, so it defines every method that
//! ABC provides (a native class cannot inherit the mixins).
//!
//! Every object of one (client, key) holds the same Python `list`; each
//! method is one operation of it. Arguments that must be iterated are read
//! into a list first so the shared store changes in a single step.

use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use super::registry::{self, Entry, SharedLock};

#[pyclass(frozen, subclass, sequence, module = "madsci_cache_rs._native")]
pub struct InMemoryRedisList {
    key: Py<PyString>,
    redis: Py<PyAny>,
    entry: Arc<Entry>,
}

impl InMemoryRedisList {
    pub fn build(
        py: Python<'_>,
        key: Bound<'_, PyString>,
        redis: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let entry = registry::list_entry(py, registry::client_key(&redis), key.to_str()?)?;
        Ok(Self {
            key: key.unbind(),
            redis: redis.unbind(),
            entry,
        })
    }

    fn store<'py>(&self, py: Python<'py>) -> &Bound<'py, PyList> {
        // SAFETY: list entries are created with a `list` store (registry::list_entry).
        unsafe { self.entry.store.bind(py).cast_unchecked::<PyList>() }
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        let store = self.store(py);
        store.get_slice(0, isize::MAX as usize)
    }
}

#[pymethods]
impl InMemoryRedisList {
    #[new]
    #[pyo3(signature = (*, key, redis))]
    fn new(py: Python<'_>, key: Bound<'_, PyString>, redis: Bound<'_, PyAny>) -> PyResult<Self> {
        Self::build(py, key, redis)
    }

    #[getter]
    fn _store<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
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

    fn append(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py).append(value)
    }

    fn extend(&self, py: Python<'_>, values: Bound<'_, PyAny>) -> PyResult<()> {
        let items = if let Ok(ours) = values.cast::<InMemoryRedisList>() {
            ours.get().snapshot(py)
        } else {
            PyList::new(py, values.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
        };
        self.store(py)
            .call_method1(intern!(py, "extend"), (items,))?;
        Ok(())
    }

    /// Removes the first item equal to `value`; `ValueError` if none is.
    fn remove(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py)
            .call_method1(intern!(py, "remove"), (value,))?;
        Ok(())
    }

    #[pyo3(signature = (index = -1))]
    fn pop<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        self.store(py).call_method1(intern!(py, "pop"), (index,))
    }

    fn insert(&self, py: Python<'_>, index: isize, value: Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py)
            .call_method1(intern!(py, "insert"), (index, value))?;
        Ok(())
    }

    #[pyo3(signature = (value, *bounds))]
    fn index<'py>(
        &self,
        py: Python<'py>,
        value: Bound<'py, PyAny>,
        bounds: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut args = vec![value];
        args.extend(bounds.iter());
        self.store(py)
            .call_method1(intern!(py, "index"), PyTuple::new(py, args)?)
    }

    fn count<'py>(&self, py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.store(py).call_method1(intern!(py, "count"), (value,))
    }

    /// An int index gives the item, a slice a new plain `list`.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.store(py).as_any().get_item(index)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        index: Bound<'_, PyAny>,
        value: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let value = if index.is_instance_of::<pyo3::types::PySlice>() {
            // Materialise first so the assignment is one step on the store.
            PyList::new(py, value.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.into_any()
        } else {
            value
        };
        self.store(py).as_any().set_item(index, value)
    }

    fn __delitem__(&self, py: Python<'_>, index: Bound<'_, PyAny>) -> PyResult<()> {
        self.store(py).as_any().del_item(index)
    }

    /// Iterates a snapshot, so mutation while iterating is safe.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.snapshot(py).try_iter()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.store(py).len()
    }

    fn __contains__(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<bool> {
        self.store(py).contains(value)
    }

    /// Iterates a reversed snapshot, as `__iter__` iterates a snapshot.
    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let items = self.snapshot(py);
        items.reverse()?;
        items.try_iter()
    }

    fn __iadd__(&self, py: Python<'_>, values: Bound<'_, PyAny>) -> PyResult<()> {
        self.extend(py, values)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.store(py).call_method0(intern!(py, "clear"))?;
        Ok(())
    }

    fn reverse(&self, py: Python<'_>) -> PyResult<()> {
        self.store(py).reverse()
    }

    /// A plain `list` copy.
    fn to_list<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.snapshot(py)
    }

    /// pottery's rule: equal to a list object or a plain `list` with equal
    /// items, and unequal to anything else.
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Ok(py.NotImplemented());
        }
        let theirs = if let Ok(ours) = other.cast::<InMemoryRedisList>() {
            Some(ours.get().snapshot(py))
        } else if other.is_exact_instance_of::<PyList>() {
            Some(other.cast_into::<PyList>()?)
        } else {
            None
        };
        let equal = match theirs {
            Some(theirs) => self.snapshot(py).eq(theirs)?,
            None => false,
        };
        (equal == matches!(op, CompareOp::Eq)).into_py_any(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("InMemoryRedisList{}", self.snapshot(py).repr()?))
    }
}
