//! Fast hand-off between contenders for one server lock, within a process.
//!
//! pottery's waiters sleep a random 0–200 ms between tries. Ours park on a
//! `Condvar` shared by every lock object of this process on the same server
//! and key, and are woken by the events that can free the lock:
//! * our own `release()` in this process (`Waiters::released`, at once);
//! * a release by another of our processes (the release script publishes
//!   on a channel that `subscriber` listens to, one connection per process);
//! * the holder's lease running out (each failed try returns its PTTL);
//! * anything else (a pottery holder releasing): a bounded poll, `Contender::poll`.
//!
//! Fairness: local contenders queue in FIFO order and only the head tries
//! the server, so a thread that releases and re-acquires at once queues
//! behind the threads already waiting instead of barging past them.
//!
//! Pure Rust (no Python, no I/O): the server try and the periodic check for
//! signals come in through `Contender`, so the rules are unit-tested here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, MutexGuard};

use crate::connection::fork::PerProcess;
use crate::lease::Wait;

/// Longest sleep between tries while the holder's lease is still running
/// and no release message came: a holder that releases without telling us
/// (pottery) is noticed this late at most. A lock may choose another
/// (`Contender::poll`).
pub const POLL: Duration = Duration::from_millis(10);

/// Wait after a try that could not reach the server.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_millis(50);
/// How often a waiting thread calls `Contender::check` (signals, logging).
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

/// One lock as this process sees it: a server, a database, a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    pub server: String,
    pub db: i64,
    pub key: Vec<u8>,
}

/// What one try at the server said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Acquired,
    /// Someone else holds it; `ttl` is what is left of their lease
    /// (`None`: no expiry known).
    Held {
        ttl: Option<Duration>,
    },
    /// The server could not be reached; try again a little later.
    Unreachable,
}

/// The caller's side of a wait.
pub trait Contender {
    type Error;
    /// One try at the server.
    fn attempt(&mut self) -> Result<Attempt, Self::Error>;
    /// The longest sleep between tries while no release message comes.
    fn poll(&self) -> Duration {
        POLL
    }
    /// Called once, when the first try failed and the wait begins.
    fn waiting(&mut self) {}
    /// Called about every `CHECK_EVERY` while waiting: an error (a signal)
    /// ends the wait.
    fn check(&mut self, _waited: Duration) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Queue {
    /// The process the queue belongs to: a forked child starts afresh (the
    /// parent's waiting threads do not exist in it).
    pid: u32,
    next_ticket: u64,
    tickets: VecDeque<u64>,
    /// Counts release events; a waiter that saw another value tries again.
    releases: u64,
}

pub struct Waiters {
    queue: Mutex<Queue>,
    turn: Condvar,
}

/// When to try again after a failed try.
fn next_try(now: Instant, attempt: Attempt, poll: Duration) -> Instant {
    let pause = match attempt {
        // At least 1 ms: PTTL is in whole milliseconds, so a lease about to
        // expire may still show 0 for a moment; never spin on it.
        Attempt::Held { ttl: Some(ttl) } => ttl.max(Duration::from_millis(1)).min(poll),
        Attempt::Held { ttl: None } => poll,
        Attempt::Unreachable => RETRY_AFTER_ERROR,
        Attempt::Acquired => Duration::ZERO,
    };
    now + pause
}

/// Removes a ticket from the queue however the wait ends.
struct Ticket<'a> {
    waiters: &'a Waiters,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut q = self.waiters.queue();
        q.tickets.retain(|t| *t != self.number);
        drop(q);
        self.waiters.turn.notify_all();
    }
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            queue: Mutex::new(Queue {
                pid: std::process::id(),
                next_ticket: 0,
                tickets: VecDeque::new(),
                releases: 0,
            }),
            turn: Condvar::new(),
        }
    }
}

impl Waiters {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        let mut q = self.queue.lock();
        let pid = std::process::id();
        if q.pid != pid {
            q.pid = pid;
            q.tickets.clear();
        }
        q
    }

    /// The lock may be free: wake the waiters so the first tries at once.
    pub fn released(&self) {
        let mut q = self.queue();
        q.releases = q.releases.wrapping_add(1);
        drop(q);
        self.turn.notify_all();
    }

    /// pottery's `acquire` with our waiting: `Ok(true)` once acquired,
    /// `Ok(false)` when `wait` ran out. Blocks the calling thread: call it
    /// with the GIL released.
    pub fn acquire<C: Contender>(&self, wait: Wait, c: &mut C) -> Result<bool, C::Error> {
        let start = Instant::now();
        let deadline = match wait {
            Wait::Once => Some(start),
            Wait::Forever => None,
            Wait::For(d) => start.checked_add(d),
        };
        // Fast path: nobody here is waiting for this lock, so trying at
        // once takes nobody's turn.
        let seen = {
            let q = self.queue();
            q.tickets.is_empty().then_some(q.releases)
        };
        let (mut seen, mut retry_at) = match seen {
            Some(seen) => match c.attempt()? {
                Attempt::Acquired => return Ok(true),
                failed => (seen, next_try(Instant::now(), failed, c.poll())),
            },
            // Others are queued ahead: a single try would barge past them.
            None if wait == Wait::Once => return Ok(false),
            None => (0, start),
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        let ticket = {
            let mut q = self.queue();
            let number = q.next_ticket;
            q.next_ticket += 1;
            q.tickets.push_back(number);
            Ticket {
                waiters: self,
                number,
            }
        };
        // After queueing: starting the listener may take a thread spawn,
        // and a releaser must find us queued meanwhile.
        c.waiting();
        let mut checked = Instant::now();
        loop {
            {
                let mut q = self.queue();
                loop {
                    let now = Instant::now();
                    // First: releases that keep coming (others taking the
                    // lock in turn, or our own give-back) must not keep a
                    // waiter trying past its deadline.
                    if deadline.is_some_and(|d| now >= d) {
                        return Ok(false);
                    }
                    let head = q.tickets.front() == Some(&ticket.number);
                    if head && (q.releases != seen || now >= retry_at) {
                        seen = q.releases;
                        break;
                    }
                    if now >= checked + CHECK_EVERY {
                        drop(q);
                        c.check(now - start)?;
                        q = self.queue();
                        checked = now;
                        continue;
                    }
                    let mut wake = checked + CHECK_EVERY;
                    if head {
                        wake = wake.min(retry_at);
                    }
                    if let Some(d) = deadline {
                        wake = wake.min(d);
                    }
                    q = self.turn.wait_until(q, wake).0;
                }
            }
            match c.attempt()? {
                Attempt::Acquired => return Ok(true),
                failed => retry_at = next_try(Instant::now(), failed, c.poll()),
            }
        }
    }
}

/// Every lock key this process has lock objects for, so a release message
/// finds its waiters. Weak: the entry goes when the last lock object does.
struct Registry {
    map: HashMap<LockId, Weak<Waiters>>,
    /// Sweep dead entries when the map grows past this.
    sweep_at: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            map: HashMap::new(),
            sweep_at: 64,
        }
    }
}

/// Per process: a forked child must not queue behind its parent's waiting
/// threads, nor lock a queue one of them held (`fork::PerProcess`).
static REGISTRY: LazyLock<PerProcess<Mutex<Registry>>> = LazyLock::new(PerProcess::default);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.current().lock()
}

/// The waiters shared by every lock object for `id` in this process.
pub fn waiters_for(id: &LockId) -> Arc<Waiters> {
    let mut reg = registry();
    if let Some(w) = reg.map.get(id).and_then(Weak::upgrade) {
        return w;
    }
    let w = Arc::new(Waiters::default());
    reg.map.insert(id.clone(), Arc::downgrade(&w));
    if reg.map.len() >= reg.sweep_at {
        reg.map.retain(|_, w| w.strong_count() > 0);
        reg.sweep_at = (reg.map.len() * 2).max(64);
    }
    w
}

/// Stands for "several masters" in a `LockId`'s `db`.
const SEVERAL: i64 = -1;

/// The id of a lock on several independent masters (`host:port` and db of
/// each): one queue for it, woken by a release message from any of them.
pub fn several_masters(members: &[(String, i64)], key: &[u8]) -> LockId {
    let server = members
        .iter()
        .map(|(address, db)| format!("{address}/{db}"))
        .collect::<Vec<_>>()
        .join(",");
    LockId {
        server,
        db: SEVERAL,
        key: key.to_vec(),
    }
}

/// Whether `entry` (a lock on several masters) has `server` among them,
/// in database `db` (any, when `None`).
fn has_member(entry: &LockId, server: &str, db: Option<i64>) -> bool {
    entry.db == SEVERAL
        && entry.server.split(',').any(|m| match m.rsplit_once('/') {
            Some((address, d)) => address == server && db.is_none_or(|db| d == db.to_string()),
            None => false,
        })
}

/// A release of `id` was announced (by another process, or by this one):
/// its waiters, and those of locks on several masters that include it.
pub fn notify(id: &LockId) {
    let found: Vec<Arc<Waiters>> = {
        let reg = registry();
        reg.map
            .iter()
            .filter(|(entry, _)| {
                *entry == id || (entry.key == id.key && has_member(entry, &id.server, Some(id.db)))
            })
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    };
    for w in found {
        w.released();
    }
}

/// Wake every waiter on `server`: used when we (re)start listening, as a
/// release may have gone unheard meanwhile.
pub fn notify_server(server: &str) {
    let found: Vec<Arc<Waiters>> = registry()
        .map
        .iter()
        .filter(|(id, _)| id.server == server || has_member(id, server, None))
        .filter_map(|(_, w)| w.upgrade())
        .collect();
    for w in found {
        w.released();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread;

    /// A lock held in a flag, tried by `attempt`: a stand-in for the server.
    struct Flag<'a> {
        held: &'a AtomicBool,
        tries: usize,
        ttl: Option<Duration>,
        poll: Duration,
    }

    impl Contender for Flag<'_> {
        type Error = ();
        fn poll(&self) -> Duration {
            self.poll
        }
        fn attempt(&mut self) -> Result<Attempt, ()> {
            self.tries += 1;
            if self.held.swap(true, Ordering::SeqCst) {
                Ok(Attempt::Held { ttl: self.ttl })
            } else {
                Ok(Attempt::Acquired)
            }
        }
    }

    fn flag(held: &AtomicBool) -> Flag<'_> {
        Flag {
            held,
            tries: 0,
            ttl: Some(Duration::from_secs(60)),
            poll: POLL,
        }
    }

    #[test]
    fn once_tries_exactly_once() {
        let w = Waiters::default();
        let held = AtomicBool::new(false);
        assert_eq!(w.acquire(Wait::Once, &mut flag(&held)), Ok(true));
        let mut second = flag(&held);
        assert_eq!(w.acquire(Wait::Once, &mut second), Ok(false));
        assert_eq!(second.tries, 1);
    }

    #[test]
    fn a_release_wakes_the_waiter_without_waiting_for_the_poll() {
        let w = Arc::new(Waiters::default());
        let held = Arc::new(AtomicBool::new(true));
        let (w2, held2) = (w.clone(), held.clone());
        let waiter = thread::spawn(move || {
            // A poll longer than the test: only the release can wake it.
            let mut c = Flag {
                poll: Duration::from_secs(60),
                ..flag(&held2)
            };
            let got = w2.acquire(Wait::For(Duration::from_secs(30)), &mut c);
            (got, c.tries)
        });
        thread::sleep(Duration::from_millis(30));
        held.store(false, Ordering::SeqCst);
        w.released();
        let (got, tries) = waiter.join().unwrap();
        assert_eq!(got, Ok(true));
        // One failed try up front, one after the release woke it.
        assert_eq!(tries, 2);
    }

    #[test]
    fn timeout_gives_up_after_at_least_one_try() {
        let w = Waiters::default();
        let held = AtomicBool::new(true);
        let mut c = flag(&held);
        let t = Instant::now();
        assert_eq!(
            w.acquire(Wait::For(Duration::from_millis(40)), &mut c),
            Ok(false)
        );
        assert!(t.elapsed() >= Duration::from_millis(40));
        assert!(c.tries >= 1);
        let mut zero = flag(&held);
        assert_eq!(w.acquire(Wait::For(Duration::ZERO), &mut zero), Ok(false));
        assert_eq!(zero.tries, 1);
    }

    #[test]
    fn releases_that_keep_coming_do_not_keep_a_waiter_past_its_deadline() {
        // Every failed try is followed by a release (another process taking
        // the lock in turn, or a try that gives the lock back at once).
        struct Churn<'a>(&'a Waiters);
        impl Contender for Churn<'_> {
            type Error = ();
            fn attempt(&mut self) -> Result<Attempt, ()> {
                self.0.released();
                Ok(Attempt::Held { ttl: None })
            }
        }
        let w = Waiters::default();
        let t = Instant::now();
        let got = w.acquire(Wait::For(Duration::from_millis(50)), &mut Churn(&w));
        assert_eq!(got, Ok(false));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn an_expiring_lease_is_retried_when_it_runs_out() {
        let w = Waiters::default();
        let held = AtomicBool::new(true);
        struct Expiring<'a>(&'a AtomicBool, Instant);
        impl Contender for Expiring<'_> {
            type Error = ();
            fn attempt(&mut self) -> Result<Attempt, ()> {
                let left = Duration::from_millis(25).saturating_sub(self.1.elapsed());
                if left.is_zero() {
                    self.0.store(true, Ordering::SeqCst);
                    return Ok(Attempt::Acquired);
                }
                Ok(Attempt::Held { ttl: Some(left) })
            }
        }
        let mut c = Expiring(&held, Instant::now());
        assert_eq!(w.acquire(Wait::Forever, &mut c), Ok(true));
    }

    #[test]
    fn queued_waiters_are_served_in_order_and_a_releaser_cannot_barge() {
        let w = Arc::new(Waiters::default());
        let held = Arc::new(AtomicBool::new(true));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for n in 0..3 {
            let (w, held, order) = (w.clone(), held.clone(), order.clone());
            threads.push(thread::spawn(move || {
                let mut c = flag(&held);
                assert_eq!(w.acquire(Wait::Forever, &mut c), Ok(true));
                order.lock().push(n);
                held.store(false, Ordering::SeqCst);
                w.released();
            }));
            // Let each queue before the next starts.
            thread::sleep(Duration::from_millis(20));
        }
        // The "releaser": frees the lock and at once wants it back. It
        // must queue behind the three.
        held.store(false, Ordering::SeqCst);
        w.released();
        let mut me = flag(&held);
        assert_eq!(w.acquire(Wait::Forever, &mut me), Ok(true));
        order.lock().push(9);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 9]);
    }

    #[test]
    fn once_does_not_barge_past_a_queue() {
        let w = Arc::new(Waiters::default());
        let held = Arc::new(AtomicBool::new(true));
        let (w2, held2) = (w.clone(), held.clone());
        let waiter = thread::spawn(move || w2.acquire(Wait::Forever, &mut flag(&held2)));
        thread::sleep(Duration::from_millis(20));
        held.store(false, Ordering::SeqCst);
        let mut me = flag(&held);
        // The queued thread may or may not have taken it yet: either way
        // the single try must not take it from under the queue.
        assert_eq!(w.acquire(Wait::Once, &mut me), Ok(false));
        w.released();
        assert_eq!(waiter.join().unwrap(), Ok(true));
    }

    #[test]
    fn check_errors_end_the_wait_and_leave_the_queue() {
        let w = Waiters::default();
        let held = AtomicBool::new(true);
        let checks = AtomicUsize::new(0);
        struct Interrupted<'a>(Flag<'a>, &'a AtomicUsize);
        impl Contender for Interrupted<'_> {
            type Error = ();
            fn attempt(&mut self) -> Result<Attempt, ()> {
                self.0.attempt()
            }
            fn check(&mut self, _waited: Duration) -> Result<(), ()> {
                self.1.fetch_add(1, Ordering::SeqCst);
                Err(())
            }
        }
        let mut c = Interrupted(flag(&held), &checks);
        assert_eq!(w.acquire(Wait::Forever, &mut c), Err(()));
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        assert!(w.queue().tickets.is_empty());
    }

    #[test]
    fn registry_shares_waiters_per_lock_and_forgets_dropped_ones() {
        let id = LockId {
            server: "test-registry:1".into(),
            db: 0,
            key: b"redlock:k".to_vec(),
        };
        let a = waiters_for(&id);
        let b = waiters_for(&id);
        assert!(Arc::ptr_eq(&a, &b));
        let other = waiters_for(&LockId {
            db: 1,
            ..id.clone()
        });
        assert!(!Arc::ptr_eq(&a, &other));
        notify(&id);
        assert_eq!(a.queue().releases, 1);
        notify_server("test-registry:1");
        assert_eq!(a.queue().releases, 2);
        assert_eq!(other.queue().releases, 1);
        drop((a, b));
        let c = waiters_for(&id);
        assert_eq!(c.queue().releases, 0, "a fresh entry once all were dropped");
    }

    #[test]
    fn a_release_on_any_master_wakes_a_lock_on_several() {
        let members = [
            ("test-several:1".to_owned(), 0),
            ("test-several:2".to_owned(), 3),
        ];
        let several = waiters_for(&several_masters(&members, b"redlock:k"));
        let on = |server: &str, db, key: &[u8]| LockId {
            server: server.into(),
            db,
            key: key.to_vec(),
        };
        notify(&on("test-several:2", 3, b"redlock:k"));
        assert_eq!(several.queue().releases, 1);
        // Another key, another database, another server: not ours.
        notify(&on("test-several:2", 3, b"redlock:other"));
        notify(&on("test-several:2", 0, b"redlock:k"));
        notify(&on("test-several:3", 0, b"redlock:k"));
        assert_eq!(several.queue().releases, 1);
        notify_server("test-several:1");
        assert_eq!(several.queue().releases, 2);
    }
}
