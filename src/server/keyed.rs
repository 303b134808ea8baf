//! What a server structure is: a transport and the key it lives at. The dict
//! and the list send every command through here, so each one releases the GIL
//! and names its key in errors the same way.

use std::sync::Arc;

use pyo3::prelude::*;

use super::args::structure_key;
use crate::connection::{describe, Cmd, Reply, Script, Transport};
use crate::errors::{run_detached, CacheError};

pub struct Keyed {
    client: Arc<dyn Transport>,
    key: String,
}

impl Keyed {
    pub fn new(client: Arc<dyn Transport>, key: &Bound<'_, PyAny>) -> PyResult<Keyed> {
        Ok(Keyed {
            client,
            key: structure_key(key)?,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// A command whose first argument is our key.
    pub fn cmd(&self, name: &'static str) -> Cmd {
        Cmd::new(name).arg(self.key.as_bytes())
    }

    pub fn run(&self, py: Python<'_>, cmd: Cmd) -> PyResult<Reply> {
        let (client, key) = (&self.client, self.key.as_bytes());
        let op = cmd.name();
        run_detached(py, || client.call(cmd, &|| describe(op, key)))
    }

    pub fn eval(
        &self,
        py: Python<'_>,
        script: &Script,
        op: &str,
        args: &[&[u8]],
    ) -> PyResult<Reply> {
        self.eval_or_refusal(py, script, op, args)?
            .map_err(PyErr::from)
    }

    /// `run`, with the server's refusal (an error reply) returned for the
    /// caller to translate rather than raised.
    pub fn run_or_refusal(&self, py: Python<'_>, cmd: Cmd) -> PyResult<Result<Reply, Refusal>> {
        let (client, key) = (&self.client, self.key.as_bytes());
        let op = cmd.name();
        run_detached(py, || {
            Refusal::split(client.call(cmd, &|| describe(op, key)))
        })
    }

    /// `eval`, with the server's refusal returned rather than raised.
    pub fn eval_or_refusal(
        &self,
        py: Python<'_>,
        script: &Script,
        op: &str,
        args: &[&[u8]],
    ) -> PyResult<Result<Reply, Refusal>> {
        let (client, key) = (&self.client, self.key.as_bytes());
        run_detached(py, || {
            Refusal::split(client.eval(script, &[key], args, &|| describe(op, key)))
        })
    }
}

/// The server said no: an error reply (the command ran, or was refused,
/// and the connection is fine), as opposed to a failure to get an answer.
pub struct Refusal(CacheError);

impl Refusal {
    fn split(outcome: Result<Reply, CacheError>) -> Result<Result<Reply, Refusal>, CacheError> {
        match outcome {
            Ok(reply) => Ok(Ok(reply)),
            Err(e @ CacheError::Response { .. }) => Ok(Err(Refusal(e))),
            Err(e) => Err(e),
        }
    }

    /// The server's error message, e.g. `ERR index out of range`.
    pub fn message(&self) -> &str {
        match &self.0 {
            CacheError::Response { detail, .. } => detail,
            _ => unreachable!("a Refusal holds only a server's error reply"),
        }
    }
}

impl From<Refusal> for PyErr {
    fn from(refusal: Refusal) -> PyErr {
        refusal.0.into()
    }
}
