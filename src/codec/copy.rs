//! Fresh copies of decoded JSON values: what decoding the same text again
//! would give, without parsing. Only containers are rebuilt; `str`, `int`,
//! `bool`, `None` and finite floats are immutable and shared, as the strict
//! store already shares scalars. NaN is the exception: `x in [x]` holds by
//! identity, so each copy gets its own NaN, as each decode does.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList};

/// A decoded value kept to be copied: `flat` when it is a dict or list of
/// shareable leaves only, which CPython then copies in one call.
pub struct Template {
    value: Py<PyAny>,
    flat: bool,
}

pub(crate) fn shareable(obj: &Bound<'_, PyAny>) -> bool {
    !(obj.is_exact_instance_of::<PyDict>()
        || obj.is_exact_instance_of::<PyList>()
        || obj.cast::<PyFloat>().is_ok_and(|f| f.value().is_nan()))
}

impl Template {
    /// Keeps a private copy of `value` (the caller hands `value` out).
    pub fn new(value: &Bound<'_, PyAny>) -> PyResult<Template> {
        let flat = if let Ok(dict) = value.cast_exact::<PyDict>() {
            dict.values().iter().all(|v| shareable(&v))
        } else if let Ok(list) = value.cast_exact::<PyList>() {
            list.iter().all(|v| shareable(&v))
        } else {
            false
        };
        Ok(Template {
            value: fresh_copy(value)?.unbind(),
            flat,
        })
    }

    pub fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = self.value.bind(py);
        if self.flat {
            if let Ok(dict) = value.cast_exact::<PyDict>() {
                return Ok(dict.copy()?.into_any());
            }
            if let Ok(list) = value.cast_exact::<PyList>() {
                return Ok(list.get_slice(0, list.len()).into_any());
            }
        }
        fresh_copy(value)
    }
}

/// A whole decoded dict kept to be copied: CPython copies the top level in
/// one call, then only the values that are not shareable are replaced.
pub struct DictTemplate {
    dict: Py<PyDict>,
    unshared: Vec<(Py<PyAny>, Template)>,
}

impl DictTemplate {
    /// Keeps a private copy of `value` (the caller hands `value` out).
    pub fn new(value: &Bound<'_, PyDict>) -> PyResult<DictTemplate> {
        let dict = value.copy()?;
        let mut unshared = Vec::new();
        for (k, v) in value.iter() {
            if !shareable(&v) {
                let template = Template::new(&v)?;
                dict.set_item(&k, template.value.bind(value.py()))?;
                unshared.push((k.unbind(), template));
            }
        }
        Ok(DictTemplate {
            dict: dict.unbind(),
            unshared,
        })
    }

    pub fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = self.dict.bind(py).copy()?;
        for (k, template) in &self.unshared {
            out.set_item(k.bind(py), template.copy(py)?)?;
        }
        Ok(out)
    }
}

/// A copy of `value`, a tree of what the JSON decoder produces.
pub fn fresh_copy<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    if let Ok(dict) = value.cast_exact::<PyDict>() {
        let out = PyDict::new(py);
        for (k, v) in dict.iter() {
            out.set_item(k, fresh_copy(&v)?)?;
        }
        return Ok(out.into_any());
    }
    if let Ok(list) = value.cast_exact::<PyList>() {
        let items = list
            .iter()
            .map(|v| fresh_copy(&v))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyList::new(py, items)?.into_any());
    }
    if shareable(value) {
        Ok(value.clone())
    } else {
        // Neither dict nor list, so a NaN.
        Ok(PyFloat::new(py, f64::NAN).into_any())
    }
}
