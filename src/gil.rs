//! Leaving the GIL for a wait, and coming back, in one place.
//!
//! While a call waits on the network its thread holds no GIL, so other
//! Python threads run. On the main thread the wait runs Python's signal
//! handlers every `interrupt::SLICE` (Ctrl-C works during any wait), and
//! what a handler raises is kept here until the call returns and raises it.
//! Log records made during the wait are held back and emitted after it
//! (`logger.rs`): logging runs Python code, which must never swallow a
//! pending `KeyboardInterrupt` or leave an exception behind a result.

use std::cell::{Cell, RefCell};

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

use crate::connection::{fork, interrupt};
use crate::logger;
use crate::sync::{Mutex, MutexGuard};

/// How long a wait that holds no socket (an in-memory lock, a strict-mode
/// key) stays detached before it runs pending signal handlers: the same
/// slice as a socket wait's, so Ctrl-C feels the same everywhere.
pub const SIGNAL_CHECK: std::time::Duration = interrupt::SLICE;

thread_local! {
    /// What a signal handler raised during this thread's current wait.
    static RAISED: RefCell<Option<PyErr>> = const { RefCell::new(None) };
    /// (process generation, whether this is the main thread): `gettid` and
    /// `getpid` are syscalls, so the answer is kept per thread and process.
    static MAIN: Cell<Option<(u64, bool)>> = const { Cell::new(None) };
}

/// Whether this is the process's main thread, the one where CPython runs
/// signal handlers (and which finalizes the interpreter).
pub fn is_main_thread() -> bool {
    let generation = fork::generation();
    MAIN.with(|m| match m.get() {
        Some((g, main)) if g == generation => main,
        _ => {
            // gettid through syscall(2): glibc's own gettid() wrapper is from
            // 2.30, newer than the manylinux2014 wheels' glibc 2.17.
            // SAFETY: plain syscalls without arguments.
            let main =
                unsafe { libc::syscall(libc::SYS_gettid) == libc::c_long::from(libc::getpid()) };
            m.set(Some((generation, main)));
            main
        }
    })
}

/// Run the process's Python signal handlers; `true` when one raised (what
/// it raised is kept for `take_interruption`). Attaches: call it on the
/// main thread only (`is_main_thread`), never from a thread that may
/// outlive the interpreter.
pub fn run_signal_handlers() -> bool {
    Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(e) => {
            RAISED.with(|r| *r.borrow_mut() = Some(e));
            true
        }
    })
}

/// Run `work` without the GIL: signal handlers run during its waits on the
/// main thread, and its log records are emitted once it is done. `Err`
/// only when emitting them raised a `KeyboardInterrupt` or `SystemExit`.
pub fn detach<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let main = is_main_thread();
    let result = py.detach(|| {
        let _armed = main.then(|| interrupt::arm(run_signal_handlers));
        let _held = logger::hold_back();
        work()
    });
    logger::emit_held_back(py)?;
    Ok(result)
}

/// What a signal handler raised to end a wait (`CacheError::Interrupted`);
/// `KeyboardInterrupt` should it have gone missing.
pub fn take_interruption(_py: Python<'_>) -> PyErr {
    RAISED
        .with(|r| r.borrow_mut().take())
        .unwrap_or_else(|| PyKeyboardInterrupt::new_err(()))
}

/// What a signal handler raised during a wait whose call swallows errors
/// (`ping()`), if one did.
pub fn interruption() -> Option<PyErr> {
    RAISED.with(|r| r.borrow_mut().take())
}

/// Lock `m`, leaving the GIL only if we must wait (PyO3's `MutexExt`).
///
/// Holders of these mutexes never call back into Python, so a wait is
/// short; but a thread blocked while attached would stall the GIL's other
/// users (and free-threaded CPython's stop-the-world pauses).
pub fn lock_detached<'a, T>(py: Python<'_>, m: &'a Mutex<T>) -> MutexGuard<'a, T> {
    m.as_std()
        .lock_py_attached(py)
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
