//! RESP2 framing: packing commands and reading replies.
//!
//! Written by hand (rather than through the `redis` crate's connection) so
//! the connection layer knows exactly when a command's bytes left, can check
//! a pooled socket for liveness without sending anything, and owns its
//! socket options (`TCP_NODELAY`).

use std::io::{self, BufRead, Read};

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
}

impl Cmd {
    pub fn new(name: &'static str) -> Cmd {
        let mut cmd = Cmd {
            buf: Vec::with_capacity(64),
            args: 0,
            name,
        };
        cmd.push(name.as_bytes());
        cmd
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

    /// The wire bytes: `*N\r\n` then the arguments.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(self.args.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.buf);
    }
}

fn protocol_error(what: &str) -> io::Error {
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

/// Append a bulk string's `len` bytes to `out` (no zero-filling), then
/// check and drop its CRLF.
fn read_bulk_into<R: BufRead>(r: &mut R, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    let want = len as u64 + 2;
    if Read::take(&mut *r, want).read_to_end(out)? as u64 != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
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
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            read_array(r, line, len as usize)
        }
        _ => Err(protocol_error("unknown reply type")),
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
    fn truncated_input_is_an_error() {
        assert_eq!(parse(b"").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(parse(b"$5\r\nab").is_err());
        assert!(parse(b"+OK").is_err());
    }
}
