//! Which process a socket belongs to, without a syscall per command.
//!
//! `getpid()` is a real syscall on current glibc; checking it twice per
//! command is measurable next to a loopback round trip. Instead a
//! `pthread_atfork` child handler bumps a generation counter: a socket
//! opened in an earlier generation belongs to a parent process.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
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

/// State that belongs to one process: a forked child gets a fresh `T`.
///
/// A child inherits its parent's memory but none of its other threads, so
/// a mutex that one of them held at the fork stays held for ever (the
/// locks are `crate::sync`'s, whose state is all inside the lock, so a
/// fresh lock is a clean one). Unlocking it would not help either: what it
/// guards may be half-written. So the child never touches its parent's
/// state: the first access after a fork builds a new value at a new
/// address, and the parent's copy is leaked on purpose (freeing it would
/// run destructors on state a vanished thread was using). Written here
/// rather than with `arc-swap`: its reference counts and per-thread debts
/// would be inherited from threads that are gone.
pub struct PerProcess<T> {
    current: AtomicPtr<Instance<T>>,
}

struct Instance<T> {
    generation: u64,
    value: T,
}

impl<T> PerProcess<T> {
    pub fn new(value: T) -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(Box::into_raw(Box::new(Instance {
                generation: generation(),
                value,
            }))),
        }
    }

    /// This process's value; `fresh` builds it in a child after a fork.
    pub fn get(&self, fresh: impl FnOnce() -> T) -> &T {
        self.get_for(generation(), fresh)
    }

    fn get_for(&self, generation: u64, fresh: impl FnOnce() -> T) -> &T {
        let seen = self.current.load(Ordering::Acquire);
        // SAFETY: `current` always points at a live slot: slots are only
        // freed in `drop`, and a replaced one is leaked, never freed.
        let slot = unsafe { &*seen };
        if slot.generation == generation {
            return &slot.value;
        }
        let new = Box::into_raw(Box::new(Instance {
            generation,
            value: fresh(),
        }));
        match self
            .current
            .compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `new` is ours and now installed; it lives until `drop`.
            Ok(_) => unsafe { &(*new).value },
            Err(winner) => {
                // SAFETY: `new` was never shared; `winner` is live as above.
                unsafe {
                    drop(Box::from_raw(new));
                    &(*winner).value
                }
            }
        }
    }
}

impl<T: Default> PerProcess<T> {
    pub fn current(&self) -> &T {
        self.get(T::default)
    }
}

impl<T: Default> Default for PerProcess<T> {
    fn default() -> Self {
        PerProcess::new(T::default())
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: nobody else can reach the current slot.
        unsafe { drop(Box::from_raw(*self.current.get_mut())) };
    }
}

// SAFETY: a `PerProcess<T>` hands out `&T` across threads exactly as a `T`
// shared by reference would; the slot pointer itself is atomic.
unsafe impl<T: Send + Sync> Sync for PerProcess<T> {}
// SAFETY: as above; owning it owns a `T`.
unsafe impl<T: Send> Send for PerProcess<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    // Generations are passed in: bumping the process's own would disturb
    // the pool tests running beside these.

    #[test]
    fn a_new_generation_gets_a_fresh_value_and_keeps_it() {
        let now = generation();
        let state = PerProcess::new(vec![1, 2]);
        assert_eq!(state.get_for(now, Vec::new), &[1, 2]);
        assert_eq!(state.get_for(now + 1, || vec![9]), &[9]);
        assert_eq!(state.get_for(now + 1, || vec![0]), &[9]);
    }

    #[test]
    fn a_locked_mutex_from_the_parent_is_left_behind() {
        let now = generation();
        let state: PerProcess<crate::sync::Mutex<u32>> = PerProcess::default();
        // Held by "a thread that did not survive the fork".
        std::mem::forget(state.get_for(now, Default::default).lock());
        let child = state.get_for(now + 1, Default::default);
        *child.lock() += 1;
        assert_eq!(*state.get_for(now + 1, Default::default).lock(), 1);
    }
}
