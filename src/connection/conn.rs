//! One socket to the server: connect, authenticate, send, receive.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::config::{Addr, Config};
use super::interrupt;
use super::resp::{is_protocol_error, protocol_error, read_reply, Cmd, Reply};
use super::sentinel::{self, Sentinels};
use super::spin::{wait_readable, Spin};
use super::tls::server_name;

#[path = "handshake.rs"]
pub mod handshake;

pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.sock.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => tcp_timeouts(s, t),
            Stream::Tls(s) => tcp_timeouts(&s.sock, t),
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    /// Tell the server at once that we are done with this connection (no
    /// TLS close_notify: the connection is being abandoned).
    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Tls(s) => s.sock.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// A stream that spins briefly before a read that would block (`spin.rs`),
/// and, on a thread that runs signal handlers (`interrupt.rs`), waits in
/// slices so they run. TLS reads block at once: bytes on the socket may be
/// a record without data, so the socket being readable does not mean a
/// reply is (a TLS wait therefore runs handlers only at its timeout).
struct Socket {
    stream: Stream,
    spin: Spin,
    /// The socket's own read timeout, which a sliced wait must honour.
    read_timeout: Option<Duration>,
}

impl Socket {
    fn set_timeouts(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout = t;
        self.stream.set_timeouts(t)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !matches!(self.stream, Stream::Tls(_)) {
            self.spin.before_read(self.stream.fd());
            if interrupt::armed() {
                interrupt::wait_readable(self.stream.fd(), self.read_timeout)?;
            }
        }
        self.stream.read(buf)
    }
}

fn tcp_timeouts(s: &TcpStream, t: Option<Duration>) -> io::Result<()> {
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

/// TLS on a connected socket, the handshake completed here so that a
/// failure counts as "could not connect", never as a sent command.
fn start_tls(
    sock: TcpStream,
    host: &str,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let conn = ClientConnection::new(config.clone(), server_name(host)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The socket could not be made or broke during the handshake: no
    /// command of the caller's was sent, so trying again is safe.
    Io(io::Error),
    /// The server answered the handshake's `command` (AUTH, CLIENT,
    /// SELECT) with `error` (`handshake::refuses_credentials` tells a
    /// refused password or user).
    Rejected {
        command: &'static str,
        error: String,
    },
}

/// A write buffer's size to start with, and the most it keeps between
/// commands: a pooled connection must not pin one large command's buffer
/// until `close()`.
const OUT_START: usize = 256;
const OUT_KEPT: usize = 1 << 20;
/// A command whose arguments are larger than this is sent from its own
/// buffer, not copied into ours.
const SENT_IN_PLACE: usize = 64 << 10;

/// The generation of a connection whose reply could not be framed (nothing
/// after it can be): no process has it (a fork counter from 0 never gets
/// there), so every holder drops the connection as it drops a forked
/// parent's: the pool at check-in, the client-side cache at its next drain.
const RETIRED: u64 = u64::MAX;

pub struct Conn {
    reader: BufReader<Socket>,
    out: Vec<u8>,
    /// The process generation that opened it (see `fork.rs`): a forked
    /// child must not use its parent's sockets. `RETIRED` once broken.
    pub generation: u64,
}

fn connect_tcp(host: &str, port: u16, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host name did not resolve");
    for addr in (host, port).to_socket_addrs()? {
        let attempt = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A TCP (or TLS) stream to `host:port`, with `cfg`'s timeouts and TLS.
fn tcp_stream(cfg: &Config, host: &str, port: u16) -> io::Result<Stream> {
    let s = connect_tcp(host, port, cfg.connect_timeout)?;
    // The redis crate leaves Nagle on; a request/reply protocol with small
    // writes wants it off.
    s.set_nodelay(true)?;
    Ok(match &cfg.tls_config {
        Some(tls) => {
            tcp_timeouts(&s, cfg.connect_timeout)?;
            Stream::Tls(Box::new(start_tls(s, host, tls)?))
        }
        None => Stream::Tcp(s),
    })
}

/// Ask the sentinels in turn where the primary is. When none answers and
/// one refused our credentials, that refusal is the error (it is for good).
fn find_primary(cfg: &Config, sentinels: &Sentinels) -> Result<(String, u16), OpenError> {
    let mut why = Vec::new();
    let mut refused = None;
    for (host, port) in &sentinels.nodes {
        let ask = cfg.sentinel_node(sentinels, host, *port);
        let answer = Conn::open(&ask).and_then(|mut conn| {
            let reply = conn.request(&sentinels.query()).map_err(OpenError::Io)?;
            match reply {
                // A sentinel with a password of its own, none given: as a
                // refused password, for good.
                Reply::Error(error) if handshake::refuses_credentials(&error) => {
                    Err(OpenError::Rejected {
                        command: "SENTINEL",
                        error,
                    })
                }
                reply => Ok(sentinel::primary_from(&reply)),
            }
        });
        match answer {
            Ok(Ok(primary)) => return Ok(primary),
            Ok(Err(e)) => why.push(format!("{} {e}", ask.address())),
            Err(OpenError::Io(e)) => why.push(format!("{}: {e}", ask.address())),
            Err(rejected @ OpenError::Rejected { .. }) => {
                why.push(format!("{} refused our credentials", ask.address()));
                refused = Some(rejected);
            }
        }
    }
    if let Some(rejected) = refused {
        return Err(rejected);
    }
    Err(OpenError::Io(io::Error::other(format!(
        "no sentinel named the primary of {:?} ({})",
        sentinels.service,
        why.join("; ")
    ))))
}

/// A stream to the first of a cluster's `seeds` that takes a connection:
/// a lone connection (the lock listener's) may be on any node.
fn first_reachable(cfg: &Config, seeds: &[(String, u16)]) -> io::Result<Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the cluster URL names no node");
    for (host, port) in seeds {
        match tcp_stream(cfg, host, *port) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Conn {
    /// Connect and run the handshake (`handshake.rs`: AUTH, CLIENT SETNAME,
    /// SELECT, CLIENT SETINFO) in one round trip.
    pub fn open(cfg: &Config) -> Result<Conn, OpenError> {
        let stream = match &cfg.addr {
            Addr::Tcp { host, port } => tcp_stream(cfg, host, *port).map_err(OpenError::Io)?,
            Addr::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(OpenError::Io)?),
            Addr::Sentinel(sentinels) => {
                let (host, port) = find_primary(cfg, sentinels)?;
                tcp_stream(cfg, &host, port).map_err(OpenError::Io)?
            }
            Addr::Cluster(seeds) => first_reachable(cfg, seeds).map_err(OpenError::Io)?,
        };
        let mut socket = Socket {
            stream,
            spin: Spin::new(cfg.spin_wait()),
            read_timeout: None,
        };
        // The handshake is bounded by the connect timeout, commands by theirs.
        socket
            .set_timeouts(cfg.connect_timeout.or(cfg.command_timeout))
            .map_err(OpenError::Io)?;
        let mut conn = Conn {
            reader: BufReader::with_capacity(16 * 1024, socket),
            out: Vec::with_capacity(OUT_START),
            generation: super::fork::generation(),
        };
        let steps = handshake::steps(cfg);
        let check_role = matches!(cfg.addr, Addr::Sentinel(_));
        if !steps.is_empty() || check_role {
            let mut cmds: Vec<Cmd> = steps.iter().map(|(cmd, _)| cmd.clone()).collect();
            if check_role {
                cmds.push(Cmd::new("ROLE"));
            }
            let mut replies = conn.request_many(&cmds).map_err(OpenError::Io)?;
            let role = check_role.then(|| replies.pop()).flatten();
            if let Some((command, error)) = handshake::first_failure(&steps, replies) {
                return Err(OpenError::Rejected { command, error });
            }
            if role.is_some_and(|role| !sentinel::is_primary(&role)) {
                // Asked again on the next attempt: a failover is under way.
                return Err(OpenError::Io(io::Error::other(
                    "the node the sentinels named is not a primary (yet)",
                )));
            }
        }
        conn.reader
            .get_mut()
            .set_timeouts(cfg.command_timeout)
            .map_err(OpenError::Io)?;
        Ok(conn)
    }

    /// Whether an idle pooled connection can carry a command: nothing is
    /// buffered and the peer has not closed it (a restarted server closes
    /// every old socket). One non-blocking peek, nothing sent.
    pub fn is_reusable(&self) -> bool {
        self.reader.buffer().is_empty()
            && self.generation == super::fork::generation()
            && matches!(self.peek(), Ok(false))
    }

    /// Whether bytes are waiting on the socket, without waiting; an error
    /// when the peer closed it.
    fn peek(&self) -> io::Result<bool> {
        let mut byte = 0u8;
        // SAFETY: a valid fd we own and a one-byte buffer on our stack.
        let n = unsafe {
            libc::recv(
                self.reader.get_ref().stream.fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            n if n > 0 => Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// On a RESP3 connection: hand every push that has already arrived to
    /// `on_push`, without waiting for more. Anything else unasked for is a
    /// protocol error.
    ///
    /// On TLS only what has already been read is taken: bytes on the socket
    /// may be a TLS record without data (a session ticket), and reading it
    /// would wait. Pushes then arrive with the next reply instead.
    pub fn drain_pushes(&mut self, on_push: &mut dyn FnMut(Vec<Reply>)) -> io::Result<()> {
        if self.generation == RETIRED {
            return Err(protocol_error("an earlier reply was malformed"));
        }
        let tls = matches!(self.reader.get_ref().stream, Stream::Tls(_));
        while !self.reader.buffer().is_empty() || (self.peek()? && !tls) {
            match self.receive()? {
                Reply::Push(items) => on_push(items),
                _ => return Err(protocol_error("a reply nobody asked for")),
            }
        }
        Ok(())
    }

    /// The next reply the server sends unasked (a subscribed connection's
    /// messages), or `None` when none began within `timeout`. Only the wait
    /// for a reply's first byte is bounded by `timeout`; the rest of it
    /// falls under the socket's read timeout. So a short wait never leaves
    /// half a reply read and the rest unframeable.
    pub fn next_unasked(&mut self, timeout: Duration) -> io::Result<Option<Reply>> {
        if self.generation == RETIRED {
            return Err(protocol_error("an earlier reply was malformed"));
        }
        if self.reader.buffer().is_empty() && !self.input_within(timeout)? {
            return Ok(None);
        }
        self.receive().map(Some)
    }

    /// Wait up to `timeout` until a read will not block: bytes of a reply,
    /// or the peer's close, for the read to report. On TLS, readable
    /// bytes may be a record without data (a session ticket): it is
    /// taken in and the wait goes on.
    fn input_within(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let stream = &mut self.reader.get_mut().stream;
            if let Stream::Tls(tls) = stream {
                let state = tls
                    .conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                    return Ok(true);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !wait_readable(stream.fd(), left)? {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                continue;
            }
            let Stream::Tls(tls) = stream else {
                return Ok(true);
            };
            // Readable, so this one read of the socket does not block; at
            // its end (0) the next read reports the close.
            match tls.conn.read_tls(&mut tls.sock) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `request_many` on a RESP3 connection: pushes that arrive before or
    /// between the replies go to `on_push`, in order.
    pub fn request_many_with(
        &mut self,
        cmds: &[Cmd],
        on_push: &mut dyn FnMut(Vec<Reply>),
    ) -> io::Result<Vec<Reply>> {
        self.send_all(cmds)?;
        self.replies(cmds.len(), Some(on_push))
    }

    pub fn request(&mut self, cmd: &Cmd) -> io::Result<Reply> {
        self.send_all(std::slice::from_ref(cmd))?;
        let mut replies = self.replies(1, None)?;
        Ok(replies.pop().unwrap_or(Reply::Nil))
    }

    /// Several commands in one write, their replies in order.
    pub fn request_many(&mut self, cmds: &[Cmd]) -> io::Result<Vec<Reply>> {
        self.send_all(cmds)?;
        self.replies(cmds.len(), None)
    }

    fn send_all(&mut self, cmds: &[Cmd]) -> io::Result<()> {
        self.out.clear();
        let stream = &mut self.reader.get_mut().stream;
        for cmd in cmds {
            if cmd.body().len() > SENT_IN_PLACE {
                cmd.head_to(&mut self.out);
                stream.write_all(&self.out)?;
                self.out.clear();
                stream.write_all(cmd.body())?;
            } else {
                cmd.write_to(&mut self.out);
            }
        }
        stream.write_all(&self.out)?;
        if self.out.capacity() > OUT_KEPT {
            self.out = Vec::with_capacity(OUT_START);
        }
        stream.flush()
    }

    /// One reply; a malformed one retires the connection.
    fn receive(&mut self) -> io::Result<Reply> {
        let reply = read_reply(&mut self.reader);
        if let Err(e) = &reply {
            if is_protocol_error(e) {
                self.generation = RETIRED;
                self.reader.get_ref().stream.shutdown();
            }
        }
        reply
    }

    /// The replies to `count` commands, pushes handed to `on_push` when
    /// given. A malformed reply, and every reply owed after it, is a
    /// `Reply::Error` naming it: the server did answer, badly (a
    /// `CacheResponseError`), which is no outage to wait out.
    fn replies(
        &mut self,
        count: usize,
        mut on_push: Option<&mut dyn FnMut(Vec<Reply>)>,
    ) -> io::Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            match (self.receive(), on_push.as_mut()) {
                (Ok(Reply::Push(items)), Some(on_push)) => on_push(items),
                (Ok(reply), _) => replies.push(reply),
                (Err(e), _) if is_protocol_error(&e) => {
                    let error = format!("{e} (the connection was closed)");
                    replies.resize(count, Reply::Error(error));
                }
                (Err(e), _) => return Err(e),
            }
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A server for one connection: for each round, it reads that many
    /// commands and answers them all with its bytes; then it waits for the
    /// client to hang up.
    fn answering(rounds: Vec<(usize, Vec<u8>)>) -> Config {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            for (commands, reply) in rounds {
                for _ in 0..commands {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    let args: usize = line[1..].trim().parse().unwrap();
                    for _ in 0..args {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        let len: u64 = line[1..].trim().parse().unwrap();
                        io::copy(&mut (&mut r).take(len + 2), &mut io::sink()).unwrap();
                    }
                }
                r.get_mut().write_all(&reply).unwrap();
            }
            let _ = io::copy(&mut r, &mut io::sink());
        });
        Config::tcp("127.0.0.1", port)
    }

    fn open(cfg: &Config) -> Conn {
        match Conn::open(cfg) {
            Ok(conn) => conn,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn set(len: usize) -> Cmd {
        Cmd::new("SET").arg("k").arg(vec![b'x'; len])
    }

    #[test]
    fn a_batch_that_grew_the_write_buffer_leaves_it_small() {
        let batch: Vec<Cmd> = (0..40).map(|_| set(32 << 10)).collect();
        let mut conn = open(&answering(vec![
            (40, b"+OK\r\n".repeat(40)),
            (1, b"+OK\r\n".to_vec()),
        ]));
        let replies = conn.request_many(&batch).unwrap();
        assert!(replies.iter().all(|r| *r == Reply::Status("OK".into())));
        assert_eq!(conn.out.capacity(), OUT_START);
        // A large command is sent from its own buffer.
        assert_eq!(
            conn.request(&set(2 << 20)).unwrap(),
            Reply::Status("OK".into())
        );
        assert_eq!(conn.out.capacity(), OUT_START);
        assert!(conn.is_reusable());
    }

    /// A server that, once connected, sends `first`, pauses, sends `rest`.
    fn pushing(first: &'static [u8], pause: Duration, rest: &'static [u8]) -> Config {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            thread::sleep(pause);
            stream.write_all(first).unwrap();
            thread::sleep(pause);
            stream.write_all(rest).unwrap();
            let _ = io::copy(&mut stream, &mut io::sink());
        });
        Config::tcp("127.0.0.1", port)
    }

    #[test]
    fn a_wait_for_an_unasked_reply_never_cuts_one_in_half() {
        let pause = Duration::from_millis(300);
        let mut conn = open(&pushing(
            b"*3\r\n$7\r\nmessage\r\n$2\r",
            pause,
            b"\nch\r\n:1\r\n",
        ));
        let short = Duration::from_millis(50);
        // Nothing has begun: the wait ends empty.
        assert_eq!(conn.next_unasked(short).unwrap(), None);
        let mut got = None;
        while got.is_none() {
            got = conn.next_unasked(short).unwrap();
        }
        // Begun within the wait, finished after it: read whole.
        let whole = Reply::Array(vec![
            Reply::Bulk(b"message".to_vec()),
            Reply::Bulk(b"ch".to_vec()),
            Reply::Int(1),
        ]);
        assert_eq!(got, Some(whole));
        assert_eq!(conn.next_unasked(short).unwrap(), None);
    }

    #[test]
    fn a_malformed_unasked_reply_ends_the_connection() {
        let pause = Duration::from_millis(10);
        let mut conn = open(&pushing(b"$68719476736\r\n", pause, b"+OK\r\n"));
        let wait = Duration::from_secs(5);
        let e = conn.next_unasked(wait).unwrap_err();
        assert!(is_protocol_error(&e), "{e}");
        // Nothing after it can be framed: the well-formed reply is not read.
        assert!(conn.next_unasked(wait).is_err());
        assert!(!conn.is_reusable());
    }

    #[test]
    fn a_malformed_reply_breaks_the_connection_for_good() {
        let mut conn = open(&answering(vec![(2, b"$68719476736\r\n".to_vec())]));
        let replies = conn.request_many(&[set(1), set(1)]).unwrap();
        assert_eq!(replies.len(), 2);
        for reply in &replies {
            match reply {
                Reply::Error(e) => assert!(e.starts_with("protocol error: "), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(!conn.is_reusable());
        assert_ne!(conn.generation, crate::connection::fork::generation());
        assert!(conn.drain_pushes(&mut |_| {}).is_err());
    }
}
