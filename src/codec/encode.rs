//! Python object -> JSON text, byte for byte what `json.dumps(obj, sort_keys=True)`
//! writes (CPython's C encoder with its defaults: `ensure_ascii`, `allow_nan`,
//! `check_circular`, separators `", "` and `": "`).
//!
//! The type checks run in the C encoder's order, and anything that can run user
//! code (sorting keys that are not plain `str`, `items()` of a `dict` subclass)
//! is delegated to Python so errors and their messages are `json`'s own.

use pyo3::exceptions::{PyRecursionError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::critical_section::with_critical_section;
use pyo3::types::{PyDict, PyList, PyString};

use super::float::write_json_float;
use super::stack::grow;
use super::text::CodeUnits;

/// Nesting beyond which we stop even if `sys.getrecursionlimit()` allows more:
/// the stack grows as needed (`stack.rs`), but segments for deeper values
/// than any lab stores are better refused.
const MAX_DEPTH: usize = 10_000;
const RECURSION_WHERE: &std::ffi::CStr = c" while encoding a JSON object";

/// Encode `obj` to JSON text (ASCII only).
pub fn encode_json(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut encoder = Encoder {
        out: Vec::with_capacity(128),
        open: Vec::new(),
        items: Vec::new(),
    };
    encoder.value(obj)?;
    Ok(encoder.out)
}

/// Encode `obj` and return the text as a Python `str`.
pub fn encode_json_str<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let bytes = encode_json(obj)?;
    new_ascii_str(obj.py(), &bytes)
}

/// A new `str` holding `bytes`, which must be ASCII: one copy into a compact
/// ASCII string, without UTF-8 decoding.
pub(crate) fn new_ascii_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    assert!(bytes.is_ascii(), "new_ascii_str takes ASCII only");
    // SAFETY: a new compact ASCII str of exactly `bytes.len()` code points,
    // filled before anyone else can see it.
    unsafe {
        let s = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyUnicode_New(bytes.len() as ffi::Py_ssize_t, 127),
        )?;
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            ffi::PyUnicode_DATA(s.as_ptr()) as *mut u8,
            bytes.len(),
        );
        Ok(s.cast_into_unchecked::<PyString>())
    }
}

/// Borrow the code points of a `str` (or `str` subclass) object.
///
/// # Safety
/// `ptr` must point to a live `str`; the view must not outlive it.
pub(crate) unsafe fn code_units<'a>(ptr: *mut ffi::PyObject) -> CodeUnits<'a> {
    let len = ffi::PyUnicode_GET_LENGTH(ptr) as usize;
    let data = ffi::PyUnicode_DATA(ptr);
    match ffi::PyUnicode_KIND(ptr) {
        1 => CodeUnits::Latin1(std::slice::from_raw_parts(data as *const u8, len)),
        2 => CodeUnits::Ucs2(std::slice::from_raw_parts(data as *const u16, len)),
        _ => CodeUnits::Ucs4(std::slice::from_raw_parts(data as *const u32, len)),
    }
}

struct Encoder<'py> {
    out: Vec<u8>,
    /// Containers being encoded, for `json`'s circular-reference check.
    open: Vec<*mut ffi::PyObject>,
    /// The sorted items of every dict being encoded, innermost last: one
    /// allocation for the whole document instead of one per dict.
    items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
}

/// Leaves the interpreter's recursion counter when dropped.
struct RecursionGuard;

impl RecursionGuard {
    fn enter(depth: usize) -> PyResult<Self> {
        if depth >= MAX_DEPTH {
            return Err(PyRecursionError::new_err(
                "maximum recursion depth exceeded while encoding a JSON object",
            ));
        }
        // SAFETY: we are attached to the interpreter (we hold a `Bound`).
        if unsafe { ffi::Py_EnterRecursiveCall(RECURSION_WHERE.as_ptr()) } != 0 {
            return Err(Python::attach(PyErr::fetch));
        }
        Ok(RecursionGuard)
    }
}

impl Drop for RecursionGuard {
    fn drop(&mut self) {
        // SAFETY: paired with the successful enter above.
        unsafe { ffi::Py_LeaveRecursiveCall() }
    }
}

impl<'py> Encoder<'py> {
    fn value(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let ptr = obj.as_ptr();
        // SAFETY: type checks and reads on a live object we hold a reference to.
        unsafe {
            if ptr == ffi::Py_None() {
                self.out.extend_from_slice(b"null");
            } else if ptr == ffi::Py_True() {
                self.out.extend_from_slice(b"true");
            } else if ptr == ffi::Py_False() {
                self.out.extend_from_slice(b"false");
            } else if ffi::PyUnicode_Check(ptr) != 0 {
                code_units(ptr).write_json_string(&mut self.out);
            } else if ffi::PyLong_Check(ptr) != 0 {
                self.int(obj)?;
            } else if ffi::PyFloat_Check(ptr) != 0 {
                write_json_float(&mut self.out, ffi::PyFloat_AS_DOUBLE(ptr));
            } else if ffi::PyList_Check(ptr) != 0 || ffi::PyTuple_Check(ptr) != 0 {
                let _guard = RecursionGuard::enter(self.open.len())?;
                grow(self.open.len(), || self.sequence(obj))?;
            } else if ffi::PyDict_Check(ptr) != 0 {
                let _guard = RecursionGuard::enter(self.open.len())?;
                grow(self.open.len(), || self.dict(obj))?;
            } else {
                self.check_circular(ptr)?;
                return Err(not_serializable(obj));
            }
        }
        Ok(())
    }

    fn int(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut overflow = 0;
        // SAFETY: `obj` is an int (or int subclass); this reads its value
        // without calling `__index__`.
        let small = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
        if overflow == 0 {
            if small == -1 && PyErr::occurred(obj.py()) {
                return Err(PyErr::fetch(obj.py()));
            }
            let mut buf = itoa_buf(small);
            self.out.extend_from_slice(buf.as_bytes_mut());
            return Ok(());
        }
        // Big ints go through int's own repr, so Python's digit limit
        // (`sys.set_int_max_str_digits`) applies exactly as in `json`.
        // SAFETY: calling int's tp_repr on an int, as the C encoder does.
        let text = unsafe {
            let repr = (*std::ptr::addr_of!(ffi::PyLong_Type))
                .tp_repr
                .expect("int has a repr");
            Bound::from_owned_ptr_or_err(obj.py(), repr(obj.as_ptr()))?
        };
        let text = text.cast_into::<PyString>()?;
        self.out.extend_from_slice(text.to_str()?.as_bytes());
        Ok(())
    }

    fn check_circular(&self, ptr: *mut ffi::PyObject) -> PyResult<()> {
        if self.open.contains(&ptr) {
            Err(PyValueError::new_err("Circular reference detected"))
        } else {
            Ok(())
        }
    }

    fn sequence(&mut self, seq: &Bound<'py, PyAny>) -> PyResult<()> {
        let ptr = seq.as_ptr();
        // SAFETY: `seq` is a list or tuple (checked by the caller).
        let is_list = unsafe { ffi::PyList_Check(ptr) } != 0;
        // The item at `i`, owned, or None past the end. A list may change
        // under us (a nested dict subclass's `items()` is user code, and
        // without a GIL another thread may change it at any moment): its
        // length is read again on every step, as `json` does, and length
        // and item are read under the list's lock (a no-op with a GIL), so
        // the item is ours before anyone can free it.
        let item_at = |i: ffi::Py_ssize_t| -> Option<Bound<'py, PyAny>> {
            // SAFETY: a live list (locked) or tuple (immutable, and we hold
            // it); `i` is checked against the current length, and the
            // borrowed item becomes an owned reference at once.
            with_critical_section(seq, || unsafe {
                if is_list {
                    (i < ffi::PyList_GET_SIZE(ptr))
                        .then(|| Bound::from_borrowed_ptr(seq.py(), ffi::PyList_GET_ITEM(ptr, i)))
                } else {
                    (i < ffi::PyTuple_GET_SIZE(ptr))
                        .then(|| Bound::from_borrowed_ptr(seq.py(), ffi::PyTuple_GET_ITEM(ptr, i)))
                }
            })
        };
        let Some(mut item) = item_at(0) else {
            self.out.extend_from_slice(b"[]");
            return Ok(());
        };
        self.check_circular(ptr)?;
        self.open.push(ptr);
        self.out.push(b'[');
        let mut i = 0;
        loop {
            self.value(&item)?;
            i += 1;
            match item_at(i) {
                Some(next) => item = next,
                None => break,
            }
            self.out.extend_from_slice(b", ");
        }
        self.out.push(b']');
        self.open.pop();
        Ok(())
    }

    fn dict(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let ptr = obj.as_ptr();
        // SAFETY: `obj` passed PyDict_Check; PyDict_Size reads the dict storage
        // as the C encoder does (also for subclasses).
        if unsafe { ffi::PyDict_Size(ptr) } == 0 {
            self.out.extend_from_slice(b"{}");
            return Ok(());
        }
        self.check_circular(ptr)?;
        self.open.push(ptr);
        let first = self.items.len();
        push_sorted_items(obj, &mut self.items)?;
        self.out.push(b'{');
        for n in first..self.items.len() {
            if n > first {
                self.out.extend_from_slice(b", ");
            }
            let (key, value) = self.items[n].clone();
            self.key(&key)?;
            self.out.extend_from_slice(b": ");
            self.value(&value)?;
        }
        self.items.truncate(first);
        self.out.push(b'}');
        self.open.pop();
        Ok(())
    }

    fn key(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let ptr = key.as_ptr();
        // SAFETY: type checks and reads on a live key object.
        unsafe {
            if ffi::PyUnicode_Check(ptr) != 0 {
                code_units(ptr).write_json_string(&mut self.out);
                return Ok(());
            }
            self.out.push(b'"');
            if ffi::PyFloat_Check(ptr) != 0 {
                write_json_float(&mut self.out, ffi::PyFloat_AS_DOUBLE(ptr));
            } else if ptr == ffi::Py_True() {
                self.out.extend_from_slice(b"true");
            } else if ptr == ffi::Py_False() {
                self.out.extend_from_slice(b"false");
            } else if ptr == ffi::Py_None() {
                self.out.extend_from_slice(b"null");
            } else if ffi::PyLong_Check(ptr) != 0 {
                self.int(key)?;
            } else {
                self.out.pop();
                let name = std::ffi::CStr::from_ptr((*ffi::Py_TYPE(ptr)).tp_name).to_string_lossy();
                let name: String = name.chars().take(100).collect();
                return Err(PyTypeError::new_err(format!(
                    "keys must be str, int, float, bool or None, not {name}"
                )));
            }
            self.out.push(b'"');
        }
        Ok(())
    }
}

/// Append the dict's items to `items` in `sorted(d.items())` order.
///
/// Plain dicts whose keys are all exact `str` are sorted here by code point
/// (distinct keys never compare equal, so tuple comparison reduces to key
/// comparison); anything else is sorted by Python itself.
fn push_sorted_items<'py>(
    obj: &Bound<'py, PyAny>,
    items: &mut Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> PyResult<()> {
    let py = obj.py();
    if obj.is_exact_instance_of::<PyDict>() {
        let first = items.len();
        let mut all_str = true;
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        // Without a GIL another thread may change the dict at any moment:
        // the walk holds the dict's own lock (a no-op with a GIL), as
        // CPython's `dict.items()` does, and owns each entry before the
        // lock is let go.
        with_critical_section(obj, || {
            // SAFETY: PyDict_Next over an exact dict that no one can change
            // while we hold its lock (or the GIL, and no Python code runs
            // in this loop); borrowed key and value become owned at once.
            unsafe {
                while ffi::PyDict_Next(obj.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
                    all_str &= ffi::PyUnicode_CheckExact(key) != 0;
                    items.push((
                        Bound::from_borrowed_ptr(py, key),
                        Bound::from_borrowed_ptr(py, value),
                    ));
                }
            }
        });
        if all_str {
            // SAFETY: every key is a live exact str held by `items`.
            items[first..].sort_unstable_by(|(a, _), (b, _)| unsafe {
                code_units(a.as_ptr()).cmp_code_points(&code_units(b.as_ptr()))
            });
            return Ok(());
        }
        items.truncate(first);
    }
    // SAFETY: PyMapping_Items returns a new reference to a list (or NULL).
    let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMapping_Items(obj.as_ptr()))? };
    let list = list.cast_into::<PyList>()?;
    list.sort()?;
    for item in list.iter() {
        let (key, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item
            .extract()
            .map_err(|_| PyValueError::new_err("items must return 2-tuples"))?;
        items.push((key, value));
    }
    Ok(())
}

fn not_serializable(obj: &Bound<'_, PyAny>) -> PyErr {
    let name = obj
        .getattr("__class__")
        .and_then(|cls| cls.getattr("__name__"))
        .map(|n| n.to_string())
        .unwrap_or_else(|_| obj.get_type().to_string());
    PyTypeError::new_err(format!("Object of type {name} is not JSON serializable"))
}

/// A small stack buffer holding the decimal digits of an `i64`.
struct IntText {
    buf: [u8; 20],
    start: usize,
}

impl IntText {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(value: i64) -> IntText {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut n = value.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    IntText { buf, start: pos }
}

#[cfg(test)]
mod tests {
    use super::itoa_buf;

    #[test]
    fn integers_print_like_python() {
        for v in [0i64, 7, -7, 10, -10, 1_234_567_890, i64::MAX, i64::MIN] {
            assert_eq!(itoa_buf(v).as_bytes_mut(), v.to_string().as_bytes());
        }
    }
}
