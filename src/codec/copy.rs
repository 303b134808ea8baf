//! Fresh copies of decoded JSON values: what decoding the same text again
//! would give, without parsing. Only containers are rebuilt; `str`, `int`,
//! `bool`, `None` and finite floats are immutable and shared, as the strict
//! store already shares scalars. NaN is the exception: `x in [x]` holds by
//! identity, so each copy gets its own NaN, as each decode does.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList};

use super::size;
use super::stack::grow;

/// A decoded value kept to be copied, with an estimate of the memory it
/// keeps alive (its own containers and every scalar it shares), for the
/// memo's bound.
pub struct Template {
    node: Node,
    weight: usize,
}

/// A container is copied by CPython in one call (a dict's keys table is
/// cloned, not rebuilt), then only its entries that are containers
/// themselves (or NaN) are replaced by their own copies.
enum Node {
    Shared(Py<PyAny>),
    Nan,
    Dict {
        /// The entries in `unshared` hold `None` here.
        dict: Py<PyDict>,
        unshared: Vec<(Py<PyAny>, Node)>,
    },
    List {
        /// The items in `unshared` hold `None` here.
        list: Py<PyList>,
        unshared: Vec<(usize, Node)>,
    },
}

fn shareable(obj: &Bound<'_, PyAny>) -> bool {
    !(obj.is_exact_instance_of::<PyDict>()
        || obj.is_exact_instance_of::<PyList>()
        || obj.cast::<PyFloat>().is_ok_and(|f| f.value().is_nan()))
}

/// The memory a shared scalar takes. `None` and the bools are never freed.
fn scalar_weight(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    let ptr = obj.as_ptr();
    // SAFETY: type checks and reads of immutable fields of a live object.
    unsafe {
        if ffi::PyUnicode_Check(ptr) != 0 {
            let len = ffi::PyUnicode_GET_LENGTH(ptr) as usize;
            let width = ffi::PyUnicode_KIND(ptr) as usize;
            let ascii = width == 1 && ffi::PyUnicode_IS_ASCII(ptr) != 0;
            return Ok(size::str(len, width, ascii));
        }
        if ffi::PyFloat_Check(ptr) != 0 {
            return Ok(size::FLOAT);
        }
        if ptr == ffi::Py_None() || ptr == ffi::Py_True() || ptr == ffi::Py_False() {
            return Ok(0);
        }
        if ffi::PyLong_Check(ptr) != 0 {
            let mut overflow = 0;
            let v = ffi::PyLong_AsLongLongAndOverflow(ptr, &mut overflow);
            if overflow == 0 {
                return Ok(size::int(64 - v.unsigned_abs().leading_zeros()));
            }
        }
    }
    // Big ints (rare): ask the object.
    obj.call_method0("__sizeof__")?.extract()
}

impl Node {
    /// A node of `value`, nested `depth` deep, sharing no container with
    /// it; adds what it keeps alive to `weight`.
    fn new(value: &Bound<'_, PyAny>, weight: &mut usize, depth: usize) -> PyResult<Node> {
        let py = value.py();
        if let Ok(dict) = value.cast_exact::<PyDict>() {
            let copy = dict.copy()?;
            let mut unshared = Vec::new();
            let mut str_keys = true;
            for (k, v) in dict.iter() {
                str_keys &= k.is_exact_instance_of::<pyo3::types::PyString>();
                *weight += scalar_weight(&k)?;
                if shareable(&v) {
                    *weight += scalar_weight(&v)?;
                } else {
                    copy.set_item(&k, py.None())?;
                    let node = grow(depth + 1, || Node::new(&v, weight, depth + 1))?;
                    unshared.push((k.unbind(), node));
                }
            }
            *weight += size::dict(copy.len(), str_keys)
                + unshared.capacity() * std::mem::size_of::<(Py<PyAny>, Node)>();
            return Ok(Node::Dict {
                dict: copy.unbind(),
                unshared,
            });
        }
        if let Ok(list) = value.cast_exact::<PyList>() {
            let copy = list.get_slice(0, list.len());
            let mut unshared = Vec::new();
            for (i, v) in list.iter().enumerate() {
                if shareable(&v) {
                    *weight += scalar_weight(&v)?;
                } else {
                    copy.set_item(i, py.None())?;
                    unshared.push((i, grow(depth + 1, || Node::new(&v, weight, depth + 1))?));
                }
            }
            *weight +=
                size::list(copy.len()) + unshared.capacity() * std::mem::size_of::<(usize, Node)>();
            return Ok(Node::List {
                list: copy.unbind(),
                unshared,
            });
        }
        if shareable(value) {
            *weight += scalar_weight(value)?;
            Ok(Node::Shared(value.clone().unbind()))
        } else {
            *weight += size::FLOAT;
            Ok(Node::Nan)
        }
    }

    fn copy<'py>(&self, py: Python<'py>, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Node::Shared(v) => Ok(v.bind(py).clone()),
            Node::Nan => Ok(PyFloat::new(py, f64::NAN).into_any()),
            Node::Dict { .. } => Ok(self.copy_dict(py, depth)?.into_any()),
            Node::List { list, unshared } => {
                let list = list.bind(py);
                let out = list.get_slice(0, list.len());
                for (i, node) in unshared {
                    out.set_item(*i, grow(depth + 1, || node.copy(py, depth + 1))?)?;
                }
                Ok(out.into_any())
            }
        }
    }

    fn copy_dict<'py>(&self, py: Python<'py>, depth: usize) -> PyResult<Bound<'py, PyDict>> {
        let Node::Dict { dict, unshared } = self else {
            unreachable!("DictTemplate::new makes dict templates only");
        };
        let out = dict.bind(py).copy()?;
        for (k, node) in unshared {
            out.set_item(k.bind(py), grow(depth + 1, || node.copy(py, depth + 1))?)?;
        }
        Ok(out)
    }

    /// The nodes inside this one, taken out.
    fn take_children(&mut self, into: &mut Vec<Node>) {
        match self {
            Node::Dict { unshared, .. } => into.extend(unshared.drain(..).map(|(_, n)| n)),
            Node::List { unshared, .. } => into.extend(unshared.drain(..).map(|(_, n)| n)),
            Node::Shared(_) | Node::Nan => {}
        }
    }
}

/// Dropped level by level, not recursively: a deep document would
/// otherwise overflow a small thread's stack when the memo lets it go.
impl Drop for Template {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        self.node.take_children(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.take_children(&mut pending);
        }
    }
}

impl Template {
    /// A template of `value`, a tree of what the JSON decoder produces. It
    /// shares no container with `value`, which the caller hands out.
    pub fn new(value: &Bound<'_, PyAny>) -> PyResult<Template> {
        let mut weight = std::mem::size_of::<Template>();
        let node = Node::new(value, &mut weight, 0)?;
        Ok(Template { node, weight })
    }

    pub fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.node.copy(py, 0)
    }

    /// Bytes this template keeps alive, estimated (`codec/size.rs`).
    pub fn weight(&self) -> usize {
        self.weight
    }
}

/// A whole decoded dict kept to be copied.
pub struct DictTemplate(Template);

impl DictTemplate {
    /// A template sharing no container with `value`, which the caller hands out.
    pub fn new(value: &Bound<'_, PyDict>) -> PyResult<DictTemplate> {
        let template = Template::new(value.as_any())?;
        match template.node {
            Node::Dict { .. } => Ok(DictTemplate(template)),
            _ => Err(PyTypeError::new_err("a dict template needs an exact dict")),
        }
    }

    pub fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.0.node.copy_dict(py, 0)
    }
}
