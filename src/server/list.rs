//! `RedisList`: a Redis list of `encode(item)` (pottery's wire format), one
//! round trip per operation. Index and slice operations Redis has no
//! command for run as scripts, so they are atomic too.

use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice};

use super::args::equal_encodings;
use super::handler::transport_of;
use super::keyed::{Keyed, Refusal};
use super::scripts::{
    LIST_FIND, LIST_INSERT, LIST_POP_AT, LIST_REMOVE_ANY, LIST_REVERSE, LIST_SLICE, LIST_SLICE_DEL,
    LIST_SLICE_SET, TOMBSTONE,
};
use super::values::{decode_list, decode_reply};
use crate::codec::encode_json;
use crate::connection::{Reply, Transport};

/// A list kept in a Redis list, byte-compatible with pottery's `RedisList`.
#[pyclass(frozen, sequence, module = "madsci_cache_rs", name = "RedisList")]
pub struct RedisList {
    target: Keyed,
}

fn index_arg(index: &Bound<'_, PyAny>) -> PyResult<i64> {
    index.extract::<i64>().map_err(|_| {
        PyTypeError::new_err(format!(
            "list indices must be integers or slices, not {}",
            index
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

/// A slice's start, stop and step as script arguments ('' for None).
fn slice_args(slice: &Bound<'_, PySlice>) -> PyResult<[String; 3]> {
    let part = |name: &str| -> PyResult<String> {
        let v = slice.getattr(name)?;
        Ok(if v.is_none() {
            String::new()
        } else {
            index_arg(&v)?.to_string()
        })
    };
    let step = match part("step")?.as_str() {
        "" => "1".to_owned(),
        "0" => return Err(PyValueError::new_err("slice step cannot be zero")),
        s => s.to_owned(),
    };
    Ok([part("start")?, part("stop")?, step])
}

/// LSET's refusals for an index past the end, or a list that is not there
/// (the once-form hands the server's error back verbatim).
fn is_out_of_range(refusal: &Refusal) -> bool {
    matches!(
        refusal.message(),
        "ERR index out of range" | "ERR no such key"
    )
}

impl RedisList {
    pub fn with_client(client: Arc<dyn Transport>, key: &Bound<'_, PyAny>) -> PyResult<RedisList> {
        Ok(RedisList {
            target: Keyed::new(client, key)?,
        })
    }

    /// The whole list, decoded (one LRANGE).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        decode_list(
            py,
            &self
                .target
                .run(py, self.target.cmd("LRANGE").arg("0").arg("-1"))?,
        )
    }

    /// First index of an element equal to `value`, one call.
    fn find(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        let alternatives = equal_encodings(value)?;
        let reply = match alternatives.as_slice() {
            [] => return Ok(None),
            [only] => self.target.run(py, self.target.cmd("LPOS").arg(only))?,
            many => {
                let args: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
                self.target.eval(py, &LIST_FIND, "LPOS", &args)?
            }
        };
        Ok(match reply {
            Reply::Int(i) => Some(i),
            _ => None,
        })
    }
}

#[pymethods]
impl RedisList {
    /// `RedisList(key=..., redis=handler)`; `redis` may also be anything
    /// `PyCacheHandler(...)` accepts.
    #[new]
    #[pyo3(signature = (*, key, redis))]
    fn new(key: &Bound<'_, PyAny>, redis: &Bound<'_, PyAny>) -> PyResult<Self> {
        let client = transport_of(redis)?;
        RedisList::with_client(client, key)
    }

    #[getter]
    fn key(&self) -> &str {
        self.target.key()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        match self.target.run(py, self.target.cmd("LLEN"))? {
            Reply::Int(n) => Ok(n as usize),
            _ => Ok(0),
        }
    }

    /// An int index is one LINDEX; a slice is one script that returns only
    /// the slice.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let [start, stop, step] = slice_args(slice)?;
            let args = [start.as_bytes(), stop.as_bytes(), step.as_bytes()];
            let reply = self.target.eval(py, &LIST_SLICE, "slice", &args)?;
            return Ok(decode_list(py, &reply)?.into_any());
        }
        let i = index_arg(index)?;
        match self
            .target
            .run(py, self.target.cmd("LINDEX").arg(i.to_string()))?
        {
            Reply::Nil => Err(PyIndexError::new_err("list index out of range")),
            reply => decode_reply(py, &reply),
        }
    }

    /// One LSET, or for a slice one script (atomic; every value encoded
    /// before anything is sent).
    fn __setitem__(
        &self,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let [start, stop, step] = slice_args(slice)?;
            let values = value
                .try_iter()
                .map_err(|_| PyTypeError::new_err("can only assign an iterable"))?
                .map(|v| encode_json(&v?))
                .collect::<PyResult<Vec<_>>>()?;
            let mut args = vec![start.as_bytes(), stop.as_bytes(), step.as_bytes()];
            args.extend(values.iter().map(Vec::as_slice));
            let outcome =
                self.target
                    .eval_or_refusal(py, &LIST_SLICE_SET, "slice assignment", &args)?;
            return match outcome {
                Ok(_) => Ok(()),
                // The script refuses with Python's own message after this word.
                Err(refusal) => match refusal.message().strip_prefix("SLICE ") {
                    Some(message) => Err(PyValueError::new_err(message.to_owned())),
                    None => Err(refusal.into()),
                },
            };
        }
        let i = index_arg(index)?;
        let encoded = encode_json(value)?;
        match self
            .target
            .run_or_refusal(py, self.target.cmd("LSET").arg(i.to_string()).arg(encoded))?
        {
            Ok(_) => Ok(()),
            Err(refusal) if is_out_of_range(&refusal) => {
                Err(PyIndexError::new_err("list assignment index out of range"))
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    fn __delitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let [start, stop, step] = slice_args(slice)?;
            let args = [
                start.as_bytes(),
                stop.as_bytes(),
                step.as_bytes(),
                TOMBSTONE,
            ];
            self.target
                .eval(py, &LIST_SLICE_DEL, "slice deletion", &args)?;
            return Ok(());
        }
        let i = index_arg(index)?.to_string();
        match self
            .target
            .eval(py, &LIST_POP_AT, "delete", &[i.as_bytes(), TOMBSTONE])?
        {
            Reply::Nil => Err(PyIndexError::new_err("list assignment index out of range")),
            _ => Ok(()),
        }
    }

    fn __contains__(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.find(py, value)?.is_some())
    }

    /// Iterates a snapshot (one LRANGE).
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.snapshot(py)?.try_iter()?.into_any())
    }

    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = self.snapshot(py)?;
        items.reverse()?;
        Ok(items.try_iter()?.into_any())
    }

    fn append(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let encoded = encode_json(value)?;
        self.target.run(py, self.target.cmd("RPUSH").arg(encoded))?;
        Ok(())
    }

    /// One RPUSH; every item is encoded first, so a bad one writes nothing.
    fn extend(&self, py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut cmd = self.target.cmd("RPUSH");
        let mut any = false;
        for v in values.try_iter()? {
            cmd.push(&encode_json(&v?)?);
            any = true;
        }
        if any {
            self.target.run(py, cmd)?;
        }
        Ok(())
    }

    fn __iadd__(&self, py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        self.extend(py, values)
    }

    #[pyo3(signature = (index, value))]
    fn insert(
        &self,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let i = index_arg(index)?.to_string();
        let encoded = encode_json(value)?;
        self.target.eval(
            py,
            &LIST_INSERT,
            "insert",
            &[i.as_bytes(), &encoded, TOMBSTONE],
        )?;
        Ok(())
    }

    #[pyo3(signature = (index=-1), text_signature = "(self, index=-1)")]
    fn pop<'py>(&self, py: Python<'py>, index: i64) -> PyResult<Bound<'py, PyAny>> {
        let reply = match index {
            -1 => self.target.run(py, self.target.cmd("RPOP"))?,
            0 => self.target.run(py, self.target.cmd("LPOP"))?,
            i => {
                let i = i.to_string();
                self.target
                    .eval(py, &LIST_POP_AT, "pop", &[i.as_bytes(), TOMBSTONE])?
            }
        };
        match reply {
            Reply::Nil if index == -1 => Err(PyIndexError::new_err("pop from an empty RedisList")),
            Reply::Nil => Err(PyIndexError::new_err("pop index out of range")),
            reply => decode_reply(py, &reply),
        }
    }

    /// Removes the first element equal to `value` (one LREM, or one script
    /// when `value` has several equal encodings, like `1` and `1.0`).
    fn remove(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let alternatives = equal_encodings(value)?;
        let reply = match alternatives.as_slice() {
            [] => Reply::Int(0),
            [only] => self
                .target
                .run(py, self.target.cmd("LREM").arg("1").arg(only))?,
            many => {
                let mut args: Vec<&[u8]> = vec![TOMBSTONE];
                args.extend(many.iter().map(Vec::as_slice));
                self.target.eval(py, &LIST_REMOVE_ANY, "LREM", &args)?
            }
        };
        match reply {
            Reply::Int(0) => Err(PyValueError::new_err(
                "RedisList.remove(x): x not in RedisList",
            )),
            _ => Ok(()),
        }
    }

    /// One LPOS; with `start`/`stop`, one LRANGE searched locally.
    #[pyo3(signature = (value, start=None, stop=None))]
    fn index(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        start: Option<&Bound<'_, PyAny>>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        if start.is_some() || stop.is_some() {
            let items = self.snapshot(py)?;
            let start = start.map_or(Ok(0), |s| s.extract::<isize>())?;
            let stop = stop.map_or(Ok(isize::MAX), |s| s.extract::<isize>())?;
            return items.call_method1("index", (value, start, stop))?.extract();
        }
        match self.find(py, value)? {
            Some(i) => Ok(i as usize),
            None => Err(PyValueError::new_err(format!(
                "{} is not in list",
                value.repr()?
            ))),
        }
    }

    /// One LRANGE, counted with Python's `==`.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.snapshot(py)?
            .call_method1("count", (value,))?
            .extract()
    }

    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.snapshot(py)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.target.run(py, self.target.cmd("UNLINK"))?;
        Ok(())
    }

    /// One script, atomic.
    fn reverse(&self, py: Python<'_>) -> PyResult<()> {
        self.target.eval(py, &LIST_REVERSE, "reverse", &[])?;
        Ok(())
    }

    /// Equal to a `list` or a `RedisList` with equal items, as pottery's.
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let theirs = if let Ok(l) = other.cast::<RedisList>() {
            l.get().snapshot(py)?
        } else if let Ok(l) = other.cast::<PyList>() {
            l.clone()
        } else {
            return Ok(false);
        };
        self.snapshot(py)?.eq(theirs)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("RedisList{}", self.snapshot(py)?.repr()?))
    }
}
