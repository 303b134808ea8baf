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

#[derive(Debug, Default)]
pub struct Condvar(std::sync::Condvar);

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar(std::sync::Condvar::new())
    }

    /// Wait for a notification or until `deadline`; true when it timed out.
    pub fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> (MutexGuard<'a, T>, bool) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (guard, result) = self
            .0
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        (guard, result.timed_out())
    }

    pub fn notify_one(&self) {
        self.0.notify_one();
    }

    pub fn notify_all(&self) {
        self.0.notify_all();
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
