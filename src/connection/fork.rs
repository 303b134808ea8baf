//! Which process a socket belongs to, without a syscall per command.
//!
//! `getpid()` is a real syscall on current glibc; checking it twice per
//! command is measurable next to a loopback round trip. Instead a
//! `pthread_atfork` child handler bumps a generation counter: a socket
//! opened in an earlier generation belongs to a parent process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

extern "C" fn in_child_after_fork() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    // Threads that were spinning in the parent do not exist here.
    super::spin::forget_spinners();
}

/// The current process generation: changes in a child after `fork()`.
pub fn generation() -> u64 {
    INSTALL.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic, which
        // is async-signal-safe as a child-side fork handler must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child_after_fork));
        }
    });
    GENERATION.load(Ordering::Relaxed)
}
