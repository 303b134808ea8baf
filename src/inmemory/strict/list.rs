//! The strict list: a list of `encode(item)` in the keyspace.
//!
//! Searches (`in`, `index`, `count`, `remove`) compare decoded items with
//! Python's `==`, as pottery does, outside the mutex; `remove` then deletes
//! the found position only if the keyspace did not change meanwhile.

use std::sync::Arc;
use std::time::Instant;

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PySlice, PyString};
use pyo3::IntoPyObjectExt;

use super::db::{wrong_type, Keyspace, StrictDb, Text, Value};
use super::{decode, decode_with, encode};
use crate::codec::KeyCache;
use crate::errors::CacheError;

#[pyclass(frozen, sequence, module = "madsci_cache_rs._native")]
pub struct StrictRedisList {
    db: Arc<StrictDb>,
    key: Vec<u8>,
}

/// Python's index normalisation; `None` when out of range.
fn normalise(index: isize, len: usize) -> Option<usize> {
    let i = if index < 0 {
        index + len as isize
    } else {
        index
    };
    (0..len as isize).contains(&i).then_some(i as usize)
}

impl StrictRedisList {
    pub fn build(db: Arc<StrictDb>, key: &str) -> Self {
        Self {
            db,
            key: key.as_bytes().to_vec(),
        }
    }

    fn read<T>(&self, py: Python<'_>, f: impl FnOnce(&[Text]) -> T) -> Result<T, CacheError> {
        let mut state = self.db.lock(py);
        match state.live(&self.key, Instant::now()) {
            None => Ok(f(&[])),
            Some(Value::List(items)) => Ok(f(items)),
            Some(_) => Err(wrong_type(&self.key)),
        }
    }

    /// Items and the keyspace version they were read at.
    fn snapshot(&self, py: Python<'_>) -> Result<(Vec<Text>, u64), CacheError> {
        let mut state = self.db.lock(py);
        let version = state.version;
        match state.live(&self.key, Instant::now()) {
            None => Ok((Vec::new(), version)),
            Some(Value::List(items)) => Ok((items.clone(), version)),
            Some(_) => Err(wrong_type(&self.key)),
        }
    }

    /// Run `f` on the list, creating it; an emptied list disappears. With
    /// `expect`, do nothing and return `None` if the version moved on.
    fn write<T>(
        &self,
        py: Python<'_>,
        expect: Option<u64>,
        f: impl FnOnce(&mut Vec<Text>) -> T,
    ) -> Result<Option<T>, CacheError> {
        let mut state = self.db.lock(py);
        let state: &mut Keyspace = &mut state;
        if expect.is_some_and(|v| v != state.version) {
            return Ok(None);
        }
        state.version += 1;
        let slot = match state.live(&self.key, Instant::now()) {
            None => state
                .map
                .entry(self.key.clone())
                .or_insert(Value::List(Vec::new())),
            Some(slot) => slot,
        };
        let Value::List(items) = slot else {
            return Err(wrong_type(&self.key));
        };
        let out = f(items);
        if items.is_empty() {
            state.map.remove(&self.key);
        }
        Ok(Some(out))
    }

    fn write_now<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Vec<Text>) -> T) -> PyResult<T> {
        Ok(self
            .write(py, None, f)?
            .expect("unconditional writes always run"))
    }

    fn decoded<'py>(py: Python<'py>, items: &[Text]) -> PyResult<Bound<'py, PyList>> {
        let mut keys = KeyCache::new();
        PyList::new(
            py,
            items
                .iter()
                .map(|i| decode_with(py, i, &mut keys))
                .collect::<PyResult<Vec<_>>>()?,
        )
    }

    /// Positions in `items[start..stop]` whose decoded item `== value`.
    fn matches(
        py: Python<'_>,
        items: &[Text],
        value: &Bound<'_, PyAny>,
        first_only: bool,
    ) -> PyResult<Vec<usize>> {
        // Fast path: stored text is canonical, so a plain `str` (or `None`)
        // equals an item exactly when their encodings are the same bytes.
        let exact = if value.is_exact_instance_of::<PyString>() || value.is_none() {
            Some(encode(value)?)
        } else {
            None
        };
        let mut found = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let equal = match &exact {
                Some(text) => item == text,
                None => decode(py, item)?.eq(value)?,
            };
            if equal {
                found.push(i);
                if first_only {
                    break;
                }
            }
        }
        Ok(found)
    }
}

#[pymethods]
impl StrictRedisList {
    fn append(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let text = encode(&value)?;
        self.write_now(py, |items| items.push(text))
    }

    /// All items are encoded first: one that is not JSON and nothing is added.
    fn extend(&self, py: Python<'_>, values: Bound<'_, PyAny>) -> PyResult<()> {
        let texts = values
            .try_iter()?
            .map(|v| encode(&v?))
            .collect::<PyResult<Vec<_>>>()?;
        if texts.is_empty() {
            return Ok(());
        }
        self.write_now(py, |items| items.extend(texts))
    }

    fn insert(&self, py: Python<'_>, index: isize, value: Bound<'_, PyAny>) -> PyResult<()> {
        let text = encode(&value)?;
        self.write_now(py, |items| {
            let len = items.len() as isize;
            let at = if index < 0 {
                (index + len).max(0)
            } else {
                index.min(len)
            };
            items.insert(at as usize, text);
        })
    }

    #[pyo3(signature = (index = -1))]
    fn pop<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        let taken = self.write_now(py, |items| {
            if items.is_empty() {
                return Err("pop from empty list");
            }
            normalise(index, items.len())
                .map(|i| items.remove(i))
                .ok_or("pop index out of range")
        })?;
        match taken {
            Ok(text) => decode(py, &text),
            Err(message) => Err(PyIndexError::new_err(message)),
        }
    }

    fn remove(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<()> {
        loop {
            let (seen, _) = self.snapshot(py)?;
            let Some(&at) = Self::matches(py, &seen, &value, true)?.first() else {
                return Err(PyValueError::new_err("list.remove(x): x not in list"));
            };
            // The comparisons ran unlocked (and may even have changed the
            // list): remove the found item only if it and everything before
            // it are still the items compared, else compare again.
            let removed = self.write_now(py, |items| {
                let unchanged = items.len() > at
                    && items[..=at]
                        .iter()
                        .zip(&seen[..=at])
                        .all(|(a, b)| Arc::ptr_eq(a, b));
                if unchanged {
                    items.remove(at);
                }
                unchanged
            })?;
            if removed {
                return Ok(());
            }
        }
    }

    #[pyo3(signature = (value, start = 0, stop = isize::MAX))]
    fn index(
        &self,
        py: Python<'_>,
        value: Bound<'_, PyAny>,
        start: isize,
        stop: isize,
    ) -> PyResult<usize> {
        let (items, _) = self.snapshot(py)?;
        let len = items.len() as isize;
        let clamp = |i: isize| if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
        let (lo, hi) = (clamp(start), clamp(stop));
        let window = if lo < hi { &items[lo..hi] } else { &[][..] };
        match Self::matches(py, window, &value, true)?.first() {
            Some(i) => Ok(lo + i),
            None => Err(PyValueError::new_err(format!(
                "{} is not in list",
                value.repr()?
            ))),
        }
    }

    fn count(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<usize> {
        let (items, _) = self.snapshot(py)?;
        Ok(Self::matches(py, &items, &value, false)?.len())
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if index.is_instance_of::<PySlice>() {
            let (items, _) = self.snapshot(py)?;
            return Self::decoded(py, &items)?.as_any().get_item(index);
        }
        let i: isize = index.extract()?;
        match self.read(py, |items| {
            normalise(i, items.len()).map(|i| items[i].clone())
        })? {
            Some(text) => decode(py, &text),
            None => Err(PyIndexError::new_err("list index out of range")),
        }
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        index: Bound<'_, PyAny>,
        value: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if index.is_instance_of::<PySlice>() {
            // Apply the slice assignment to the decoded list, then store the
            // result if nothing changed meanwhile. The new items are read
            // (user iterators run) once, before the loop, so only other
            // threads can make it go round again.
            let value = PyList::new(py, value.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
            loop {
                let (items, version) = self.snapshot(py)?;
                let plain = Self::decoded(py, &items)?;
                plain.as_any().set_item(&index, &value)?;
                let texts = plain
                    .iter()
                    .map(|v| encode(&v))
                    .collect::<PyResult<Vec<_>>>()?;
                if self
                    .write(py, Some(version), |items| *items = texts)?
                    .is_some()
                {
                    return Ok(());
                }
            }
        }
        let i: isize = index.extract()?;
        let text = encode(&value)?;
        let done = self.write_now(py, |items| {
            normalise(i, items.len()).map(|i| items[i] = text)
        })?;
        done.ok_or_else(|| PyIndexError::new_err("list assignment index out of range"))
    }

    fn __delitem__(&self, py: Python<'_>, index: Bound<'_, PyAny>) -> PyResult<()> {
        if index.is_instance_of::<PySlice>() {
            loop {
                let (items, version) = self.snapshot(py)?;
                let positions = PyList::new(py, 0..items.len())?;
                positions.as_any().del_item(&index)?;
                let keep: Vec<usize> = positions.extract()?;
                let kept: Vec<Text> = keep.into_iter().map(|i| items[i].clone()).collect();
                if self
                    .write(py, Some(version), |items| *items = kept)?
                    .is_some()
                {
                    return Ok(());
                }
            }
        }
        let i: isize = index.extract()?;
        let done = self.write_now(py, |items| {
            normalise(i, items.len()).map(|i| items.remove(i))
        })?;
        done.map(drop)
            .ok_or_else(|| PyIndexError::new_err("list assignment index out of range"))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let (items, _) = self.snapshot(py)?;
        Self::decoded(py, &items)?.try_iter()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.read(py, <[Text]>::len)?)
    }

    fn __contains__(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<bool> {
        let (items, _) = self.snapshot(py)?;
        Ok(!Self::matches(py, &items, &value, true)?.is_empty())
    }

    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let (mut items, _) = self.snapshot(py)?;
        items.reverse();
        Self::decoded(py, &items)?.try_iter()
    }

    fn __iadd__(&self, py: Python<'_>, values: Bound<'_, PyAny>) -> PyResult<()> {
        self.extend(py, values)
    }

    /// Deletes the key whatever it holds, as `RedisList.clear()`'s UNLINK
    /// (and pottery's) does.
    fn clear(&self, py: Python<'_>) {
        let mut state = self.db.lock(py);
        state.version += 1;
        state.map.remove(&self.key);
    }

    fn reverse(&self, py: Python<'_>) -> PyResult<()> {
        self.write_now(py, |items| items.reverse())
    }

    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (items, _) = self.snapshot(py)?;
        Self::decoded(py, &items)
    }

    /// pottery's rule: equal to a list object or a plain `list` with equal items.
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Ok(py.NotImplemented());
        }
        let theirs = if let Ok(list) = other.cast::<StrictRedisList>() {
            Some(list.get().to_list(py)?)
        } else if other.is_exact_instance_of::<PyList>() {
            Some(other.cast_into::<PyList>()?)
        } else {
            None
        };
        let equal = match theirs {
            Some(theirs) => self.to_list(py)?.eq(theirs)?,
            None => false,
        };
        (equal == matches!(op, CompareOp::Eq)).into_py_any(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("StrictRedisList{}", self.to_list(py)?.repr()?))
    }

    #[getter]
    fn key(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}
