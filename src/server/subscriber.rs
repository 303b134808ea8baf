//! Hearing releases made by our other processes: one subscriber connection
//! per process and server, started when a lock wait begins, stopped a little
//! after the last wait ends, started again in a forked child.
//!
//! Our release script publishes `<db>:<lock key>` on `CHANNEL` in the same
//! round trip that deletes the key, so a waiter in another process is woken
//! while the releaser is still reading its reply. pottery does not publish;
//! its releases are found by the waiters' bounded poll (`handoff::poll`).
//!
//! Its own small socket code rather than `connection::Conn`: a subscribed
//! connection only reads, and must wait for input with a timeout without
//! ever cutting a reply in half (`poll(2)` before each read).

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::sync::Mutex;

use crate::connection::fork::PerProcess;

use super::handoff::{notify, notify_server, LockId};
use crate::connection::config::{Addr, Config};
use crate::connection::resp::{read_reply, Cmd, Reply};
use crate::connection::spin::wait_readable;

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
    username: Option<String>,
    password: Option<String>,
}

struct Listener {
    waiters: usize,
    idle_since: Instant,
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

/// Make sure this process listens for releases on `cfg`'s server.
pub fn listen(cfg: &Config) -> Interest {
    let who = Identity {
        address: cfg.address(),
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
            return Interest { who };
        }
        all.insert(
            who.clone(),
            Listener {
                waiters: 0,
                idle_since: Instant::now(),
            },
        );
    }
    if let Some(l) = all.get_mut(&who) {
        l.waiters += 1;
    }
    Interest { who }
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

enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(t),
            Socket::Unix(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open(cfg: &Config) -> io::Result<Socket> {
    let timeout = cfg.connect_timeout.unwrap_or(READ_TIMEOUT);
    Ok(match &cfg.addr {
        Addr::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host did not resolve"))?;
            let s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_nodelay(true)?;
            Socket::Tcp(s)
        }
        Addr::Unix(path) => Socket::Unix(UnixStream::connect(path)?),
    })
}

fn subscribe(cfg: &Config) -> io::Result<BufReader<Socket>> {
    let socket = open(cfg)?;
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut cmds = Vec::new();
    if let Some(password) = &cfg.password {
        let mut auth = Cmd::new("AUTH");
        if let Some(user) = &cfg.username {
            auth.push(user.as_bytes());
        }
        auth.push(password.as_bytes());
        cmds.push(auth);
    }
    cmds.push(
        Cmd::new("CLIENT")
            .arg("SETNAME")
            .arg("madsci_cache_rs-lock-listener"),
    );
    cmds.push(Cmd::new("SUBSCRIBE").arg(CHANNEL));
    let mut out = Vec::new();
    cmds.iter().for_each(|c| c.write_to(&mut out));
    let mut reader = BufReader::new(socket);
    reader.get_mut().write_all(&out)?;
    for cmd in &cmds {
        if let Reply::Error(e) = read_reply(&mut reader)? {
            return Err(io::Error::other(format!("{} refused: {e}", cmd.name())));
        }
    }
    Ok(reader)
}

/// Wait up to `TICK` for input; `true` when a reply can be read.
fn readable(reader: &BufReader<Socket>) -> io::Result<bool> {
    if !reader.buffer().is_empty() {
        return Ok(true);
    }
    wait_readable(reader.get_ref().fd(), TICK)
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
    let server = cfg.address();
    let mut backoff = Duration::from_millis(10);
    let mut warned = false;
    loop {
        match subscribe(&cfg) {
            Ok(mut reader) => {
                backoff = Duration::from_millis(10);
                warned = false;
                log::debug!(target: LOG, "listening for lock releases on {server}");
                // A release may have gone unheard while we were not subscribed.
                notify_server(&server);
                loop {
                    match readable(&reader)
                        .and_then(|ready| ready.then(|| read_reply(&mut reader)).transpose())
                    {
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
                            log::debug!(target: LOG, "lock release listener on {server} lost its connection: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) if !warned => {
                warned = true;
                log::debug!(target: LOG, "lock release listener cannot subscribe on {server}: {e}; waiters poll meanwhile");
            }
            Err(_) => {}
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
