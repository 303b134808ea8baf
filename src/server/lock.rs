//! `Redlock`: pottery's lock on one server, in its wire format (`redlock:<key>`
//! holding a UUID4 text, `NX PX`), with pottery's rules from `crate::lease`
//! (shared with strict in-memory mode) and our waiting from `handoff`.
//!
//! Every operation is one script run atomically on the server, so the
//! "only if the stored token is ours" checks cannot race another client.
//! On several independent masters the same scripts go to each, with
//! pottery's quorum rules (`lock_masters`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use super::args::structure_key;
use super::handler::transport_of;
use super::handoff::{self, waiters_for, Attempt, Contender, LockId, Waiters};
use super::lock_masters::{Masters, Tried};
use super::scripts::{LOCK_ACQUIRE, LOCK_EXTEND, LOCK_RELEASE, LOCK_REMAINING};
use super::subscriber::{self, Interest, CHANNEL};
use crate::connection::fork::PerProcess;
use crate::connection::{describe, Reply, Script, Transport};
use crate::errors::{run_detached, CacheError};
use crate::lease::{LockLease, Wait, DEFAULT_NUM_EXTENSIONS};

const LOG: &str = "madsci_cache_rs";
/// Waits longer than this are logged: a lab operator wants to see a lock
/// that holds a manager up, not every short wait.
const LONG_WAIT: Duration = Duration::from_secs(1);

struct State {
    lease: LockLease,
    /// When our latest acquire succeeded; `None` once released. Only for
    /// the log line that reports a lease that expired before release.
    acquired_at: Option<Instant>,
    /// `with lock:` acquires with these (pottery's `context_manager_*`).
    blocking: bool,
    timeout: f64,
}

/// Where the lock lives.
pub enum Servers {
    One(Arc<dyn Transport>),
    /// Several independent masters: pottery's quorum.
    Several(Masters),
}

#[pyclass(frozen, module = "madsci_cache_rs", name = "Redlock")]
pub struct Redlock {
    servers: Servers,
    /// Whose servers the release listener connects to (each master's;
    /// `Transport::listen_targets`).
    listen: Vec<Arc<dyn Transport>>,
    store_key: Vec<u8>,
    id: LockId,
    /// This process's waiters for the key: a forked child gets its own.
    waiters: PerProcess<Arc<Waiters>>,
    /// `poll_interval`: the longest sleep between tries while no release
    /// message comes (a holder that releases without publishing, pottery).
    poll: Duration,
    state: Mutex<State>,
}

/// One `acquire` call's tries at the server.
struct Try<'a> {
    lock: &'a Redlock,
    token: &'a [u8],
    ttl_ms: &'a [u8],
    tries: u32,
    unreachable_logged: bool,
    long_wait_logged: bool,
    interest: Vec<Interest>,
    /// `acquire(raise_on_redis_errors=…)`, for several masters.
    raise: Option<bool>,
    /// Several masters: each try has a token of its own, as pottery's (a
    /// refused try's late give-back must not remove a later try's lease);
    /// the latest one.
    latest: Option<String>,
}

// The wait runs detached (`gil::detach`), so its errors stay `CacheError`s
// until it is over: converting one to a `PyErr` attaches, and a daemon
// thread still waiting here after `Py_FinalizeEx` would attach to a
// torn-down runtime (SIGSEGV at exit, `tests/test_exit.py`).
impl Contender for Try<'_> {
    type Error = CacheError;

    fn poll(&self) -> Duration {
        self.lock.poll
    }

    fn attempt(&mut self) -> Result<Attempt, CacheError> {
        self.tries += 1;
        let key = self.lock.store_key.as_slice();
        let client = match &self.lock.servers {
            Servers::One(client) => client,
            Servers::Several(masters) => return self.attempt_on(masters),
        };
        let reply = client.eval(&LOCK_ACQUIRE, &[key], &[self.token, self.ttl_ms], &|| {
            describe("acquire lock", key)
        });
        match reply {
            Ok(Reply::Status(_)) => Ok(Attempt::Acquired),
            Ok(Reply::Int(ms)) if ms >= 0 => Ok(Attempt::Held {
                ttl: Some(Duration::from_millis(ms as u64)),
            }),
            // -2 (no key) cannot follow a failed SET NX in one script;
            // should a server ever say it, the key is free: try at once.
            Ok(Reply::Int(-2)) => Ok(Attempt::Held {
                ttl: Some(Duration::ZERO),
            }),
            Ok(Reply::Int(_)) => Ok(Attempt::Held { ttl: None }),
            Ok(other) => Err(CacheError::Response {
                context: format!(
                    "{} on {}",
                    describe("acquire lock", key),
                    self.lock.id.server
                ),
                detail: format!("unexpected reply {other:?}"),
            }),
            // With `wait_replicas`: taken on the primary alone, where a
            // failover could give it to another holder as well. Given back
            // (best effort: it expires anyway) and tried again later, so an
            // acquire without enough replicas ends as not acquired.
            Err(CacheError::NotReplicated { detail, .. }) => {
                let msg = subscriber::message(self.lock.id.db, key);
                let args: [&[u8]; 3] = [self.token, CHANNEL.as_bytes(), &msg];
                let _ = client.eval(&LOCK_RELEASE, &[key], &args, &|| {
                    describe("release lock", key)
                });
                if !std::mem::replace(&mut self.unreachable_logged, true) {
                    log::warn!(target: LOG, "waiting for lock {}: {detail}; given back, trying again", self.lock.key_text());
                }
                Ok(Attempt::Held { ttl: None })
            }
            // A waiter rides over a server restart: the try is idempotent
            // (our token), so repeating it after a lost reply is safe. The
            // first try reports the error, like every other operation.
            Err(e @ (CacheError::Connection { .. } | CacheError::Timeout { .. }))
                if self.tries > 1 =>
            {
                if !std::mem::replace(&mut self.unreachable_logged, true) {
                    log::warn!(target: LOG, "waiting for lock {}: {e}; trying again", self.lock.key_text());
                }
                Ok(Attempt::Unreachable)
            }
            Err(e) => Err(e),
        }
    }

    fn waiting(&mut self) {
        self.interest = self
            .lock
            .listen
            .iter()
            .filter_map(subscriber::listen)
            .collect();
    }

    fn check(&mut self, waited: Duration) -> Result<(), CacheError> {
        if waited >= LONG_WAIT && !std::mem::replace(&mut self.long_wait_logged, true) {
            log::info!(target: LOG, "waiting over {:.0} s for lock {} on {}", LONG_WAIT.as_secs_f64(), self.lock.key_text(), self.lock.id.server);
        }
        // Let Ctrl-C interrupt a long wait, as it interrupts pottery's sleep.
        // CPython runs signal handlers on its main thread only, so no other
        // thread attaches for them: there it would do nothing, and a daemon
        // thread outlives the interpreter. The main thread finalizes it, so
        // it is never in this wait then.
        if crate::gil::is_main_thread() && crate::gil::run_signal_handlers() {
            return Err(CacheError::Interrupted);
        }
        Ok(())
    }
}

impl Try<'_> {
    /// One try on several masters: granted with a quorum in time, else
    /// given back everywhere and waited for like a held lock.
    fn attempt_on(&mut self, masters: &Masters) -> Result<Attempt, CacheError> {
        let (token, lease, drift) = {
            let mut st = self.lock.state.lock();
            let token = st.lease.start_attempt();
            (token, st.lease.auto_release(), st.lease.drift())
        };
        let tried = masters.try_acquire(
            &self.lock.store_key,
            token.as_bytes(),
            lease,
            drift,
            self.raise,
        )?;
        self.latest = Some(token);
        Ok(match tried {
            Tried::Granted => Attempt::Acquired,
            Tried::Refused {
                held,
                any_held: true,
            } => Attempt::Held { ttl: held },
            // No master holds it for anyone: masters are down.
            Tried::Refused { .. } => {
                // From the second try: a single try says so by its answer.
                if self.tries > 1 && !std::mem::replace(&mut self.unreachable_logged, true) {
                    log::warn!(target: LOG, "lock {}: too few of its masters ({}) answer for a quorum; trying again", self.lock.key_text(), self.lock.id.server);
                }
                Attempt::Unreachable
            }
        })
    }
}

impl Redlock {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        servers: Servers,
        key: String,
        auto_release_time: f64,
        num_extensions: u32,
        blocking: bool,
        timeout: f64,
        poll: Duration,
    ) -> PyResult<Redlock> {
        Wait::from_args(blocking, timeout)?;
        let lease = LockLease::new(&key, auto_release_time, num_extensions)?;
        if lease.ttl_ms() == 0 {
            // PX 0 is refused by the server; say so up front.
            return Err(PyValueError::new_err(format!(
                "auto_release_time must be at least 0.001 s, not {auto_release_time}"
            )));
        }
        let store_key = lease.store_key().into_bytes();
        let (id, listen) = match &servers {
            Servers::One(client) => {
                let cfg = client.server_config();
                let id = LockId {
                    server: client.address(),
                    db: cfg.map_or(0, |c| c.db),
                    key: store_key.clone(),
                };
                (id, vec![client.clone()])
            }
            Servers::Several(masters) => (
                handoff::several_masters(&masters.members(), &store_key),
                masters.transports(),
            ),
        };
        Ok(Redlock {
            listen,
            waiters: PerProcess::new(waiters_for(&id)),
            servers,
            store_key,
            id,
            poll,
            state: Mutex::new(State {
                lease,
                acquired_at: None,
                blocking,
                timeout,
            }),
        })
    }

    fn waiters(&self) -> &Arc<Waiters> {
        self.waiters.get(|| waiters_for(&self.id))
    }

    fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.store_key).into_owned()
    }

    fn acquire_with(&self, py: Python<'_>, wait: Wait, raise: Option<bool>) -> PyResult<bool> {
        // The state lock is never held across a wait or a round trip: a
        // thread holding the GIL may be blocked on it.
        let (token, ttl_ms) = {
            let mut st = self.state.lock();
            st.acquired_at = None;
            (st.lease.start_attempt(), st.lease.ttl_ms().to_string())
        };
        let start = Instant::now();
        let mut attempt = Try {
            lock: self,
            token: token.as_bytes(),
            ttl_ms: ttl_ms.as_bytes(),
            tries: 0,
            unreachable_logged: false,
            long_wait_logged: false,
            interest: Vec::new(),
            raise,
            latest: None,
        };
        let got = crate::gil::detach(py, || self.waiters().acquire(wait, &mut attempt))?
            .map_err(PyErr::from)?;
        let waited = start.elapsed();
        if waited >= LONG_WAIT {
            let outcome = if got { "acquired" } else { "gave up on" };
            log::info!(target: LOG, "{outcome} lock {} on {} after waiting {:.3} s", self.key_text(), self.id.server, waited.as_secs_f64());
        }
        if got {
            let mine = attempt.latest.as_deref().unwrap_or(token.as_str());
            let mut st = self.state.lock();
            if st.lease.token() == Some(mine) {
                st.acquired_at = Some(Instant::now());
            }
        }
        Ok(got)
    }

    fn run_script(
        &self,
        py: Python<'_>,
        client: &Arc<dyn Transport>,
        script: &Script,
        op: &str,
        args: &[&[u8]],
    ) -> PyResult<Reply> {
        let key = self.store_key.as_slice();
        run_detached(py, || {
            client.eval(script, &[key], args, &|| describe(op, key))
        })
    }
}

/// Where the lock lives, from `masters`: pottery takes a set of redis-py
/// clients; we take redis-py clients, `PyCacheHandler`s or URLs. None or
/// empty: pottery's default, a local server. One server: the lock on it,
/// errors raised as for any call. Several: pottery's quorum
/// (`lock_masters`); the same server given twice counts once.
pub fn servers_for(
    py: Python<'_>,
    masters: Option<&Bound<'_, PyAny>>,
    raise_on_errors: bool,
) -> PyResult<Servers> {
    let mut chosen = Vec::new();
    match masters {
        Some(m) if m.is_instance_of::<PyString>() => chosen.push(m.clone()),
        Some(m) => {
            for one in m.try_iter()? {
                chosen.push(one?);
            }
        }
        None => {}
    }
    let mut clients: Vec<Arc<dyn Transport>> = Vec::new();
    let mut seen = Vec::new();
    for one in &chosen {
        let client = transport_of(one)?;
        let name = (client.address(), client.server_config().map_or(0, |c| c.db));
        if !seen.contains(&name) {
            seen.push(name);
            clients.push(client);
        }
    }
    match clients.len() {
        0 => Ok(Servers::One(transport_of(
            PyString::new(py, "redis://localhost:6379/0").as_any(),
        )?)),
        1 => Ok(Servers::One(clients.remove(0))),
        _ => Ok(Servers::Several(Masters::new(clients, raise_on_errors))),
    }
}

#[pymethods]
impl Redlock {
    #[new]
    #[pyo3(signature = (
        *,
        key,
        masters = None,
        raise_on_redis_errors = None,
        auto_release_time = 10.0,
        num_extensions = DEFAULT_NUM_EXTENSIONS,
        context_manager_blocking = true,
        context_manager_timeout = -1.0,
        poll_interval = handoff::POLL.as_secs_f64(),
    ),
    text_signature = "(*, key, masters=None, raise_on_redis_errors=None, auto_release_time=10.0, \
                      num_extensions=3, context_manager_blocking=True, context_manager_timeout=-1.0, \
                      poll_interval=0.01)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        masters: Option<&Bound<'_, PyAny>>,
        raise_on_redis_errors: Option<bool>,
        auto_release_time: f64,
        num_extensions: u32,
        context_manager_blocking: bool,
        context_manager_timeout: f64,
        poll_interval: f64,
    ) -> PyResult<Self> {
        // On one server errors always raise; on several it is pottery's
        // `raise_on_redis_errors` (default off).
        let key = structure_key(key)?;
        let poll = Duration::try_from_secs_f64(poll_interval)
            .ok()
            .filter(|p| *p >= Duration::from_millis(1))
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "lock {key:?}: poll_interval must be at least 0.001 s, not {poll_interval}"
                ))
            })?;
        Redlock::build(
            servers_for(py, masters, raise_on_redis_errors.unwrap_or(false))?,
            key,
            auto_release_time,
            num_extensions,
            context_manager_blocking,
            context_manager_timeout,
            poll,
        )
    }

    /// Wait for the lock as `blocking`/`timeout` say (pottery's rules);
    /// `True` once held.
    #[pyo3(
        signature = (*, blocking = true, timeout = -1.0, raise_on_redis_errors = None),
        text_signature = "(self, /, *, blocking=True, timeout=-1.0, raise_on_redis_errors=None)"
    )]
    fn acquire(
        &self,
        py: Python<'_>,
        blocking: bool,
        timeout: f64,
        raise_on_redis_errors: Option<bool>,
    ) -> PyResult<bool> {
        let wait = Wait::from_args(blocking, timeout)?;
        self.acquire_with(py, wait, raise_on_redis_errors)
    }

    /// Release our lease; `ReleaseUnlockedLock` if we do not hold it.
    #[pyo3(signature = (*, raise_on_redis_errors = None))]
    fn release(&self, py: Python<'_>, raise_on_redis_errors: Option<bool>) -> PyResult<()> {
        let (token, acquired_at, lease) = {
            let mut st = self.state.lock();
            let token = st.lease.token().map(str::to_owned);
            (token, st.acquired_at.take(), st.lease.clone())
        };
        let removed = match &token {
            None => false,
            Some(token) => match &self.servers {
                Servers::One(client) => {
                    let msg = subscriber::message(self.id.db, &self.store_key);
                    let args: [&[u8]; 3] = [token.as_bytes(), CHANNEL.as_bytes(), &msg];
                    matches!(
                        self.run_script(py, client, &LOCK_RELEASE, "release lock", &args)?,
                        Reply::Int(1)
                    )
                }
                Servers::Several(masters) => run_detached(py, || {
                    masters.release(&self.store_key, token.as_bytes(), raise_on_redis_errors)
                })?,
            },
        };
        if removed {
            self.waiters().released();
        } else if let Some(at) = acquired_at {
            log::warn!(
                target: LOG,
                "lock {} on {}: the lease ({} s) expired before release, {:.3} s after it was acquired",
                self.key_text(),
                self.id.server,
                lease.auto_release().as_secs_f64(),
                at.elapsed().as_secs_f64()
            );
        }
        Ok(lease.released(removed)?)
    }

    /// Seconds left on our lease (less pottery's drift allowance); `0` when
    /// we do not hold it.
    #[pyo3(signature = (*, raise_on_redis_errors = None))]
    fn locked(&self, py: Python<'_>, raise_on_redis_errors: Option<bool>) -> PyResult<Py<PyAny>> {
        let lease = self.state.lock().lease.clone();
        let validity = match (lease.token(), &self.servers) {
            (None, _) => None,
            (Some(token), Servers::One(client)) => {
                let args = [token.as_bytes()];
                let remaining =
                    match self.run_script(py, client, &LOCK_REMAINING, "locked", &args)? {
                        Reply::Int(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
                        _ => None,
                    };
                lease.validity(remaining)
            }
            (Some(token), Servers::Several(masters)) => run_detached(py, || {
                masters.locked(
                    &self.store_key,
                    token.as_bytes(),
                    lease.drift(),
                    raise_on_redis_errors,
                )
            })?,
        };
        match validity {
            Some(seconds) => seconds.into_py_any(py),
            None => 0.into_py_any(py),
        }
    }

    /// Renew our lease to a full `auto_release_time`, at most
    /// `num_extensions` times per acquisition.
    #[pyo3(signature = (*, raise_on_redis_errors = None))]
    fn extend(&self, py: Python<'_>, raise_on_redis_errors: Option<bool>) -> PyResult<()> {
        let lease = {
            let st = self.state.lock();
            st.lease.check_extend()?;
            st.lease.clone()
        };
        let renewed = match lease.token() {
            None => false,
            Some(token) => match &self.servers {
                Servers::One(client) => {
                    let ttl = lease.ttl_ms().to_string();
                    let args: [&[u8]; 2] = [token.as_bytes(), ttl.as_bytes()];
                    matches!(
                        self.run_script(py, client, &LOCK_EXTEND, "extend lock", &args)?,
                        Reply::Int(1)
                    )
                }
                Servers::Several(masters) => run_detached(py, || {
                    masters.extend(
                        &self.store_key,
                        token.as_bytes(),
                        lease.ttl_ms(),
                        raise_on_redis_errors,
                    )
                })?,
            },
        };
        let mut st = self.state.lock();
        if st.lease.token() != lease.token() {
            // Another thread re-acquired with this object meanwhile: its
            // count starts afresh; report our outcome without touching it.
            let mut ours = lease;
            return Ok(ours.extended(renewed)?);
        }
        Ok(st.lease.extended(renewed)?)
    }

    /// Acquire as `context_manager_blocking`/`_timeout` say;
    /// `QuorumNotAchieved` if that fails.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let lock = slf.get();
        let (blocking, timeout) = {
            let st = lock.state.lock();
            (st.blocking, st.timeout)
        };
        if lock.acquire_with(slf.py(), Wait::from_args(blocking, timeout)?, None)? {
            Ok(slf)
        } else {
            Err(lock.state.lock().lease.not_acquired().into())
        }
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py, None)?;
        Ok(false)
    }

    /// pottery's name for the lock: its server key, `redlock:<key>`.
    #[getter]
    fn key(&self) -> String {
        self.key_text()
    }

    #[getter]
    fn auto_release_time(&self) -> f64 {
        self.state.lock().lease.auto_release().as_secs_f64()
    }

    #[getter]
    fn num_extensions(&self) -> u32 {
        self.state.lock().lease.num_extensions()
    }

    #[getter]
    fn context_manager_blocking(&self) -> bool {
        self.state.lock().blocking
    }

    #[setter]
    fn set_context_manager_blocking(&self, blocking: bool) {
        self.state.lock().blocking = blocking;
    }

    #[getter]
    fn context_manager_timeout(&self) -> f64 {
        self.state.lock().timeout
    }

    #[setter]
    fn set_context_manager_timeout(&self, timeout: f64) {
        self.state.lock().timeout = timeout;
    }

    fn __repr__(&self) -> String {
        format!("<Redlock key={}>", self.key_text())
    }
}

/// `PyCacheHandler.create_lock`: madsci's `Redlock(key=key,
/// masters={client}, auto_release_time=auto_release_time)`, or, given
/// `masters`, the lock on those (pottery's quorum when several).
pub fn create_lock(
    client: Arc<dyn Transport>,
    key: &Bound<'_, PyAny>,
    auto_release_time: f64,
    masters: Option<&Bound<'_, PyAny>>,
) -> PyResult<Redlock> {
    let servers = match masters {
        Some(m) => servers_for(key.py(), Some(m), false)?,
        None => Servers::One(client),
    };
    Redlock::build(
        servers,
        structure_key(key)?,
        auto_release_time,
        DEFAULT_NUM_EXTENSIONS,
        true,
        -1.0,
        handoff::POLL,
    )
}
