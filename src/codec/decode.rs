//! JSON text -> Python objects, equal to what `json.loads` returns, with
//! `json`'s error messages and positions (CPython's C scanner defaults:
//! `strict=True`, `NaN`/`Infinity` accepted, last duplicate key wins).
//!
//! Here: what the input is (`str`, `bytes`, a stored value) and how it
//! becomes the UTF-8 the parser (`parse.rs`) reads. A `str` holding lone
//! surrogates cannot be UTF-8, so it is parsed from its `surrogatepass`
//! encoding instead (every scanner decision is on ASCII bytes, so both forms
//! parse alike).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use super::parse::{decode_error, KeyCache, Parser};

const UTF8_BOM: &str = "Unexpected UTF-8 BOM (decode using utf-8-sig)";

/// Decode a `str`, `bytes` or `bytearray` as `json.loads` does.
pub fn decode_json<'py>(text: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = text.py();
    if let Ok(s) = text.cast::<PyString>() {
        return decode_str(s);
    }
    if let Ok(b) = text.cast::<PyBytes>() {
        return decode_bytes(py, b.as_bytes(), text);
    }
    if let Ok(b) = text.cast::<PyByteArray>() {
        let copy = b.to_vec();
        return decode_bytes(py, &copy, text);
    }
    let name = text.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "the JSON object must be str, bytes or bytearray, not {name}"
    )))
}

/// Decode JSON held in Rust memory, as `json.loads(bytes)` would.
pub fn decode_json_bytes<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    decode_json_bytes_with(py, bytes, &mut KeyCache::new())
}

/// Decode a stored value as pottery does, `json.loads(value.decode())`:
/// strictly UTF-8, so a BOM, UTF-16/32 or a stray NUL is an error
/// (`UnicodeDecodeError` or `JSONDecodeError`, pottery's own), where
/// `json.loads(bytes)` would guess an encoding and read them.
///
/// The key cache is shared across calls: the values of one bulk read (a
/// hash's records, a list's items) repeat the same keys, so each key `str`
/// is made once per read instead of once per value.
pub fn decode_json_bytes_with<'py>(
    py: Python<'py>,
    bytes: &[u8],
    keys: &mut KeyCache<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    // Rust's UTF-8 check rejects what Python's strict codec rejects
    // (surrogates and overlong forms included).
    let Ok(text) = std::str::from_utf8(bytes) else {
        // `bytes.decode()` itself, for its exact error.
        let err = PyBytes::new(py, bytes).call_method0("decode");
        return Err(err.err().unwrap_or_else(|| {
            PyValueError::new_err("stored value is not UTF-8, yet Python decoded it")
        }));
    };
    let doc = || Ok(PyString::new(py, text).into_any());
    if text.starts_with('\u{feff}') {
        return Err(decode_error(py, UTF8_BOM, &doc()?, 0));
    }
    Parser::new(py, text.as_bytes(), false, keys).run(&doc)
}

fn decode_bytes<'py>(
    py: Python<'py>,
    bytes: &[u8],
    original: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if plain_utf8(bytes) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return Parser::new(py, bytes, false, &mut KeyCache::new())
                .run(&|| Ok(PyString::new(py, text).into_any()));
        }
    }
    // BOMs, UTF-16/32 and undecodable bytes: let `json` pick the codec and
    // decode exactly as `json.loads` does (`surrogatepass`), then parse the str.
    let json = py.import("json")?;
    let encoding = json.getattr("detect_encoding")?.call1((original,))?;
    let as_bytes = PyBytes::new(py, bytes);
    let text = as_bytes.call_method1("decode", (encoding, "surrogatepass"))?;
    decode_str(text.cast::<PyString>()?)
}

/// Bytes that `json.detect_encoding` calls UTF-8 without a BOM.
fn plain_utf8(b: &[u8]) -> bool {
    let bom = b.starts_with(&[0xef, 0xbb, 0xbf])
        || b.starts_with(&[0xff, 0xfe])
        || b.starts_with(&[0xfe, 0xff]);
    let nul_pattern = match b.len() {
        0 | 1 | 3 => false,
        _ => b[0] == 0 || b[1] == 0,
    };
    !bom && !nul_pattern
}

fn decode_str<'py>(s: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = s.py();
    let doc = || Ok(s.clone().into_any());
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str; the UTF-8 buffer is cached on it and lives
    // as long as `s` does.
    let utf8 = unsafe { ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size) };
    let (bytes, surrogates): (std::borrow::Cow<'_, [u8]>, bool) = if utf8.is_null() {
        // Lone surrogates: not UTF-8. Parse the surrogatepass bytes instead.
        PyErr::fetch(py);
        let encoded = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
        (encoded.cast::<PyBytes>()?.as_bytes().to_vec().into(), true)
    } else {
        // SAFETY: CPython guarantees `size` valid bytes at `utf8`.
        (
            unsafe { std::slice::from_raw_parts(utf8 as *const u8, size as usize) }.into(),
            false,
        )
    };
    if bytes.starts_with("\u{feff}".as_bytes()) {
        return Err(decode_error(py, UTF8_BOM, &doc()?, 0));
    }
    Parser::new(py, &bytes, surrogates, &mut KeyCache::new()).run(&doc)
}
