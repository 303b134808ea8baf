//! `Client`: the one way every structure talks to a server. A pool of idle
//! connections shared by all threads; each command borrows one, so threads
//! never wait on each other's round trips (unless `max_connections` says
//! they must; `pool_slots.rs`). Each call rides out an outage within the
//! retry window, re-sending only what `retry` allows.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster_slots::{redirect_in, Redirect};
use super::config::Config;
use super::conn::handshake::refuses_credentials;
use super::conn::{Conn, OpenError};
use super::fork::PerProcess;
use super::interrupt;
use super::resp::{Cmd, Reply};
use super::retry::{demoted, is_read, not_run, Failure, Resend, RetryPolicy};
use super::transport::{Describe, Transport};
use crate::errors::CacheError;

const LOG: &str = "madsci_cache_rs";

#[path = "pool_slots.rs"]
mod slots;
use slots::Local;

/// Why one attempt failed, and whether the next may follow.
pub(super) struct Setback {
    pub(super) failure: Failure,
    cause: String,
    /// The reply did not come in time (a `CacheTimeoutError` if the call
    /// gives up here); a connect that timed out is a connection error.
    reply_timed_out: bool,
}

impl Setback {
    /// A "not now" that did not come as a server's error reply (a cluster
    /// whose nodes keep redirecting to each other).
    pub(super) fn refused(cause: String) -> Setback {
        Setback {
            failure: Failure::Refused,
            cause,
            reply_timed_out: false,
        }
    }
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

/// Whether `cmd` may change data that `wait_replicas` waits for.
fn writes(cmd: &Cmd) -> bool {
    !cmd.is_read_only() && !is_read(cmd.name()) && cmd.needs_replicas()
}

/// `cmds` and the `WAIT` that `wait_replicas` asks for, when they write.
pub(super) fn with_wait(cfg: &Config, cmds: &[Cmd]) -> Option<Vec<Cmd>> {
    let replicas = cfg.wait_replicas?;
    if !cmds.iter().any(writes) {
        return None;
    }
    let wait = Cmd::new("WAIT")
        .arg(replicas.to_string())
        .arg(cfg.wait_timeout.as_millis().max(1).to_string())
        // Asking again changes nothing: the batch keeps its own class.
        .with_resend(Resend::Read);
    Some(cmds.iter().cloned().chain([wait]).collect())
}

/// The replies of a `with_wait` batch without the `WAIT`'s, or the error
/// saying too few replicas confirmed the write in time.
pub(super) fn waited(
    cfg: &Config,
    mut replies: Vec<Reply>,
    context: impl FnOnce() -> String,
) -> Result<Vec<Reply>, CacheError> {
    let replicas = cfg.wait_replicas.unwrap_or(0);
    let wait = replies.pop();
    if replies.iter().any(|r| matches!(r, Reply::Error(_))) {
        // Refused (NOSCRIPT: not run at all; WRONGTYPE): the caller
        // handles the refusal, and a re-send carries its own WAIT.
        return Ok(replies);
    }
    match wait {
        Some(Reply::Int(confirmed)) if confirmed >= i64::from(replicas) => Ok(replies),
        other => Err(CacheError::NotReplicated {
            context: context(),
            detail: format!(
                "applied on the primary, but {} of the {replicas} replica(s) wait_replicas \
                 asks for confirmed it within {:.2} s: a failover now could lose it",
                match other {
                    Some(Reply::Int(n)) => n.to_string(),
                    _ => "none".into(),
                },
                cfg.wait_timeout.as_secs_f64()
            ),
        }),
    }
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
            // A wrong password does not fix itself: no waiting it out.
            Err(OpenError::Rejected { command, error }) if refuses_credentials(&error) => {
                Err(Stop::Fatal(CacheError::Authentication {
                    context: format!(
                        "connecting to {} as user {:?}",
                        self.cfg.address(),
                        self.cfg.user()
                    ),
                    detail: format!("{command} refused: {error}"),
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
    /// `Reply::Error`, not raised. With `wait_replicas`, a batch that writes
    /// carries a `WAIT` in the same round trip.
    fn send(
        &self,
        cmds: &[Cmd],
        policy: &RetryPolicy,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        match with_wait(&self.cfg, cmds) {
            Some(batch) => {
                let replies = self.send_batch(&batch, policy, what)?;
                waited(&self.cfg, replies, || self.context(what))
            }
            None => self.send_batch(cmds, policy, what),
        }
    }

    fn send_batch(
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
                    if let Some(redirect) = redirect_in(&replies, "") {
                        return Err(self.not_a_cluster_client(&redirect, what));
                    }
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

    /// A `MOVED`/`ASK` met by a client of one server: the server is a
    /// Cluster node, and this client cannot follow it there.
    fn not_a_cluster_client(&self, redirect: &Redirect, what: Describe<'_>) -> CacheError {
        let (host, port) = redirect.node();
        CacheError::Response {
            context: self.context(what),
            detail: format!(
                "the server is a Cluster node and sent the command to {host}:{port}; \
                 connect with a redis+cluster:// URL (or a redis-py RedisCluster client) \
                 to use a Cluster"
            ),
        }
    }

    /// One attempt, no waiting: `send`'s step, and a Cluster's per node.
    pub(super) fn attempt(
        &self,
        cmds: &[Cmd],
        resend: Resend,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, Stop> {
        let mut lease = self.checkout(what)?;
        match lease.conn().request_many(cmds) {
            Ok(replies) => {
                // "Not now" answers mean nothing ran; in a batch that may
                // not be repeated, the caller sees them as they are.
                let refusal = (cmds.len() == 1 || resend != Resend::Never)
                    .then(|| replies.iter().find_map(refused))
                    .flatten();
                if refusal.is_some_and(demoted) {
                    // The node is a replica now: none of our connections
                    // to it will take a write. New ones go where the
                    // sentinels (or the URL) say.
                    drop(lease);
                    self.close_idle();
                } else {
                    self.checkin(lease);
                }
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
            Err(e) => Err(self.reply_lost(&e)),
        }
    }

    /// An attempt whose reply did not come (the connection broke or timed
    /// out): the command may have run.
    pub(super) fn reply_lost(&self, e: &io::Error) -> Stop {
        self.lost.store(true, Ordering::Relaxed);
        Stop::Retry(Setback {
            failure: Failure::Lost,
            cause: explain(e, self.cfg.command_timeout, "the reply"),
            reply_timed_out: timed_out(e),
        })
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

    fn pipeline_with(
        &self,
        cmds: &[Cmd],
        policy: &RetryPolicy,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        self.send(cmds, policy, what)
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
        self.close_idle();
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
