//! The strict keyspace and its server-like string commands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, MutexGuard};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString};

use crate::errors::{run_detached, CacheError};
use crate::gil::{lock_detached, SIGNAL_CHECK};
use crate::lease::Lease;
// One conversion for both: strict mode refuses and accepts exactly what
// the server family sends (a `memoryview` included).
use crate::server::args::redis_arg;

/// One stored JSON text, shared so that snapshots taken under the mutex cost
/// a reference count per item rather than a copy.
///
/// When the value written was an immutable scalar (an exact `str`, `int`,
/// `float`, `bool` or `None`), the object itself is kept beside its text and
/// handed back on reads: decoding the text would give an equal immutable
/// object, so sharing it is indistinguishable from a fresh copy, and it spares
/// the decoder on dict keys and on lists of strings.
///
/// A container value keeps, from its first read on, a decoded `template`
/// that later reads copy (`codec::Template`) instead of parsing the text.
pub struct Stored {
    pub text: String,
    pub scalar: Option<Py<PyAny>>,
    pub template: std::sync::OnceLock<crate::codec::Template>,
}

impl std::ops::Deref for Stored {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

pub type Text = Arc<Stored>;

/// A hash field in the index: the stored text, looked up by `&str`.
#[derive(Clone)]
struct Field(Text);

impl std::borrow::Borrow<str> for Field {
    fn borrow(&self) -> &str {
        &self.0.text
    }
}

impl std::hash::Hash for Field {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.text.hash(state);
    }
}

impl PartialEq for Field {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for Field {}

/// A hash that iterates in insertion order, as a small Redis hash does.
/// Removed fields leave holes that are compacted once they dominate.
#[derive(Default, Clone)]
pub struct Hash {
    slots: Vec<Option<(Text, Text)>>,
    index: HashMap<Field, usize>,
    /// The decoded whole hash (`to_dict`), kept until the next write.
    pub plain: Option<Arc<crate::codec::DictTemplate>>,
}

impl Hash {
    pub fn get(&self, field: &str) -> Option<&Text> {
        let i = *self.index.get(field)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    /// Overwriting keeps the field's place; a new field goes last.
    pub fn insert(&mut self, field: Text, value: Text) {
        match self.index.get(&*field.text) {
            Some(&i) => {
                if let Some(slot) = self.slots[i].as_mut() {
                    slot.1 = value;
                }
            }
            None => {
                self.index.insert(Field(field.clone()), self.slots.len());
                self.slots.push(Some((field, value)));
            }
        }
    }

    pub fn remove(&mut self, field: &str) -> Option<Text> {
        let i = self.index.remove(field)?;
        let (_, value) = self.slots[i].take()?;
        if self.slots.len() > 16 && self.index.len() * 2 < self.slots.len() {
            self.compact();
        }
        Some(value)
    }

    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        for (i, (k, _)) in self.slots.iter().flatten().enumerate() {
            self.index.insert(Field(k.clone()), i);
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Fields and values in insertion order.
    pub fn entries(&self) -> impl Iterator<Item = (&Text, &Text)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }
}

pub enum Value {
    Str(Vec<u8>),
    Hash(Hash),
    List(Vec<Text>),
    Lease(Lease),
}

#[derive(Default)]
pub struct Keyspace {
    pub map: HashMap<Vec<u8>, Value>,
    /// Bumped by every write, so optimistic readers can tell nothing changed.
    pub version: u64,
}

impl Keyspace {
    /// The slot at `key`, with expired leases treated as absent (and removed).
    pub fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Value> {
        if matches!(self.map.get(key), Some(Value::Lease(l)) if !l.live(now)) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }
}

#[derive(Default)]
pub struct StrictDb {
    state: Mutex<Keyspace>,
    /// Signalled whenever a lease is released or removed.
    pub(crate) freed: Condvar,
}

pub fn wrong_type(key: &[u8]) -> CacheError {
    CacheError::Response {
        context: format!("key {:?}", String::from_utf8_lossy(key)),
        detail: "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
    }
}

fn not_integer(key: &[u8]) -> CacheError {
    CacheError::Response {
        context: format!("INCRBY {:?}", String::from_utf8_lossy(key)),
        detail: "ERR value is not an integer or out of range".into(),
    }
}

/// Redis's integer syntax (`string2ll`): optional `-`, no `+`, no spaces, no
/// leading zeros, within i64.
pub fn redis_int(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let valid = match digits {
        [] => false,
        [b'0'] => text.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit) && text.len() <= 20,
    };
    if !valid {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl StrictDb {
    pub fn lock<'a>(&'a self, py: Python<'_>) -> MutexGuard<'a, Keyspace> {
        lock_detached(py, &self.state)
    }

    /// Wait (GIL released) until `ready` returns `Ok`, or `deadline` passes.
    /// `ready` also says when the current holder's lease runs out, so a
    /// waiter wakes when a lease expires even if nobody releases it. Pending
    /// signals (Ctrl-C) are looked at between slices of `SIGNAL_CHECK`.
    pub fn wait_for<T: Send>(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut Keyspace, Instant) -> Result<T, Option<Instant>> + Send,
    ) -> PyResult<Option<T>> {
        loop {
            let outcome = run_detached(py, || {
                let slice_end = Instant::now() + SIGNAL_CHECK;
                let mut state = self.state.lock();
                loop {
                    let now = Instant::now();
                    let expiry = match ready(&mut state, now) {
                        Ok(done) => return Ok(Some(Some(done))),
                        Err(expiry) => expiry,
                    };
                    if deadline.is_some_and(|d| now >= d) {
                        return Ok(Some(None));
                    }
                    if now >= slice_end {
                        return Ok(None);
                    }
                    let mut wake = slice_end;
                    for limit in [deadline, expiry].into_iter().flatten() {
                        wake = wake.min(limit);
                    }
                    state = self.freed.wait_until(state, wake).0;
                }
            })?;
            match outcome {
                Some(result) => return Ok(result),
                None => py.check_signals()?,
            }
        }
    }

    pub fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = redis_arg(key)?;
        let value = {
            let mut state = self.lock(py);
            match state.live(&key, Instant::now()) {
                None => return Ok(py.None().into_bound(py)),
                Some(Value::Str(v)) => v.clone(),
                Some(Value::Lease(l)) => l.token.clone().into_bytes(),
                Some(_) => return Err(wrong_type(&key).into()),
            }
        };
        // decode_responses=True: UTF-8, strictly (redis-py raises on bad bytes).
        match std::str::from_utf8(&value) {
            Ok(text) => Ok(PyString::new(py, text).into_any()),
            Err(_) => PyBytes::new(py, &value).call_method1("decode", ("utf-8",)),
        }
    }

    pub fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = redis_arg(key)?;
        let value = redis_arg(value)?;
        let old = {
            let mut state = self.lock(py);
            state.version += 1;
            state.map.insert(key, Value::Str(value))
        };
        if matches!(old, Some(Value::Lease(_))) {
            self.freed.notify_all();
        }
        Ok(())
    }

    pub fn incr<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        amount: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = redis_arg(key)?;
        let amount = redis_arg(amount)?;
        let Some(step) = redis_int(&amount) else {
            return Err(not_integer(&key).into());
        };
        let mut state = self.lock(py);
        let now = Instant::now();
        let base = match state.live(&key, now) {
            None => 0,
            Some(Value::Str(v)) => redis_int(v).ok_or_else(|| not_integer(&key))?,
            Some(Value::Lease(l)) => {
                redis_int(l.token.as_bytes()).ok_or_else(|| not_integer(&key))?
            }
            Some(_) => return Err(wrong_type(&key).into()),
        };
        let Some(sum) = base.checked_add(step) else {
            return Err(CacheError::Response {
                context: format!("INCRBY {:?}", String::from_utf8_lossy(&key)),
                detail: "ERR increment or decrement would overflow".into(),
            }
            .into());
        };
        state.version += 1;
        state
            .map
            .insert(key, Value::Str(sum.to_string().into_bytes()));
        drop(state);
        Ok(PyInt::new(py, sum).into_any())
    }
}

/// Deadline for a wait of `d` from now (`None` = forever).
pub fn deadline_after(d: Option<Duration>) -> Option<Instant> {
    d.map(|d| {
        Instant::now()
            .checked_add(d)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{redis_int, Hash, Stored, Text};

    fn t(text: &str) -> Text {
        Arc::new(Stored {
            text: text.into(),
            scalar: None,
            template: Default::default(),
        })
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        assert_eq!(redis_int(b"0"), Some(0));
        assert_eq!(redis_int(b"-12"), Some(-12));
        assert_eq!(redis_int(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1_0",
            b"1.0",
            b"9223372036854775808",
        ] {
            assert_eq!(redis_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hash_keeps_insertion_order_and_overwrites_in_place() {
        let mut h = Hash::default();
        h.insert(t("a"), t("1"));
        h.insert(t("b"), t("2"));
        h.insert(t("a"), t("3"));
        h.remove("b");
        h.insert(t("b"), t("4"));
        let got: Vec<(&str, &str)> = h.entries().map(|(k, v)| (&*k.text, &*v.text)).collect();
        assert_eq!(got, [("a", "3"), ("b", "4")]);
        // Holes left by removals are compacted without losing order or lookups.
        for i in 0..40 {
            h.insert(t(&i.to_string()), t("x"));
        }
        for i in 0..35 {
            h.remove(&i.to_string());
        }
        assert_eq!(h.len(), 7);
        assert_eq!(h.get("39").map(|v| &*v.text), Some("x"));
        assert_eq!(h.entries().next().map(|(k, _)| &*k.text), Some("a"));
    }
}
