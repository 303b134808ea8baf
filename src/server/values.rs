//! Replies -> Python values through the JSON codec.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::codec::memo::worth_keeping;
use crate::codec::{decode_json_bytes_with, decode_memoized, KeyCache};
use crate::connection::Reply;

/// `json.loads(bytes)`. A plain string literal (printable ASCII, no
/// escapes: every dict key pottery writes for a `str` key without special
/// characters) becomes its text directly, which is exactly what the
/// parser would return, without setting a parser up.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    decode_with(py, bytes, &mut KeyCache::new())
}

/// `decode`, sharing `keys` with the other values of the same reply.
fn decode_with<'py>(
    py: Python<'py>,
    bytes: &[u8],
    keys: &mut KeyCache<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    if let [b'"', inner @ .., b'"'] = bytes {
        if inner
            .iter()
            .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
        {
            // All ASCII, so valid UTF-8.
            let text = std::str::from_utf8(inner).expect("ASCII is UTF-8");
            return Ok(PyString::new(py, text).into_any());
        }
    }
    if worth_keeping(bytes) {
        return decode_memoized(py, bytes, keys);
    }
    decode_json_bytes_with(py, bytes, keys)
}

/// A single bulk reply decoded; nil (or anything else) is `None`.
pub fn decode_reply<'py>(py: Python<'py>, reply: &Reply) -> PyResult<Bound<'py, PyAny>> {
    match reply {
        Reply::Bulk(b) => decode(py, b),
        _ => Ok(py.None().into_bound(py)),
    }
}

fn decode_element<'py>(
    py: Python<'py>,
    item: Option<&[u8]>,
    keys: &mut KeyCache<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    match item {
        Some(b) => decode_with(py, b, keys),
        None => Ok(py.None().into_bound(py)),
    }
}

/// An array reply's elements, decoded, as a new `list`.
pub fn decode_list<'py>(py: Python<'py>, reply: &Reply) -> PyResult<Bound<'py, PyList>> {
    let (list, mut keys) = (PyList::empty(py), KeyCache::new());
    for item in reply.elements() {
        list.append(decode_element(py, item, &mut keys)?)?;
    }
    Ok(list)
}

/// A flat `[field, value, ...]` reply (HGETALL) as a new `dict`.
pub fn decode_pairs<'py>(py: Python<'py>, reply: &Reply) -> PyResult<Bound<'py, PyDict>> {
    let (dict, mut keys) = (PyDict::new(py), KeyCache::new());
    for pair in reply.elements().chunks_exact(2) {
        let field = decode_element(py, pair[0], &mut keys)?;
        dict.set_item(field, decode_element(py, pair[1], &mut keys)?)?;
    }
    Ok(dict)
}
