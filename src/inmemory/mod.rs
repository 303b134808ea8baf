//! The in-memory family: madsci's `InMemory*` classes reimplemented natively
//! (default mode), plus the server-faithful strict mode in `strict`.
//!
//! Default-mode stores are plain Python `dict`/`list` objects, exactly as in
//! madsci: values are kept as given and keys compare with Python's own `==`
//! and `hash`. Each operation is one call into the C implementation of the
//! container, which is atomic under the GIL and guarded by the container's
//! own critical section on free-threaded builds, so no Rust lock is ever held
//! while Python code (a key's `__eq__`, a value's `__del__`) runs. The only
//! Rust locks here guard pure-Rust state (registries, the client's strings).

pub mod client;
pub mod dict;
pub mod handler;
pub mod list;
pub mod lock;
mod reentrant;
pub mod registry;
pub mod strict;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::InMemoryRedisClient>()?;
    m.add_class::<dict::InMemoryRedisDict>()?;
    m.add_class::<list::InMemoryRedisList>()?;
    m.add_class::<lock::InMemoryRedlock>()?;
    m.add_class::<registry::SharedLock>()?;
    m.add_class::<handler::InMemoryCacheHandler>()?;
    m.add_function(wrap_pyfunction!(registry::clear_all_registries, m)?)?;
    strict::register(m)?;
    Ok(())
}
