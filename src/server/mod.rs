//! The server family: `PyCacheHandler`, `RedisDict`, `RedisList`. They only
//! build commands and decode replies; `crate::connection` does the rest.

mod args;
pub mod dict;
pub mod handler;
mod keyed;
pub mod list;
mod options;
mod pydantic;
mod scripts;
mod values;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<handler::PyCacheHandler>()?;
    m.add_class::<dict::RedisDict>()?;
    m.add_class::<list::RedisList>()?;
    Ok(())
}
