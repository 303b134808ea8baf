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

/// `encode(value)` as stored text (the codec writes ASCII only).
pub(crate) fn encode(obj: &Bound<'_, PyAny>) -> PyResult<db::Text> {
    let bytes = crate::codec::encode_json(obj)?;
    Ok(db::Text::from(
        std::str::from_utf8(&bytes).expect("the encoder writes ASCII"),
    ))
}

/// A fresh object from stored text.
pub(crate) fn decode<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    crate::codec::decode_json_bytes(py, text.as_bytes())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StrictRedisDict>()?;
    m.add_class::<StrictRedisList>()?;
    m.add_class::<StrictRedlock>()?;
    Ok(())
}
