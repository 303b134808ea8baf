//! One round trip for `Model.model_validate(redis_dict)`.
//!
//! pydantic v2 reads a non-`dict` Mapping with one `.get(field)` per model
//! field, and reads a `dict` subclass through the C API (bypassing our
//! methods), so neither a Mapping nor a dict subclass gets one round trip on
//! its own. Instead, `RedisDict.get` notices when its caller is pydantic's
//! `model_validate`/`validate_python` (the innermost Python frame, since
//! pydantic-core calls us from Rust) and serves every field of that one
//! validation from a single HGETALL snapshot, which is exactly what pydantic
//! would see had it been handed `d.to_dict()`.
//!
//! Telling one validation from the next: the frame is compared by address
//! and never held, since a kept frame keeps its callers' frames and their
//! locals alive. An address can be reused by a later validation's frame, so
//! what settles it is that a validation asks each field once, in the model's
//! order: a field asked again, or another model or adapter (the frame's
//! first argument, held), means a new validation, which fetches afresh. At
//! most one snapshot per thread is kept, until that thread's next validation.

use std::cell::RefCell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet, PyString, PyTuple};

struct Validation {
    /// The frame's address: compared, never dereferenced.
    frame: usize,
    lasti: i64,
    /// The frame's first argument: the model class or the `TypeAdapter`.
    validator: Py<PyAny>,
    /// The dict object's address: compared, never dereferenced.
    owner: usize,
    snapshot: Py<PyDict>,
    /// The fields this validation has asked for so far.
    asked: Py<PySet>,
    /// Whether it has asked for `items()` (pydantic does, once, for models
    /// with `extra` set).
    asked_items: bool,
}

thread_local! {
    static LAST: RefCell<Option<Validation>> = const { RefCell::new(None) };
}

/// Where pydantic's validation entry point runs: the innermost frame's
/// address, its instruction and its first argument.
struct Caller<'py> {
    frame: usize,
    lasti: i64,
    validator: Bound<'py, PyAny>,
}

/// What a code object was found to be: pydantic's validation entry point
/// (with the name of its first argument) or not.
struct CodeVerdict {
    /// Held, so that its address cannot be reused by another code object
    /// while the verdict is kept.
    code: Py<PyAny>,
    first_arg: Option<Py<PyString>>,
}

/// Verdicts on the code objects `get` was last called from: every field of
/// one validation, and every `get` from one user function, asks about the
/// same code, and the attribute reads that decide it cost more than the rest
/// of the check.
const VERDICTS_KEPT: usize = 8;

thread_local! {
    static VERDICTS: RefCell<Vec<CodeVerdict>> = const { RefCell::new(Vec::new()) };
}

/// The first argument's name when `code` is pydantic's validation entry
/// point (`model_validate` or `validate_python` in a file of pydantic's).
fn judge<'py>(code: &Bound<'py, PyAny>) -> Option<Bound<'py, PyString>> {
    let name = code.getattr("co_name").ok()?;
    if !matches!(
        name.extract::<&str>().ok()?,
        "model_validate" | "validate_python"
    ) {
        return None;
    }
    let file = code.getattr("co_filename").ok()?;
    let file = file.extract::<&str>().ok()?;
    if !(file.contains("/pydantic/") || file.contains("\\pydantic\\")) {
        return None;
    }
    let names = code.getattr("co_varnames").ok()?;
    let first = names.cast::<PyTuple>().ok()?.get_item(0).ok()?;
    first.cast_into::<PyString>().ok()
}

/// `judge`, remembered per code object.
fn entry_point_arg<'py>(code: &Bound<'py, PyAny>) -> Option<Bound<'py, PyString>> {
    let py = code.py();
    let known = VERDICTS.with(|v| {
        v.borrow()
            .iter()
            .find(|seen| seen.code.is(code))
            .map(|seen| seen.first_arg.as_ref().map(|a| a.clone_ref(py)))
    });
    if let Some(verdict) = known {
        return verdict.map(|a| a.into_bound(py));
    }
    let first_arg = judge(code);
    let evicted = VERDICTS.with(|v| {
        let mut v = v.borrow_mut();
        let evicted = (v.len() >= VERDICTS_KEPT).then(|| v.remove(0));
        v.push(CodeVerdict {
            code: code.clone().unbind(),
            first_arg: first_arg.as_ref().map(|a| a.clone().unbind()),
        });
        evicted
    });
    // Dropped outside the borrow: its release may run Python code.
    drop(evicted);
    first_arg
}

/// The frame's local `name` (its first argument, at the entry point).
#[cfg(Py_3_12)]
fn frame_local<'py>(
    frame: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    // SAFETY: attached to the interpreter; `frame` is a frame object and
    // `name` a str, both alive for the call; the result is a new reference
    // or NULL with an exception set, which is cleared.
    unsafe {
        let ptr = ffi::PyFrame_GetVar(frame.as_ptr().cast(), name.as_ptr());
        Bound::from_owned_ptr_or_err(frame.py(), ptr).ok()
    }
}

/// The frame's local `name` (its first argument, at the entry point).
/// Before 3.12 only through `f_locals`, which copies every local.
#[cfg(not(Py_3_12))]
fn frame_local<'py>(
    frame: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    frame.getattr("f_locals").ok()?.get_item(name).ok()
}

#[cfg(Py_3_11)]
fn frame_lasti(frame: &Bound<'_, PyAny>) -> Option<i64> {
    // SAFETY: attached to the interpreter; `frame` is a live frame object.
    Some(unsafe { ffi::PyFrame_GetLasti(frame.as_ptr().cast()) }.into())
}

#[cfg(not(Py_3_11))]
fn frame_lasti(frame: &Bound<'_, PyAny>) -> Option<i64> {
    frame.getattr("f_lasti").ok()?.extract().ok()
}

/// The innermost Python frame, when it is pydantic's validation entry point.
fn pydantic_caller(py: Python<'_>) -> Option<Caller<'_>> {
    // SAFETY: attached to the interpreter; the frame is borrowed and we
    // take our own reference for the length of this call.
    let frame = unsafe {
        let ptr = ffi::PyEval_GetFrame();
        Bound::from_borrowed_ptr_or_opt(py, ptr.cast())?
    };
    // SAFETY: attached; `frame` is a live frame object; PyFrame_GetCode
    // returns a new reference to its code object (never NULL).
    let code = unsafe {
        Bound::from_owned_ptr_or_opt(py, ffi::PyFrame_GetCode(frame.as_ptr().cast()).cast())?
    };
    let first_arg = entry_point_arg(&code)?;
    let validator = frame_local(&frame, &first_arg)?;
    Some(Caller {
        frame: frame.as_ptr() as usize,
        lasti: frame_lasti(&frame)?,
        validator,
    })
}

/// During a pydantic validation: the snapshot of `owner` for it, fetched
/// once, to answer `field` (`None`: to answer `items()`). Otherwise `None`
/// (the caller reads the server as usual).
pub fn validation_snapshot<'py>(
    owner: &Bound<'py, PyAny>,
    field: Option<&Bound<'py, PyAny>>,
    fetch: impl FnOnce() -> PyResult<Bound<'py, PyDict>>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = owner.py();
    // pydantic asks by field name; any other key (whose hashing could run
    // Python code while the snapshot is borrowed) is read as usual.
    if field.is_some_and(|f| !f.is_exact_instance_of::<PyString>()) {
        return Ok(None);
    }
    let Some(caller) = pydantic_caller(py) else {
        return Ok(None);
    };
    let owner_at = owner.as_ptr() as usize;
    let hit = LAST.with(|last| -> PyResult<_> {
        let mut last = last.borrow_mut();
        let Some(v) = last.as_mut() else {
            return Ok(None);
        };
        let same_place = v.frame == caller.frame
            && v.lasti == caller.lasti
            && v.owner == owner_at
            && v.validator.is(&caller.validator);
        let asked_before = match field {
            Some(field) => v.asked.bind(py).contains(field)?,
            None => v.asked_items,
        };
        if !same_place || asked_before {
            return Ok(None);
        }
        match field {
            Some(field) => v.asked.bind(py).add(field)?,
            None => v.asked_items = true,
        }
        Ok(Some(v.snapshot.bind(py).clone()))
    })?;
    if let Some(snapshot) = hit {
        return Ok(Some(snapshot));
    }
    let snapshot = fetch()?;
    let asked = PySet::empty(py)?;
    if let Some(field) = field {
        asked.add(field)?;
    }
    let old = LAST.with(|last| {
        last.borrow_mut().replace(Validation {
            frame: caller.frame,
            lasti: caller.lasti,
            validator: caller.validator.unbind(),
            owner: owner_at,
            snapshot: snapshot.clone().unbind(),
            asked: asked.unbind(),
            asked_items: field.is_none(),
        })
    });
    // Dropped outside the borrow: its release may run Python code.
    drop(old);
    Ok(Some(snapshot))
}
