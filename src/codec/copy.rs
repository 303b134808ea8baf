//! Fresh copies of decoded JSON values: what decoding the same text again
//! would give, without parsing. Only containers are rebuilt; `str`, `int`,
//! `bool`, `None` and finite floats are immutable and shared, as the strict
//! store already shares scalars. NaN is the exception: `x in [x]` holds by
//! identity, so each copy gets its own NaN, as each decode does.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList};

/// A decoded value kept to be copied. A container is copied by CPython in
/// one call (a dict's keys table is cloned, not rebuilt), then only its
/// entries that are containers themselves (or NaN) are replaced by their
/// own copies.
pub enum Template {
    Shared(Py<PyAny>),
    Nan,
    Dict {
        /// The entries in `unshared` hold `None` here.
        dict: Py<PyDict>,
        unshared: Vec<(Py<PyAny>, Template)>,
    },
    List {
        /// The items in `unshared` hold `None` here.
        list: Py<PyList>,
        unshared: Vec<(usize, Template)>,
    },
}

fn shareable(obj: &Bound<'_, PyAny>) -> bool {
    !(obj.is_exact_instance_of::<PyDict>()
        || obj.is_exact_instance_of::<PyList>()
        || obj.cast::<PyFloat>().is_ok_and(|f| f.value().is_nan()))
}

impl Template {
    /// A template of `value`, a tree of what the JSON decoder produces. It
    /// shares no container with `value`, which the caller hands out.
    pub fn new(value: &Bound<'_, PyAny>) -> PyResult<Template> {
        let py = value.py();
        if let Ok(dict) = value.cast_exact::<PyDict>() {
            let copy = dict.copy()?;
            let mut unshared = Vec::new();
            for (k, v) in dict.iter() {
                if !shareable(&v) {
                    copy.set_item(&k, py.None())?;
                    unshared.push((k.unbind(), Template::new(&v)?));
                }
            }
            return Ok(Template::Dict {
                dict: copy.unbind(),
                unshared,
            });
        }
        if let Ok(list) = value.cast_exact::<PyList>() {
            let copy = list.get_slice(0, list.len());
            let mut unshared = Vec::new();
            for (i, v) in list.iter().enumerate() {
                if !shareable(&v) {
                    copy.set_item(i, py.None())?;
                    unshared.push((i, Template::new(&v)?));
                }
            }
            return Ok(Template::List {
                list: copy.unbind(),
                unshared,
            });
        }
        if shareable(value) {
            Ok(Template::Shared(value.clone().unbind()))
        } else {
            Ok(Template::Nan)
        }
    }

    pub fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Template::Shared(v) => Ok(v.bind(py).clone()),
            Template::Nan => Ok(PyFloat::new(py, f64::NAN).into_any()),
            Template::Dict { .. } => Ok(self.copy_dict(py)?.into_any()),
            Template::List { list, unshared } => {
                let list = list.bind(py);
                let out = list.get_slice(0, list.len());
                for (i, template) in unshared {
                    out.set_item(*i, template.copy(py)?)?;
                }
                Ok(out.into_any())
            }
        }
    }

    fn copy_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Template::Dict { dict, unshared } = self else {
            unreachable!("DictTemplate::new makes dict templates only");
        };
        let out = dict.bind(py).copy()?;
        for (k, template) in unshared {
            out.set_item(k.bind(py), template.copy(py)?)?;
        }
        Ok(out)
    }
}

/// A whole decoded dict kept to be copied.
pub struct DictTemplate(Template);

impl DictTemplate {
    /// A template sharing no container with `value`, which the caller hands out.
    pub fn new(value: &Bound<'_, PyDict>) -> PyResult<DictTemplate> {
        match Template::new(value.as_any())? {
            dict @ Template::Dict { .. } => Ok(DictTemplate(dict)),
            _ => Err(PyTypeError::new_err("a dict template needs an exact dict")),
        }
    }

    pub fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.0.copy_dict(py)
    }
}
