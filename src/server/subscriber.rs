//! Hearing releases made by our other processes: one subscriber connection
//! per process and server, started when a lock wait begins, stopped a little
//! after the last wait ends, started again in a forked child.
//!
//! Our release script publishes `<db>:<lock key>` on `CHANNEL` in the same
//! round trip that deletes the key, so a waiter in another process is woken
//! while the releaser is still reading its reply. pottery does not publish;
//! its releases are found by the waiters' bounded poll (`handoff::poll`).
//!
//! Where it connects is the transport's say (`Transport::listen_targets`):
//! one server's own address; behind Sentinel the primary the sentinels
//! name, and the new one after each switch the failover watch hears (a
//! demoted primary that kept our connection, one that stalled, say, hears
//! no release again); on a Cluster any node of the current slot map, then
//! the seeds, and after a lost node another one of the map read again.
//!
//! The connection is a `connection::Conn`, opened as the pool opens one, so
//! the listener reaches every server the pool does (TLS, each resolved
//! address, AUTH and SELECT) with no second copy of that code to drift. A
//! subscribed connection only reads, and must wait for a message with a
//! timeout (to notice it is no longer wanted) without ever cutting a reply
//! in half: `Conn::next_unasked` bounds only the wait for a reply's first
//! byte, and reads the whole reply once it has begun. A malformed reply or
//! a lost connection ends that connection; the listener opens another,
//! backing off, and wakes this process's waiters on the server, since a
//! release may have gone unheard meanwhile.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use crate::sync::Mutex;

use crate::connection::fork::PerProcess;

use super::handoff::{notify, notify_server, LockId};
use crate::connection::config::Config;
use crate::connection::conn::{Conn, OpenError};
use crate::connection::failover_watch;
use crate::connection::resp::{Cmd, Reply};
use crate::connection::Transport;

/// Pub/Sub channels are server-wide (not per database): the message names
/// the database as well as the key.
pub const CHANNEL: &str = "madsci_cache_rs:redlock:released";
const LOG: &str = "madsci_cache_rs";
/// The subscriber stops after this long without waiters.
const IDLE: Duration = Duration::from_secs(2);
/// How often an idle subscriber looks whether it is still wanted.
const TICK: Duration = Duration::from_millis(200);
/// A reply that started arriving must finish within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The release message for `key` in database `db`.
pub fn message(db: i64, key: &[u8]) -> Vec<u8> {
    let mut m = format!("{db}:").into_bytes();
    m.extend_from_slice(key);
    m
}

fn parse_message(payload: &[u8]) -> Option<(i64, &[u8])> {
    let colon = payload.iter().position(|b| *b == b':')?;
    let db = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    Some((db, &payload[colon + 1..]))
}

/// Who we connect as: a different password is a different subscriber.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Identity {
    address: String,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
}

struct Listener {
    waiters: usize,
    idle_since: Instant,
    /// Where to listen is asked of the transport that asked for the
    /// listener last (one that is gone: `Config`'s own address).
    source: Weak<dyn Transport>,
}

/// Per process: a forked child has none of its parent's listener threads,
/// and must not lock a map one of them held (`fork::PerProcess`).
static LISTENERS: LazyLock<PerProcess<Mutex<HashMap<Identity, Listener>>>> =
    LazyLock::new(PerProcess::default);

fn listeners() -> crate::sync::MutexGuard<'static, HashMap<Identity, Listener>> {
    LISTENERS.current().lock()
}

/// Held by a waiting thread: keeps the subscriber running.
pub struct Interest {
    who: Identity,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut all = listeners();
        if let Some(l) = all.get_mut(&self.who) {
            l.waiters = l.waiters.saturating_sub(1);
            if l.waiters == 0 {
                l.idle_since = Instant::now();
            }
        }
    }
}

/// Make sure this process listens for releases on `source`'s server(s);
/// `None` when it has no settings to listen with (its waiters poll).
pub fn listen(source: &Arc<dyn Transport>) -> Option<Interest> {
    let cfg = source.server_config()?;
    let who = Identity {
        address: cfg.address(),
        tls: cfg.tls_config.is_some(),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
    };
    let mut all = listeners();
    if !all.contains_key(&who) {
        // The map is this process's: a forked child starts with an empty
        // one, and so with a listener of its own.
        let spawned = std::thread::Builder::new()
            .name("madsci_cache_rs-lock-listener".into())
            .spawn({
                let (cfg, who) = (cfg.clone(), who.clone());
                move || run(cfg, who)
            });
        if let Err(e) = spawned {
            log::warn!(target: LOG, "could not start the lock release listener: {e}; waiters poll instead");
            return Some(Interest { who });
        }
        all.insert(
            who.clone(),
            Listener {
                waiters: 0,
                idle_since: Instant::now(),
                source: Arc::downgrade(source),
            },
        );
    }
    if let Some(l) = all.get_mut(&who) {
        l.waiters += 1;
        l.source = Arc::downgrade(source);
    }
    Some(Interest { who })
}

/// Where `who`'s listener may connect now, best first (`lost`: the one it
/// was on failed it).
fn targets(who: &Identity, cfg: &Config, lost: Option<&Config>) -> Vec<Config> {
    // Not asked under the map's lock: a cluster may read its slot map.
    let source = listeners().get(who).and_then(|l| l.source.upgrade());
    let targets = source.map(|s| s.listen_targets(lost)).unwrap_or_default();
    if targets.is_empty() {
        return vec![cfg.clone()];
    }
    targets
}

/// Whether the subscriber for `who` should stop now (and, if so, forget it).
fn should_stop(who: &Identity) -> bool {
    let mut all = listeners();
    let stop = match all.get(who) {
        Some(l) => l.waiters == 0 && l.idle_since.elapsed() >= IDLE,
        None => true,
    };
    if stop {
        all.remove(who);
    }
    stop
}

/// A subscribed connection to the first of `targets` that takes one, and
/// that target; else the last error, the first target that failed in
/// `failed`.
fn subscribe_any(targets: Vec<Config>, failed: &mut Option<Config>) -> io::Result<(Conn, Config)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "nowhere to listen");
    for target in targets {
        match subscribe(&target) {
            Ok(conn) => return Ok((conn, target)),
            Err(e) => {
                log::debug!(target: LOG, "lock release listener cannot subscribe on {}: {e}", target.address());
                last = e;
                failed.get_or_insert(target);
            }
        }
    }
    Err(last)
}

/// The listener's connection: `Conn::open`, as the pool opens one (every
/// resolved address, TLS, AUTH, SELECT), then a name and the subscription.
fn subscribe(cfg: &Config) -> io::Result<Conn> {
    let mut cfg = cfg.clone();
    // Both bound only the wait for the rest of a reply that has begun (and
    // the handshake): the wait for a message is `next_unasked`'s.
    cfg.connect_timeout = Some(cfg.connect_timeout.unwrap_or(READ_TIMEOUT));
    cfg.command_timeout = Some(READ_TIMEOUT);
    let mut conn = Conn::open(&cfg).map_err(|e| match e {
        OpenError::Io(e) => e,
        OpenError::Rejected { command, error } => {
            io::Error::other(format!("{command} refused: {error}"))
        }
    })?;
    let cmds = [
        Cmd::new("CLIENT")
            .arg("SETNAME")
            .arg("madsci_cache_rs-lock-listener"),
        Cmd::new("SUBSCRIBE").arg(CHANNEL),
    ];
    for (cmd, reply) in cmds.iter().zip(conn.request_many(&cmds)?) {
        if let Reply::Error(e) = reply {
            return Err(io::Error::other(format!("{} refused: {e}", cmd.name())));
        }
    }
    Ok(conn)
}

/// A pushed `message` on our channel names a released lock.
fn released_lock(server: &str, reply: &Reply) -> Option<LockId> {
    // `elements` reads both shapes an array of strings may arrive in.
    match reply.elements().as_slice() {
        [Some(b"message"), _, Some(payload)] => {
            let (db, key) = parse_message(payload)?;
            Some(LockId {
                server: server.to_owned(),
                db,
                key: key.to_vec(),
            })
        }
        _ => None,
    }
}

/// The subscriber thread: (re)connect, listen, dispatch, stop when idle.
fn run(cfg: Config, who: Identity) {
    // This thread outlives the interpreter: it must never attach to it.
    crate::logger::mark_background();
    let server = cfg.address();
    // Behind Sentinel: each switch of primary heard moves the listener.
    let watch = failover_watch::watch(&cfg);
    let epoch = || watch.as_ref().map(|w| w.epoch());
    let mut lost: Option<Config> = None;
    let mut backoff = Duration::from_millis(10);
    let mut warned = false;
    loop {
        let subscribed_in = epoch();
        let targets = targets(&who, &cfg, lost.take().as_ref());
        match subscribe_any(targets, &mut lost) {
            Ok((mut conn, on)) => {
                backoff = Duration::from_millis(10);
                warned = false;
                log::debug!(target: LOG, "listening for lock releases on {server} at {}", on.address());
                // A release may have gone unheard while we were not subscribed.
                notify_server(&server);
                loop {
                    if epoch() != subscribed_in {
                        log::debug!(target: LOG, "lock release listener on {server}: the primary switched; moving");
                        break;
                    }
                    match conn.next_unasked(TICK) {
                        Ok(Some(reply)) => {
                            if let Some(id) = released_lock(&server, &reply) {
                                notify(&id);
                            }
                        }
                        Ok(None) => {
                            if should_stop(&who) {
                                return;
                            }
                        }
                        Err(e) => {
                            log::debug!(target: LOG, "lock release listener on {server} lost its connection to {}: {e}", on.address());
                            lost = Some(on);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    log::debug!(target: LOG, "lock release listener cannot subscribe on {server}: {e}; waiters poll meanwhile");
                }
            }
        }
        if should_stop(&who) {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::resp::read_reply;

    #[test]
    fn pushed_messages_are_read_in_either_reply_shape() {
        let id = |db| LockId {
            server: "h:1".into(),
            db,
            key: b"redlock:k".to_vec(),
        };
        let wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$11\r\n2:redlock:k\r\n";
        let parsed = read_reply(&mut &wire[..]).unwrap();
        assert_eq!(released_lock("h:1", &parsed), Some(id(2)));
        let array = Reply::Array(vec![
            Reply::Bulk(b"message".to_vec()),
            Reply::Bulk(CHANNEL.into()),
            Reply::Bulk(message(0, b"redlock:k")),
        ]);
        assert_eq!(released_lock("h:1", &array), Some(id(0)));
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
        let parsed = read_reply(&mut &confirm[..]).unwrap();
        assert_eq!(released_lock("h:1", &parsed), None);
    }

    #[test]
    fn messages_name_the_database_and_the_key() {
        let m = message(3, b"redlock:a:b");
        assert_eq!(m, b"3:redlock:a:b");
        assert_eq!(parse_message(&m), Some((3, &b"redlock:a:b"[..])));
        assert_eq!(parse_message(b"x:k"), None);
        assert_eq!(parse_message(b"nocolon"), None);
    }
}
