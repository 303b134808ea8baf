//! `Client`: the one way every structure talks to a server. A pool of idle
//! connections shared by all threads; each command borrows one, so threads
//! never wait on each other's round trips (unless `max_connections` says
//! they must). Each call rides out an outage
//! within the retry window, re-sending only what `retry` allows.

use crate::sync::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::Config;
use super::conn::{Conn, OpenError};
use super::fork::PerProcess;
use super::interrupt;
use super::resp::{Cmd, Reply};
use super::retry::{not_run, Failure, Resend, RetryPolicy};
use super::transport::{Describe, Transport};
use crate::errors::CacheError;

const LOG: &str = "madsci_cache_rs";

/// An idle connection unused this long is closed. By age, never by count:
/// a count cap closes connections that busy threads ask for again a moment
/// later (200 threads churned thousands of sockets into TIME_WAIT).
const IDLE_LIMIT: Duration = Duration::from_secs(300);

/// What a process keeps for one client: its sockets and its outage.
/// A forked child starts with none of its parent's (`fork::PerProcess`).
#[derive(Default)]
struct Local {
    slots: Mutex<Slots>,
    /// Wakes a caller waiting for a connection under `max_connections`.
    freed: Condvar,
    /// Since when the server has failed us, while it does: an outage is
    /// logged once when it starts and once when it ends.
    outage: Mutex<Option<Instant>>,
    in_outage: AtomicBool,
}

#[derive(Default)]
struct Slots {
    /// Returned last at the back, taken from the back: the busy ones stay
    /// warm and the front is the one idle longest (the one to trim).
    idle: VecDeque<Idle>,
    /// Pooled connections this process has open, idle or lent out.
    open: usize,
    /// Callers waiting for one to come back: only then is a return worth
    /// a wake-up call.
    waiting: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A pooled connection on loan. It counts as open until it comes back
/// (`Client::checkin`) or is dropped, broken, when a waiter may open one.
struct Lease<'a> {
    conn: Option<Conn>,
    local: &'a Local,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Conn {
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
fn stale(idle_since: impl Iterator<Item = Instant>, now: Instant, limit: Duration) -> usize {
    idle_since
        .take_while(|since| now.saturating_duration_since(*since) >= limit)
        .count()
}

/// How long a caller waits for a connection to come back when the pool is
/// full. A holder keeps one at most a command timeout per attempt, for up
/// to the retry window: the longer of the two, and no limit when commands
/// have none. `None`: wait as long as it takes.
fn pool_wait_limit(window: Duration, command_timeout: Option<Duration>) -> Option<Duration> {
    command_timeout.map(|t| t.max(window))
}

/// Why one attempt failed, and whether the next may follow.
pub(super) struct Setback {
    failure: Failure,
    cause: String,
    /// The reply did not come in time (a `CacheTimeoutError` if the call
    /// gives up here); a connect that timed out is a connection error.
    reply_timed_out: bool,
}

/// An attempt's end that no retry can mend: a refused password, a signal.
pub(super) enum Stop {
    Retry(Setback),
    Fatal(CacheError),
}

pub struct Client {
    cfg: Config,
    policy: RetryPolicy,
    local: PerProcess<Local>,
    ever_connected: AtomicBool,
    /// A connection broke since the last successful connect: the next
    /// connect is logged as a reconnect.
    lost: AtomicBool,
}

/// The least safe re-send class in a batch: one `Never` makes it `Never`.
pub(super) fn batch_resend(cmds: &[Cmd]) -> Resend {
    let mut class = Resend::Read;
    for cmd in cmds {
        match cmd.resend() {
            Resend::Never => return Resend::Never,
            Resend::Once => class = Resend::Once,
            Resend::Read => {}
        }
    }
    class
}

/// A socket timeout (`SO_RCVTIMEO` reports `WouldBlock`).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// An I/O error as the stage it happened in, without errno text.
pub(super) fn explain(e: &io::Error, timeout: Option<Duration>, waiting_for: &str) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        _ if timed_out(e) => match timeout {
            Some(t) => format!(
                "timed out after {:.1} s waiting for {waiting_for}",
                t.as_secs_f64()
            ),
            None => format!("timed out waiting for {waiting_for}"),
        },
        ConnectionRefused => "connection refused".into(),
        ConnectionReset | ConnectionAborted | BrokenPipe => {
            format!("the connection was reset while waiting for {waiting_for}")
        }
        UnexpectedEof => {
            format!("the server closed the connection while waiting for {waiting_for}")
        }
        _ => format!("{e} while waiting for {waiting_for}"),
    }
}

impl Client {
    /// Lazy: nothing touches the network until the first command.
    pub fn new(cfg: Config, policy: RetryPolicy) -> Client {
        Client {
            cfg,
            policy,
            local: PerProcess::default(),
            ever_connected: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(super) fn context(&self, what: Describe<'_>) -> String {
        format!("{} on {}", what(), self.cfg.address())
    }

    /// An idle connection that is still good, or a new one (one attempt),
    /// waiting for one to come back when `max_connections` are open.
    fn checkout(&self, what: Describe<'_>) -> Result<Lease<'_>, Stop> {
        let local = self.local.current();
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

    fn checkin(&self, mut lease: Lease<'_>) {
        let Some(conn) = lease.conn.take() else {
            return;
        };
        if conn.generation != super::fork::generation() {
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

    /// One connection attempt, handshake included.
    pub(super) fn connect_once(&self) -> Result<Conn, Stop> {
        match Conn::open(&self.cfg) {
            Ok(conn) => {
                self.log_connect();
                Ok(conn)
            }
            Err(OpenError::Rejected { command, error }) if not_run(&error) => {
                Err(Stop::Retry(Setback {
                    failure: Failure::Refused,
                    cause: format!("{command} answered {error}"),
                    reply_timed_out: false,
                }))
            }
            Err(OpenError::Rejected { command, error }) => Err(Stop::Fatal(CacheError::Response {
                context: format!("connecting to {}", self.cfg.address()),
                detail: format!("{command} failed: {error}"),
            })),
            Err(OpenError::Io(e)) if interrupt::is_interrupted(&e) => {
                Err(Stop::Fatal(CacheError::Interrupted))
            }
            // A TLS handshake the server or we refused (unknown CA, wrong
            // host name): waiting would not change it.
            Err(OpenError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                Err(Stop::Fatal(CacheError::Connection {
                    context: format!("connecting to {}", self.cfg.address()),
                    detail: format!("could not connect: {e}"),
                }))
            }
            Err(OpenError::Io(e)) => {
                self.lost.store(true, Ordering::Relaxed);
                Err(Stop::Retry(Setback {
                    failure: if timed_out(&e) {
                        Failure::ConnectTimedOut
                    } else {
                        Failure::NotConnected
                    },
                    cause: format!(
                        "could not connect: {}",
                        explain(&e, self.cfg.connect_timeout, "the connection")
                    ),
                    reply_timed_out: false,
                }))
            }
        }
    }

    fn log_connect(&self) {
        let addr = self.cfg.address();
        if self.lost.swap(false, Ordering::Relaxed) {
            log::info!(target: LOG, "reconnected to {addr}");
        } else if !self.ever_connected.swap(true, Ordering::Relaxed) {
            log::info!(target: LOG, "connected to {addr}");
        } else {
            log::debug!(target: LOG, "opened another connection to {addr}");
        }
    }

    /// Send `cmds` in one write and return their replies, riding out an
    /// outage within the window; server errors are returned as
    /// `Reply::Error`, not raised.
    fn send(
        &self,
        cmds: &[Cmd],
        policy: &RetryPolicy,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        let resend = batch_resend(cmds);
        let started = Instant::now();
        let mut failed = 0;
        // Whether an attempt may have reached the server.
        let mut maybe_ran = false;
        loop {
            let setback = match self.attempt(cmds, resend, what) {
                Ok(replies) => {
                    self.back_up();
                    return Ok(replies);
                }
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::Retry(s)) => s,
            };
            maybe_ran |= setback.failure == Failure::Lost;
            failed += 1;
            self.wait_or_give_up(policy, setback, resend, maybe_ran, failed, started, what)?;
        }
    }

    fn attempt(
        &self,
        cmds: &[Cmd],
        resend: Resend,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, Stop> {
        let mut lease = self.checkout(what)?;
        match lease.conn().request_many(cmds) {
            Ok(replies) => {
                self.checkin(lease);
                // "Not now" answers mean nothing ran; in a batch that may
                // not be repeated, the caller sees them as they are.
                let refusal = (cmds.len() == 1 || resend != Resend::Never)
                    .then(|| replies.iter().find_map(refused))
                    .flatten();
                match refusal {
                    Some(error) => Err(Stop::Retry(Setback {
                        failure: Failure::Refused,
                        cause: format!("the server answered {error}"),
                        reply_timed_out: false,
                    })),
                    None => Ok(replies),
                }
            }
            Err(e) if interrupt::is_interrupted(&e) => Err(Stop::Fatal(CacheError::Interrupted)),
            Err(e) => {
                self.lost.store(true, Ordering::Relaxed);
                Err(Stop::Retry(Setback {
                    failure: Failure::Lost,
                    cause: explain(&e, self.cfg.command_timeout, "the reply"),
                    reply_timed_out: timed_out(&e),
                }))
            }
        }
    }

    /// Sleep before the next attempt, or say why the call gives up.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wait_or_give_up(
        &self,
        policy: &RetryPolicy,
        setback: Setback,
        resend: Resend,
        maybe_ran: bool,
        failed: u32,
        started: Instant,
        what: Describe<'_>,
    ) -> Result<(), CacheError> {
        let elapsed = started.elapsed();
        match policy.next_delay(setback.failure, resend, failed, elapsed) {
            Some(delay) => {
                self.outage_began(&setback, what);
                interrupt::sleep(delay).map_err(|_| CacheError::Interrupted)
            }
            None => Err(self.give_up(setback, resend, maybe_ran, failed, elapsed, what)),
        }
    }

    fn give_up(
        &self,
        setback: Setback,
        resend: Resend,
        maybe_ran: bool,
        failed: u32,
        elapsed: Duration,
        what: Describe<'_>,
    ) -> CacheError {
        let context = self.context(what);
        let tried = if failed > 1 {
            format!(
                " (gave up after {failed} attempts in {:.1} s; retry_window is {:.1} s)",
                elapsed.as_secs_f64(),
                self.policy.window.as_secs_f64()
            )
        } else {
            String::new()
        };
        let cause = setback.cause;
        if maybe_ran && resend != Resend::Read {
            return CacheError::OutcomeUnknown {
                context,
                detail: format!("{cause}{tried}; the command may or may not have run"),
            };
        }
        let detail = format!("{cause}{tried}");
        if setback.reply_timed_out {
            CacheError::Timeout { context, detail }
        } else {
            CacheError::Connection { context, detail }
        }
    }

    fn outage_began(&self, setback: &Setback, what: Describe<'_>) {
        let local = self.local.current();
        if local.in_outage.load(Ordering::Relaxed) {
            return;
        }
        let mut outage = local.outage.lock();
        if outage.is_none() {
            *outage = Some(Instant::now());
            local.in_outage.store(true, Ordering::Relaxed);
            log::warn!(
                target: LOG,
                "{} is not answering ({} during {}); calls wait up to {:.1} s for it",
                self.cfg.address(),
                setback.cause,
                what(),
                self.policy.window.as_secs_f64()
            );
        }
    }

    /// The server answered: end the outage, if one was on.
    pub(super) fn back_up(&self) {
        let local = self.local.current();
        if !local.in_outage.load(Ordering::Relaxed) {
            return;
        }
        if let Some(since) = local.outage.lock().take() {
            local.in_outage.store(false, Ordering::Relaxed);
            log::warn!(
                target: LOG,
                "{} answers again after {:.2} s",
                self.cfg.address(),
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// The error for a command that may have run and may not be repeated.
    pub(super) fn lost(&self, e: &io::Error, what: Describe<'_>) -> CacheError {
        CacheError::OutcomeUnknown {
            context: self.context(what),
            detail: format!(
                "{}; the command was not sent again and may or may not have run",
                explain(e, self.cfg.command_timeout, "the reply")
            ),
        }
    }

    /// A connection was found closed: the next connect is a reconnect.
    pub(super) fn mark_lost(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }
}

/// A reply saying the command did not run (`retry::not_run`).
fn refused(reply: &Reply) -> Option<&str> {
    match reply {
        Reply::Error(e) if not_run(e) => Some(e),
        _ => None,
    }
}

impl Transport for Client {
    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError> {
        self.send(cmds, &self.policy, what)
    }

    fn probe(&self) -> bool {
        let ping = [Cmd::new("PING")];
        let quick = self.policy.without_window();
        matches!(
            self.send(&ping, &quick, &|| "PING".to_owned()).as_deref(),
            Ok([Reply::Status(_)])
        )
    }

    /// Close the idle connections (idempotent). The client stays usable:
    /// the next command connects again, as redis-py's does.
    fn close(&self) {
        let local = self.local.current();
        let conns = std::mem::take(&mut local.slots.lock().idle);
        local.forget(conns.len());
        drop(conns);
    }

    fn redacted_url(&self) -> String {
        self.cfg.redacted_url()
    }

    fn address(&self) -> String {
        self.cfg.address()
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn server_config(&self) -> Option<&Config> {
        Some(&self.cfg)
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
