//! `madsci_cache_rs._native`: wires the Rust parts into one Python module.

pub mod codec;
pub mod connection;
pub mod errors;
pub mod gil;
pub mod inmemory;
pub mod lease;
pub mod logger;
pub mod server;
pub mod sync;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(codec::py_encode_json, m)?)?;
    m.add_function(wrap_pyfunction!(codec::py_decode_json, m)?)?;
    errors::register(m)?;
    server::register(m)?;
    // Connects, outages and lock waits reach Python logging as `madsci_cache_rs`.
    logger::install(m.py())?;
    inmemory::register(m)?;
    Ok(())
}
