//! Replies: their shapes, and reading them. Replies are RESP2; a
//! client-side-cache connection (`client_cache.rs`) speaks RESP3, whose
//! extra types are read into the same `Reply` shapes RESP2 gives (a map is
//! a flat array, `_` is nil, `#t` is 1 as Lua's `true` is in RESP2), plus
//! out-of-band `Push` messages.
//!
//! A reply is untrusted input: a broken or hostile server
//! must not be able to abort, panic or overflow the stack of the process
//! that reads it, nor make it allocate memory for bytes it never sends.
//!
//! So lengths are checked against the server's own limits before anything
//! is done with them, a string's buffer grows only as its bytes arrive,
//! and aggregates are read with an explicit stack whose depth is bounded
//! (a deep `Reply` would also overflow the stack when dropped, which is
//! recursive). Whatever is wrong with a reply is a `protocol_error`.

use std::fmt;
use std::io::{self, BufRead};

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
                        let item = data.get(start..end);
                        start = end;
                        item
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

/// The longest string a server sends: Valkey's and Redis's default
/// `proto-max-bulk-len`.
pub const MAX_BULK: usize = 512 << 20;
/// More elements than any key can hold (2^32 - 1): only a broken server
/// announces more.
pub const MAX_ELEMENTS: usize = u32::MAX as usize;
/// Our deepest real reply is a push holding an array (depth 2); this leaves
/// room for any script's table while staying far below what reading or
/// dropping the reply could do to a 256 KiB thread stack.
pub const MAX_DEPTH: usize = 128;
/// Simple lines (status, error, number) are short; the longest real one is
/// a script's error message.
pub const MAX_LINE: usize = 1 << 20;
/// A string's first reservation; it then doubles as its bytes arrive.
const FIRST_CHUNK: usize = 64 << 10;

/// The payload of a `protocol_error`, so callers can tell a malformed reply
/// from other `InvalidData` (a TLS failure, which is a broken connection).
#[derive(Debug)]
struct Malformed(String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

pub fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Malformed(what.to_owned()))
}

/// Whether `e` says the reply was malformed (not that the socket failed).
pub fn is_protocol_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Malformed>())
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}

/// Wait until the reader has bytes (std's read loops retry `Interrupted`
/// too; `interrupt.rs` signals with another kind).
fn fill<R: BufRead>(r: &mut R) -> io::Result<&[u8]> {
    loop {
        match r.fill_buf() {
            Ok([]) => return Err(closed()),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Buffered now: this returns the same bytes without reading.
    r.fill_buf()
}

/// One line without its CRLF. A server that closes mid-line closed the
/// connection (not a malformed reply): it is the same failure as a reset.
fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    loop {
        let buf = fill(r)?;
        let (take, done) = match buf.iter().position(|&c| c == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len().saturating_add(take) > MAX_LINE {
            return Err(protocol_error("a line longer than 1 MiB"));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            break;
        }
    }
    match line.strip_suffix(b"\r\n") {
        Some(text) => {
            let len = text.len();
            line.truncate(len);
            Ok(())
        }
        None => Err(protocol_error("a line that does not end in CRLF")),
    }
}

fn parse_int(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error("a malformed integer"))
}

/// A string's announced length: `None` for RESP2's null (`-1`, where
/// `nullable`); any other negative length, or one beyond the server's own
/// limit, is malformed.
fn length(digits: &[u8], nullable: bool) -> io::Result<Option<usize>> {
    let n = parse_int(digits)?;
    if n == -1 && nullable {
        return Ok(None);
    }
    match usize::try_from(n) {
        Ok(len) if len <= MAX_BULK => Ok(Some(len)),
        Ok(_) => Err(protocol_error(&format!(
            "a string of {n} bytes, beyond the server's 512 MiB limit"
        ))),
        Err(_) => Err(protocol_error(&format!("a negative length ({n})"))),
    }
}

/// An aggregate's element count (`per` elements per announced entry: 2 for
/// a map), checked as `length` is.
fn count(digits: &[u8], nullable: bool, per: usize) -> io::Result<Option<usize>> {
    let n = parse_int(digits)?;
    if n == -1 && nullable {
        return Ok(None);
    }
    match usize::try_from(n).map(|n| n.checked_mul(per)) {
        Ok(Some(len)) if len <= MAX_ELEMENTS => Ok(Some(len)),
        Ok(_) => Err(protocol_error(&format!(
            "an aggregate of {n} entries, more than a key can hold"
        ))),
        Err(_) => Err(protocol_error(&format!("a negative count ({n})"))),
    }
}

/// Append a string's `len` bytes (plus its CRLF, checked and dropped) to
/// `out`, straight from the reader's buffer. Room is made as bytes arrive,
/// doubling, and a string that starts the buffer never gets more room than
/// its end: an announced length alone reserves nothing beyond one chunk.
fn read_bulk_into<R: BufRead>(r: &mut R, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    let end = start
        .checked_add(len)
        .filter(|&end| end < usize::MAX - 2)
        .ok_or_else(|| protocol_error("more data than memory can address"))?;
    let mut remaining = len + 2;
    while remaining > 0 {
        let buf = fill(r)?;
        let n = buf.len().min(remaining);
        if out.capacity() - out.len() < n {
            let doubled = out.capacity().saturating_mul(2).max(FIRST_CHUNK);
            let target = if start == 0 {
                doubled.min(end + 2)
            } else {
                doubled
            };
            out.reserve_exact(target.max(out.len() + n) - out.len());
        }
        out.extend_from_slice(&buf[..n]);
        r.consume(n);
        remaining -= n;
    }
    if !out.ends_with(b"\r\n") {
        return Err(protocol_error("a string that does not end in CRLF"));
    }
    out.truncate(end);
    Ok(())
}

/// What an aggregate becomes once complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Array,
    Push,
    /// RESP3 attributes describe the reply that follows; nothing we send
    /// asks for them, so they are read and dropped.
    Attribute,
}

/// A reply's first line, understood.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    Value(Reply),
    /// A string of this length follows.
    Bulk(usize),
    /// A RESP3 verbatim string (`=`), or a blob error (`!`).
    Blob {
        len: usize,
        error: bool,
    },
    /// An aggregate of this many elements follows (never 0).
    Open(Shape, usize),
    /// An empty attribute: the reply it describes follows.
    Nothing,
}

fn header(line: &[u8]) -> io::Result<Header> {
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| protocol_error("an empty line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    let aggregate = |shape, n: Option<usize>| match n {
        None => Header::Value(Reply::Nil),
        Some(0) if shape == Shape::Attribute => Header::Nothing,
        Some(0) if shape == Shape::Push => Header::Value(Reply::Push(Vec::new())),
        Some(0) => Header::Value(Reply::Bulks {
            data: Vec::new(),
            ends: Vec::new(),
        }),
        Some(n) => Header::Open(shape, n),
    };
    Ok(match kind {
        b'+' => Header::Value(Reply::Status(text())),
        b'-' => Header::Value(Reply::Error(text())),
        b':' => Header::Value(Reply::Int(parse_int(rest)?)),
        b'$' => match length(rest, true)? {
            Some(len) => Header::Bulk(len),
            None => Header::Value(Reply::Nil),
        },
        b'*' | b'~' => aggregate(Shape::Array, count(rest, true, 1)?),
        // RESP3. A map reads as the flat array RESP2 gives for HGETALL.
        b'%' => aggregate(Shape::Array, count(rest, false, 2)?),
        b'>' => aggregate(Shape::Push, count(rest, false, 1)?),
        b'|' => aggregate(Shape::Attribute, count(rest, false, 2)?),
        b'_' if rest.is_empty() => Header::Value(Reply::Nil),
        b'_' => return Err(protocol_error("a malformed null")),
        // As Lua's booleans reach a RESP2 client: true is 1, false is nil.
        b'#' => match rest {
            b"t" => Header::Value(Reply::Int(1)),
            b"f" => Header::Value(Reply::Nil),
            _ => return Err(protocol_error("a malformed boolean")),
        },
        b',' | b'(' => Header::Value(Reply::Bulk(rest.to_vec())),
        b'=' | b'!' => Header::Blob {
            len: length(rest, false)?.unwrap_or(0),
            error: kind == b'!',
        },
        _ => {
            return Err(protocol_error(&format!(
                "an unknown reply type (first byte {kind:#04x})"
            )))
        }
    })
}

/// An aggregate's elements: end to end in one buffer while every one is a
/// string (`Reply::Bulks`), as replies otherwise.
enum Items {
    Flat { data: Vec<u8>, ends: Vec<usize> },
    Mixed(Vec<Reply>),
    Dropped,
}

/// Strings stored end to end, as one reply each.
fn spelled_out(data: Vec<u8>, ends: Vec<usize>) -> Vec<Reply> {
    Reply::Bulks { data, ends }
        .elements()
        .into_iter()
        .map(|b| Reply::Bulk(b.unwrap_or_default().to_vec()))
        .collect()
}

/// An aggregate being read.
struct Frame {
    shape: Shape,
    left: usize,
    items: Items,
}

impl Frame {
    fn new(shape: Shape, len: usize) -> Frame {
        // Room for what is announced only as far as a small reply needs:
        // the count alone must not buy memory.
        let room = len.min(1024);
        let items = match shape {
            Shape::Array => Items::Flat {
                data: Vec::new(),
                ends: Vec::with_capacity(room),
            },
            Shape::Push => Items::Mixed(Vec::with_capacity(room)),
            Shape::Attribute => Items::Dropped,
        };
        Frame {
            shape,
            left: len,
            items,
        }
    }

    fn push(&mut self, item: Reply) {
        match &mut self.items {
            Items::Flat { data, ends } => {
                let mut items = spelled_out(std::mem::take(data), std::mem::take(ends));
                items.push(item);
                self.items = Items::Mixed(items);
            }
            Items::Mixed(items) => items.push(item),
            Items::Dropped => {}
        }
    }

    /// The finished reply; `None` for an attribute.
    fn finish(self) -> Option<Reply> {
        match (self.shape, self.items) {
            (Shape::Attribute, _) | (_, Items::Dropped) => None,
            (Shape::Push, Items::Mixed(items)) => Some(Reply::Push(items)),
            (Shape::Push, Items::Flat { data, ends }) => Some(Reply::Push(spelled_out(data, ends))),
            (Shape::Array, Items::Mixed(items)) => Some(Reply::Array(items)),
            (Shape::Array, Items::Flat { data, ends }) => Some(Reply::Bulks { data, ends }),
        }
    }
}

/// Read one complete reply.
pub fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    let mut line = Vec::with_capacity(32);
    let mut open: Vec<Frame> = Vec::new();
    loop {
        read_line(r, &mut line)?;
        let arrived = match header(&line)? {
            Header::Value(reply) => Some(reply),
            Header::Nothing => continue,
            Header::Open(shape, len) => {
                if open.len() >= MAX_DEPTH {
                    return Err(protocol_error("a reply nested more than 128 deep"));
                }
                open.push(Frame::new(shape, len));
                continue;
            }
            Header::Bulk(len) => match open.last_mut() {
                // Straight into the array's one buffer.
                Some(Frame {
                    items: Items::Flat { data, ends },
                    ..
                }) => {
                    read_bulk_into(r, len, data)?;
                    ends.push(data.len());
                    None
                }
                _ => {
                    let mut data = Vec::new();
                    read_bulk_into(r, len, &mut data)?;
                    Some(Reply::Bulk(data))
                }
            },
            Header::Blob { len, error } => {
                let mut data = Vec::new();
                read_bulk_into(r, len, &mut data)?;
                Some(if error {
                    Reply::Error(String::from_utf8_lossy(&data).into_owned())
                } else {
                    // Verbatim text starts with its format, e.g. `txt:`.
                    Reply::Bulk(data.get(4..).unwrap_or_default().to_vec())
                })
            }
        };
        if let Some(reply) = deliver(&mut open, arrived) {
            return Ok(reply);
        }
    }
}

/// Give an element that arrived (`None`: already stored in the innermost
/// aggregate) to the innermost open aggregate, closing every aggregate it
/// completes. The reply once nothing is open; `None` while more must be
/// read (including after an attribute, whose described reply follows).
fn deliver(open: &mut Vec<Frame>, mut arrived: Option<Reply>) -> Option<Reply> {
    loop {
        let Some(top) = open.last_mut() else {
            return arrived;
        };
        if let Some(item) = arrived.take() {
            top.push(item);
        }
        top.left = top.left.saturating_sub(1);
        if top.left > 0 {
            return None;
        }
        arrived = Some(open.pop()?.finish()?);
    }
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
