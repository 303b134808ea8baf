//! The pool's bookkeeping: idle connections, how many are open, and the
//! wait for one to come back under `max_connections`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::super::conn::Conn;
use super::super::failover_watch::{self, Watch};
use super::super::interrupt;
use super::super::transport::Describe;
use super::{Client, Stop, LOG};
use crate::errors::CacheError;
use crate::sync::{Condvar, Mutex, MutexGuard};

/// An idle connection unused this long is closed. By age, never by count:
/// a count cap closes connections that busy threads ask for again a moment
/// later (200 threads churned thousands of sockets into TIME_WAIT).
const IDLE_LIMIT: Duration = Duration::from_secs(300);

/// What a process keeps for one client: its sockets and its outage.
/// A forked child starts with none of its parent's (`fork::PerProcess`).
#[derive(Default)]
pub(super) struct Local {
    pub(super) slots: Mutex<Slots>,
    /// Wakes a caller waiting for a connection under `max_connections`.
    freed: Condvar,
    /// Since when the server has failed us, while it does: an outage is
    /// logged once when it starts and once when it ends.
    pub(super) outage: Mutex<Option<Instant>>,
    pub(super) in_outage: AtomicBool,
    /// Behind Sentinel: the primary switches heard (`failover_watch.rs`).
    watch: OnceLock<Option<Arc<Watch>>>,
    /// The switch count the idle connections were opened under.
    seen_epoch: AtomicU64,
}

#[derive(Default)]
pub(super) struct Slots {
    /// Returned last at the back, taken from the back: the busy ones stay
    /// warm and the front is the one idle longest (the one to trim).
    idle: VecDeque<Idle>,
    /// Pooled connections this process has open, idle or lent out.
    pub(super) open: usize,
    /// Callers waiting for one to come back: only then is a return worth
    /// a wake-up call.
    pub(super) waiting: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A pooled connection on loan. It counts as open until it comes back
/// (`Client::checkin`) or is dropped, broken, when a waiter may open one.
pub(super) struct Lease<'a> {
    conn: Option<Conn>,
    local: &'a Local,
    /// The primary switch count when it was lent: a connection that comes
    /// back after a switch may be to the old primary, and is closed.
    epoch: u64,
}

impl Lease<'_> {
    pub(super) fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until returned")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.local.forget(1);
        }
    }
}

impl Local {
    /// `n` connections are gone: a waiter may open another.
    fn forget(&self, n: usize) {
        let mut slots = self.slots.lock();
        slots.open = slots.open.saturating_sub(n);
        if slots.waiting > 0 {
            self.freed.notify_one();
        }
    }
}

/// How many of the longest-idle connections (oldest first) have been idle
/// past `limit` at `now`.
pub(super) fn stale(
    idle_since: impl Iterator<Item = Instant>,
    now: Instant,
    limit: Duration,
) -> usize {
    idle_since
        .take_while(|since| now.saturating_duration_since(*since) >= limit)
        .count()
}

/// How long a caller waits for a connection to come back when the pool is
/// full. A holder keeps one at most a command timeout per attempt, for up
/// to the retry window: the longer of the two, and no limit when commands
/// have none. `None`: wait as long as it takes.
pub(super) fn pool_wait_limit(
    window: Duration,
    command_timeout: Option<Duration>,
) -> Option<Duration> {
    command_timeout.map(|t| t.max(window))
}

impl Client {
    /// An idle connection that is still good, or a new one (one attempt),
    /// waiting for one to come back when `max_connections` are open.
    pub(super) fn checkout(&self, what: Describe<'_>) -> Result<Lease<'_>, Stop> {
        let local = self.local.current();
        let epoch = self.primary_epoch(local);
        loop {
            let mut slots = local.slots.lock();
            let popped = match slots.idle.pop_back() {
                Some(idle) => Some(idle.conn),
                None if slots.open < self.max_open() => None,
                None => {
                    let (guard, got) = self.wait_for_slot(local, slots, what)?;
                    slots = guard;
                    got
                }
            };
            match popped {
                Some(conn) => {
                    drop(slots);
                    let lease = Lease {
                        conn: Some(conn),
                        local,
                        epoch,
                    };
                    if lease.conn.as_ref().is_some_and(Conn::is_reusable) {
                        return Ok(lease);
                    }
                    self.lost.store(true, Ordering::Relaxed);
                    log::debug!(target: LOG, "dropped a closed idle connection to {}", self.cfg.address());
                }
                None => {
                    // The slot is taken before connecting, so that
                    // concurrent callers cannot overshoot the bound.
                    slots.open += 1;
                    drop(slots);
                    return match self.connect_once() {
                        Ok(conn) => Ok(Lease {
                            conn: Some(conn),
                            local,
                            epoch,
                        }),
                        Err(stop) => {
                            local.forget(1);
                            Err(stop)
                        }
                    };
                }
            }
        }
    }

    /// The primary switch count now (0 but behind Sentinel); the idle
    /// connections opened before a switch are closed first.
    fn primary_epoch(&self, local: &Local) -> u64 {
        let watch = local.watch.get_or_init(|| failover_watch::watch(&self.cfg));
        let Some(watch) = watch else {
            return 0;
        };
        let now = watch.epoch();
        if local.seen_epoch.swap(now, Ordering::AcqRel) != now {
            log::debug!(target: LOG, "closing the idle connections to {}'s former primary", self.cfg.address());
            self.close_idle();
        }
        now
    }

    /// The primary switches heard so far (0 but behind Sentinel): a
    /// connection kept outside the pool (the client-side cache's) is closed
    /// when it changes.
    pub(in super::super) fn switch_epoch(&self) -> u64 {
        self.primary_epoch(self.local.current())
    }

    fn max_open(&self) -> usize {
        self.cfg.max_connections.unwrap_or(usize::MAX)
    }

    /// With every allowed connection open: wait, without the GIL (callers
    /// hold none here), until one comes back (`Some`) or may be opened
    /// (`None`, the slot still to take), in slices so that a signal
    /// handler runs on time.
    fn wait_for_slot<'a>(
        &self,
        local: &'a Local,
        mut slots: MutexGuard<'a, Slots>,
        what: Describe<'_>,
    ) -> Result<(MutexGuard<'a, Slots>, Option<Conn>), Stop> {
        let limit = pool_wait_limit(self.policy.window, self.cfg.command_timeout);
        let started = Instant::now();
        slots.waiting += 1;
        let outcome = loop {
            if let Some(idle) = slots.idle.pop_back() {
                break Ok(Some(idle.conn));
            }
            if slots.open < self.max_open() {
                break Ok(None);
            }
            let now = Instant::now();
            let deadline = limit.map(|l| started + l);
            if deadline.is_some_and(|d| now >= d) {
                break Err(Stop::Fatal(self.pool_exhausted(limit, what)));
            }
            if interrupt::armed() {
                // The check may run Python code: not under our lock.
                drop(slots);
                let stop = interrupt::requested();
                slots = local.slots.lock();
                if stop {
                    break Err(Stop::Fatal(CacheError::Interrupted));
                }
            }
            let slice = deadline.map_or(interrupt::SLICE, |d| (d - now).min(interrupt::SLICE));
            slots = local.freed.wait_until(slots, now + slice).0;
        };
        slots.waiting -= 1;
        outcome.map(|got| (slots, got))
    }

    fn pool_exhausted(&self, limit: Option<Duration>, what: Describe<'_>) -> CacheError {
        CacheError::Connection {
            context: self.context(what),
            detail: format!(
                "no connection came free within {:.1} s (max_connections is {}); the command was not sent",
                limit.unwrap_or_default().as_secs_f64(),
                self.max_open()
            ),
        }
    }

    pub(super) fn checkin(&self, mut lease: Lease<'_>) {
        let Some(conn) = lease.conn.take() else {
            return;
        };
        let switched = lease
            .local
            .watch
            .get()
            .and_then(Option::as_ref)
            .is_some_and(|w| w.epoch() != lease.epoch);
        if conn.generation != super::super::fork::generation() || switched {
            lease.local.forget(1);
            return;
        }
        let now = Instant::now();
        let expired: Vec<Idle> = {
            let mut slots = lease.local.slots.lock();
            slots.idle.push_back(Idle { conn, since: now });
            if slots.waiting > 0 {
                lease.local.freed.notify_one();
            }
            // The longest idle is at the front: only look further when it
            // is stale, which is rare.
            let n = stale(slots.idle.iter().map(|i| i.since), now, IDLE_LIMIT);
            slots.open -= n;
            slots.idle.drain(..n).collect()
        };
        if !expired.is_empty() {
            log::debug!(target: LOG, "closed {} connection(s) to {} idle over {} s", expired.len(), self.cfg.address(), IDLE_LIMIT.as_secs());
        }
        // Closing sockets is done after the lock is let go.
        drop(expired);
    }

    /// Close the idle connections; lent ones come back as usual.
    pub(super) fn close_idle(&self) {
        let local = self.local.current();
        let conns = std::mem::take(&mut local.slots.lock().idle);
        local.forget(conns.len());
        drop(conns);
    }
}
