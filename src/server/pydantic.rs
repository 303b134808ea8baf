//! One round trip for `Model.model_validate(redis_dict)`.
//!
//! pydantic v2 reads a non-`dict` Mapping with one `.get(field)` per model
//! field, and reads a `dict` subclass through the C API (bypassing our
//! methods), so neither a Mapping nor a dict subclass gets one round trip on
//! its own. Instead, `RedisDict.get` notices when its caller is pydantic's
//! `model_validate`/`validate_python` (the innermost Python frame, since
//! pydantic-core calls us from Rust) and serves every field of that one
//! validation from a single HGETALL snapshot, which is exactly what pydantic
//! would see had it been handed `d.to_dict()`. The snapshot is keyed by the
//! frame object (held, so its address cannot be reused), the instruction in
//! it and the dict object: a second validation is a new frame or a new
//! instruction, and fetches afresh. At most one snapshot per thread is kept.

use std::cell::RefCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

struct Entry {
    frame: Py<PyAny>,
    lasti: i64,
    owner: Py<PyAny>,
    snapshot: Py<PyDict>,
}

thread_local! {
    static LAST: RefCell<Option<Entry>> = const { RefCell::new(None) };
}

/// The innermost Python frame and its instruction, when it is pydantic's
/// validation entry point.
fn pydantic_frame(py: Python<'_>) -> Option<(Bound<'_, PyAny>, i64)> {
    // SAFETY: attached to the interpreter; the frame is borrowed and we
    // take our own reference.
    let frame = unsafe {
        let ptr = ffi::PyEval_GetFrame();
        Bound::from_borrowed_ptr_or_opt(py, ptr.cast())?
    };
    let code = frame.getattr("f_code").ok()?;
    let name = code.getattr("co_name").ok()?;
    let name = name.extract::<&str>().ok()?;
    if !matches!(name, "model_validate" | "validate_python") {
        return None;
    }
    let file = code.getattr("co_filename").ok()?;
    let file = file.extract::<&str>().ok()?;
    let in_pydantic = file.contains("/pydantic/") || file.contains("\\pydantic\\");
    if !in_pydantic {
        return None;
    }
    let lasti = frame.getattr("f_lasti").ok()?.extract().ok()?;
    Some((frame, lasti))
}

/// During a pydantic validation: the snapshot of `owner` for it, fetched
/// once. Otherwise `None` (the caller does a plain HGET).
pub fn validation_snapshot<'py>(
    owner: &Bound<'py, PyAny>,
    fetch: impl FnOnce() -> PyResult<Bound<'py, PyDict>>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = owner.py();
    let Some((frame, lasti)) = pydantic_frame(py) else {
        return Ok(None);
    };
    let hit = LAST.with(|last| {
        last.borrow().as_ref().and_then(|e| {
            let same = e.frame.is(&frame) && e.lasti == lasti && e.owner.is(owner);
            same.then(|| e.snapshot.bind(py).clone())
        })
    });
    if let Some(snapshot) = hit {
        return Ok(Some(snapshot));
    }
    let snapshot = fetch()?;
    let old = LAST.with(|last| {
        last.borrow_mut().replace(Entry {
            frame: frame.unbind(),
            lasti,
            owner: owner.clone().unbind(),
            snapshot: snapshot.clone().unbind(),
        })
    });
    drop(old);
    Ok(Some(snapshot))
}
