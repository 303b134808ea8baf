//! Waiting that a signal handler can end.
//!
//! Python runs signal handlers (Ctrl-C's `KeyboardInterrupt`) only on its
//! main thread, between bytecodes; a thread blocked in our `read` for a 5 s
//! timeout would hold Ctrl-C back that long. So on a thread that armed a
//! check (the Python layer does, on the main thread), every wait here is
//! cut into slices of at most [`SLICE`] and the check runs between them.
//! When it says "stop", the wait fails with an [`Interrupted`] error that
//! the connection layer passes up untouched; the Python layer then raises
//! whatever the handler raised. Pure Rust: the check is a plain function.

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The longest a wait goes without running the check.
pub const SLICE: Duration = Duration::from_millis(50);

thread_local! {
    static CHECK: Cell<Option<fn() -> bool>> = const { Cell::new(None) };
}

/// While alive, waits on this thread run `check` between slices; `check`
/// returns `true` to end the wait.
pub struct Armed {
    previous: Option<fn() -> bool>,
}

pub fn arm(check: fn() -> bool) -> Armed {
    Armed {
        previous: CHECK.with(|c| c.replace(Some(check))),
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        CHECK.with(|c| c.set(self.previous));
    }
}

pub fn armed() -> bool {
    CHECK.with(|c| c.get().is_some())
}

/// Whether the armed check asks to stop (never, when none is armed).
pub fn requested() -> bool {
    CHECK.with(|c| c.get()).is_some_and(|check| check())
}

/// The error a wait ends with when the check asks to stop.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal handler")
    }
}

impl std::error::Error for Interrupted {}

pub fn interrupted() -> io::Error {
    // Not ErrorKind::Interrupted: std's read loops retry that kind.
    io::Error::other(Interrupted)
}

pub fn is_interrupted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Interrupted>())
}

/// Sleep `d`, in slices when armed.
pub fn sleep(d: Duration) -> io::Result<()> {
    if !armed() {
        std::thread::sleep(d);
        return Ok(());
    }
    let end = Instant::now() + d;
    loop {
        if requested() {
            return Err(interrupted());
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(SLICE));
    }
}

/// Wait until `fd` is readable (or closed), at most `timeout` (`None`: no
/// limit), running the check between slices. `TimedOut` when the time ran
/// out, `Interrupted` when the check said so.
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<()> {
    let end = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match end {
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack; `fd` stays open for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, slice.as_millis().max(1) as libc::c_int) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // A slice passed, or a signal arrived (EINTR): let the handler run.
        if requested() {
            return Err(interrupted());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CHECKS: AtomicUsize = AtomicUsize::new(0);

    fn stop_on_third() -> bool {
        CHECKS.fetch_add(1, Ordering::SeqCst) >= 2
    }

    fn never() -> bool {
        false
    }

    #[test]
    fn an_armed_wait_ends_when_the_check_says_so() {
        let (a, _b) = UnixStream::pair().unwrap();
        CHECKS.store(0, Ordering::SeqCst);
        let _armed = arm(stop_on_third);
        let started = Instant::now();
        let e = wait_readable(a.as_raw_fd(), Some(Duration::from_secs(5))).unwrap_err();
        assert!(is_interrupted(&e));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(CHECKS.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_readable_socket_ends_the_wait_and_a_silent_one_times_out() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let _armed = arm(never);
        let e = wait_readable(a.as_raw_fd(), Some(Duration::from_millis(120))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        b.write_all(b"+OK\r\n").unwrap();
        wait_readable(a.as_raw_fd(), Some(Duration::from_secs(5))).unwrap();
    }

    #[test]
    fn arming_is_per_thread_and_undone_on_drop() {
        {
            let _armed = arm(never);
            assert!(armed());
            assert!(!std::thread::spawn(armed).join().unwrap());
        }
        assert!(!armed());
        sleep(Duration::from_millis(1)).unwrap();
    }

    fn at_once() -> bool {
        true
    }

    #[test]
    fn an_armed_sleep_is_cut_short() {
        let _armed = arm(at_once);
        let started = Instant::now();
        assert!(is_interrupted(&sleep(Duration::from_secs(5)).unwrap_err()));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
