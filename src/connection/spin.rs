//! Spin, then block: before a read would sleep in the kernel, poll the
//! socket for a short while.
//!
//! Why: a thread that sleeps in `recv` pays its CPU's wake-up latency on
//! every reply. On a virtual machine (and on hosts with deep C-states) that
//! is most of a loopback round trip: on the development VM a PING took
//! about 99 µs when the client slept and 33 µs when it polled. This is the
//! same spin-then-park trade that adaptive mutexes make.
//!
//! Limits, so that spinning never costs more than it saves:
//! - a budget per read (`Config::spin_wait`, default 100 µs; zero turns it
//!   off), after which the read blocks as before;
//! - at most one spinning thread per CPU beyond the first in the process,
//!   so a spinner never takes the last core from the server or from
//!   the GIL holder, and none on a single-CPU machine;
//! - `sched_yield` between polls, so a runnable thread on the same CPU
//!   (the server, on a busy machine) goes first;
//! - a connection whose replies keep missing the budget (a distant
//!   server) stops spinning for a while and then tries again.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(100);

/// Misses in a row after which a connection stops spinning ...
const MISSES_BEFORE_REST: u8 = 3;
/// ... for this many reads.
const REST_READS: u16 = 64;

static SPINNERS: AtomicUsize = AtomicUsize::new(0);

fn max_spinners() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() - 1)
            .unwrap_or(0)
    })
}

/// In a child after `fork()`: only the forking thread survives, and it was
/// not spinning, so slots taken by the parent's other threads are free.
pub fn forget_spinners() {
    SPINNERS.store(0, Ordering::Release);
}

/// One of the process's spinning slots, given back on drop.
struct SpinPermit(&'static AtomicUsize);

impl SpinPermit {
    fn take(slots: &'static AtomicUsize, max: usize) -> Option<SpinPermit> {
        slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SpinPermit(slots))
    }
}

impl Drop for SpinPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Bytes (or an error, or the peer's close) are waiting: the read
    /// will not block.
    Ready,
    /// The budget ran out; the read blocks.
    TimedOut,
    /// Spinning is off, resting, or every slot is taken.
    Skipped,
}

/// One connection's spinning state.
pub struct Spin {
    budget: Duration,
    misses: u8,
    rest: u16,
}

impl Spin {
    pub fn new(budget: Duration) -> Spin {
        Spin {
            budget,
            misses: 0,
            rest: 0,
        }
    }

    /// Called right before a read that may block on `fd`.
    pub fn before_read(&mut self, fd: RawFd) -> Outcome {
        self.before_read_with(fd, &SPINNERS, max_spinners())
    }

    fn before_read_with(&mut self, fd: RawFd, slots: &'static AtomicUsize, max: usize) -> Outcome {
        if self.budget.is_zero() {
            return Outcome::Skipped;
        }
        if self.rest > 0 {
            self.rest -= 1;
            return Outcome::Skipped;
        }
        let Some(_slot) = SpinPermit::take(slots, max) else {
            return Outcome::Skipped;
        };
        let outcome = poll_until_readable(fd, self.budget);
        if outcome == Outcome::Ready {
            self.misses = 0;
        } else {
            self.misses += 1;
            if self.misses >= MISSES_BEFORE_REST {
                self.misses = 0;
                self.rest = REST_READS;
            }
        }
        outcome
    }
}

/// Wait up to `timeout` for input on `fd`: `Ok(true)` when a read will
/// not block. An interrupted wait is `Ok(false)`.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd on our stack.
    match unsafe { libc::poll(&mut pfd, 1, millis) } {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

fn poll_until_readable(fd: RawFd, budget: Duration) -> Outcome {
    let start = Instant::now();
    loop {
        // An error: let the read report what is wrong.
        if !matches!(wait_readable(fd, Duration::ZERO), Ok(false)) {
            return Outcome::Ready;
        }
        if start.elapsed() >= budget {
            return Outcome::TimedOut;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A slot counter of the test's own: tests run in parallel.
    fn slots() -> &'static AtomicUsize {
        Box::leak(Box::new(AtomicUsize::new(0)))
    }

    #[test]
    fn ready_at_once_when_bytes_wait() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"+OK\r\n").unwrap();
        let mut spin = Spin::new(Duration::from_secs(5));
        let t = Instant::now();
        assert_eq!(
            spin.before_read_with(a.as_raw_fd(), slots(), 1),
            Outcome::Ready
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn ready_when_the_peer_closes() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut spin = Spin::new(Duration::from_secs(5));
        assert_eq!(
            spin.before_read_with(a.as_raw_fd(), slots(), 1),
            Outcome::Ready
        );
    }

    #[test]
    fn sees_bytes_that_arrive_while_spinning() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.write_all(b"+OK\r\n").unwrap();
            b
        });
        let mut spin = Spin::new(Duration::from_secs(5));
        assert_eq!(
            spin.before_read_with(a.as_raw_fd(), slots(), 1),
            Outcome::Ready
        );
        writer.join().unwrap();
    }

    #[test]
    fn gives_up_after_the_budget_and_rests_after_repeated_misses() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut spin = Spin::new(Duration::from_millis(2));
        for _ in 0..MISSES_BEFORE_REST {
            let t = Instant::now();
            assert_eq!(
                spin.before_read_with(a.as_raw_fd(), slots(), 1),
                Outcome::TimedOut
            );
            assert!(t.elapsed() >= Duration::from_millis(2));
        }
        for _ in 0..REST_READS {
            assert_eq!(
                spin.before_read_with(a.as_raw_fd(), slots(), 1),
                Outcome::Skipped
            );
        }
        assert_eq!(
            spin.before_read_with(a.as_raw_fd(), slots(), 1),
            Outcome::TimedOut
        );
    }

    #[test]
    fn off_with_a_zero_budget_or_no_free_slot() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"+OK\r\n").unwrap();
        assert_eq!(
            Spin::new(Duration::ZERO).before_read_with(a.as_raw_fd(), slots(), 1),
            Outcome::Skipped
        );
        assert_eq!(
            Spin::new(Duration::from_secs(1)).before_read_with(a.as_raw_fd(), slots(), 0),
            Outcome::Skipped
        );
    }

    #[test]
    fn slots_are_given_back() {
        let slots = slots();
        let slot = SpinPermit::take(slots, 1).expect("a free slot");
        assert!(SpinPermit::take(slots, 1).is_none());
        drop(slot);
        assert!(SpinPermit::take(slots, 1).is_some());
    }
}
