//! The server family: `PyCacheHandler`, `RedisDict`, `RedisList`, `Redlock`. They only
//! build commands and decode replies; `crate::connection` does the rest.

pub mod args;
mod diagnostic;
pub mod dict;
pub mod handler;
mod handler_methods;
pub mod handoff;
mod keyed;
pub mod list;
pub mod lock;
mod lock_masters;
mod options;
mod pydantic;
mod scripts;
pub mod subscriber;
mod values;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<handler::PyCacheHandler>()?;
    m.add_class::<dict::RedisDict>()?;
    m.add_class::<list::RedisList>()?;
    m.add_class::<lock::Redlock>()?;
    Ok(())
}
