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

use std::cell::{Cell, RefCell};

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;

thread_local! {
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
    let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
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
        if HOLDING.with(Cell::get) {
            let entry = (
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            );
            HELD.with(|h| h.borrow_mut().push(entry));
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
