//! The mutex and condition variable every module here uses.
//!
//! Why not `parking_lot`: its parked threads queue in one process-wide
//! table whose bucket locks another thread may hold at the instant a thread
//! forks. The child inherits that bucket locked for ever, so its first
//! thread that parks (or merely registers: a new thread may resize the
//! table, which locks every bucket) hangs. CI saw it about once in 150
//! forks under load (a child stuck in `ThreadData::new` →
//! `WordLock::lock_slow`). std's locks are a futex word inside the lock
//! itself, with nothing shared between locks, so `fork::PerProcess` giving
//! a child fresh locks is enough.
//!
//! Poisoning is not used: a panic inside one of our critical sections
//! becomes a Python exception, and the state it guards is kept consistent
//! by each holder regardless (as with `parking_lot`, which has no poison).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, TryLockError};
use std::time::Instant;

pub use std::sync::MutexGuard;

#[derive(Debug, Default)]
pub struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Mutex<T> {
        Mutex(std::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The std mutex, for `pyo3::sync::MutexExt` (see `gil::lock`).
    pub fn as_std(&self) -> &std::sync::Mutex<T> {
        &self.0
    }
}

/// A condition variable that skips the wake-up when nobody waits.
///
/// std's futex `notify_*` makes a `futex(FUTEX_WAKE)` syscall on every call,
/// waiter or not (parking_lot's did not): that syscall doubled an
/// uncontended in-memory `acquire(); release()`. Counting waiters makes
/// the common release free of syscalls.
///
/// The count is sound only because every user changes the state a waiter
/// looks at under the same mutex the waiter holds while it counts itself
/// in: a notifier that took that mutex after a waiter counted itself sees
/// the count (the mutex orders them), and one that changed the state
/// before the waiter took the mutex needs no wake-up, since the waiter
/// sees the new state before it waits.
#[derive(Debug, Default)]
pub struct Condvar {
    inner: std::sync::Condvar,
    waiters: AtomicUsize,
}

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar {
            inner: std::sync::Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Wait for a notification or until `deadline`; true when it timed out.
    pub fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> (MutexGuard<'a, T>, bool) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        // Counted while the guard is held (see the type's note).
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let (guard, result) = self
            .inner
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        (guard, result.timed_out())
    }

    pub fn notify_one(&self) {
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.inner.notify_one();
        }
    }

    pub fn notify_all(&self) {
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.inner.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_wait_ends_at_its_deadline_or_on_notify() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let guard = pair.0.lock();
        let (guard, timed_out) = pair
            .1
            .wait_until(guard, Instant::now() + Duration::from_millis(5));
        assert!(timed_out && !*guard);
        drop(guard);

        let other = Arc::clone(&pair);
        let setter = std::thread::spawn(move || {
            *other.0.lock() = true;
            other.1.notify_all();
        });
        let mut guard = pair.0.lock();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !*guard {
            let (next, timed_out) = pair.1.wait_until(guard, deadline);
            guard = next;
            assert!(!timed_out || *guard, "no notification within 10 s");
        }
        setter.join().unwrap();
    }

    /// Skipping the wake-up when the count is zero must never lose one:
    /// four threads pass a turn round 2,000 times, each waking the next.
    #[test]
    fn counted_waiters_lose_no_wake_up() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 2_000;
        let pair = Arc::new((Mutex::new(0usize), Condvar::new()));
        let workers: Vec<_> = (0..THREADS)
            .map(|me| {
                let pair = Arc::clone(&pair);
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let mut turn = pair.0.lock();
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while *turn != round * THREADS + me {
                            let (next, timed_out) = pair.1.wait_until(turn, deadline);
                            turn = next;
                            assert!(!timed_out, "a wake-up was lost at turn {}", *turn);
                        }
                        *turn += 1;
                        drop(turn);
                        pair.1.notify_all();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(*pair.0.lock(), THREADS * ROUNDS);
    }

    #[test]
    fn a_panic_while_locked_leaves_the_lock_usable() {
        let m = Arc::new(Mutex::new(1));
        let other = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _guard = other.lock();
            panic!("holder panics");
        })
        .join();
        *m.lock() += 1;
        assert_eq!(*m.try_lock().expect("free"), 2);
    }
}
