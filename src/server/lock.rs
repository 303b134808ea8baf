//! `Redlock`: pottery's lock on one server, in its wire format (`redlock:<key>`
//! holding a UUID4 text, `NX PX`), with pottery's rules from `crate::lease`
//! (shared with strict in-memory mode) and our waiting from `handoff`.
//!
//! Every operation is one script run atomically on the server, so the
//! "only if the stored token is ours" checks cannot race another client.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::sync::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use super::args::structure_key;
use super::handler::transport_of;
use super::handoff::{self, waiters_for, Attempt, Contender, LockId, Waiters};
use super::subscriber::{self, Interest, CHANNEL};
use crate::connection::config::Config;
use crate::connection::fork::PerProcess;
use crate::connection::{describe, Reply, Script, Transport};
use crate::errors::{run_detached, CacheError};
use crate::lease::{LockLease, Wait, DEFAULT_NUM_EXTENSIONS};

const LOG: &str = "madsci_cache_rs";
/// Waits longer than this are logged: a lab operator wants to see a lock
/// that holds a manager up, not every short wait.
const LONG_WAIT: Duration = Duration::from_secs(1);

/// ARGV: token, lease in ms. Takes a free key; `OK` also when the key
/// already holds our token, which makes a try safe to repeat after a lost
/// reply. Otherwise the holder's PTTL, so the waiter knows when to look again.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
           return redis.status_reply('OK')
         end
         if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.status_reply('OK') end
         return redis.call('PTTL', KEYS[1])",
    )
    .repeatable()
});

/// ARGV: token, channel, message. Deletes the key only if it holds our
/// token, and announces the release to our waiting processes.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           redis.call('DEL', KEYS[1])
           -- pcall: a user not allowed to publish can still release.
           redis.pcall('PUBLISH', ARGV[2], ARGV[3])
           return 1
         end
         return 0",
    )
});

/// ARGV: token, lease in ms. 1 if renewed.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           return redis.call('PEXPIRE', KEYS[1], ARGV[2])
         end
         return 0",
    )
});

/// ARGV: token. Milliseconds left on our lease, 0 if it is not ours.
static REMAINING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           local t = redis.call('PTTL', KEYS[1])
           if t > 0 then return t end
         end
         return 0",
    )
    .reading()
});

struct State {
    lease: LockLease,
    /// When our latest acquire succeeded; `None` once released. Only for
    /// the log line that reports a lease that expired before release.
    acquired_at: Option<Instant>,
    /// `with lock:` acquires with these (pottery's `context_manager_*`).
    blocking: bool,
    timeout: f64,
}

#[pyclass(frozen, module = "madsci_cache_rs", name = "Redlock")]
pub struct Redlock {
    client: Arc<dyn Transport>,
    /// Where the release listener connects; `None` (not a single server):
    /// waiters rely on the poll.
    listen: Option<Config>,
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
    interest: Option<Interest>,
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
        let reply = self
            .lock
            .client
            .eval(&ACQUIRE, &[key], &[self.token, self.ttl_ms], &|| {
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
                let _ = self
                    .lock
                    .client
                    .eval(&RELEASE, &[key], &args, &|| describe("release lock", key));
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
        self.interest = self.lock.listen.as_ref().map(subscriber::listen);
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

impl Redlock {
    pub fn build(
        client: Arc<dyn Transport>,
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
        let cfg = client.server_config();
        let id = LockId {
            server: client.address(),
            db: cfg.map_or(0, |c| c.db),
            key: store_key.clone(),
        };
        let listen = cfg.cloned();
        Ok(Redlock {
            listen,
            waiters: PerProcess::new(waiters_for(&id)),
            client,
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

    fn acquire_with(&self, py: Python<'_>, wait: Wait) -> PyResult<bool> {
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
            interest: None,
        };
        let got = crate::gil::detach(py, || self.waiters().acquire(wait, &mut attempt))?
            .map_err(PyErr::from)?;
        let waited = start.elapsed();
        if waited >= LONG_WAIT {
            let outcome = if got { "acquired" } else { "gave up on" };
            log::info!(target: LOG, "{outcome} lock {} on {} after waiting {:.3} s", self.key_text(), self.id.server, waited.as_secs_f64());
        }
        if got {
            let mut st = self.state.lock();
            if st.lease.token() == Some(token.as_str()) {
                st.acquired_at = Some(Instant::now());
            }
        }
        Ok(got)
    }

    fn run_script(
        &self,
        py: Python<'_>,
        script: &Script,
        op: &str,
        args: &[&[u8]],
    ) -> PyResult<Reply> {
        let (client, key) = (&self.client, self.store_key.as_slice());
        run_detached(py, || {
            client.eval(script, &[key], args, &|| describe(op, key))
        })
    }
}

/// The server for `masters`: pottery takes a set of redis-py clients; we
/// take one server, given as a redis-py client, a `PyCacheHandler` or a URL.
/// None or empty: pottery's default, a local server.
fn client_for(py: Python<'_>, masters: Option<&Bound<'_, PyAny>>) -> PyResult<Arc<dyn Transport>> {
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
    match chosen.as_slice() {
        [] => transport_of(PyString::new(py, "redis://localhost:6379/0").as_any()),
        [one] => transport_of(one),
        _ => Err(PyValueError::new_err(
            "Redlock takes one server: multi-master Redlock quorums are not supported",
        )),
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
        // Accepted for pottery's signature; errors always raise here.
        let _ = raise_on_redis_errors;
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
            client_for(py, masters)?,
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
        let _ = raise_on_redis_errors;
        let wait = Wait::from_args(blocking, timeout)?;
        self.acquire_with(py, wait)
    }

    /// Release our lease; `ReleaseUnlockedLock` if we do not hold it.
    #[pyo3(signature = (*, raise_on_redis_errors = None))]
    fn release(&self, py: Python<'_>, raise_on_redis_errors: Option<bool>) -> PyResult<()> {
        let _ = raise_on_redis_errors;
        let (token, acquired_at, lease) = {
            let mut st = self.state.lock();
            let token = st.lease.token().map(str::to_owned);
            (token, st.acquired_at.take(), st.lease.clone())
        };
        let removed = match &token {
            None => false,
            Some(token) => {
                let msg = subscriber::message(self.id.db, &self.store_key);
                let args: [&[u8]; 3] = [token.as_bytes(), CHANNEL.as_bytes(), &msg];
                matches!(
                    self.run_script(py, &RELEASE, "release lock", &args)?,
                    Reply::Int(1)
                )
            }
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
    fn locked(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let lease = self.state.lock().lease.clone();
        let remaining = match lease.token() {
            None => None,
            Some(token) => match self.run_script(py, &REMAINING, "locked", &[token.as_bytes()])? {
                Reply::Int(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
                _ => None,
            },
        };
        match lease.validity(remaining) {
            Some(seconds) => seconds.into_py_any(py),
            None => 0.into_py_any(py),
        }
    }

    /// Renew our lease to a full `auto_release_time`, at most
    /// `num_extensions` times per acquisition.
    #[pyo3(signature = (*, raise_on_redis_errors = None))]
    fn extend(&self, py: Python<'_>, raise_on_redis_errors: Option<bool>) -> PyResult<()> {
        let _ = raise_on_redis_errors;
        let lease = {
            let st = self.state.lock();
            st.lease.check_extend()?;
            st.lease.clone()
        };
        let renewed = match lease.token() {
            None => false,
            Some(token) => {
                let ttl = lease.ttl_ms().to_string();
                let args: [&[u8]; 2] = [token.as_bytes(), ttl.as_bytes()];
                matches!(
                    self.run_script(py, &EXTEND, "extend lock", &args)?,
                    Reply::Int(1)
                )
            }
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
        if lock.acquire_with(slf.py(), Wait::from_args(blocking, timeout)?)? {
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
/// masters={client}, auto_release_time=auto_release_time)`.
pub fn create_lock(
    client: Arc<dyn Transport>,
    key: &Bound<'_, PyAny>,
    auto_release_time: f64,
) -> PyResult<Redlock> {
    Redlock::build(
        client,
        structure_key(key)?,
        auto_release_time,
        DEFAULT_NUM_EXTENSIONS,
        true,
        -1.0,
        handoff::POLL,
    )
}
