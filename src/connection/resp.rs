//! RESP framing: packing commands and reading replies. Replies are RESP2;
//! a client-side-cache connection (`client_cache.rs`) speaks RESP3, whose
//! extra types are read into the same `Reply` shapes RESP2 gives (a map is
//! a flat array, `_` is nil, `#t` is 1 as Lua's `true` is in RESP2), plus
//! out-of-band `Push` messages.
//!
//! Written by hand (rather than through the `redis` crate's connection) so
//! the connection layer knows exactly when a command's bytes left, can check
//! a pooled socket for liveness without sending anything, and owns its
//! socket options (`TCP_NODELAY`).

use std::io::{self, BufRead};

use super::retry::{is_read, Resend};

/// One reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    /// The server said no (`-ERR ...`); the connection stays usable.
    Error(String),
    Array(Vec<Reply>),
    /// An array of bulk strings (HGETALL, LRANGE, ...), stored end to end
    /// in one buffer: one allocation instead of one per element.
    Bulks {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
    /// A RESP3 out-of-band message (`>`), e.g. a cache invalidation.
    Push(Vec<Reply>),
}

impl Reply {
    /// The elements of an array reply as byte strings (`None` for nil or
    /// for an element that is not a string); empty for anything else.
    pub fn elements(&self) -> Vec<Option<&[u8]>> {
        match self {
            Reply::Bulks { data, ends } => {
                let mut start = 0;
                ends.iter()
                    .map(|&end| {
                        let item = &data[start..end];
                        start = end;
                        Some(item)
                    })
                    .collect()
            }
            Reply::Array(items) => items
                .iter()
                .map(|item| match item {
                    Reply::Bulk(b) => Some(b.as_slice()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A command packed in RESP form, built while the caller still holds the
/// GIL (values are encoded up front) and sent later without it.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    buf: Vec<u8>,
    args: usize,
    /// The command's name, for error messages.
    name: &'static str,
    /// A script known to change nothing (see `Script::read_only`).
    read_only: bool,
    /// Whether these bytes may be sent again after a lost reply (`retry`).
    resend: Resend,
    /// For a write sent in its once-form (`once.rs`): the plain command it
    /// stands for, which a client-side cache reads to update its copy.
    origin: Option<Box<Cmd>>,
}

impl Cmd {
    /// A command; reads are marked safe to send again.
    pub fn new(name: &'static str) -> Cmd {
        let mut cmd = Cmd {
            buf: Vec::with_capacity(64),
            args: 0,
            name,
            read_only: false,
            resend: if is_read(name) {
                Resend::Read
            } else {
                Resend::Never
            },
            origin: None,
        };
        cmd.push(name.as_bytes());
        cmd
    }

    pub fn resend(&self) -> Resend {
        self.resend
    }

    /// Mark what a re-send of these bytes would do (`retry::Resend`).
    pub fn with_resend(mut self, resend: Resend) -> Cmd {
        self.resend = resend;
        self
    }

    /// The once-form of `origin` (see `once.rs`).
    pub fn standing_for(mut self, origin: Cmd) -> Cmd {
        self.origin = Some(Box::new(origin));
        self
    }

    /// Move the plain command this once-form stands for to its resend by
    /// source (`EVAL` after `NOSCRIPT`), without copying it.
    pub fn take_origin(&mut self) -> Option<Cmd> {
        self.origin.take().map(|b| *b)
    }

    /// The plain command a once-form stands for, or the command itself.
    pub fn origin(&self) -> &Cmd {
        self.origin.as_deref().unwrap_or(self)
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl AsRef<[u8]>) -> Cmd {
        self.push(arg.as_ref());
        self
    }

    pub fn push(&mut self, arg: &[u8]) {
        self.buf.push(b'$');
        self.buf.extend_from_slice(arg.len().to_string().as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(arg);
        self.buf.extend_from_slice(b"\r\n");
        self.args += 1;
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn read_only(mut self, read_only: bool) -> Cmd {
        self.read_only = read_only;
        self
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The arguments after the name, as packed.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.buf[..];
        std::iter::from_fn(move || {
            let digits = rest.get(1..)?;
            let len_end = digits.iter().position(|&c| c == b'\r')?;
            let len: usize = std::str::from_utf8(&digits[..len_end]).ok()?.parse().ok()?;
            let start = 1 + len_end + 2;
            let arg = rest.get(start..start + len)?;
            rest = rest.get(start + len + 2..)?;
            Some(arg)
        })
        .skip(1)
    }

    /// The wire bytes: `*N\r\n` then the arguments.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(self.args.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.buf);
    }
}

pub fn protocol_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("protocol error: {what}"),
    )
}

fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    r.read_until(b'\n', line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol_error("truncated line"));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

fn parse_int(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error("bad integer"))
}

/// Append a bulk string's `len` bytes to `out` straight from the reader's
/// buffer (no zero-filling, no probing reads), then check and drop its CRLF.
fn read_bulk_into<R: BufRead>(r: &mut R, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    let mut remaining = len + 2;
    out.reserve(remaining);
    while remaining > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let n = buf.len().min(remaining);
        out.extend_from_slice(&buf[..n]);
        r.consume(n);
        remaining -= n;
    }
    if !out.ends_with(b"\r\n") {
        return Err(protocol_error("bulk string without CRLF"));
    }
    out.truncate(start + len);
    Ok(())
}

/// An array: flat while every element is a bulk string, general otherwise.
fn read_array<R: BufRead>(r: &mut R, line: &mut Vec<u8>, len: usize) -> io::Result<Reply> {
    let mut data = Vec::new();
    let mut ends = Vec::with_capacity(len.min(1 << 16));
    for i in 0..len {
        read_line(r, line)?;
        if let Some(rest) = line.strip_prefix(b"$") {
            let n = parse_int(rest)?;
            if n >= 0 {
                read_bulk_into(r, n as usize, &mut data)?;
                ends.push(data.len());
                continue;
            }
        }
        // Not a plain string: spell out what was read so far, continue generally.
        let mut items = Reply::Bulks { data, ends }
            .elements()
            .into_iter()
            .map(|b| Reply::Bulk(b.unwrap_or_default().to_vec()))
            .collect::<Vec<_>>();
        items.push(read_after_header(r, line)?);
        for _ in i + 1..len {
            items.push(read_one(r, line)?);
        }
        return Ok(Reply::Array(items));
    }
    Ok(Reply::Bulks { data, ends })
}

/// Read one complete reply. Nesting is bounded by the server (our scripts
/// return flat arrays), so recursion is fine.
pub fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    let mut line = Vec::with_capacity(32);
    read_one(r, &mut line)
}

fn read_one<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Reply> {
    read_line(r, line)?;
    read_after_header(r, line)
}

/// The rest of a reply whose first line is in `line`.
fn read_after_header<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Reply> {
    let (&kind, rest) = line.split_first().ok_or_else(|| protocol_error("empty"))?;
    match kind {
        b'+' => Ok(Reply::Status(String::from_utf8_lossy(rest).into_owned())),
        b'-' => Ok(Reply::Error(String::from_utf8_lossy(rest).into_owned())),
        b':' => Ok(Reply::Int(parse_int(rest)?)),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut data = Vec::with_capacity(len as usize + 2);
            read_bulk_into(r, len as usize, &mut data)?;
            Ok(Reply::Bulk(data))
        }
        b'*' | b'~' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            read_array(r, line, len as usize)
        }
        // RESP3. A map reads as the flat array RESP2 gives for HGETALL.
        b'%' => {
            let len = parse_int(rest)?;
            read_array(r, line, 2 * len.max(0) as usize)
        }
        b'>' => {
            let len = parse_int(rest)?;
            Ok(Reply::Push(into_items(read_array(
                r,
                line,
                len.max(0) as usize,
            )?)))
        }
        b'_' => Ok(Reply::Nil),
        // As Lua's booleans reach a RESP2 client: true is 1, false is nil.
        b'#' => Ok(if rest == b"t" {
            Reply::Int(1)
        } else {
            Reply::Nil
        }),
        b',' | b'(' => Ok(Reply::Bulk(rest.to_vec())),
        b'=' | b'!' => {
            let len = parse_int(rest)?;
            let mut data = Vec::with_capacity(len.max(0) as usize + 2);
            read_bulk_into(r, len.max(0) as usize, &mut data)?;
            Ok(if kind == b'!' {
                Reply::Error(String::from_utf8_lossy(&data).into_owned())
            } else {
                // Verbatim text starts with its format, e.g. `txt:`.
                Reply::Bulk(data.get(4..).unwrap_or_default().to_vec())
            })
        }
        // Attributes describe the reply that follows; nothing we send asks for them.
        b'|' => {
            let len = parse_int(rest)?;
            read_array(r, line, 2 * len.max(0) as usize)?;
            read_one(r, line)
        }
        _ => Err(protocol_error("unknown reply type")),
    }
}

fn into_items(reply: Reply) -> Vec<Reply> {
    match reply {
        Reply::Array(items) => items,
        bulks => bulks
            .elements()
            .into_iter()
            .map(|b| Reply::Bulk(b.unwrap_or_default().to_vec()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut &bytes[..])
    }

    #[test]
    fn packs_commands() {
        let mut out = Vec::new();
        Cmd::new("SET").arg("k").arg(b"v\r\n").write_to(&mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }

    #[test]
    fn lists_arguments() {
        let cmd = Cmd::new("HSET").arg("k").arg(b"a\r\nb").arg("");
        let args: Vec<&[u8]> = cmd.args().collect();
        assert_eq!(args, [&b"k"[..], &b"a\r\nb"[..], &b""[..]]);
        assert_eq!(Cmd::new("PING").args().count(), 0);
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse(b":-7\r\n").unwrap(), Reply::Int(-7));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Reply::Bulk(vec![]));
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n$-1\r\n").unwrap(),
            Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Nil])
        );
        let flat = parse(b"*3\r\n$1\r\na\r\n$0\r\n\r\n$2\r\nbc\r\n").unwrap();
        assert!(matches!(flat, Reply::Bulks { .. }));
        assert_eq!(
            flat.elements(),
            [Some(&b"a"[..]), Some(&b""[..]), Some(&b"bc"[..])]
        );
        let mixed = parse(b"*3\r\n$1\r\na\r\n:5\r\n$1\r\nb\r\n").unwrap();
        assert_eq!(
            mixed,
            Reply::Array(vec![
                Reply::Bulk(b"a".to_vec()),
                Reply::Int(5),
                Reply::Bulk(b"b".to_vec())
            ])
        );
        assert_eq!(
            parse(b"*0\r\n").unwrap().elements(),
            Vec::<Option<&[u8]>>::new()
        );
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Reply::Error("ERR no".into())
        );
    }

    #[test]
    fn parses_resp3_as_resp2_shapes() {
        assert_eq!(parse(b"_\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b"#t\r\n").unwrap(), Reply::Int(1));
        assert_eq!(parse(b"#f\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b",1.5\r\n").unwrap(), Reply::Bulk(b"1.5".to_vec()));
        assert_eq!(
            parse(b"=8\r\ntxt:abcd\r\n").unwrap(),
            Reply::Bulk(b"abcd".to_vec())
        );
        assert_eq!(
            parse(b"!5\r\nERR x\r\n").unwrap(),
            Reply::Error("ERR x".into())
        );
        let map = parse(b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n").unwrap();
        assert_eq!(
            map.elements(),
            [
                Some(&b"a"[..]),
                Some(&b"1"[..]),
                Some(&b"b"[..]),
                Some(&b"2"[..])
            ]
        );
        assert_eq!(
            parse(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n").unwrap(),
            Reply::Push(vec![
                Reply::Bulk(b"invalidate".to_vec()),
                Reply::Bulks {
                    data: b"k".to_vec(),
                    ends: vec![1]
                }
            ])
        );
        assert_eq!(
            parse(b">2\r\n$10\r\ninvalidate\r\n_\r\n").unwrap(),
            Reply::Push(vec![Reply::Bulk(b"invalidate".to_vec()), Reply::Nil])
        );
        assert_eq!(parse(b"|1\r\n+a\r\n:1\r\n:7\r\n").unwrap(), Reply::Int(7));
    }

    #[test]
    fn bulk_strings_across_buffer_refills() {
        let bytes = b"$10\r\n0123456789\r\n";
        let mut r = io::BufReader::with_capacity(3, &bytes[..]);
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(b"0123456789".to_vec())
        );
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert_eq!(parse(b"").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(parse(b"$5\r\nab").is_err());
        assert!(parse(b"+OK").is_err());
    }
}
