//! `Redlock` on several independent masters (pottery's
//! `Redlock(masters={a, b, c})`): the same scripts as on one server, sent to
//! every master at once, with the quorum and validity rules of
//! `crate::quorum`.
//!
//! * Every master is asked once per try, concurrently, each on its own
//!   thread, under a policy with no retry window: a master that is down
//!   costs one refused connection (or, unreachable, its connect timeout),
//!   never the 30 s a single-server call waits out. Nothing is re-sent
//!   after a lost reply (`connection::retry`): a lost acquire counts as a
//!   failure and the token is given back there.
//! * The answer is taken as soon as it is certain (pottery does the same):
//!   granted once a quorum took the token in time, refused once a quorum is
//!   out of reach. A refused try gives the token back on every master that
//!   took it before returning; a master that takes it later (it answered
//!   late) gives it back from its own thread, so no key is left behind.
//! * Errors count as "no". With `raise_on_redis_errors`, more than half the
//!   masters failing raises the first error instead (pottery raises its
//!   `QuorumIsImpossible` there; we raise the connection error itself).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scripts::{LOCK_ACQUIRE, LOCK_EXTEND, LOCK_RELEASE, LOCK_REMAINING};
use super::subscriber::{self, CHANNEL};
use crate::connection::interrupt;
use crate::connection::{describe, Cmd, Config, Describe, Reply, RetryPolicy, Script, Transport};
use crate::errors::CacheError;
use crate::logger;
use crate::quorum::{locked_for, Answer, Tally, Verdict};
use crate::sync::{Condvar, Mutex};

const LOG: &str = "madsci_cache_rs";
/// How long a refused try waits for masters still answering before it
/// returns: keeps keys from outliving the try, within the promptness asked
/// of a refusal.
const GIVE_BACK_WAIT: Duration = Duration::from_millis(200);
/// How long a release waits for masters still answering (the release, or
/// the acquire before it) once it has a quorum: long enough for a master
/// that answers at all, short enough that a silent one slows every release
/// by little.
const SETTLE_WAIT: Duration = Duration::from_millis(50);

/// One master asked once: its own transport, each call under `quick`.
struct Once {
    inner: Arc<dyn Transport>,
    quick: RetryPolicy,
}

impl Transport for Once {
    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError> {
        self.inner.pipeline_with(cmds, &self.quick, what)
    }
    fn close(&self) {
        self.inner.close()
    }
    fn redacted_url(&self) -> String {
        self.inner.redacted_url()
    }
    fn address(&self) -> String {
        self.inner.address()
    }
    fn policy(&self) -> &RetryPolicy {
        self.inner.policy()
    }
    fn probe(&self) -> bool {
        self.inner.probe()
    }
    fn server_config(&self) -> Option<&Config> {
        self.inner.server_config()
    }
    fn listen_targets(&self, lost: Option<&Config>) -> Vec<Config> {
        self.inner.listen_targets(lost)
    }
}

/// One master's answer to one request; `None` while it is being asked.
type Heard = Option<Result<Reply, CacheError>>;

/// One master: how to reach it, and its database (release messages name it).
struct Master {
    client: Arc<dyn Transport>,
    address: String,
    db: i64,
}

/// The masters of one lock.
pub struct Masters {
    masters: Vec<Arc<Master>>,
    /// The latest granted acquire, while masters may still be answering
    /// it: a release (or the next try) abandons it, so a master that takes
    /// the token after the release reached it gives it back at once.
    granted: Mutex<Option<Arc<Round>>>,
    /// pottery's `raise_on_redis_errors` given to the constructor.
    pub raise_on_errors: bool,
}

/// What each master answered so far (`None`: still asking), and whether
/// the try was given up (a late taker then gives the token back itself).
struct Gathered {
    answers: Vec<Heard>,
    abandoned: bool,
}

struct Round {
    gathered: Mutex<Gathered>,
    arrived: Condvar,
}

/// A script with its arguments for each master.
#[derive(Clone)]
struct Ask {
    script: &'static Script,
    op: &'static str,
    args: Vec<Vec<Vec<u8>>>,
}

impl Ask {
    fn send(&self, master: &Master, i: usize, key: &[u8]) -> Result<Reply, CacheError> {
        let args: Vec<&[u8]> = self.args[i].iter().map(Vec::as_slice).collect();
        let op = self.op;
        master
            .client
            .eval(self.script, &[key], &args, &|| describe(op, key))
    }
}

/// Whether an acquire's answer means the master now holds our token: it
/// said so, or took it without enough replicas (`wait_replicas`).
fn took_token(answer: &Result<Reply, CacheError>) -> bool {
    matches!(
        answer,
        Ok(Reply::Status(_)) | Err(CacheError::NotReplicated { .. })
    )
}

/// What a `1`-or-`0` script's answer counts as.
fn yes_if_one(answer: &Result<Reply, CacheError>) -> Answer {
    match answer {
        Ok(Reply::Int(1)) => Answer::Yes,
        Ok(_) => Answer::No,
        Err(_) => Answer::Failed,
    }
}

/// What one try on all masters came to.
pub enum Tried {
    Granted,
    /// Refused; `held` is the shortest lease left on a master that holds
    /// the key for someone else (`None`: none answered so).
    Refused {
        held: Option<Duration>,
        any_held: bool,
    },
}

impl Masters {
    /// `clients`: one transport per master, distinct servers.
    pub fn new(clients: Vec<Arc<dyn Transport>>, raise_on_errors: bool) -> Masters {
        let masters = clients
            .into_iter()
            .map(|inner| {
                let quick = RetryPolicy {
                    connect_attempts: 1,
                    window: Duration::ZERO,
                    ..*inner.policy()
                };
                let address = inner.address();
                let db = inner.server_config().map_or(0, |c| c.db);
                Arc::new(Master {
                    client: Arc::new(Once { inner, quick }),
                    address,
                    db,
                })
            })
            .collect();
        Masters {
            masters,
            granted: Mutex::new(None),
            raise_on_errors,
        }
    }

    /// `host:port/db` of each master, for the waiters' registry and messages.
    pub fn members(&self) -> Vec<(String, i64)> {
        self.masters
            .iter()
            .map(|m| (m.address.clone(), m.db))
            .collect()
    }

    /// Each master's transport, for the release listener.
    pub fn transports(&self) -> Vec<Arc<dyn Transport>> {
        self.masters.iter().map(|m| m.client.clone()).collect()
    }

    /// The release script's arguments for each master.
    fn release_args(&self, key: &[u8], token: &[u8]) -> Vec<Vec<Vec<u8>>> {
        self.masters
            .iter()
            .map(|m| {
                vec![
                    token.to_vec(),
                    CHANNEL.as_bytes().to_vec(),
                    subscriber::message(m.db, key),
                ]
            })
            .collect()
    }

    fn same_args(&self, args: &[&[u8]]) -> Vec<Vec<Vec<u8>>> {
        let one: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        vec![one; self.masters.len()]
    }

    /// Ask every master at once; `give_back` (acquire only) runs on a
    /// master that took the token after the round was abandoned.
    fn start(&self, key: &[u8], ask: Ask, give_back: Option<Ask>) -> Arc<Round> {
        let op = ask.op;
        let round = Arc::new(Round {
            gathered: Mutex::new(Gathered {
                answers: vec![None; self.masters.len()],
                abandoned: false,
            }),
            arrived: Condvar::new(),
        });
        for (i, master) in self.masters.iter().enumerate() {
            let (shared, master, owned_key) = (round.clone(), master.clone(), key.to_vec());
            let (ask, give_back) = (ask.clone(), give_back.clone());
            let work = move || {
                let (key, round) = (owned_key, shared);
                let answer = ask.send(&master, i, &key);
                let late_taker = took_token(&answer);
                let abandoned = {
                    let mut g = round.gathered.lock();
                    g.answers[i] = Some(answer);
                    g.abandoned
                };
                round.arrived.notify_all();
                if let (true, true, Some(back)) = (abandoned, late_taker, give_back) {
                    // The try was refused before this master answered.
                    let _ = back.send(&master, i, &key);
                }
            };
            // Background threads (logger::mark_background): one may outlive
            // the try, and the interpreter, and must never attach to it.
            let spawned = std::thread::Builder::new()
                .name("madsci_cache_rs-redlock".into())
                .spawn(move || {
                    logger::mark_background();
                    work()
                });
            if let Err(e) = spawned {
                let m = &self.masters[i];
                log::warn!(target: LOG, "could not start a thread to ask {}: {e}", m.address);
                round.gathered.lock().answers[i] = Some(Err(CacheError::Connection {
                    context: describe(op, key),
                    detail: format!("could not start a thread to ask {}: {e}", m.address),
                }));
            }
        }
        round
    }

    /// Wait until `decided` says the answers so far settle it, or all have
    /// come. A signal handler that raises ends the wait.
    /// Or until `until`, if given.
    fn gather(
        &self,
        round: &Round,
        decided: &dyn Fn(&[Heard]) -> bool,
        until: Option<Instant>,
    ) -> Result<Vec<Heard>, CacheError> {
        let mut g = round.gathered.lock();
        loop {
            let now = Instant::now();
            let all = g.answers.iter().all(Option::is_some);
            if all || decided(&g.answers) || until.is_some_and(|u| now >= u) {
                return Ok(g.answers.clone());
            }
            if interrupt::requested() {
                return Err(CacheError::Interrupted);
            }
            let mut wake = now + interrupt::SLICE;
            if let Some(u) = until {
                wake = wake.min(u);
            }
            g = round.arrived.wait_until(g, wake).0;
        }
    }

    /// Give up `round`: from now on late takers give the token back
    /// themselves; returns the masters that took it already, and those
    /// whose answer was lost (it may have run there).
    fn abandon(&self, round: &Round) -> (Vec<usize>, Vec<usize>) {
        let mut g = round.gathered.lock();
        g.abandoned = true;
        let (mut took, mut lost) = (Vec::new(), Vec::new());
        for (i, a) in g.answers.iter().enumerate() {
            match a {
                Some(a) if took_token(a) => took.push(i),
                Some(Err(_)) => lost.push(i),
                _ => {}
            }
        }
        (took, lost)
    }

    /// A refused (or interrupted) acquire: give the token back where it
    /// was taken before returning, and, without waiting, where the answer
    /// was lost (a master that is down or silent must not hold us up).
    fn refuse(&self, round: &Round, key: &[u8], give_back: &Ask) {
        let (took, lost) = self.abandon(round);
        self.on_each(&took, key, give_back);
        for i in lost {
            let (master, key, back) = (self.masters[i].clone(), key.to_vec(), give_back.clone());
            let _ = std::thread::Builder::new()
                .name("madsci_cache_rs-redlock".into())
                .spawn(move || {
                    logger::mark_background();
                    back.send(&master, i, &key)
                });
        }
    }

    /// Run `ask` on the masters `which`, concurrently, and wait for all.
    fn on_each(&self, which: &[usize], key: &[u8], ask: &Ask) {
        std::thread::scope(|s| {
            for &i in which {
                let master = &self.masters[i];
                s.spawn(move || {
                    logger::mark_background();
                    if let Err(e) = ask.send(master, i, key) {
                        log::debug!(target: LOG, "giving back lock {} on {}: {e}", String::from_utf8_lossy(key), master.address);
                    }
                });
            }
        });
    }

    /// More than half the masters failed and the caller wants to know.
    fn errors_raise(
        &self,
        raise: Option<bool>,
        tally: &Tally,
        answers: &[Heard],
    ) -> Result<(), CacheError> {
        if raise.unwrap_or(self.raise_on_errors) && tally.too_many_failed() {
            if let Some(Err(e)) = answers.iter().flatten().find(|a| a.is_err()) {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    fn log_failures(&self, op: &str, key: &[u8], answers: &[Heard]) {
        for (m, a) in self.masters.iter().zip(answers) {
            if let Some(Err(e)) = a {
                log::debug!(target: LOG, "{op} {} on master {}: {e}", String::from_utf8_lossy(key), m.address);
            }
        }
    }

    /// One try: take `token` for `lease` on a quorum in time, or give it
    /// back everywhere. `drift` as `LockLease::drift`.
    pub fn try_acquire(
        &self,
        key: &[u8],
        token: &[u8],
        lease: Duration,
        drift: Duration,
        raise: Option<bool>,
    ) -> Result<Tried, CacheError> {
        self.forget_granted(false)?;
        let start = Instant::now();
        let ttl_ms = (lease.as_secs_f64() * 1000.0) as u64;
        let ttl_ms = ttl_ms.to_string();
        let ask = Ask {
            script: &LOCK_ACQUIRE,
            op: "acquire lock",
            args: self.same_args(&[token, ttl_ms.as_bytes()]),
        };
        let give_back = Ask {
            script: &LOCK_RELEASE,
            op: "release lock",
            args: self.release_args(key, token),
        };
        let round = self.start(key, ask, Some(give_back.clone()));
        let n = self.masters.len();
        let tally_of = |answers: &[Heard]| {
            let mut t = Tally::new(n);
            for a in answers.iter().flatten() {
                t.add(match a {
                    Ok(Reply::Status(_)) => Answer::Yes,
                    Ok(_) => Answer::No,
                    Err(_) => Answer::Failed,
                });
            }
            t
        };
        let verdict = |answers: &[Heard]| tally_of(answers).verdict(lease, drift, start.elapsed());
        let answers = match self.gather(&round, &|a| verdict(a) != Verdict::Pending, None) {
            Ok(answers) => answers,
            Err(e) => {
                self.refuse(&round, key, &give_back);
                return Err(e);
            }
        };
        if let Verdict::Granted(_) = verdict(&answers) {
            if answers.iter().any(Option::is_none) {
                *self.granted.lock() = Some(round);
            }
            return Ok(Tried::Granted);
        }
        // Refused: give the masters still answering a moment, so that what
        // they took is given back before we return (a master that answers
        // later still gives it back, from its own thread).
        let until = Some(Instant::now() + GIVE_BACK_WAIT);
        let gathered = self.gather(&round, &|_| false, until);
        self.refuse(&round, key, &give_back);
        let answers = gathered?;
        self.log_failures("acquire lock", key, &answers);
        self.errors_raise(raise, &tally_of(&answers), &answers)?;
        let held: Vec<Duration> = answers
            .iter()
            .flatten()
            .filter_map(|a| match a {
                Ok(Reply::Int(ms)) if *ms >= 0 => Some(Duration::from_millis(*ms as u64)),
                _ => None,
            })
            .collect();
        let any_held = answers
            .iter()
            .flatten()
            .any(|a| matches!(a, Ok(Reply::Int(_))));
        Ok(Tried::Refused {
            held: held.into_iter().min(),
            any_held,
        })
    }

    /// A `1`-or-`0` script on all masters; true when a quorum said 1.
    /// `settle`: then wait (up to `SETTLE_WAIT`) for the other masters
    /// too, so a release has reached every master that answers in time.
    fn quorum_of_ones(
        &self,
        key: &[u8],
        ask: Ask,
        raise: Option<bool>,
        settle: bool,
    ) -> Result<bool, CacheError> {
        let n = self.masters.len();
        let tally_of = |answers: &[Heard]| {
            let mut t = Tally::new(n);
            answers.iter().flatten().for_each(|a| t.add(yes_if_one(a)));
            t
        };
        let op = ask.op;
        let round = self.start(key, ask, None);
        let mut answers = self.gather(&round, &|a| tally_of(a).decided(), None)?;
        if settle {
            let until = Some(Instant::now() + SETTLE_WAIT);
            answers = self.gather(&round, &|_| false, until)?;
        }
        let tally = tally_of(&answers);
        if tally.reached() {
            return Ok(true);
        }
        self.log_failures(op, key, &answers);
        self.errors_raise(raise, &tally, &answers)?;
        Ok(false)
    }

    /// Abandon the latest granted acquire (before releasing its token):
    /// a master still to answer it gives the token back itself. `settle`:
    /// first give such masters up to `SETTLE_WAIT` to answer, so the
    /// release that follows finds the token there and no lease outlives it.
    fn forget_granted(&self, settle: bool) -> Result<(), CacheError> {
        let round = self.granted.lock().take();
        if let Some(round) = round {
            if settle {
                let until = Some(Instant::now() + SETTLE_WAIT);
                self.gather(&round, &|_| false, until)?;
            }
            // Masters that answered took the token there: the release
            // that follows reaches them.
            self.abandon(&round);
        }
        Ok(())
    }

    /// Delete our token on every master; true when a quorum held it.
    pub fn release(
        &self,
        key: &[u8],
        token: &[u8],
        raise: Option<bool>,
    ) -> Result<bool, CacheError> {
        self.forget_granted(true)?;
        let ask = Ask {
            script: &LOCK_RELEASE,
            op: "release lock",
            args: self.release_args(key, token),
        };
        self.quorum_of_ones(key, ask, raise, true)
    }

    /// Renew our lease to `lease` on every master; true when a quorum did.
    pub fn extend(
        &self,
        key: &[u8],
        token: &[u8],
        lease_ms: u64,
        raise: Option<bool>,
    ) -> Result<bool, CacheError> {
        let ms = lease_ms.to_string();
        let ask = Ask {
            script: &LOCK_EXTEND,
            op: "extend lock",
            args: self.same_args(&[token, ms.as_bytes()]),
        };
        self.quorum_of_ones(key, ask, raise, false)
    }

    /// `locked()`: seconds left on our lease by pottery's rule, `None`
    /// when a quorum does not hold it.
    pub fn locked(
        &self,
        key: &[u8],
        token: &[u8],
        drift: Duration,
        raise: Option<bool>,
    ) -> Result<Option<f64>, CacheError> {
        let start = Instant::now();
        let n = self.masters.len();
        let ask = Ask {
            script: &LOCK_REMAINING,
            op: "locked",
            args: self.same_args(&[token]),
        };
        let holding = |answers: &[Heard]| -> Vec<Duration> {
            answers
                .iter()
                .flatten()
                .filter_map(|a| match a {
                    Ok(Reply::Int(ms)) if *ms > 0 => Some(Duration::from_millis(*ms as u64)),
                    _ => None,
                })
                .collect()
        };
        let tally_of = |answers: &[Heard]| {
            let mut t = Tally::new(n);
            for a in answers.iter().flatten() {
                t.add(match a {
                    Ok(Reply::Int(ms)) if *ms > 0 => Answer::Yes,
                    Ok(_) => Answer::No,
                    Err(_) => Answer::Failed,
                });
            }
            t
        };
        let round = self.start(key, ask, None);
        let answers = self.gather(&round, &|a| tally_of(a).decided(), None)?;
        let tally = tally_of(&answers);
        if let Some(left) = locked_for(n, &holding(&answers), drift, start.elapsed()) {
            return Ok(Some(left));
        }
        self.log_failures("locked", key, &answers);
        self.errors_raise(raise, &tally, &answers)?;
        Ok(None)
    }
}
