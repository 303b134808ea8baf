//! Rust log records into Python `logging` (through pyo3-log), without ever
//! letting logging change a call's outcome.
//!
//! Logging runs Python code: handlers, filters, and on the main thread any
//! signal handler that becomes due. pyo3-log leaves an exception raised
//! there set on the thread, where it would turn our call's result into a
//! `SystemError`, or replace the call's own error. So: records made while a
//! call waits (`gil::detach`) are held back and emitted after it; an
//! ordinary exception raised by logging goes to `sys.unraisablehook`; a
//! `KeyboardInterrupt` raised by logging propagates from the call (held
//! back) or is re-armed as a pending SIGINT (elsewhere), never lost.
//!
//! The crate's own background threads (the lock release listener, the
//! Sentinel failover watcher) never attach to the interpreter: their
//! records are queued and emitted by the next Python thread that returns
//! from a wait here. They outlive the interpreter: `Py_FinalizeEx` neither
//! joins nor stops them, and one that logged while `exit()` ran the C
//! atexit handlers called `PyGILState_Ensure` on a torn-down runtime,
//! which segfaulted the process after its output (exit status 139;
//! `tests/test_exit.py`). pyo3's `Python::attach` cannot refuse there: on
//! Python < 3.13 it checks neither `Py_IsFinalizing` nor, once its own
//! start-up check has passed, `Py_IsInitialized`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;

use crate::connection::fork::PerProcess;
use crate::sync::Mutex;

thread_local! {
    /// This is one of the crate's background threads (`mark_background`).
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
    static HOLDING: Cell<bool> = const { Cell::new(false) };
    static HELD: RefCell<Vec<(Level, String, String)>> = const { RefCell::new(Vec::new()) };
}

struct Logger {
    inner: pyo3_log::Logger,
}

/// While alive, this thread's records wait for `emit_held_back`.
pub struct HoldBack {
    previous: bool,
}

pub fn hold_back() -> HoldBack {
    HoldBack {
        previous: HOLDING.with(|h| h.replace(true)),
    }
}

impl Drop for HoldBack {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(self.previous));
    }
}

/// Records from background threads waiting for a Python thread; the
/// oldest go first when more than `QUEUE_LIMIT` wait (counted in
/// `dropped`). Per process: a fork while a background thread held the lock
/// would leave the child's copy locked for ever.
#[derive(Default)]
struct Queued {
    records: VecDeque<(Level, String, String)>,
    dropped: u64,
}

const QUEUE_LIMIT: usize = 64;
static QUEUED: LazyLock<PerProcess<Mutex<Queued>>> = LazyLock::new(PerProcess::default);
/// Whether `QUEUED` may hold something: spares every call the lock.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Mark the calling thread as one of the crate's background threads: its
/// records are queued, and it never attaches to the interpreter (which may
/// be finalizing, or gone, while it still runs).
pub fn mark_background() {
    BACKGROUND.with(|b| b.set(true));
}

fn queue(entry: (Level, String, String)) {
    let queued = QUEUED.current();
    let mut q = queued.lock();
    if q.records.len() >= QUEUE_LIMIT {
        q.records.pop_front();
        q.dropped += 1;
    }
    q.records.push_back(entry);
    PENDING.store(true, Ordering::Release);
}

/// The queued background records, with a note of those dropped.
fn take_queued() -> Vec<(Level, String, String)> {
    if !PENDING.swap(false, Ordering::AcqRel) {
        return Vec::new();
    }
    let mut q = QUEUED.current().lock();
    let mut records: Vec<_> = q.records.drain(..).collect();
    let dropped = std::mem::take(&mut q.dropped);
    if dropped > 0 {
        records.push((
            Level::Warn,
            "madsci_cache_rs".to_owned(),
            format!(
                "{dropped} log record(s) from background threads were dropped (too many waiting)"
            ),
        ));
    }
    records
}

/// Log one record with the GIL held; what logging raised, taken off the
/// thread (an exception that was already set stays set).
fn emit(py: Python<'_>, inner: &pyo3_log::Logger, record: &Record<'_>) -> Option<PyErr> {
    let before = PyErr::take(py);
    inner.log(record);
    let raised = PyErr::take(py);
    if let Some(e) = before {
        e.restore(py);
    }
    raised
}

fn report(py: Python<'_>, raised: PyErr) -> Option<PyErr> {
    if raised.is_instance_of::<PyException>(py) {
        raised.write_unraisable(py, None);
        None
    } else {
        Some(raised)
    }
}

/// Emit the records this thread held back; `Err` with a `KeyboardInterrupt`
/// (or other non-`Exception`) that logging raised.
pub fn emit_held_back(py: Python<'_>) -> PyResult<()> {
    let mut held = take_queued();
    held.extend(HELD.with(|h| std::mem::take(&mut *h.borrow_mut())));
    let Some(logger) = LOGGER.get() else {
        return Ok(());
    };
    let mut first = None;
    for (level, target, message) in held {
        let raised = emit(
            py,
            &logger.inner,
            &Record::builder()
                .level(level)
                .target(&target)
                .args(format_args!("{message}"))
                .build(),
        );
        if let Some(raised) = raised {
            first = first.or(report(py, raised));
        }
    }
    first.map_or(Ok(()), Err)
}

static LOGGER: std::sync::OnceLock<&'static Logger> = std::sync::OnceLock::new();

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let entry = || {
            (
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            )
        };
        if BACKGROUND.with(Cell::get) {
            queue(entry());
            return;
        }
        if HOLDING.with(Cell::get) {
            HELD.with(|h| h.borrow_mut().push(entry()));
            return;
        }
        Python::attach(|py| {
            if let Some(raised) = emit(py, &self.inner, record) {
                if let Some(base) = report(py, raised) {
                    if base.is_instance_of::<PyKeyboardInterrupt>(py) {
                        // SAFETY: asks CPython to raise KeyboardInterrupt at
                        // its next check, as a second Ctrl-C would; GIL held.
                        unsafe { pyo3::ffi::PyErr_SetInterrupt() };
                    } else {
                        base.write_unraisable(py, None);
                    }
                }
            }
        });
    }

    fn flush(&self) {}
}

/// Route the crate's records to Python logging. No caching, so a level set
/// later in Python is honoured; records are rare.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let inner = pyo3_log::Logger::new(py, pyo3_log::Caching::Nothing)?;
    let logger: &'static Logger = Box::leak(Box::new(Logger { inner }));
    if LOGGER.set(logger).is_ok() && log::set_logger(logger).is_ok() {
        // pyo3-log's own default ceiling.
        log::set_max_level(LevelFilter::Debug);
    }
    Ok(())
}
