//! Python values -> command arguments.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyMemoryView, PyString};

use crate::codec::float::write_json_float;
use crate::codec::{decode_json_bytes, encode_json};

/// What redis-py's encoder accepts as a key or a `set` value, as the same
/// bytes: `bytes`-likes as they are, `str` as UTF-8, `int`/`float` as their
/// `repr` (so an `IntEnum` member is stored as `<Color.RED: 1>`, exactly as
/// redis-py stores it). `bool`, `None` and anything else are refused with
/// redis-py's message, as a `TypeError`.
pub fn redis_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        // Strict UTF-8: a lone surrogate raises UnicodeEncodeError, as in redis-py.
        return Ok(s.encode_utf8()?.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if obj.is_instance_of::<PyBool>() {
        return Err(refused(obj));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(v.to_string().into_bytes());
        }
    }
    if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
        return Ok(obj.repr()?.to_str()?.as_bytes().to_vec());
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let bytes = obj.call_method0("tobytes")?;
        return Ok(bytes.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    Err(refused(obj))
}

fn refused(obj: &Bound<'_, PyAny>) -> PyErr {
    let name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    PyTypeError::new_err(format!(
        "Invalid input of type: '{name}'. Convert to a bytes, string, int or float first."
    ))
}

/// The structure's own key: a `str`, as pottery requires.
pub fn structure_key(key: &Bound<'_, PyAny>) -> PyResult<String> {
    match key.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "key must be str, not {}",
            key.get_type().name()?
        ))),
    }
}

/// Every encoding of a value that `==` another value stored in a list
/// could have: `1`, `1.0` and `True` are equal in Python but stored as
/// `1`, `1.0` and `true`. Empty when no stored (decoded) value can equal
/// it: `NaN`, anything `json` cannot encode, and containers that do not
/// survive the round trip (a tuple is stored as a list, which never
/// equals it; an `int` dict key comes back as `str`). Other containers
/// are compared by their canonical (sorted-keys) encoding, so numbers
/// nested in them must be spelled alike (`[1]` does not find `[1.0]`).
pub fn equal_encodings(value: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let py = value.py();
    let exact = match encode_json(value) {
        Ok(exact) => exact,
        Err(e) if e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<PyValueError>(py) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let scalar = value.is_none()
        || value.is_instance_of::<PyString>()
        || value.is_instance_of::<PyInt>()
        || value.is_instance_of::<PyFloat>();
    if !scalar && !decode_json_bytes(py, &exact)?.eq(value)? {
        return Ok(Vec::new());
    }
    let number = if value.is_instance_of::<PyBool>() {
        Some(if value.is_truthy()? { 1.0 } else { 0.0 })
    } else if value.is_instance_of::<PyFloat>() {
        let f: f64 = value.extract()?;
        if f.is_nan() {
            return Ok(Vec::new());
        }
        Some(f)
    } else if value.is_instance_of::<PyInt>() {
        // Below 2**53 every int has an exactly equal float.
        value
            .extract::<i64>()
            .ok()
            .filter(|i| i.unsigned_abs() < 1 << 53)
            .map(|i| i as f64)
    } else {
        None
    };
    let mut all = vec![exact];
    if let Some(f) = number {
        let mut float_text = Vec::new();
        write_json_float(&mut float_text, f);
        all.push(float_text);
        if f == 0.0 {
            all.extend([b"0.0".to_vec(), b"-0.0".to_vec(), b"false".to_vec()]);
        }
        if f == 1.0 {
            all.push(b"true".to_vec());
        }
        if f.fract() == 0.0 && f.abs() < 1e18 {
            all.push((f as i64).to_string().into_bytes());
        }
    }
    all.sort();
    all.dedup();
    Ok(all)
}
