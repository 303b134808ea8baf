//! Replies -> Python values through the JSON codec.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use std::sync::{Arc, LazyLock};

use crate::sync::Mutex;

use crate::codec::memo::{worth_keeping, Lookup, TextMemo, DEFAULT_BUDGET};
use crate::codec::{decode_json_bytes_with, KeyCache, Template};
use crate::connection::Reply;

/// Templates of documents read before, shared by every handler in the
/// process (`codec/memo.rs`).
static MEMO: LazyLock<Mutex<TextMemo<Arc<Template>>>> =
    LazyLock::new(|| Mutex::new(TextMemo::new(DEFAULT_BUDGET)));

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

/// The lock is only tried, and held only for map work (no Python runs under
/// it): a finalizer that reads the cache during a decode, or a child forked
/// while another thread held it, decodes without the memo instead of
/// waiting forever.
fn decode_memoized<'py>(
    py: Python<'py>,
    bytes: &[u8],
    keys: &mut KeyCache<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(mut memo) = MEMO.try_lock() else {
        return decode_json_bytes_with(py, bytes, keys);
    };
    let (lookup, dropped) = memo.look_up(bytes);
    drop(memo);
    drop(dropped);
    match lookup {
        Lookup::Hit(template) => template.copy(py),
        Lookup::First => decode_json_bytes_with(py, bytes, keys),
        Lookup::Second => {
            let value = decode_json_bytes_with(py, bytes, keys)?;
            let template = Arc::new(Template::new(&value)?);
            let unkept = MEMO.try_lock().map(|mut memo| memo.keep(bytes, template));
            drop(unkept);
            Ok(value)
        }
    }
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
