//! `Client`: the one way every structure talks to a server. A pool of idle
//! connections shared by all threads; each command borrows one, so threads
//! never wait on each other's round trips.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::config::Config;
use super::conn::{Conn, OpenError};
use super::resp::{Cmd, Reply};
use super::retry::{RetryPolicy, Stage};
use super::transport::Transport;
use crate::errors::CacheError;

const LOG: &str = "madsci_cache_rs";
/// Idle sockets kept beyond this are closed: a burst of threads must not
/// leave hundreds of open connections behind.
const MAX_IDLE: usize = 64;

/// A Lua script run with EVALSHA, falling back to EVAL when the server
/// does not know it yet (a fresh or restarted server).
pub struct Script {
    pub src: &'static str,
    pub sha: String,
    /// Changes nothing: a client-side cache need not drop its keys.
    pub read_only: bool,
}

impl Script {
    pub fn new(src: &'static str) -> Script {
        Script {
            src,
            sha: redis::Script::new(src).get_hash().to_owned(),
            read_only: false,
        }
    }

    /// A script that only reads.
    pub fn reading(self) -> Script {
        Script {
            read_only: true,
            ..self
        }
    }
}

struct Idle {
    generation: u64,
    conns: Vec<Conn>,
}

pub struct Client {
    cfg: Config,
    policy: RetryPolicy,
    idle: Mutex<Idle>,
    ever_connected: AtomicBool,
    /// A connection broke since the last successful connect: the next
    /// connect is logged as a reconnect.
    lost: AtomicBool,
}

/// Describes the operation for error messages, e.g. `GET 'k'`. Only
/// called when something fails.
pub type Describe<'a> = &'a (dyn Fn() -> String + Sync);

impl Client {
    /// Lazy: nothing touches the network until the first command.
    pub fn new(cfg: Config, policy: RetryPolicy) -> Client {
        Client {
            cfg,
            policy,
            idle: Mutex::new(Idle {
                generation: super::fork::generation(),
                conns: Vec::new(),
            }),
            ever_connected: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        }
    }

    pub(super) fn context(&self, what: Describe<'_>) -> String {
        format!("{} on {}", what(), self.cfg.address())
    }

    /// An idle connection that is still good, or a new one.
    fn checkout(&self, what: Describe<'_>) -> Result<Conn, CacheError> {
        let generation = super::fork::generation();
        loop {
            let popped = {
                let mut idle = self.idle.lock();
                if idle.generation != generation {
                    // A forked child: the parent's sockets are the parent's.
                    // Closing our copies of the descriptors sends nothing.
                    idle.conns.clear();
                    idle.generation = generation;
                }
                idle.conns.pop()
            };
            match popped {
                Some(conn) if conn.is_reusable() => return Ok(conn),
                Some(_) => {
                    self.lost.store(true, Ordering::Relaxed);
                    log::debug!(target: LOG, "dropped a closed idle connection to {}", self.cfg.address());
                }
                None => return self.connect(what),
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.generation == conn.generation && idle.conns.len() < MAX_IDLE {
            idle.conns.push(conn);
        }
    }

    pub(super) fn connect(&self, what: Describe<'_>) -> Result<Conn, CacheError> {
        let mut failed = 0;
        loop {
            match Conn::open(&self.cfg) {
                Ok(conn) => {
                    self.log_connect();
                    return Ok(conn);
                }
                Err(OpenError::Rejected(detail)) => {
                    return Err(CacheError::Response {
                        context: self.context(what),
                        detail,
                    })
                }
                Err(OpenError::Io(e)) => {
                    failed += 1;
                    let stage = match e.kind() {
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                            Stage::ConnectTimedOut
                        }
                        _ => Stage::Connect,
                    };
                    match self.policy.next_delay(stage, failed) {
                        Some(delay) => std::thread::sleep(delay),
                        None => {
                            self.lost.store(true, Ordering::Relaxed);
                            // Even a connect timeout is a connection error:
                            // "the server is unreachable", not "it is slow".
                            return Err(CacheError::Connection {
                                context: self.context(what),
                                detail: format!("could not connect after {failed} attempt(s): {e}"),
                            });
                        }
                    }
                }
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

    /// Send `cmds` in one write and return their replies; server errors are
    /// returned as `Reply::Error`, not raised.
    fn send(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError> {
        let mut conn = self.checkout(what)?;
        match conn.request_many(cmds) {
            Ok(replies) => {
                self.checkin(conn);
                Ok(replies)
            }
            Err(e) => {
                // From here on the command may have run: report, never re-send.
                debug_assert_eq!(self.policy.next_delay(Stage::Sent, 1), None);
                drop(conn);
                Err(self.lost_reply(&e, what))
            }
        }
    }

    /// A connection was found closed: the next connect is a reconnect.
    pub(super) fn mark_lost(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    /// A connection broke after a command was written: log it, make the
    /// next connect a logged reconnect, and describe the error.
    pub(super) fn lost_reply(&self, e: &std::io::Error, what: Describe<'_>) -> CacheError {
        self.lost.store(true, Ordering::Relaxed);
        log::warn!(target: LOG, "connection to {} broke during {}: {e}", self.cfg.address(), what());
        io_error(
            self.context(what),
            e,
            "the reply was lost; the command was not re-sent and may or may not have run".into(),
        )
    }
}

impl Transport for Client {
    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError> {
        self.send(cmds, what)
    }

    /// Close the idle connections (idempotent). The client stays usable:
    /// the next command connects again, as redis-py's does.
    fn close(&self) {
        let conns = std::mem::take(&mut self.idle.lock().conns);
        drop(conns);
    }

    fn redacted_url(&self) -> String {
        self.cfg.redacted_url()
    }

    fn address(&self) -> String {
        self.cfg.address()
    }

    fn server_config(&self) -> Option<&Config> {
        Some(&self.cfg)
    }
}

pub(super) fn io_error(context: String, e: &std::io::Error, what: String) -> CacheError {
    let detail = format!("{what}: {e}");
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            CacheError::Timeout { context, detail }
        }
        _ => CacheError::Connection { context, detail },
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
