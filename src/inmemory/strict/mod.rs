//! Strict mode: an in-memory store that behaves like the server the server
//! family talks to, so a suite that passes here passes against Redis.
//!
//! One keyspace per handler holds strings, hashes (dicts), lists and lock
//! leases under byte keys, exactly where pottery puts them: a dict is a hash
//! of `encode(key) -> encode(value)`, a list holds `encode(item)`, a lock is
//! the string `redlock:<key>` with a lease. Values cross the boundary through
//! the JSON codec only, so reads return fresh objects and anything that is not
//! JSON is refused before anything is written.
//!
//! The mutex guards pure-Rust data only: encoding and decoding (which can run
//! Python code, e.g. a `str` subclass's methods) happen outside it.

mod db;
mod dict;
mod list;
mod lock;

pub use db::StrictDb;
pub use dict::StrictRedisDict;
pub use list::StrictRedisList;
pub use lock::StrictRedlock;

use pyo3::prelude::*;

use crate::codec::{KeyCache, Template};

/// `encode(value)` as stored text (the codec writes ASCII only), keeping
/// the object too when it is an immutable scalar (see `db::Stored`).
pub(crate) fn encode(obj: &Bound<'_, PyAny>) -> PyResult<db::Text> {
    let text = match plain_text(obj) {
        Some(text) => text,
        None => {
            let mut text = String::from_utf8(crate::codec::encode_json(obj)?)
                .expect("the encoder writes ASCII");
            text.shrink_to_fit();
            text
        }
    };
    let scalar = immutable_scalar(obj).then(|| obj.clone().unbind());
    Ok(std::sync::Arc::new(db::Stored {
        text,
        scalar,
        template: Default::default(),
    }))
}

/// The encoding of the commonest keys and values, written straight into a
/// string of the right size: a machine-sized `int`, and a `str` of printable
/// ASCII without quotes or backslashes (which `json.dumps` writes as is).
fn plain_text(obj: &Bound<'_, PyAny>) -> Option<String> {
    use pyo3::types::{PyInt, PyString};
    if let Ok(s) = obj.cast_exact::<PyString>() {
        let s = s.to_str().ok()?;
        let plain = s
            .bytes()
            .all(|c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\');
        return plain.then(|| {
            let mut text = String::with_capacity(s.len() + 2);
            text.push('"');
            text.push_str(s);
            text.push('"');
            text
        });
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return obj.extract::<i64>().ok().map(|i| i.to_string());
    }
    None
}

/// Exact types whose JSON round trip gives back an equal, immutable object
/// (subclasses such as `IntEnum` decode to their base type, so they are not).
fn immutable_scalar(obj: &Bound<'_, PyAny>) -> bool {
    use pyo3::types::{PyBool, PyFloat, PyInt, PyString};
    // NaN is left out: `x in [x]` is true by identity, so a shared NaN
    // would be found where the server's fresh one is not.
    obj.is_none()
        || obj.is_exact_instance_of::<PyString>()
        || obj.is_exact_instance_of::<PyInt>()
        || obj.is_exact_instance_of::<PyBool>()
        || (obj.is_exact_instance_of::<PyFloat>()
            && obj.extract::<f64>().is_ok_and(|f| !f.is_nan()))
}

/// A fresh object (or the shared immutable one) from stored text, copied
/// from the stored template after the first read.
pub(crate) fn decode<'py>(py: Python<'py>, stored: &db::Stored) -> PyResult<Bound<'py, PyAny>> {
    decode_with(py, stored, &mut KeyCache::new())
}

/// `decode`, sharing `keys` with the other values of one bulk read.
pub(crate) fn decode_with<'py>(
    py: Python<'py>,
    stored: &db::Stored,
    keys: &mut KeyCache<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(obj) = &stored.scalar {
        return Ok(obj.bind(py).clone());
    }
    if let Some(template) = stored.template.get() {
        return template.copy(py);
    }
    let value = crate::codec::decode_json_bytes_with(py, stored.text.as_bytes(), keys)?;
    // Another thread may have set it meanwhile: theirs is as good.
    let _ = stored.template.set(Template::new(&value)?);
    Ok(value)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StrictRedisDict>()?;
    m.add_class::<StrictRedisList>()?;
    m.add_class::<StrictRedlock>()?;
    Ok(())
}
