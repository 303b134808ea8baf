//! `PyCacheHandler`'s Python methods: madsci's `PyCacheHandler` API.

use pyo3::exceptions::{PyTypeError, PyUnicodeDecodeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::args::redis_arg;
use super::diagnostic::{diagnostic_cmd, refused, reply_to_py};
use super::dict::RedisDict;
use super::handler::PyCacheHandler;
use super::list::RedisList;
use super::lock::{create_lock, Redlock};
use super::options::apply_options;
use crate::connection::{Cmd, Config, Reply, RetryPolicy};
use crate::errors::run_detached;

/// The environment variable that points managers we do not construct
/// (madsci's `from_settings`) at a server of the deployment's choosing.
const SETTINGS_URL: &str = "MADSCI_CACHE_RS_URL";

fn bytes_to_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(PyString::new(py, s)),
        // As redis-py with decode_responses=True: strict UTF-8.
        Err(e) => Err(PyUnicodeDecodeError::new_utf8(py, bytes, e)?.into()),
    }
}

#[pymethods]
impl PyCacheHandler {
    /// `client`: a redis-py `Redis` or `RedisCluster` object (its settings
    /// are copied; it is not used) or a URL string.
    #[new]
    fn new(client: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::new_from(client)
    }

    /// Like madsci's, plus options: `db`, `username`, `socket_timeout`,
    /// `socket_connect_timeout` (seconds or None), `connect_attempts`,
    /// `client_cache` (default: the `MADSCI_CACHE_RS_CLIENT_CACHE`
    /// environment variable), `spin_wait` (seconds to poll for a reply
    /// before sleeping, 0 never; default `MADSCI_CACHE_RS_SPIN_WAIT` or
    /// 100 µs), `retry_window` (seconds a call waits out a server that is
    /// down, stalled or loading; default `MADSCI_CACHE_RS_RETRY_WINDOW` or
    /// 30 s), `client_name` (`CLIENT SETNAME` on every connection). When
    /// the `MADSCI_CACHE_RS_URL` environment variable is set, its URL (and
    /// its query options) is the server instead of `host` and `port`.
    #[classmethod]
    #[pyo3(signature = (host="localhost", port=6379, password=None, **options))]
    fn from_settings(
        _cls: &Bound<'_, PyType>,
        host: &str,
        port: u16,
        password: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        // madsci passes `password or None`: an empty password means none.
        let password = password.filter(|p| !p.is_empty());
        let env_url = std::env::var(SETTINGS_URL).ok();
        let mut cfg = match Config::from_env_url(SETTINGS_URL, env_url.as_deref())? {
            // madsci's own password fills in for a URL without one.
            Some(cfg) => {
                // Said once per handler, so a lab can tell why madsci's
                // host and port were not used.
                log::debug!(
                    target: "madsci_cache_rs",
                    "from_settings: {} from {SETTINGS_URL}, not {host}:{port}",
                    cfg.redacted_url()
                );
                match cfg.password {
                    Some(_) => cfg,
                    None => Config { password, ..cfg },
                }
            }
            None => Config {
                password,
                ..Config::tcp(host, port)
            },
        };
        let mut policy = RetryPolicy::default();
        apply_options(&mut cfg, &mut policy, options)?;
        Self::from_config(cfg, policy)
    }

    /// `redis://[[user]:password@]host[:port][/db]`, `unix:///path?db=N`,
    /// `redis+sentinel://s1:26379,s2:26379/service[/db]` or
    /// `redis+cluster://h1:p1,h2:p2` (TLS: `rediss`; also `valkey`, `valkeys`).
    #[classmethod]
    #[pyo3(signature = (url, **options))]
    fn from_url(
        _cls: &Bound<'_, PyType>,
        url: &str,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut cfg = Config::from_url(url)?;
        let mut policy = RetryPolicy::default();
        apply_options(&mut cfg, &mut policy, options)?;
        Self::from_config(cfg, policy)
    }

    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let k = redis_arg(key)?;
        match self.run(py, Cmd::new("GET").arg(&k), &k)? {
            Reply::Bulk(b) => Ok(Some(bytes_to_str(py, &b)?)),
            _ => Ok(None),
        }
    }

    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = redis_arg(key)?;
        let v = redis_arg(value)?;
        self.run(py, Cmd::new("SET").arg(&k).arg(v), &k)?;
        Ok(())
    }

    #[pyo3(signature = (key, amount=None), text_signature = "(self, key, amount=1)")]
    fn incr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        amount: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let k = redis_arg(key)?;
        let amount = match amount {
            Some(a) => redis_arg(a)?,
            None => b"1".to_vec(),
        };
        match self.run(py, Cmd::new("INCRBY").arg(&k).arg(amount), &k)? {
            Reply::Int(n) => Ok(n),
            // The once-form answers the stored text, exact past 2^53.
            Reply::Bulk(digits) => std::str::from_utf8(&digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| PyTypeError::new_err(format!("INCRBY answered {digits:?}"))),
            other => Err(PyTypeError::new_err(format!("INCRBY answered {other:?}"))),
        }
    }

    /// `True` when the server answers now (no waiting out an outage);
    /// never raises, but for what a signal handler raises meanwhile.
    fn ping(&self, py: Python<'_>) -> PyResult<bool> {
        let client = &self.client;
        let up = crate::gil::detach(py, || client.probe())?;
        match crate::gil::interruption() {
            Some(raised) => Err(raised),
            None => Ok(up),
        }
    }

    /// Private, for diagnostics (`madsci-cache-rs doctor`); not madsci's
    /// API. One command that only reads (`PING`, `INFO`, `CONFIG GET`,
    /// `SCAN`, `TYPE`, `PTTL`, `GET`, ...), one round trip, the GIL
    /// released. Returns `bytes`, `str` (a status), `int`, `list` or `None`;
    /// the server's refusal raises `CacheResponseError`, and a command that
    /// could change anything raises `ValueError` without being sent.
    #[pyo3(signature = (*args))]
    fn _command(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let args = args
            .iter()
            .map(|a| redis_arg(&a))
            .collect::<PyResult<Vec<_>>>()?;
        let (cmd, what) = diagnostic_cmd(&args).map_err(refused)?;
        let client = &self.client;
        let reply = run_detached(py, || client.call(cmd, &|| what.clone()))?;
        reply_to_py(py, &reply, &what)
    }

    /// Close the idle connections. Idempotent; the handler reconnects if
    /// used again, as redis-py's client does.
    fn close(&self) {
        self.client.close();
    }

    fn create_dict(&self, key: &Bound<'_, PyAny>) -> PyResult<RedisDict> {
        RedisDict::with_client(self.client.clone(), key)
    }

    fn create_list(&self, key: &Bound<'_, PyAny>) -> PyResult<RedisList> {
        RedisList::with_client(self.client.clone(), key)
    }

    /// madsci's `Redlock(key=key, masters={client}, auto_release_time=...)`:
    /// pottery's lock on this server, with fast hand-off. `masters` (redis-py
    /// clients, handlers or URLs) puts it on those servers instead, with
    /// pottery's quorum when there are several.
    #[pyo3(signature = (key, auto_release_time=60.0, masters=None))]
    fn create_lock(
        &self,
        key: &Bound<'_, PyAny>,
        auto_release_time: f64,
        masters: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Redlock> {
        create_lock(self.client.clone(), key, auto_release_time, masters)
    }

    /// The server's URL, without the password.
    #[getter]
    fn url(&self) -> String {
        self.client.redacted_url()
    }

    /// Whether reads may be answered from the client-side cache.
    #[getter]
    fn client_cache(&self) -> bool {
        self.client.client_cache_hits().is_some()
    }

    /// Reads answered from the client-side cache so far (`None` when off).
    #[getter]
    fn client_cache_hits(&self) -> Option<u64> {
        self.client.client_cache_hits()
    }

    /// Bytes the client-side cache holds, bookkeeping included (`None`
    /// when off). It starts over past 64 MiB.
    #[getter]
    fn client_cache_usage(&self) -> Option<usize> {
        self.client.client_cache_usage()
    }

    /// Empty the client-side cache (no-op when off); reads refill it.
    fn client_cache_clear(&self) {
        self.client.client_cache_clear();
    }

    fn __repr__(&self) -> String {
        let url = self.client.redacted_url();
        if self.client_cache() {
            format!("PyCacheHandler({url:?}, client_cache=True)")
        } else {
            format!("PyCacheHandler({url:?})")
        }
    }
}
