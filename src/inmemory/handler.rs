//! `InMemoryCacheHandler`: madsci's in-memory handler, and with
//! `strict=True` the server-faithful variant (see `strict`).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use super::client::InMemoryRedisClient;
use super::dict::InMemoryRedisDict;
use super::list::InMemoryRedisList;
use super::lock::InMemoryRedlock;
use super::registry;
use super::strict::{StrictDb, StrictRedisDict, StrictRedisList, StrictRedlock};

enum Backend {
    /// madsci's behaviour; the client may be ours or any object with
    /// madsci's client methods (`incr`, `get`, `set`).
    Default(Py<PyAny>),
    Strict(Arc<StrictDb>),
}

#[pyclass(frozen, subclass, module = "madsci_cache_rs._native")]
pub struct InMemoryCacheHandler {
    backend: Backend,
}

#[pymethods]
impl InMemoryCacheHandler {
    /// Without a client: clear every registry (madsci does, so each test's
    /// fresh handler starts empty) and make a new client. With one: share
    /// that client's data. `strict=True` gives a private server-like store.
    #[new]
    #[pyo3(signature = (client = None, *, strict = false))]
    fn new(py: Python<'_>, client: Option<Bound<'_, PyAny>>, strict: bool) -> PyResult<Self> {
        if strict {
            let db = match client {
                None => Arc::new(StrictDb::default()),
                Some(other) => match other.cast::<InMemoryCacheHandler>() {
                    Ok(h) => match &h.get().backend {
                        Backend::Strict(db) => db.clone(),
                        Backend::Default(_) => {
                            return Err(pyo3::exceptions::PyTypeError::new_err(
                                "a strict handler can share only another strict handler's store",
                            ))
                        }
                    },
                    Err(_) => {
                        return Err(pyo3::exceptions::PyTypeError::new_err(
                            "strict=True takes no client, or another strict InMemoryCacheHandler",
                        ))
                    }
                },
            };
            return Ok(Self {
                backend: Backend::Strict(db),
            });
        }
        let client = match client {
            Some(client) => client.unbind(),
            None => {
                registry::clear_all_registries(py)?;
                Py::new(py, InMemoryRedisClient::create())?.into_any()
            }
        };
        Ok(Self {
            backend: Backend::Default(client),
        })
    }

    /// The client (default mode), or `None` in strict mode.
    #[getter]
    fn _client(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.backend {
            Backend::Default(client) => Some(client.clone_ref(py)),
            Backend::Strict(_) => None,
        }
    }

    #[getter]
    fn strict(&self) -> bool {
        matches!(self.backend, Backend::Strict(_))
    }

    #[pyo3(signature = (key, amount = None))]
    fn incr<'py>(
        &self,
        py: Python<'py>,
        key: Bound<'py, PyAny>,
        amount: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let amount = amount.unwrap_or_else(|| PyInt::new(py, 1).into_any());
        match &self.backend {
            Backend::Default(client) => {
                let client = client.bind(py);
                if let (Ok(ours), Ok(key)) =
                    (client.cast::<InMemoryRedisClient>(), key.cast::<PyString>())
                {
                    return ours.get().incr_value(py, key.to_str()?, &amount);
                }
                client.call_method1(pyo3::intern!(py, "incr"), (key, amount))
            }
            Backend::Strict(db) => db.incr(py, &key, &amount),
        }
    }

    fn get<'py>(&self, py: Python<'py>, key: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match &self.backend {
            Backend::Default(client) => {
                let client = client.bind(py);
                if let (Ok(ours), Ok(key)) =
                    (client.cast::<InMemoryRedisClient>(), key.cast::<PyString>())
                {
                    return Ok(match ours.get().get_value(py, key.to_str()?) {
                        Some(v) => v.into_bound(py).into_any(),
                        None => py.None().into_bound(py),
                    });
                }
                client.call_method1(pyo3::intern!(py, "get"), (key,))
            }
            Backend::Strict(db) => db.get(py, &key),
        }
    }

    fn set(&self, py: Python<'_>, key: Bound<'_, PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
        match &self.backend {
            Backend::Default(client) => {
                let client = client.bind(py);
                if let (Ok(ours), Ok(key)) =
                    (client.cast::<InMemoryRedisClient>(), key.cast::<PyString>())
                {
                    return ours.get().set_value(py, key.to_str()?, &value);
                }
                client.call_method1(pyo3::intern!(py, "set"), (key, value))?;
                Ok(())
            }
            Backend::Strict(db) => db.set(py, &key, &value),
        }
    }

    fn ping(&self) -> bool {
        true
    }

    fn close(&self) {}

    fn create_dict(&self, py: Python<'_>, key: Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        match &self.backend {
            Backend::Default(client) => Ok(Bound::new(
                py,
                InMemoryRedisDict::build(py, key, client.bind(py).clone())?,
            )?
            .into_any()
            .unbind()),
            Backend::Strict(db) => {
                Ok(Py::new(py, StrictRedisDict::build(db.clone(), key.to_str()?))?.into_any())
            }
        }
    }

    fn create_list(&self, py: Python<'_>, key: Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        match &self.backend {
            Backend::Default(client) => Ok(Bound::new(
                py,
                InMemoryRedisList::build(py, key, client.bind(py).clone())?,
            )?
            .into_any()
            .unbind()),
            Backend::Strict(db) => {
                Ok(Py::new(py, StrictRedisList::build(db.clone(), key.to_str()?))?.into_any())
            }
        }
    }

    #[pyo3(signature = (key, auto_release_time = None))]
    fn create_lock(
        &self,
        py: Python<'_>,
        key: Bound<'_, PyString>,
        auto_release_time: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let seconds = auto_release_time.unwrap_or(60.0);
        match &self.backend {
            Backend::Default(_) => Ok(Py::new(py, InMemoryRedlock::build(py, key)?)?.into_any()),
            Backend::Strict(db) => Ok(Py::new(
                py,
                StrictRedlock::build(db.clone(), key.to_str()?, seconds)?,
            )?
            .into_any()),
        }
    }

    fn __repr__(&self) -> &'static str {
        match self.backend {
            Backend::Default(_) => "InMemoryCacheHandler()",
            Backend::Strict(_) => "InMemoryCacheHandler(strict=True)",
        }
    }
}
