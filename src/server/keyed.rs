//! What a server structure is: a transport and the key it lives at. The dict
//! and the list send every command through here, so each one releases the GIL
//! and names its key in errors the same way.

use std::sync::Arc;

use pyo3::prelude::*;

use super::args::structure_key;
use crate::connection::{describe, Cmd, Reply, Script, Transport};
use crate::errors::run_detached;

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
        let (client, key) = (&self.client, self.key.as_bytes());
        run_detached(py, || {
            client.eval(script, &[key], args, &|| describe(op, key))
        })
    }
}
