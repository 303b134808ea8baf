//! `madsci_cache_rs._native`: wires the Rust parts into one Python module.

pub mod codec;
pub mod connection;
pub mod errors;
pub mod gil;
pub mod inmemory;
pub mod lease;
pub mod logger;
pub mod quorum;
pub mod server;
pub mod sync;
pub mod token;

use pyo3::prelude::*;

// Not yet free-threading-safe as a whole: the codec's encoder takes no
// borrowed reference another thread could free (`codec/encode.rs`), but the
// server, connection and in-memory parts have not been audited for running
// without a GIL. Declaring the GIL used makes a free-threaded CPython
// re-enable it on import (with a warning) instead of risking them.
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(codec::py_encode_json, m)?)?;
    m.add_function(wrap_pyfunction!(codec::py_decode_json, m)?)?;
    m.add_function(wrap_pyfunction!(codec::cache_usage, m)?)?;
    m.add_function(wrap_pyfunction!(codec::cache_clear, m)?)?;
    errors::register(m)?;
    server::register(m)?;
    // Connects, outages and lock waits reach Python logging as `madsci_cache_rs`.
    logger::install(m.py())?;
    inmemory::register(m)?;
    Ok(())
}
