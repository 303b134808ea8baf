//! The one conversion layer between Python objects and the bytes stored on a
//! server: `json.dumps(obj, sort_keys=True)` / `json.loads` exactly, which is
//! pottery's wire format.

mod copy;
mod decode;
mod encode;
pub mod float;
pub mod memo;
mod memoized;
mod parse;
mod size;
mod stack;
pub mod text;
mod wording;

pub use copy::{DictTemplate, Template};
pub use decode::{decode_json, decode_json_bytes, decode_json_bytes_with};
pub use encode::{encode_json, encode_json_str};
pub use memoized::{cache_clear, cache_usage, decode_memoized};
pub use parse::KeyCache;

use pyo3::prelude::*;
use pyo3::types::PyString;

/// `json.dumps(obj, sort_keys=True)`, byte for byte.
#[pyfunction(name = "encode_json")]
pub fn py_encode_json<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    encode_json_str(obj)
}

/// `json.loads(text)` for `str`, `bytes` or `bytearray`.
#[pyfunction(name = "decode_json")]
pub fn py_decode_json<'py>(text: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    decode_json(text)
}
