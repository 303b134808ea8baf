//! `InMemoryRedisClient`: madsci's string store behind `get`/`set`/`incr`.
//!
//! Values are the `str()` of what was set, as in madsci. `incr` parses the
//! stored text with Python's own `int()` rules; plain decimal text takes a
//! pure-Rust path under the mutex, anything else (underscores, spaces,
//! non-ASCII digits, huge numbers, a non-`int` amount) is computed outside
//! the mutex and committed only if the value did not change meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};

use crate::gil::lock_detached;

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

#[pyclass(frozen, subclass, module = "madsci_cache_rs._native")]
pub struct InMemoryRedisClient {
    serial: u64,
    data: Mutex<HashMap<String, Py<PyString>>>,
}

impl InMemoryRedisClient {
    pub fn create() -> Self {
        Self {
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            data: Mutex::new(HashMap::new()),
        }
    }

    /// Identity for the registries; never reused within the process.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn get_value(&self, py: Python<'_>, key: &str) -> Option<Py<PyString>> {
        lock_detached(py, &self.data)
            .get(key)
            .map(|v| v.clone_ref(py))
    }

    pub fn set_value(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        // `str(value)` may run user code: do it before taking the mutex.
        let text = value.str()?.unbind();
        let old = lock_detached(py, &self.data).insert(key.to_owned(), text);
        drop(old);
        Ok(())
    }

    pub fn incr_value<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        amount: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(step) = exact_i64(amount) {
            let mut data = lock_detached(py, &self.data);
            let base = match data.get(key) {
                None => Some(0),
                Some(text) => text.bind(py).to_str().ok().and_then(plain_decimal),
            };
            if let Some(sum) = base.and_then(|b| b.checked_add(step)) {
                data.insert(key.to_owned(), PyString::new(py, &sum.to_string()).unbind());
                drop(data);
                return Ok(PyInt::new(py, sum).into_any());
            }
        }
        self.incr_slow(py, key, amount)
    }

    /// Optimistic read-compute-commit: Python code runs with no mutex held.
    fn incr_slow<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        amount: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let int_type = py.get_type::<PyInt>();
        loop {
            let seen = self.get_value(py, key);
            let base = match &seen {
                None => PyInt::new(py, 0).into_any(),
                Some(text) => int_type.call1((text.bind(py),))?,
            };
            let result = base.add(amount)?;
            let text = result.str()?.unbind();
            let mut data = lock_detached(py, &self.data);
            let unchanged = match (data.get(key), &seen) {
                (None, None) => true,
                (Some(now), Some(before)) => now.is(before),
                _ => false,
            };
            if unchanged {
                let old = data.insert(key.to_owned(), text);
                drop(data);
                drop(old);
                return Ok(result);
            }
        }
    }
}

/// An `int` (not a subclass: `bool` + 1 must stay Python's business) in i64 range.
fn exact_i64(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if obj.is_exact_instance_of::<PyInt>() {
        obj.extract::<i64>().ok()
    } else {
        None
    }
}

/// Text Python's `int()` reads the same way Rust does: an optional `-` and
/// ASCII digits only. Everything else goes the slow, exact way.
fn plain_decimal(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[pymethods]
impl InMemoryRedisClient {
    #[new]
    #[pyo3(signature = (**_kwargs))]
    fn new(_kwargs: Option<Bound<'_, PyDict>>) -> Self {
        Self::create()
    }

    #[pyo3(signature = (key, amount = None))]
    fn incr<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        amount: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let amount = amount.unwrap_or_else(|| PyInt::new(py, 1).into_any());
        self.incr_value(py, key, &amount)
    }

    fn get(&self, py: Python<'_>, key: &str) -> Option<Py<PyString>> {
        self.get_value(py, key)
    }

    fn set(&self, py: Python<'_>, key: &str, value: Bound<'_, PyAny>) -> PyResult<()> {
        self.set_value(py, key, &value)
    }

    fn ping(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::plain_decimal;

    #[test]
    fn plain_decimal_accepts_only_what_int_and_rust_agree_on() {
        assert_eq!(plain_decimal("42"), Some(42));
        assert_eq!(plain_decimal("-7"), Some(-7));
        assert_eq!(plain_decimal("007"), Some(7));
        for other in [
            "",
            "-",
            "+3",
            " 7",
            "1_000",
            "1.5",
            "abc",
            "9999999999999999999",
        ] {
            assert_eq!(plain_decimal(other), None, "{other:?}");
        }
    }
}
