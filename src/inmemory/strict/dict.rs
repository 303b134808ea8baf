//! The strict dict: a hash of `encode(key) -> encode(value)` in the keyspace,
//! pottery's layout, read back through the decoder (fresh objects).

use std::sync::Arc;
use std::time::Instant;

use pyo3::basic::CompareOp;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyIterator, PyList, PyMapping, PyString, PyTuple, PyType};
use pyo3::IntoPyObjectExt;

use super::db::{wrong_type, Hash, Keyspace, StrictDb, Text, Value};
use super::{decode, decode_with, encode};
use crate::codec::{DictTemplate, KeyCache};
use crate::errors::CacheError;

#[pyclass(frozen, mapping, module = "madsci_cache_rs._native")]
pub struct StrictRedisDict {
    db: Arc<StrictDb>,
    key: Vec<u8>,
}

static KEYS_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static VALUES_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();

impl StrictRedisDict {
    pub fn build(db: Arc<StrictDb>, key: &str) -> Self {
        Self {
            db,
            key: key.as_bytes().to_vec(),
        }
    }

    /// Run `f` on the hash (absent = empty), failing on a key of another type.
    fn read<T>(&self, py: Python<'_>, f: impl FnOnce(Option<&Hash>) -> T) -> Result<T, CacheError> {
        let mut state = self.db.lock(py);
        match state.live(&self.key, Instant::now()) {
            None => Ok(f(None)),
            Some(Value::Hash(h)) => Ok(f(Some(h))),
            Some(_) => Err(wrong_type(&self.key)),
        }
    }

    /// Run `f` on the hash, creating it; an emptied hash disappears, as in Redis.
    fn write<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Hash) -> T) -> Result<T, CacheError> {
        let mut state = self.db.lock(py);
        let state: &mut Keyspace = &mut state;
        state.version += 1;
        let slot = match state.live(&self.key, Instant::now()) {
            None => state
                .map
                .entry(self.key.clone())
                .or_insert(Value::Hash(Hash::default())),
            Some(slot) => slot,
        };
        let Value::Hash(hash) = slot else {
            return Err(wrong_type(&self.key));
        };
        hash.plain = None;
        let out = f(hash);
        if hash.is_empty() {
            state.map.remove(&self.key);
        }
        Ok(out)
    }

    fn snapshot(&self, py: Python<'_>) -> PyResult<Vec<(Text, Text)>> {
        Ok(self.read(py, |h| {
            h.map(|h| h.entries().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })?)
    }

    /// The whole hash as a new dict: a copy of the decoded template while
    /// nothing was written, else decoded (and kept as the next template).
    fn plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (cached, version) = {
            let mut state = self.db.lock(py);
            let version = state.version;
            match state.live(&self.key, Instant::now()) {
                None => (None, version),
                Some(Value::Hash(h)) => (h.plain.clone(), version),
                Some(_) => return Err(wrong_type(&self.key).into()),
            }
        };
        if let Some(template) = cached {
            return template.copy(py);
        }
        let (out, mut keys) = (PyDict::new(py), KeyCache::new());
        for (k, v) in self.snapshot(py)? {
            let key = decode_with(py, &k, &mut keys)?;
            out.set_item(key, decode_with(py, &v, &mut keys)?)?;
        }
        let template = Arc::new(DictTemplate::new(&out)?);
        let mut state = self.db.lock(py);
        if state.version == version {
            if let Some(Value::Hash(h)) = state.map.get_mut(&self.key) {
                h.plain = Some(template);
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl StrictRedisDict {
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let field = encode(&key)?;
        match self.read(py, |h| h.and_then(|h| h.get(&field).cloned()))? {
            Some(value) => decode(py, &value),
            None => Err(PyKeyError::new_err((key.unbind(),))),
        }
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: Bound<'_, PyAny>,
        value: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (field, value) = (encode(&key)?, encode(&value)?);
        Ok(self.write(py, |h| h.insert(field, value))?)
    }

    fn __delitem__(&self, py: Python<'_>, key: Bound<'_, PyAny>) -> PyResult<()> {
        let field = encode(&key)?;
        match self.write(py, |h| h.remove(&field))? {
            Some(_) => Ok(()),
            None => Err(PyKeyError::new_err((key.unbind(),))),
        }
    }

    /// A key that cannot be encoded is simply absent (pottery's rule).
    fn __contains__(&self, py: Python<'_>, key: Bound<'_, PyAny>) -> PyResult<bool> {
        let field = match encode(&key) {
            Ok(field) => field,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(self.read(py, |h| h.is_some_and(|h| h.get(&field).is_some()))?)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let keys = self.read(py, |h| {
            h.map(|h| h.entries().map(|(k, _)| k.clone()).collect::<Vec<_>>())
        })?;
        let decoded = keys
            .unwrap_or_default()
            .iter()
            .map(|k| decode(py, k))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, decoded)?.try_iter()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.read(py, |h| h.map_or(0, Hash::len))?)
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let field = encode(&key)?;
        match self.read(py, |h| h.and_then(|h| h.get(&field).cloned()))? {
            Some(value) => decode(py, &value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        KEYS_VIEW
            .import(slf.py(), "collections.abc", "KeysView")?
            .call1((slf,))
    }

    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        VALUES_VIEW
            .import(slf.py(), "collections.abc", "ValuesView")?
            .call1((slf,))
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut keys = KeyCache::new();
        let pairs = self
            .snapshot(py)?
            .iter()
            .map(|(k, v)| {
                let key = decode_with(py, k, &mut keys)?;
                PyTuple::new(py, [key, decode_with(py, v, &mut keys)?])
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    /// Every pair is encoded before anything is written: one bad value and
    /// the dict is unchanged (one `HSET`, as the server family sends).
    #[pyo3(signature = (*args, **kwargs))]
    fn update(
        &self,
        py: Python<'_>,
        args: Bound<'_, PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        // One plain dict is read as it is; anything else through a scratch
        // dict, which gives `dict.update`'s argument rules and messages.
        let source = match (args.len(), &kwargs) {
            (1, None) if args.get_item(0)?.is_exact_instance_of::<PyDict>() => {
                args.get_item(0)?.cast_into::<PyDict>()?
            }
            _ => {
                let scratch = PyDict::new(py);
                scratch.call_method("update", args, kwargs.as_ref())?;
                scratch
            }
        };
        let mut pairs = Vec::with_capacity(source.len());
        for (k, v) in source.iter() {
            pairs.push((encode(&k)?, encode(&v)?));
        }
        if pairs.is_empty() {
            return Ok(());
        }
        Ok(self.write(py, |h| {
            for (k, v) in pairs {
                h.insert(k, v);
            }
        })?)
    }

    /// Deletes the key whatever it holds, as the server's `DEL` does (and
    /// as the list's `clear` does).
    fn clear(&self, py: Python<'_>) {
        let mut state = self.db.lock(py);
        state.version += 1;
        state.map.remove(&self.key);
    }

    /// `pop(key[, default])`: an explicit `None` default is a default.
    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        default: Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if default.len() > 1 {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        let field = encode(&key)?;
        match self.write(py, |h| h.remove(&field))? {
            Some(value) => decode(py, &value),
            None => match default.get_item(0) {
                Ok(default) => Ok(default),
                Err(_) => Err(PyKeyError::new_err((key.unbind(),))),
            },
        }
    }

    /// The first pair in iteration order, as `MutableMapping.popitem`.
    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let taken = self.write(py, |h| {
            let first = h.entries().next().map(|(k, _)| k.clone());
            first.and_then(|k| h.remove(&k).map(|v| (k, v)))
        })?;
        match taken {
            Some((k, v)) => PyTuple::new(py, [decode(py, &k)?, decode(py, &v)?]),
            None => Err(PyKeyError::new_err(())),
        }
    }

    #[pyo3(signature = (key, default = None))]
    fn setdefault<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // `MutableMapping.setdefault` as pottery runs it: an existing value is
        // read back (the default is never encoded); otherwise the default is
        // stored and returned as given.
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        let field = encode(&key)?;
        if let Some(existing) = self.read(py, |h| h.and_then(|h| h.get(&field).cloned()))? {
            return decode(py, &existing);
        }
        let value = encode(&default)?;
        let raced = self.write(py, |h| match h.get(&field) {
            Some(existing) => Some(existing.clone()),
            None => {
                h.insert(field, value);
                None
            }
        })?;
        match raced {
            Some(existing) => decode(py, &existing),
            None => Ok(default),
        }
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.plain(py)
    }

    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) || other.cast::<PyMapping>().is_err() {
            return Ok(py.NotImplemented());
        }
        let theirs = PyDict::new(py);
        theirs.call_method1("update", (other.call_method0("items")?,))?;
        let equal = self.plain(py)?.eq(theirs)?;
        (equal == matches!(op, CompareOp::Eq)).into_py_any(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("StrictRedisDict{}", self.plain(py)?.repr()?))
    }

    #[getter]
    fn key(&self, py: Python<'_>) -> Py<PyString> {
        PyString::new(py, &String::from_utf8_lossy(&self.key)).unbind()
    }
}
