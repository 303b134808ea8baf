//! The interpreter's version as `Py_3_x` cfgs, for the few C-API calls that
//! exist only on newer versions (`server/pydantic.rs`).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
