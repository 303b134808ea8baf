//! The JSON scanner: UTF-8 (or WTF-8) bytes -> Python objects, equal to
//! what CPython's C scanner returns with `json.loads`'s defaults, with its
//! error messages; error positions are turned back into code-point offsets
//! at the end.

use std::ffi::CStr;

use pyo3::exceptions::PyRecursionError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

use super::encode::new_ascii_str;
use super::stack::grow;
use super::text::push_wtf8;
use super::wording::{trailing_comma, Container};

/// Nesting beyond which we stop even if `sys.getrecursionlimit()` allows
/// more: deeper documents are no JSON a lab stores, and the stack segments
/// they would take are better refused.
const MAX_DEPTH: usize = 10_000;
const IN_OBJECT: &CStr = c" while decoding a JSON object from a unicode string";
const IN_ARRAY: &CStr = c" while decoding a JSON array from a unicode string";

enum Failure {
    /// A syntax error at a byte offset, with `json`'s message.
    Syntax(&'static str, usize),
    Python(PyErr),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

/// Recently seen short ASCII object keys: documents repeat their keys, and a
/// reused `str` also brings its cached hash to the dict insert.
pub struct KeyCache<'py> {
    slots: [Option<Bound<'py, PyString>>; KEY_CACHE_SLOTS],
}

impl KeyCache<'_> {
    pub fn new() -> Self {
        KeyCache {
            slots: [const { None }; KEY_CACHE_SLOTS],
        }
    }
}

impl Default for KeyCache<'_> {
    fn default() -> Self {
        Self::new()
    }
}

pub(super) struct Parser<'a, 'c, 'py> {
    py: Python<'py>,
    input: &'a [u8],
    /// The input may hold surrogates encoded as 3-byte sequences.
    surrogates: bool,
    depth: usize,
    scratch: Vec<u8>,
    keys: &'c mut KeyCache<'py>,
}

const KEY_CACHE_SLOTS: usize = 64;
const KEY_CACHE_MAX_LEN: usize = 32;

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a, 'c, 'py> Parser<'a, 'c, 'py> {
    pub(super) fn new(
        py: Python<'py>,
        input: &'a [u8],
        surrogates: bool,
        keys: &'c mut KeyCache<'py>,
    ) -> Self {
        Parser {
            py,
            input,
            surrogates,
            depth: 0,
            scratch: Vec::new(),
            keys,
        }
    }

    pub(super) fn run(
        mut self,
        doc: &dyn Fn() -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let start = self.skip_ws(0);
        let result = self.value(start).and_then(|(value, end)| {
            let end = self.skip_ws(end);
            if end != self.input.len() {
                Err(Failure::Syntax("Extra data", end))
            } else {
                Ok(value)
            }
        });
        match result {
            Ok(v) => Ok(v),
            Err(Failure::Python(e)) => Err(e),
            Err(Failure::Syntax(msg, at)) => {
                let chars = self.input[..at]
                    .iter()
                    .filter(|&&b| b & 0xc0 != 0x80)
                    .count();
                Err(decode_error(self.py, msg, &doc()?, chars))
            }
        }
    }

    #[inline]
    fn skip_ws(&self, mut at: usize) -> usize {
        while at < self.input.len() && is_ws(self.input[at]) {
            at += 1;
        }
        at
    }

    #[inline]
    fn byte(&self, at: usize) -> Option<u8> {
        self.input.get(at).copied()
    }

    /// One JSON value starting exactly at `at`; returns it and the offset after it.
    fn value(&mut self, at: usize) -> Result<(Bound<'py, PyAny>, usize), Failure> {
        let py = self.py;
        let rest = &self.input[at.min(self.input.len())..];
        match rest.first() {
            None => Err(Failure::Syntax("Expecting value", at)),
            Some(b'"') => self.string(at + 1).map(|(s, end)| (s.into_any(), end)),
            Some(b'{') => {
                self.enter(IN_OBJECT)?;
                let result = grow(self.depth, || self.object(at + 1));
                self.leave();
                result
            }
            Some(b'[') => {
                self.enter(IN_ARRAY)?;
                let result = grow(self.depth, || self.array(at + 1));
                self.leave();
                result
            }
            Some(b'n') if rest.starts_with(b"null") => Ok((py.None().into_bound(py), at + 4)),
            Some(b't') if rest.starts_with(b"true") => Ok((
                pyo3::types::PyBool::new(py, true).to_owned().into_any(),
                at + 4,
            )),
            Some(b'f') if rest.starts_with(b"false") => Ok((
                pyo3::types::PyBool::new(py, false).to_owned().into_any(),
                at + 5,
            )),
            Some(b'N') if rest.starts_with(b"NaN") => Ok((float(py, f64::NAN), at + 3)),
            Some(b'I') if rest.starts_with(b"Infinity") => Ok((float(py, f64::INFINITY), at + 8)),
            Some(b'-') if rest.starts_with(b"-Infinity") => {
                Ok((float(py, f64::NEG_INFINITY), at + 9))
            }
            Some(_) => self.number(at),
        }
    }

    fn enter(&mut self, place: &CStr) -> Result<(), Failure> {
        if self.depth >= MAX_DEPTH {
            let place = place.to_string_lossy();
            return Err(PyRecursionError::new_err(format!(
                "maximum recursion depth exceeded{place}"
            ))
            .into());
        }
        // SAFETY: attached to the interpreter; paired with `leave`.
        if unsafe { ffi::Py_EnterRecursiveCall(place.as_ptr()) } != 0 {
            return Err(PyErr::fetch(self.py).into());
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
        // SAFETY: paired with a successful `enter`.
        unsafe { ffi::Py_LeaveRecursiveCall() }
    }

    fn object(&mut self, at: usize) -> Result<(Bound<'py, PyAny>, usize), Failure> {
        let dict = pyo3::types::PyDict::new(self.py);
        let mut at = self.skip_ws(at);
        if self.byte(at) != Some(b'}') {
            loop {
                if self.byte(at) != Some(b'"') {
                    return Err(Failure::Syntax(
                        "Expecting property name enclosed in double quotes",
                        at,
                    ));
                }
                let (key, end) = self.key(at + 1)?;
                at = self.skip_ws(end);
                if self.byte(at) != Some(b':') {
                    return Err(Failure::Syntax("Expecting ':' delimiter", at));
                }
                at = self.skip_ws(at + 1);
                let (value, end) = self.value(at)?;
                // SAFETY: a fresh dict and two live objects; SetItem takes its own references.
                if unsafe { ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value.as_ptr()) } != 0
                {
                    return Err(PyErr::fetch(self.py).into());
                }
                at = self.skip_ws(end);
                match self.byte(at) {
                    Some(b'}') => break,
                    Some(b',') => at = self.after_comma(at, b'}', Container::Object)?,
                    _ => return Err(Failure::Syntax("Expecting ',' delimiter", at)),
                }
            }
        }
        Ok((dict.into_any(), at + 1))
    }

    fn array(&mut self, at: usize) -> Result<(Bound<'py, PyAny>, usize), Failure> {
        let mut items = Vec::new();
        let mut at = self.skip_ws(at);
        if self.byte(at) != Some(b']') {
            loop {
                let (value, end) = self.value(at)?;
                items.push(value);
                at = self.skip_ws(end);
                match self.byte(at) {
                    Some(b']') => break,
                    Some(b',') => at = self.after_comma(at, b']', Container::Array)?,
                    _ => return Err(Failure::Syntax("Expecting ',' delimiter", at)),
                }
            }
        }
        // SAFETY: PyList_New(n) has n empty slots; SET_ITEM steals each
        // reference exactly once.
        let list = unsafe {
            let list = Bound::from_owned_ptr_or_err(
                self.py,
                ffi::PyList_New(items.len() as ffi::Py_ssize_t),
            )?;
            for (i, item) in items.into_iter().enumerate() {
                ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr());
            }
            list
        };
        Ok((list, at + 1))
    }

    /// The offset of what follows the comma at `comma`, unless it is the
    /// container's closer: that error's wording is the running Python's.
    #[inline]
    fn after_comma(
        &self,
        comma: usize,
        closer: u8,
        container: Container,
    ) -> Result<usize, Failure> {
        let at = self.skip_ws(comma + 1);
        if self.byte(at) != Some(closer) {
            return Ok(at);
        }
        let version = self.py.version_info();
        let (msg, pos) = trailing_comma((version.major, version.minor), container, comma, at);
        Err(Failure::Syntax(msg, pos))
    }

    /// An object key: a string, reused from the cache when it is short ASCII
    /// without escapes.
    fn key(&mut self, start: usize) -> Result<(Bound<'py, PyString>, usize), Failure> {
        let input = self.input;
        let mut at = start;
        let limit = (start + KEY_CACHE_MAX_LEN).min(input.len());
        while at < limit
            && input[at] != b'"'
            && (0x20..0x80).contains(&input[at])
            && input[at] != b'\\'
        {
            at += 1;
        }
        if at >= limit || input[at] != b'"' {
            return self.string(start);
        }
        let bytes = &input[start..at];
        let slot = bytes.iter().fold(bytes.len(), |h, &b| {
            h.wrapping_mul(31).wrapping_add(b as usize)
        }) % KEY_CACHE_SLOTS;
        if let Some(cached) = &self.keys.slots[slot] {
            // SAFETY: cached keys are compact ASCII strs, whose data is their bytes.
            let data = unsafe {
                let p = cached.as_ptr();
                std::slice::from_raw_parts(
                    ffi::PyUnicode_DATA(p) as *const u8,
                    ffi::PyUnicode_GET_LENGTH(p) as usize,
                )
            };
            if data == bytes {
                return Ok((cached.clone(), at + 1));
            }
        }
        let key = self.make_str(bytes, false)?;
        self.keys.slots[slot] = Some(key.clone());
        Ok((key, at + 1))
    }

    /// The body of a string whose opening quote is at `start - 1`.
    fn string(&mut self, start: usize) -> Result<(Bound<'py, PyString>, usize), Failure> {
        let input = self.input;
        let quote = start - 1;
        // Fast path: no escapes.
        let mut at = start;
        while let Some(&b) = input.get(at) {
            match b {
                b'"' => {
                    let s = self.make_str(&input[start..at], self.surrogates)?;
                    return Ok((s, at + 1));
                }
                b'\\' => break,
                0..=0x1f => return Err(Failure::Syntax("Invalid control character at", at)),
                _ => at += 1,
            }
        }
        if at >= input.len() {
            return Err(Failure::Syntax("Unterminated string starting at", quote));
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&input[start..at]);
        let mut wtf8 = self.surrogates;
        let result = loop {
            match input.get(at) {
                None => break Err(Failure::Syntax("Unterminated string starting at", quote)),
                Some(b'"') => break Ok(at + 1),
                Some(b'\\') => {}
                Some(0..=0x1f) => break Err(Failure::Syntax("Invalid control character at", at)),
                Some(&b) => {
                    buf.push(b);
                    at += 1;
                    continue;
                }
            }
            // A backslash at `at`.
            let Some(&kind) = input.get(at + 1) else {
                break Err(Failure::Syntax("Unterminated string starting at", quote));
            };
            let simple = match kind {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'u' => None,
                _ => break Err(Failure::Syntax("Invalid \\escape", at)),
            };
            if let Some(c) = simple {
                buf.push(c);
                at += 2;
                continue;
            }
            // `\uXXXX`: json needs the four digits and at least one more character.
            let u_at = at + 1;
            let Some(mut c) = hex4(input, u_at + 1).filter(|_| u_at + 5 < input.len()) else {
                break Err(Failure::Syntax("Invalid \\uXXXX escape", u_at));
            };
            at = u_at + 5;
            if (0xd800..0xdc00).contains(&c)
                && at + 6 < input.len()
                && input[at] == b'\\'
                && input[at + 1] == b'u'
            {
                let Some(low) = hex4(input, at + 2) else {
                    break Err(Failure::Syntax("Invalid \\uXXXX escape", at + 1));
                };
                if (0xdc00..0xe000).contains(&low) {
                    c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
                    at += 6;
                }
            }
            wtf8 |= (0xd800..0xe000).contains(&c);
            push_wtf8(&mut buf, c);
        };
        let made = result.and_then(|end| Ok((self.make_str(&buf, wtf8)?, end)));
        self.scratch = buf;
        made
    }

    fn make_str(&self, bytes: &[u8], wtf8: bool) -> Result<Bound<'py, PyString>, Failure> {
        if bytes.is_ascii() {
            return Ok(new_ascii_str(self.py, bytes)?);
        }
        let errors: &CStr = if wtf8 { c"surrogatepass" } else { c"strict" };
        // SAFETY: `bytes` is UTF-8 (or WTF-8 with `surrogatepass`); the call
        // returns a new reference or NULL with an exception set.
        let s = unsafe {
            Bound::from_owned_ptr_or_err(
                self.py,
                ffi::PyUnicode_DecodeUTF8(
                    bytes.as_ptr().cast(),
                    bytes.len() as ffi::Py_ssize_t,
                    errors.as_ptr(),
                ),
            )?
        };
        Ok(s.cast_into::<PyString>().map_err(PyErr::from)?)
    }

    fn number(&mut self, start: usize) -> Result<(Bound<'py, PyAny>, usize), Failure> {
        let input = self.input;
        let digit = |at: usize| input.get(at).is_some_and(u8::is_ascii_digit);
        let mut at = start;
        if input[at] == b'-' {
            at += 1;
        }
        match input.get(at) {
            Some(b'1'..=b'9') => {
                at += 1;
                while digit(at) {
                    at += 1;
                }
            }
            Some(b'0') => at += 1,
            _ => return Err(Failure::Syntax("Expecting value", start)),
        }
        let mut is_float = false;
        if input.get(at) == Some(&b'.') && digit(at + 1) {
            is_float = true;
            at += 2;
            while digit(at) {
                at += 1;
            }
        }
        if matches!(input.get(at), Some(b'e' | b'E')) {
            let mut exp = at + 1;
            if matches!(input.get(exp), Some(b'+' | b'-')) {
                exp += 1;
            }
            if digit(exp) {
                while digit(exp) {
                    exp += 1;
                }
                is_float = true;
                at = exp;
            }
        }
        let text = &input[start..at];
        // SAFETY: `text` is ASCII digits, sign, '.', 'e' (what the scanner matched).
        let text = unsafe { std::str::from_utf8_unchecked(text) };
        if is_float {
            let v: f64 = text.parse().expect("the scanner matched a float literal");
            return Ok((float(self.py, v), at));
        }
        if text.len() <= 18 {
            let v: i64 = text.parse().expect("at most 18 digits fit in i64");
            return Ok((pyo3::types::PyInt::new(self.py, v).into_any(), at));
        }
        // Big ints go through int() so Python's digit limit applies as in json.
        let c_text = std::ffi::CString::new(text).expect("digits hold no NUL");
        // SAFETY: NUL-terminated decimal text; new reference or NULL.
        let v = unsafe {
            Bound::from_owned_ptr_or_err(
                self.py,
                ffi::PyLong_FromString(c_text.as_ptr(), std::ptr::null_mut(), 10),
            )?
        };
        Ok((v, at))
    }
}

fn hex4(input: &[u8], at: usize) -> Option<u32> {
    let digits = input.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = (v << 4) | (d as char).to_digit(16)?;
    }
    Some(v)
}

fn float(py: Python<'_>, v: f64) -> Bound<'_, PyAny> {
    pyo3::types::PyFloat::new(py, v).into_any()
}

/// `json.JSONDecodeError(msg, doc, pos)`, which computes line and column.
pub(super) fn decode_error(py: Python<'_>, msg: &str, doc: &Bound<'_, PyAny>, pos: usize) -> PyErr {
    static ERROR_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let ty = match ERROR_TYPE.import(py, "json", "JSONDecodeError") {
        Ok(ty) => ty,
        Err(e) => return e,
    };
    match ty.call1((msg, doc, pos)) {
        Ok(err) => PyErr::from_value(err),
        Err(e) => e,
    }
}
