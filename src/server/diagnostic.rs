//! The one raw command `PyCacheHandler._command` sends for diagnostics
//! (`madsci-cache-rs doctor`), and its reply as a Python value.
//!
//! Only commands that read and change nothing pass: the doctor is pointed at
//! a lab's live server, and a diagnostic must not be able to alter it, nor
//! become a general back door around the handler's exactly-once writes.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use pyo3::IntoPyObjectExt;

use crate::connection::retry::Resend;
use crate::connection::{Cmd, Reply};
use crate::errors::CacheError;

/// The commands allowed, and whether their first argument is a key (named
/// in error messages).
const ALLOWED: &[(&str, bool)] = &[
    ("PING", false),
    ("INFO", false),
    ("CONFIG", false),
    ("DBSIZE", false),
    ("ROLE", false),
    ("LASTSAVE", false),
    ("CLUSTER", false),
    ("SCAN", false),
    ("TYPE", true),
    ("PTTL", true),
    ("TTL", true),
    ("EXISTS", true),
    ("GET", true),
    ("STRLEN", true),
    ("HGET", true),
    ("HLEN", true),
    ("LLEN", true),
];

/// The `CLUSTER` subcommands that only read the topology.
const CLUSTER_READS: &[&str] = &["SLOTS", "SHARDS", "INFO", "NODES", "MYID"];

/// `args` (name first) as a command safe to send again after a lost reply,
/// and what error messages call it (`GET "k"`, `CONFIG GET`); or why it is
/// refused.
pub fn diagnostic_cmd(args: &[Vec<u8>]) -> Result<(Cmd, String), String> {
    let Some((name, rest)) = args.split_first() else {
        return Err("_command() needs a command name".into());
    };
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    let Some(&(name, keyed)) = ALLOWED.iter().find(|(n, _)| *n == upper) else {
        return Err(format!(
            "_command() sends only diagnostic reads, not {upper:?}: {}",
            ALLOWED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    // CONFIG SET, REWRITE and RESETSTAT change the server.
    if name == "CONFIG" && !rest.first().is_some_and(|s| s.eq_ignore_ascii_case(b"GET")) {
        return Err("_command() sends only CONFIG GET of the CONFIG subcommands".into());
    }
    // Most CLUSTER subcommands change the topology (FAILOVER, SETSLOT ...).
    let reads_topology = |sub: &[u8]| {
        CLUSTER_READS
            .iter()
            .any(|r| sub.eq_ignore_ascii_case(r.as_bytes()))
    };
    if name == "CLUSTER" && !rest.first().is_some_and(|s| reads_topology(s)) {
        return Err(format!(
            "_command() sends only these CLUSTER subcommands: {}",
            CLUSTER_READS.join(", ")
        ));
    }
    let what = match rest.first() {
        Some(key) if keyed => crate::connection::describe(name, key),
        Some(_) if name == "CONFIG" => "CONFIG GET".into(),
        Some(sub) if name == "CLUSTER" => {
            format!(
                "CLUSTER {}",
                String::from_utf8_lossy(sub).to_ascii_uppercase()
            )
        }
        _ => name.into(),
    };
    let cmd = rest.iter().fold(Cmd::new(name), |cmd, a| cmd.arg(a));
    Ok((cmd.with_resend(Resend::Read), what))
}

/// A reply as Python: `bytes` (bulk), `str` (status), `int`, `list` or
/// `None`; an error inside an array raises, as a top-level one does.
pub fn reply_to_py(py: Python<'_>, reply: &Reply, what: &str) -> PyResult<Py<PyAny>> {
    Ok(match reply {
        Reply::Nil => py.None(),
        Reply::Int(n) => n.into_py_any(py)?,
        Reply::Bulk(b) => PyBytes::new(py, b).into_any().unbind(),
        Reply::Status(s) => PyString::new(py, s).into_any().unbind(),
        Reply::Error(detail) => {
            return Err(CacheError::Response {
                context: what.to_owned(),
                detail: detail.clone(),
            }
            .into())
        }
        Reply::Array(items) | Reply::Push(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(reply_to_py(py, item, what)?)?;
            }
            list.into_any().unbind()
        }
        Reply::Bulks { .. } => {
            let list = PyList::empty(py);
            for item in reply.elements() {
                match item {
                    Some(b) => list.append(PyBytes::new(py, b))?,
                    None => list.append(py.None())?,
                }
            }
            list.into_any().unbind()
        }
    })
}

/// `diagnostic_cmd`'s refusal as a Python `ValueError`.
pub fn refused(reason: String) -> PyErr {
    PyValueError::new_err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn reads_pass_in_any_case_and_may_be_sent_again() {
        let (cmd, what) = diagnostic_cmd(&args(&["pttl", "redlock:k"])).unwrap();
        assert_eq!(cmd.name(), "PTTL");
        assert_eq!(cmd.args().collect::<Vec<_>>(), [b"redlock:k"]);
        assert_eq!(cmd.resend(), Resend::Read);
        assert_eq!(what, "PTTL \"redlock:k\"");
        let (cmd, what) = diagnostic_cmd(&args(&["CONFIG", "get", "save"])).unwrap();
        assert_eq!(cmd.name(), "CONFIG");
        assert_eq!(what, "CONFIG GET");
        assert_eq!(diagnostic_cmd(&args(&["INFO"])).unwrap().1, "INFO");
        let (cmd, what) = diagnostic_cmd(&args(&["cluster", "slots"])).unwrap();
        assert_eq!((cmd.name(), what.as_str()), ("CLUSTER", "CLUSTER SLOTS"));
    }

    #[test]
    fn anything_that_could_change_the_server_is_refused() {
        for words in [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["FLUSHALL"],
            &["EVAL", "return 1", "0"],
            &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
            &["CONFIG", "RESETSTAT"],
            &["CONFIG"],
            &["CLUSTER", "FAILOVER"],
            &["CLUSTER", "SETSLOT", "1", "NODE", "id"],
            &["CLUSTER", "RESET"],
            &["CLUSTER"],
            &["SHUTDOWN"],
            &[],
        ] {
            assert!(diagnostic_cmd(&args(words)).is_err(), "{words:?}");
        }
    }
}
