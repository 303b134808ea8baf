//! The crate's one error type and its one mapping to Python exceptions.
//!
//! `CacheError` is plain Rust so the connection and lock rules can be tested
//! without an interpreter; `From<CacheError> for PyErr` is the only place that
//! chooses a Python exception class. Messages name the key and the server
//! address and never a password: callers build them from redacted parts.

use std::fmt;

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The server could not be reached, or the connection broke.
    Connection { context: String, detail: String },
    /// The server refused the user name or password. Not retried: a wrong
    /// password does not fix itself.
    Authentication { context: String, detail: String },
    /// The server did not answer in time.
    Timeout { context: String, detail: String },
    /// The server answered with an error.
    Response { context: String, detail: String },
    /// A write may have been applied or not, and the retry window ran out
    /// before the server could say which.
    OutcomeUnknown { context: String, detail: String },
    /// A write the primary applied but fewer replicas than `wait_replicas`
    /// confirmed in time: a failover now could lose it. Python sees a
    /// `CacheOutcomeUnknownError`; the lock tells it apart (`lock.rs`).
    NotReplicated { context: String, detail: String },
    /// A Python signal handler asked a wait to stop; the Python layer
    /// raises what the handler raised (see `interrupt.rs`).
    Interrupted,
    /// A lock could not be acquired (`with lock:` or a timed-out acquire).
    QuorumNotAchieved { key: String },
    /// `release()` of a lock that is not held (never acquired, or expired).
    ReleaseUnlockedLock { key: String },
    /// `extend()` of a lock that is not held.
    ExtendUnlockedLock { key: String },
    /// `extend()` called more often than the lock allows.
    TooManyExtensions { key: String, limit: u32 },
    /// A value of the wrong type for the operation (Python `TypeError`).
    WrongType { context: String, detail: String },
    /// A value that is the right type but unusable (Python `ValueError`).
    InvalidValue { context: String, detail: String },
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Connection { context, detail }
            | CacheError::Authentication { context, detail }
            | CacheError::Timeout { context, detail }
            | CacheError::Response { context, detail }
            | CacheError::OutcomeUnknown { context, detail }
            | CacheError::NotReplicated { context, detail }
            | CacheError::WrongType { context, detail }
            | CacheError::InvalidValue { context, detail } => write!(f, "{context}: {detail}"),
            CacheError::QuorumNotAchieved { key } => write!(f, "could not acquire lock {key:?}"),
            CacheError::Interrupted => f.write_str("interrupted by a signal handler"),
            CacheError::ReleaseUnlockedLock { key } => {
                write!(f, "cannot release lock {key:?}: it is not held (never acquired, or its lease expired)")
            }
            CacheError::ExtendUnlockedLock { key } => {
                write!(f, "cannot extend lock {key:?}: it is not held")
            }
            CacheError::TooManyExtensions { key, limit } => {
                write!(f, "cannot extend lock {key:?} more than {limit} times")
            }
        }
    }
}

impl std::error::Error for CacheError {}

impl CacheError {
    /// The lock a lock error is about: the exception's `key` attribute, so a
    /// handler can tell which lock failed without parsing the message.
    pub fn lock_key(&self) -> Option<&str> {
        match self {
            CacheError::QuorumNotAchieved { key }
            | CacheError::ReleaseUnlockedLock { key }
            | CacheError::ExtendUnlockedLock { key }
            | CacheError::TooManyExtensions { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The exception classes, built once per interpreter.
struct ExceptionTypes {
    cache: Py<PyType>,
    connection: Py<PyType>,
    authentication: Py<PyType>,
    timeout: Py<PyType>,
    response: Py<PyType>,
    outcome_unknown: Py<PyType>,
    primitive: Py<PyType>,
    quorum: Py<PyType>,
    release: Py<PyType>,
    extend: Py<PyType>,
    too_many: Py<PyType>,
}

static TYPES: PyOnceLock<ExceptionTypes> = PyOnceLock::new();

/// `type(name, bases, {...})`: how we get classes with two bases (ours and
/// the builtin they stand for), which `create_exception!` cannot make.
fn new_class(
    py: Python<'_>,
    name: &str,
    bases: &[&Bound<'_, PyType>],
    doc: &str,
) -> PyResult<Py<PyType>> {
    new_class_with(py, name, bases, doc, &PyDict::new(py))
}

fn new_class_with(
    py: Python<'_>,
    name: &str,
    bases: &[&Bound<'_, PyType>],
    doc: &str,
    namespace: &Bound<'_, PyDict>,
) -> PyResult<Py<PyType>> {
    namespace.set_item("__module__", "madsci_cache_rs")?;
    namespace.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let cls = py.get_type::<PyType>().call1((name, bases, namespace))?;
    Ok(cls.cast_into::<PyType>()?.unbind())
}

fn types(py: Python<'_>) -> PyResult<&ExceptionTypes> {
    TYPES.get_or_try_init(py, || {
        let builtin = |name: &str| -> PyResult<Bound<'_, PyType>> {
            Ok(py
                .import("builtins")?
                .getattr(name)?
                .cast_into::<PyType>()?)
        };
        let runtime = builtin("RuntimeError")?;
        let cache = new_class(
            py,
            "CacheError",
            &[&py.get_type::<PyException>()],
            "Base of every error this package raises.",
        )?;
        let c = cache.bind(py);
        // A class-level default so `err.key` works on every lock error,
        // including one a subclass raises without a key.
        let lock_namespace = PyDict::new(py);
        lock_namespace.set_item("key", py.None())?;
        let primitive = new_class_with(
            py,
            "PrimitiveError",
            &[c],
            "Base of the lock errors (pottery's name); `key` is the lock's key.",
            &lock_namespace,
        )?;
        let p = primitive.bind(py);
        let lock = |name: &str, doc: &str| new_class(py, name, &[p, &runtime], doc);
        let connection = new_class(
            py,
            "CacheConnectionError",
            &[c, &builtin("ConnectionError")?],
            "The cache server could not be reached, or the connection broke.",
        )?;
        Ok(ExceptionTypes {
            authentication: new_class(
                py,
                "CacheAuthenticationError",
                &[connection.bind(py)],
                "The cache server refused the user name or password \
                 (redis-py's AuthenticationError). Never retried.",
            )?,
            outcome_unknown: new_class(
                py,
                "CacheOutcomeUnknownError",
                &[connection.bind(py)],
                "A write may or may not have been applied: the server did not say \
                 before the retry window ran out.",
            )?,
            connection,
            timeout: new_class(
                py,
                "CacheTimeoutError",
                &[c, &builtin("TimeoutError")?],
                "The cache server did not answer in time.",
            )?,
            response: new_class(
                py,
                "CacheResponseError",
                &[c],
                "The cache server answered with an error.",
            )?,
            quorum: lock("QuorumNotAchieved", "The lock could not be acquired.")?,
            release: lock(
                "ReleaseUnlockedLock",
                "release() of a lock that is not held.",
            )?,
            extend: lock("ExtendUnlockedLock", "extend() of a lock that is not held.")?,
            too_many: lock(
                "TooManyExtensions",
                "extend() called more often than allowed.",
            )?,
            primitive,
            cache,
        })
    })
}

/// Add the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let t = types(m.py())?;
    for cls in [
        &t.cache,
        &t.connection,
        &t.authentication,
        &t.timeout,
        &t.response,
        &t.outcome_unknown,
        &t.primitive,
        &t.quorum,
        &t.release,
        &t.extend,
        &t.too_many,
    ] {
        let cls = cls.bind(m.py());
        m.add(cls.name()?, cls)?;
    }
    Ok(())
}

impl From<CacheError> for PyErr {
    fn from(err: CacheError) -> PyErr {
        Python::attach(|py| {
            let t = match types(py) {
                Ok(t) => t,
                Err(e) => return e,
            };
            let cls = match &err {
                CacheError::Connection { .. } => &t.connection,
                CacheError::Authentication { .. } => &t.authentication,
                CacheError::Timeout { .. } => &t.timeout,
                CacheError::Response { .. } => &t.response,
                CacheError::OutcomeUnknown { .. } | CacheError::NotReplicated { .. } => {
                    &t.outcome_unknown
                }
                CacheError::Interrupted => return crate::gil::take_interruption(py),
                CacheError::QuorumNotAchieved { .. } => &t.quorum,
                CacheError::ReleaseUnlockedLock { .. } => &t.release,
                CacheError::ExtendUnlockedLock { .. } => &t.extend,
                CacheError::TooManyExtensions { .. } => &t.too_many,
                CacheError::WrongType { .. } => return PyTypeError::new_err(err.to_string()),
                CacheError::InvalidValue { .. } => return PyValueError::new_err(err.to_string()),
            };
            match err.lock_key() {
                Some(key) => with_key(cls.bind(py), &err.to_string(), key),
                None => PyErr::from_type(cls.bind(py).clone(), err.to_string()),
            }
        })
    }
}

/// A lock error whose `key` attribute names the lock.
fn with_key(cls: &Bound<'_, PyType>, message: &str, key: &str) -> PyErr {
    let made = cls.call1((message,)).and_then(|exc| {
        exc.setattr("key", key)?;
        Ok(exc)
    });
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// Run `work` with the GIL released (`gil::detach`) and map its error:
/// every wait on the network goes through here.
pub fn run_detached<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, CacheError> + Send,
{
    crate::gil::detach(py, work)?.map_err(PyErr::from)
}

#[cfg(test)]
mod tests {
    use super::CacheError;

    #[test]
    fn messages_name_the_key_and_context() {
        let e = CacheError::Connection {
            context: "GET 'k' on 127.0.0.1:7000".into(),
            detail: "refused".into(),
        };
        assert_eq!(e.to_string(), "GET 'k' on 127.0.0.1:7000: refused");
        assert!(CacheError::ReleaseUnlockedLock {
            key: "node:1".into()
        }
        .to_string()
        .contains("\"node:1\""));
        assert!(CacheError::TooManyExtensions {
            key: "k".into(),
            limit: 3
        }
        .to_string()
        .contains("3 times"));
    }

    #[test]
    fn only_lock_errors_have_a_key() {
        let lock = CacheError::QuorumNotAchieved { key: "k".into() };
        assert_eq!(lock.lock_key(), Some("k"));
        let auth = CacheError::Authentication {
            context: "connecting to h:1 as \"bob\"".into(),
            detail: "AUTH refused: WRONGPASS".into(),
        };
        assert_eq!(auth.lock_key(), None);
        assert_eq!(
            auth.to_string(),
            "connecting to h:1 as \"bob\": AUTH refused: WRONGPASS"
        );
    }
}
