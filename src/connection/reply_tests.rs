use std::io::{self, BufRead, Read};

use proptest::prelude::*;

use super::*;

fn parse(bytes: &[u8]) -> io::Result<Reply> {
    read_reply(&mut &bytes[..])
}

fn malformed(bytes: &[u8]) -> bool {
    matches!(parse(bytes), Err(e) if is_protocol_error(&e))
}

#[test]
fn parses_replies() {
    assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
    assert_eq!(parse(b":-7\r\n").unwrap(), Reply::Int(-7));
    assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Nil);
    assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Nil);
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
    // An attribute inside an aggregate takes no place in it.
    assert_eq!(
        parse(b"*2\r\n|1\r\n+a\r\n:1\r\n:5\r\n|0\r\n:6\r\n").unwrap(),
        Reply::Array(vec![Reply::Int(5), Reply::Int(6)])
    );
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
fn truncated_input_is_a_closed_connection() {
    for cut in [&b""[..], b"$5\r\nab", b"+OK", b"+OK\r", b"*2\r\n:1\r\n"] {
        let e = parse(cut).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{cut:?}");
    }
}

#[test]
fn lengths_beyond_the_servers_limits_are_malformed() {
    assert!(malformed(b"$68719476736\r\n"));
    assert!(malformed(b"$9223372036854775807\r\n"));
    assert!(malformed(b"$99999999999999999999999\r\n"));
    assert!(malformed(b"$536870913\r\n"));
    assert!(malformed(b"=68719476736\r\n"));
    assert!(malformed(b"*9223372036854775807\r\n"));
    assert!(malformed(b"*4294967296\r\n"));
    assert!(malformed(b"%4611686018427387904\r\n"));
    assert!(malformed(b"%2147483648\r\n"));
    assert!(malformed(b">9223372036854775807\r\n"));
    assert!(malformed(b"|9223372036854775807\r\n"));
    // The limit itself is allowed: the server really sends that much.
    assert_eq!(
        parse(b"$536870912\r\n").unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

#[test]
fn negative_lengths_other_than_null_are_malformed() {
    for bytes in [
        &b"$-2\r\n"[..],
        b"$-9223372036854775808\r\n",
        b"*-2\r\n",
        b"%-1\r\n",
        b">-1\r\n",
        b"|-1\r\n",
        b"=-1\r\n",
        b"!-1\r\n",
    ] {
        assert!(malformed(bytes), "{bytes:?}");
    }
}

#[test]
fn malformed_lines_are_errors() {
    for bytes in [
        &b"?x\r\n"[..],
        b"\r\n",
        b":\r\n",
        b":12a\r\n",
        b"$\r\n",
        b"$ 1\r\n",
        b"#x\r\n",
        b"_x\r\n",
        b"+OK\n",
        b"$1\r\nab\r\n",
    ] {
        assert!(malformed(bytes), "{bytes:?}");
    }
}

#[test]
fn an_endless_line_is_malformed_at_the_bound() {
    let mut bytes = vec![b'+'; MAX_LINE + 10];
    bytes.extend_from_slice(b"\r\n");
    assert!(malformed(&bytes));
    let mut fits = vec![b'+'; MAX_LINE - 2];
    fits.extend_from_slice(b"\r\n");
    assert!(parse(&fits).is_ok());
}

/// `depth` arrays of one element each, around one integer.
fn nested(depth: usize) -> Vec<u8> {
    let mut bytes = b"*1\r\n".repeat(depth);
    bytes.extend_from_slice(b":1\r\n");
    bytes
}

/// Run `f` on a thread with a small stack, as a Python thread may have.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn nesting_is_bounded_without_recursion() {
    on_small_stack(|| {
        assert!(malformed(&nested(300_000)));
        assert!(malformed(&nested(MAX_DEPTH + 1)));
        // The deepest allowed reply is read and dropped on a small stack too.
        let mut deepest = parse(&nested(MAX_DEPTH)).unwrap();
        for _ in 0..MAX_DEPTH {
            deepest = match deepest {
                Reply::Array(mut items) => items.pop().unwrap(),
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(deepest, Reply::Int(1));
    });
}

#[test]
fn an_announced_length_buys_no_memory() {
    // 512 MiB announced, 100 bytes sent.
    let mut r = &[b'x'; 100][..];
    let mut out = Vec::new();
    assert!(read_bulk_into(&mut r, MAX_BULK, &mut out).is_err());
    assert!(out.capacity() <= FIRST_CHUNK, "{}", out.capacity());
    // A string that arrives whole ends in a buffer of its own size.
    let len = 3 * FIRST_CHUNK + 5;
    let mut bytes = vec![b'y'; len];
    bytes.extend_from_slice(b"\r\n");
    let mut out = Vec::new();
    let mut r = io::BufReader::with_capacity(4096, &bytes[..]);
    read_bulk_into(&mut r, len, &mut out).unwrap();
    assert_eq!(out.len(), len);
    assert_eq!(out.capacity(), len + 2);
    // As does an announced aggregate count.
    let e = parse(b"*4294967295\r\n:1\r\n").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_malformed_reply_is_told_from_other_invalid_data() {
    assert!(is_protocol_error(&protocol_error("x")));
    assert!(protocol_error("x")
        .to_string()
        .starts_with("protocol error: "));
    let tls = io::Error::new(io::ErrorKind::InvalidData, "bad record mac");
    assert!(!is_protocol_error(&tls));
}

// Property tests: any input, and any way it arrives, reads without a panic.

/// Printable text without CR or LF, for status and error lines.
fn line_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(0x20u8..0x7f, 0..12)
        .prop_map(|b| String::from_utf8(b).expect("ASCII"))
}

/// Replies as they are sent: `Array` of strings is not yet `Bulks`.
fn sent_reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        Just(Reply::Nil),
        any::<i64>().prop_map(Reply::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Reply::Bulk),
        line_text().prop_map(Reply::Status),
        line_text().prop_map(Reply::Error),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Array),
            proptest::collection::vec(inner, 0..4).prop_map(Reply::Push),
        ]
    })
}

fn encode(reply: &Reply, out: &mut Vec<u8>) {
    let head = |out: &mut Vec<u8>, kind: u8, n: usize| {
        out.push(kind);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    match reply {
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(b) => {
            head(out, b'$', b.len());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Reply::Array(items) | Reply::Push(items) => {
            let kind = if matches!(reply, Reply::Push(_)) {
                b'>'
            } else {
                b'*'
            };
            head(out, kind, items.len());
            items.iter().for_each(|item| encode(item, out));
        }
        Reply::Bulks { .. } => {
            let items = reply.elements();
            head(out, b'*', items.len());
            for item in items {
                encode(&Reply::Bulk(item.unwrap_or_default().to_vec()), out);
            }
        }
    }
}

/// What the reader gives for `reply`: an array of strings only, `Bulks`.
fn as_read(reply: Reply) -> Reply {
    match reply {
        Reply::Array(items) if items.iter().all(|i| matches!(i, Reply::Bulk(_))) => {
            let mut data = Vec::new();
            let mut ends = Vec::new();
            for item in items {
                if let Reply::Bulk(b) = item {
                    data.extend_from_slice(&b);
                    ends.push(data.len());
                }
            }
            Reply::Bulks { data, ends }
        }
        Reply::Array(items) => Reply::Array(items.into_iter().map(as_read).collect()),
        Reply::Push(items) => Reply::Push(items.into_iter().map(as_read).collect()),
        other => other,
    }
}

/// A source that hands out its bytes in pieces cut at `cuts`.
struct Pieces {
    bytes: Vec<u8>,
    at: usize,
    cuts: Vec<usize>,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let next = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > self.at)
            .unwrap_or(self.bytes.len())
            .min(self.bytes.len());
        let n = (next - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Tokens of the grammar, so random input reaches past the first byte.
const TOKENS: &[&[u8]] = &[
    b"*",
    b"$",
    b"%",
    b">",
    b"|",
    b"~",
    b"_",
    b"#",
    b",",
    b"=",
    b"!",
    b"+",
    b"-",
    b":",
    b"0",
    b"1",
    b"3",
    b"-1",
    b"-2",
    b"t",
    b"\r\n",
    b"\n",
    b"9223372036854775807",
    b"536870912",
];

fn resp_noise() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..40)
        .prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_replies_round_trip(reply in sent_reply()) {
        let mut bytes = Vec::new();
        encode(&reply, &mut bytes);
        let mut r = &bytes[..];
        prop_assert_eq!(read_reply(&mut r).unwrap(), as_read(reply));
        prop_assert!(r.is_empty(), "bytes left over");
    }

    #[test]
    fn any_split_reads_the_same(
        reply in sent_reply(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        capacity in 1usize..64,
    ) {
        let mut bytes = Vec::new();
        encode(&reply, &mut bytes);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut r = io::BufReader::with_capacity(capacity, Pieces { bytes, at: 0, cuts });
        prop_assert_eq!(read_reply(&mut r).unwrap(), as_read(reply));
        prop_assert!(r.fill_buf().unwrap().is_empty(), "bytes left over");
    }

    #[test]
    fn a_cut_reply_is_a_closed_connection(reply in sent_reply(), cut in any::<usize>()) {
        let mut bytes = Vec::new();
        encode(&reply, &mut bytes);
        bytes.truncate(cut % bytes.len());
        let e = parse(&bytes).unwrap_err();
        prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn grammar_noise_never_panics(bytes in resp_noise()) {
        let _ = parse(&bytes);
    }

    #[test]
    fn a_corrupted_reply_never_panics(
        reply in sent_reply(),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = Vec::new();
        encode(&reply, &mut bytes);
        let at = at % bytes.len();
        bytes[at] = byte;
        let _ = parse(&bytes);
    }
}
