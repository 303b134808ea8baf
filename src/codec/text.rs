//! Python `str` contents as code units, with `json`'s ASCII escaping and
//! Python's code-point ordering.
//!
//! CPython stores a `str` as 1, 2 or 4 bytes per code point. Reading that
//! storage directly avoids a UTF-8 round trip and keeps lone surrogates, which
//! `json` escapes as they are (`"\ud800"`) and which UTF-8 cannot carry.

use std::cmp::Ordering;

/// The code points of a Python `str`, borrowed from its storage.
#[derive(Clone, Copy, Debug)]
pub enum CodeUnits<'a> {
    Latin1(&'a [u8]),
    Ucs2(&'a [u16]),
    Ucs4(&'a [u32]),
}

impl CodeUnits<'_> {
    /// Compare by code point, as Python compares two `str`s.
    pub fn cmp_code_points(&self, other: &Self) -> Ordering {
        match (self, other) {
            (CodeUnits::Latin1(a), CodeUnits::Latin1(b)) => a.cmp(b),
            (CodeUnits::Ucs2(a), CodeUnits::Ucs2(b)) => a.cmp(b),
            (CodeUnits::Ucs4(a), CodeUnits::Ucs4(b)) => a.cmp(b),
            _ => self.code_points().cmp(other.code_points()),
        }
    }

    fn code_points(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            CodeUnits::Latin1(s) => Box::new(s.iter().map(|&c| u32::from(c))),
            CodeUnits::Ucs2(s) => Box::new(s.iter().map(|&c| u32::from(c))),
            CodeUnits::Ucs4(s) => Box::new(s.iter().copied()),
        }
    }

    /// Append `"…"` with `json.dumps`' default escaping (`ensure_ascii=True`).
    pub fn write_json_string(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        match self {
            // Most keys and values are plain ASCII: copy them in one go.
            CodeUnits::Latin1(s) if s.iter().all(|&c| is_plain(u32::from(c))) => {
                out.extend_from_slice(s)
            }
            CodeUnits::Latin1(s) => write_escaped(out, s),
            CodeUnits::Ucs2(s) => write_escaped(out, s),
            CodeUnits::Ucs4(s) => write_escaped(out, s),
        }
        out.push(b'"');
    }
}

/// Printable ASCII that `json` leaves as it is.
#[inline]
fn is_plain(c: u32) -> bool {
    (0x20..=0x7e).contains(&c) && c != u32::from(b'"') && c != u32::from(b'\\')
}

fn write_escaped<T: Copy + Into<u32>>(out: &mut Vec<u8>, units: &[T]) {
    out.reserve(units.len() + 2);
    for &unit in units {
        let c: u32 = unit.into();
        if is_plain(c) {
            out.push(c as u8);
        } else {
            write_escape(out, c);
        }
    }
}

fn write_escape(out: &mut Vec<u8>, c: u32) {
    match c {
        0x22 => out.extend_from_slice(b"\\\""),
        0x5c => out.extend_from_slice(b"\\\\"),
        0x0a => out.extend_from_slice(b"\\n"),
        0x0d => out.extend_from_slice(b"\\r"),
        0x09 => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0x10000.. => {
            let v = c - 0x10000;
            write_u_escape(out, 0xd800 | (v >> 10));
            write_u_escape(out, 0xdc00 | (v & 0x3ff));
        }
        _ => write_u_escape(out, c),
    }
}

fn write_u_escape(out: &mut Vec<u8>, c: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(c >> 12) as usize & 0xf],
        HEX[(c >> 8) as usize & 0xf],
        HEX[(c >> 4) as usize & 0xf],
        HEX[c as usize & 0xf],
    ]);
}

/// Append code point `c` as UTF-8, allowing lone surrogates (the encoding
/// Python's `surrogatepass` error handler reads back).
pub fn push_wtf8(out: &mut Vec<u8>, c: u32) {
    match c {
        0..=0x7f => out.push(c as u8),
        0x80..=0x7ff => out.extend_from_slice(&[0xc0 | (c >> 6) as u8, 0x80 | (c & 0x3f) as u8]),
        0x800..=0xffff => out.extend_from_slice(&[
            0xe0 | (c >> 12) as u8,
            0x80 | ((c >> 6) & 0x3f) as u8,
            0x80 | (c & 0x3f) as u8,
        ]),
        _ => out.extend_from_slice(&[
            0xf0 | (c >> 18) as u8,
            0x80 | ((c >> 12) & 0x3f) as u8,
            0x80 | ((c >> 6) & 0x3f) as u8,
            0x80 | (c & 0x3f) as u8,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(units: CodeUnits<'_>) -> String {
        let mut out = Vec::new();
        units.write_json_string(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_ascii_is_copied() {
        assert_eq!(
            escaped(CodeUnits::Latin1(b"hello world")),
            "\"hello world\""
        );
        assert_eq!(escaped(CodeUnits::Latin1(b"")), "\"\"");
        assert_eq!(escaped(CodeUnits::Latin1(b"~ /")), "\"~ /\"");
    }

    #[test]
    fn short_escapes() {
        assert_eq!(
            escaped(CodeUnits::Latin1(b"a\"b\\c\nd\re\tf\x08g\x0ch")),
            r#""a\"b\\c\nd\re\tf\bg\fh""#
        );
    }

    #[test]
    fn control_characters_and_del_use_lowercase_u_escapes() {
        assert_eq!(
            escaped(CodeUnits::Latin1(b"\x00\x01\x1f\x7f")),
            r#""\u0000\u0001\u001f\u007f""#
        );
        assert_eq!(
            escaped(CodeUnits::Latin1(&[0xe9, 0xff])),
            r#""\u00e9\u00ff""#
        );
    }

    #[test]
    fn bmp_astral_and_lone_surrogates() {
        assert_eq!(
            escaped(CodeUnits::Ucs2(&[0x20ac, 0xabcd])),
            r#""\u20ac\uabcd""#
        );
        assert_eq!(
            escaped(CodeUnits::Ucs2(&[0xd800, 0x41, 0xdfff])),
            r#""\ud800A\udfff""#
        );
        assert_eq!(escaped(CodeUnits::Ucs4(&[0x1f600])), r#""\ud83d\ude00""#);
        assert_eq!(
            escaped(CodeUnits::Ucs4(&[0x10ffff, 0x61])),
            r#""\udbff\udfffa""#
        );
    }

    #[test]
    fn ordering_is_by_code_point_across_storage_kinds() {
        let a = CodeUnits::Latin1(b"ab");
        let b = CodeUnits::Ucs2(&[0x61, 0x20ac]);
        let c = CodeUnits::Ucs4(&[0x61, 0x1f600]);
        assert_eq!(a.cmp_code_points(&b), Ordering::Less);
        assert_eq!(b.cmp_code_points(&c), Ordering::Less);
        assert_eq!(c.cmp_code_points(&a), Ordering::Greater);
        assert_eq!(
            CodeUnits::Latin1(b"a").cmp_code_points(&CodeUnits::Ucs2(&[0x61])),
            Ordering::Equal
        );
        // A prefix sorts first, as in Python.
        assert_eq!(
            CodeUnits::Latin1(b"a").cmp_code_points(&CodeUnits::Latin1(b"ab")),
            Ordering::Less
        );
    }

    #[test]
    fn wtf8_matches_utf8_and_encodes_surrogates() {
        for c in ['a', 'é', '€', '😀'] {
            let mut out = Vec::new();
            push_wtf8(&mut out, c as u32);
            assert_eq!(out, c.to_string().into_bytes());
        }
        let mut out = Vec::new();
        push_wtf8(&mut out, 0xd800);
        assert_eq!(out, [0xed, 0xa0, 0x80]);
    }
}
