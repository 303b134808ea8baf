//! `RedisDict`: a Redis hash in pottery's wire format (field =
//! `encode(key)`, value = `encode(value)`), one round trip per operation.

use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::handler::transport_of;
use super::keyed::Keyed;
use super::pydantic::validation_snapshot;
use super::scripts::{DICT_POP, DICT_POPITEM, DICT_SETDEFAULT};
use super::values::{decode_list, decode_pairs, decode_reply};
use crate::codec::encode_json;
use crate::connection::{Cmd, Reply, Transport};

/// A dict kept in a Redis hash, byte-compatible with pottery's `RedisDict`.
#[pyclass(frozen, mapping, module = "madsci_cache_rs", name = "RedisDict")]
pub struct RedisDict {
    target: Keyed,
}

impl RedisDict {
    pub fn with_client(client: Arc<dyn Transport>, key: &Bound<'_, PyAny>) -> PyResult<RedisDict> {
        Ok(RedisDict {
            target: Keyed::new(client, key)?,
        })
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        decode_pairs(py, &self.target.run(py, self.target.cmd("HGETALL"))?)
    }

    fn decoded_list<'py>(&self, py: Python<'py>, cmd: Cmd) -> PyResult<Bound<'py, PyList>> {
        decode_list(py, &self.target.run(py, cmd)?)
    }
}

#[pymethods]
impl RedisDict {
    /// `RedisDict(key=..., redis=handler)`; `redis` may also be anything
    /// `PyCacheHandler(...)` accepts (a redis-py client, a URL).
    #[new]
    #[pyo3(signature = (*, key, redis))]
    fn new(key: &Bound<'_, PyAny>, redis: &Bound<'_, PyAny>) -> PyResult<Self> {
        let client = transport_of(redis)?;
        RedisDict::with_client(client, key)
    }

    #[getter]
    fn key(&self) -> &str {
        self.target.key()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        k: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let field = encode_json(k)?;
        match self.target.run(py, self.target.cmd("HGET").arg(field))? {
            Reply::Nil => Err(PyKeyError::new_err(k.clone().unbind())),
            reply => decode_reply(py, &reply),
        }
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        k: &Bound<'_, PyAny>,
        v: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (field, value) = (encode_json(k)?, encode_json(v)?);
        self.target
            .run(py, self.target.cmd("HSET").arg(field).arg(value))?;
        Ok(())
    }

    fn __delitem__(&self, py: Python<'_>, k: &Bound<'_, PyAny>) -> PyResult<()> {
        let field = encode_json(k)?;
        match self.target.run(py, self.target.cmd("HDEL").arg(field))? {
            Reply::Int(0) => Err(PyKeyError::new_err(k.clone().unbind())),
            _ => Ok(()),
        }
    }

    /// A key that cannot be encoded cannot be stored: `False`, no command
    /// (as pottery).
    fn __contains__(&self, py: Python<'_>, k: &Bound<'_, PyAny>) -> PyResult<bool> {
        let field = match encode_json(k) {
            Ok(field) => field,
            Err(e) if e.is_instance_of::<PyTypeError>(py) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(self.target.run(py, self.target.cmd("HEXISTS").arg(field))? == Reply::Int(1))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        match self.target.run(py, self.target.cmd("HLEN"))? {
            Reply::Int(n) => Ok(n as usize),
            _ => Ok(0),
        }
    }

    /// Iterates a snapshot of the keys (one HKEYS).
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.decoded_list(py, self.target.cmd("HKEYS"))?
            .try_iter()
            .map(|i| i.into_any())
    }

    /// One HGET; inside pydantic's `model_validate`, one HGETALL for the
    /// whole validation (see `pydantic.rs`).
    #[pyo3(signature = (k, default=None))]
    fn get<'py>(
        slf: &Bound<'py, Self>,
        k: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if let Some(snapshot) = validation_snapshot(slf.as_any(), Some(k), || this.snapshot(py))? {
            return Ok(match snapshot.get_item(k)? {
                Some(v) => v,
                None => default.unwrap_or_else(|| py.None().into_bound(py)),
            });
        }
        let field = encode_json(k)?;
        match this.target.run(py, this.target.cmd("HGET").arg(field))? {
            Reply::Nil => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
            reply => decode_reply(py, &reply),
        }
    }

    /// A snapshot `dict` (one HGETALL).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.snapshot(py)
    }

    /// Views of a snapshot (one round trip each), not live views: a live
    /// view would cost a round trip per element.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let keys = self.decoded_list(py, self.target.cmd("HKEYS"))?;
        let dict = PyDict::new(py);
        for k in keys.iter() {
            dict.set_item(k, py.None())?;
        }
        dict.call_method0("keys")
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.snapshot(py)?.call_method0("values")
    }

    /// pydantic calls this besides `get` for `extra='forbid'`/`'allow'`
    /// models: served from the same validation snapshot.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        let snapshot = match validation_snapshot(slf.as_any(), None, || this.snapshot(py))? {
            Some(snapshot) => snapshot,
            None => this.snapshot(py)?,
        };
        snapshot.call_method0("items")
    }

    /// `dict.update` semantics, one HSET; every value is encoded before
    /// anything is sent, so a bad value writes nothing.
    #[pyo3(signature = (*args, **kwargs))]
    fn update(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let merged = PyDict::new(py);
        // Another RedisDict would be read a key at a time by dict.update
        // (keys(), then one HGET per key): read it in one HGETALL instead.
        let args = match args.get_item(0).ok() {
            Some(first) if args.len() == 1 => match first.cast::<RedisDict>() {
                Ok(other) => PyTuple::new(py, [other.get().snapshot(py)?])?,
                Err(_) => args.clone(),
            },
            _ => args.clone(),
        };
        merged.call_method("update", &args, kwargs)?;
        if merged.is_empty() {
            return Ok(());
        }
        let mut cmd = self.target.cmd("HSET");
        for (k, v) in merged.iter() {
            cmd.push(&encode_json(&k)?);
            cmd.push(&encode_json(&v)?);
        }
        self.target.run(py, cmd)?;
        Ok(())
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.target.run(py, self.target.cmd("UNLINK"))?;
        Ok(())
    }

    #[pyo3(signature = (k, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        k: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if default.len() > 1 {
            return Err(PyTypeError::new_err(format!(
                "pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        let field = encode_json(k)?;
        match self.target.eval(py, &DICT_POP, "HGET+HDEL", &[&field])? {
            Reply::Nil => match default.get_item(0) {
                Ok(d) => Ok(d),
                Err(_) => Err(PyKeyError::new_err(k.clone().unbind())),
            },
            reply => decode_reply(py, &reply),
        }
    }

    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self.target.eval(py, &DICT_POPITEM, "popitem", &[])? {
            reply @ (Reply::Bulks { .. } | Reply::Array(_)) => {
                let pair = decode_list(py, &reply)?;
                PyTuple::new(py, pair)
            }
            _ => Err(PyKeyError::new_err("popitem(): dictionary is empty")),
        }
    }

    #[pyo3(signature = (k, default=None))]
    fn setdefault<'py>(
        &self,
        py: Python<'py>,
        k: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        let (field, value) = (encode_json(k)?, encode_json(&default)?);
        let reply = self
            .target
            .eval(py, &DICT_SETDEFAULT, "HSETNX+HGET", &[&field, &value])?;
        decode_reply(py, &reply)
    }

    /// Equal to any mapping with the same items (`Mapping.__eq__`).
    fn __eq__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let mine = self.snapshot(py)?;
        let theirs = if let Ok(d) = other.cast::<RedisDict>() {
            d.get().snapshot(py)?.into_any()
        } else if other.is_instance(&mapping_abc(py)?)? {
            PyDict::from_sequence(&other.call_method0("items")?)?.into_any()
        } else {
            return Ok(py.NotImplemented());
        };
        Ok(mine
            .eq(theirs)?
            .into_pyobject(py)?
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("RedisDict{}", self.snapshot(py)?.repr()?))
    }
}

fn mapping_abc(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("collections.abc")?.getattr("Mapping")
}
