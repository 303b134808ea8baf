//! The process's one decode memo (`memo.rs`) over server replies, and its
//! Python face: `cache_usage()` and `cache_clear()`.

use std::sync::{Arc, LazyLock};

use crate::connection::fork::PerProcess;
use crate::sync::Mutex;
use pyo3::prelude::*;

use super::memo::{Lookup, TextMemo, Weigh, DEFAULT_BUDGET};
use super::{decode_json_bytes_with, KeyCache, Template};

type Memo = Mutex<TextMemo<Arc<Template>>>;

/// Shared by every handler in the process: madsci's managers read the same
/// documents through several. Per process (`fork::PerProcess`): a child
/// forked while another thread held the lock gets a memo of its own, so
/// `cache_usage`/`cache_clear` never wait on a holder that is gone.
static MEMO: LazyLock<PerProcess<Memo>> = LazyLock::new(|| PerProcess::new(fresh_memo()));

fn fresh_memo() -> Memo {
    Mutex::new(TextMemo::new(DEFAULT_BUDGET))
}

fn process_memo() -> &'static Memo {
    MEMO.get(fresh_memo)
}

impl Weigh for Template {
    fn weight(&self) -> usize {
        Template::weight(self)
    }
}

/// `decode_json_bytes_with` through the memo, for texts `worth_keeping`.
///
/// The lock is only tried, and held only for map work (no Python runs under
/// it): a finalizer that reads the cache during a decode, or a child forked
/// while another thread held it, decodes without the memo instead of
/// waiting forever. Dropped templates are let go after the lock is.
pub fn decode_memoized<'py>(
    py: Python<'py>,
    bytes: &[u8],
    keys: &mut KeyCache<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(mut memo) = process_memo().try_lock() else {
        return decode_json_bytes_with(py, bytes, keys);
    };
    let (lookup, dropped) = memo.look_up(bytes);
    drop(memo);
    drop(dropped);
    match lookup {
        Lookup::Hit(template) => template.copy(py),
        Lookup::First => decode_json_bytes_with(py, bytes, keys),
        Lookup::Second => {
            let value = decode_json_bytes_with(py, bytes, keys)?;
            let template = Arc::new(Template::new(&value)?);
            let unkept = process_memo()
                .try_lock()
                .map(|mut memo| memo.keep(bytes, template));
            drop(unkept);
            Ok(value)
        }
    }
}

/// Estimated bytes the decode memo keeps alive: the texts it remembers and
/// the objects of its templates, as `sys.getsizeof` would count them.
#[pyfunction]
pub fn cache_usage(py: Python<'_>) -> usize {
    // Taken detached: a holder never runs Python under the lock, but may
    // wait for the GIL (or a stop-the-world) while holding it.
    py.detach(|| process_memo().lock().usage().0)
}

/// Drop everything the decode memo keeps.
#[pyfunction]
pub fn cache_clear(py: Python<'_>) {
    let dropped = py.detach(|| process_memo().lock().clear());
    drop(dropped);
}
