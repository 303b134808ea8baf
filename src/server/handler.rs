//! `PyCacheHandler`, the server-backed handler madsci's managers use, and
//! how any Python argument that names a server (a handler, a redis-py
//! client, a URL) becomes a transport. Its Python methods are in
//! `handler_methods.rs`, which builds dicts, lists and locks on it; this
//! file depends on none of them, so they can take a handler as argument.

use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::options::config_from_redis_py;
use crate::connection::config::Addr;
use crate::connection::{
    describe, CachingClient, Client, ClusterClient, Cmd, Config, Reply, RetryPolicy, Transport,
};
use crate::errors::run_detached;

/// A cache handler on a Valkey/Redis server: madsci's `PyCacheHandler`,
/// with a pooled, thread-safe connection that is made lazily, survives
/// server restarts and never sends a command twice.
#[pyclass(frozen, module = "madsci_cache_rs", name = "PyCacheHandler")]
pub struct PyCacheHandler {
    pub client: Arc<dyn Transport>,
}

impl PyCacheHandler {
    pub(super) fn from_config(
        mut cfg: Config,
        mut policy: RetryPolicy,
    ) -> PyResult<PyCacheHandler> {
        cfg.greet = true;
        let cfg = cfg.prepare()?;
        if let Some(window) = cfg.retry_window {
            policy.window = window;
        }
        let cached = cfg.wants_client_cache()?;
        if let Some(problem) = cfg.wait_problem(cached) {
            return Err(PyValueError::new_err(problem));
        }
        if matches!(cfg.addr, Addr::Cluster(_)) {
            // The client-side cache tracks keys per primary there.
            let cluster = ClusterClient::new(cfg, policy).with_client_cache(cached);
            return Ok(PyCacheHandler {
                client: Arc::new(cluster),
            });
        }
        let pool = Client::new(cfg, policy);
        let client: Arc<dyn Transport> = if cached {
            Arc::new(CachingClient::new(pool))
        } else {
            Arc::new(pool)
        };
        Ok(PyCacheHandler { client })
    }

    /// A handler from a redis-py client or a URL string.
    pub fn new_from(client: &Bound<'_, PyAny>) -> PyResult<Self> {
        let cfg = match client.cast::<PyString>() {
            Ok(url) => Config::from_url(url.to_str()?)?,
            Err(_) => config_from_redis_py(client).map_err(|e| {
                if e.is_instance_of::<PyTypeError>(client.py())
                    || e.is_instance_of::<PyAttributeError>(client.py())
                {
                    PyTypeError::new_err(
                        "PyCacheHandler(client): expected a redis-py Redis client or a URL string",
                    )
                } else {
                    e
                }
            })?,
        };
        Self::from_config(cfg, RetryPolicy::default())
    }

    /// Run one command for `key`, without the GIL.
    pub(super) fn run(&self, py: Python<'_>, cmd: Cmd, key: &[u8]) -> PyResult<Reply> {
        let client = &self.client;
        let op = cmd.name();
        run_detached(py, || client.call(cmd, &|| describe(op, key)))
    }
}

/// The transport for a server given as a `PyCacheHandler` (shared, not
/// copied), a redis-py client (its settings copied) or a URL.
pub fn transport_of(server: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Transport>> {
    match server.cast::<PyCacheHandler>() {
        Ok(handler) => Ok(handler.get().client.clone()),
        Err(_) => Ok(PyCacheHandler::new_from(server)?.client),
    }
}
