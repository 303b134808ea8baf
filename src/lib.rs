//! `madsci_cache_rs._native`: wires the Rust parts into one Python module.

pub mod codec;
pub mod errors;
pub mod inmemory;
pub mod lease;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(codec::py_encode_json, m)?)?;
    m.add_function(wrap_pyfunction!(codec::py_decode_json, m)?)?;
    errors::register(m)?;
    inmemory::register(m)?;
    Ok(())
}
