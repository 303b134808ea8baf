//! Python's float `repr` layout, as `json.dumps` writes floats.
//!
//! Python prints the shortest digit string that round-trips (David Gay's
//! mode 0), choosing among equally short candidates the one nearest the exact
//! value, and on an exact tie the one with an even last digit. `ryu` gives the
//! same shortest, nearest digits, but its tie-breaking is not Python's
//! (`70368744177664.625` must print `...62`), so exact ties are resolved here
//! from the float's exact decimal value. Then only the layout differs: Python
//! uses exponent form when the decimal point sits outside `(-4, 16]`, pads the
//! exponent to two digits and signs it.

use std::io::Write as _;

/// Append the JSON text `json.dumps` gives for `value` (allow_nan=True).
pub fn write_json_float(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    // Inside Python's fixed-notation window ryu lays digits out exactly as
    // Python does ("0.0001", "21.5", "100.0"); 15 digits or fewer cannot be a
    // tie (see `break_tie_to_even`). That is most floats, copied as they are.
    let magnitude = value.abs();
    if text.len() <= 16 && (magnitude == 0.0 || (1e-4..1e16).contains(&magnitude)) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let mut decimal = Decimal::parse(text);
    decimal.break_tie_to_even(value);
    if value.is_sign_negative() {
        out.push(b'-');
    }
    layout_repr(out, decimal.digits(), decimal.decpt);
}

/// `0.<digits> * 10**decpt`, with no leading or trailing zero digits
/// (zero itself is the single digit `0`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    buf: [u8; 40],
    count: usize,
    decpt: i32,
}

impl Decimal {
    fn digits(&self) -> &[u8] {
        &self.buf[..self.count]
    }

    /// Read `ryu`'s output ("-1.5e-7", "123.45", "0.001", "1e16"); the sign
    /// is ignored.
    fn parse(text: &str) -> Decimal {
        let text = text.trim_start_matches('-').as_bytes();
        let (mantissa, exp10) = match text.iter().position(|&b| b == b'e') {
            Some(at) => (&text[..at], parse_exponent(&text[at + 1..])),
            None => (text, 0),
        };
        let int_len = mantissa
            .iter()
            .position(|&b| b == b'.')
            .unwrap_or(mantissa.len());
        let mut d = Decimal {
            buf: [0; 40],
            count: 0,
            decpt: int_len as i32 + exp10,
        };
        for &b in mantissa.iter().filter(|&&b| b != b'.') {
            if d.count == 0 && b == b'0' {
                d.decpt -= 1;
            } else {
                d.buf[d.count] = b;
                d.count += 1;
            }
        }
        while d.count > 0 && d.buf[d.count - 1] == b'0' {
            d.count -= 1;
        }
        if d.count == 0 {
            d.buf[0] = b'0';
            d.count = 1;
            d.decpt = 1;
        }
        d
    }

    /// From an exact integer `n * 10**exp10`.
    fn from_integer(n: u128, exp10: i32) -> Decimal {
        let mut text = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        write!(cursor, "{n}e{exp10}").expect("64 bytes hold a u128 and an exponent");
        let len = cursor.position() as usize;
        Decimal::parse(std::str::from_utf8(&text[..len]).expect("ASCII"))
    }

    /// The significant digits as an integer (at most 17 of them here).
    fn as_integer(&self) -> u128 {
        self.digits()
            .iter()
            .fold(0, |n, &d| n * 10 + u128::from(d - b'0'))
    }

    fn round_trips_to(&self, value: f64) -> bool {
        let mut text = Vec::with_capacity(48);
        text.extend_from_slice(b"0.");
        text.extend_from_slice(self.digits());
        write!(text, "e{}", self.decpt).expect("writing to a Vec cannot fail");
        std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            == Some(value.abs())
    }

    /// If `value` lies exactly halfway between two shortest candidates, pick
    /// the even one, as Python does (when it round-trips).
    fn break_tie_to_even(&mut self, value: f64) {
        // With at most 15 digits, a candidate half a unit away is further
        // than half an ulp (2**-53 relative) from the value, so it could not
        // round-trip: only 16- and 17-digit outputs can be ties.
        if self.count < 16 {
            return;
        }
        let Some((exact_n, exact_exp)) = exact_value(value) else {
            return;
        };
        let exact = Decimal::from_integer(exact_n, exact_exp);
        let n = self.count;
        if exact.count != n + 1 || exact.digits()[n] != b'5' {
            return;
        }
        let mine = self.as_integer();
        if mine % 2 == 0 {
            return;
        }
        let below = exact.as_integer() / 10;
        let other = if mine == below { below + 1 } else { below };
        // Both candidates have n digits ending at the same place as `exact`'s
        // n-th digit.
        let candidate = Decimal::from_integer(other, exact.decpt - n as i32);
        if candidate.round_trips_to(value) {
            *self = candidate;
        }
    }
}

/// `|value|` as an exact `n * 10**exp10`, when that fits in a `u128` and a
/// tie is possible at all.
///
/// `m * 2**e` (m odd) with `e < -26` has more than 18 significant digits
/// (at least `0.699 * -e`), more than any shortest candidate plus one, so it
/// can never be a tie; for `-26 <= e < 0`, `m * 5**-e` fits in a `u128`.
/// Integers beyond `2**75` are rare enough to skip, and `ryu` already rounds
/// those the way the tests check.
fn exact_value(value: f64) -> Option<(u128, i32)> {
    let bits = value.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    if mantissa == 0 {
        return None;
    }
    let shift = mantissa.trailing_zeros();
    let (m, e) = (u128::from(mantissa >> shift), exponent + shift as i32);
    match e {
        -26..=-1 => Some((m * 5u128.pow(e.unsigned_abs()), e)),
        0..=74 => Some((m << e, 0)),
        _ => None,
    }
}

fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let magnitude = digits
        .iter()
        .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// Lay out `0.<digits> * 10**decpt` the way `float.__repr__` does.
fn layout_repr(out: &mut Vec<u8>, digits: &[u8], decpt: i32) {
    let n = digits.len() as i32;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
            out.extend_from_slice(digits);
        } else if decpt < n {
            out.extend_from_slice(&digits[..decpt as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[decpt as usize..]);
        } else {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', (decpt - n) as usize));
            out.extend_from_slice(b".0");
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let exp = decpt - 1;
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            out.push(b'0');
        }
        write!(out, "{magnitude}").expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::{write_json_float, Decimal};

    fn repr(v: f64) -> String {
        let mut out = Vec::new();
        write_json_float(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fixed_notation_window() {
        assert_eq!(repr(0.0), "0.0");
        assert_eq!(repr(-0.0), "-0.0");
        assert_eq!(repr(1.0), "1.0");
        assert_eq!(repr(0.1), "0.1");
        assert_eq!(repr(1.5), "1.5");
        assert_eq!(repr(-2.25), "-2.25");
        assert_eq!(repr(123.456), "123.456");
        assert_eq!(repr(0.0001), "0.0001");
        assert_eq!(repr(0.00012), "0.00012");
        assert_eq!(repr(1e15), "1000000000000000.0");
        assert_eq!(repr(1234567890123456.8), "1234567890123456.8");
        assert_eq!(repr(9007199254740993.0), "9007199254740992.0");
    }

    #[test]
    fn exponent_notation_outside_window() {
        assert_eq!(repr(1e-5), "1e-05");
        assert_eq!(repr(1.5e-5), "1.5e-05");
        assert_eq!(repr(1e16), "1e+16");
        assert_eq!(repr(1.2345678901234568e17), "1.2345678901234568e+17");
        assert_eq!(repr(1e100), "1e+100");
        assert_eq!(repr(-1e-100), "-1e-100");
        assert_eq!(repr(5e-324), "5e-324");
        assert_eq!(repr(f64::MAX), "1.7976931348623157e+308");
        assert_eq!(repr(f64::MIN_POSITIVE), "2.2250738585072014e-308");
    }

    #[test]
    fn shortest_round_trip_digits() {
        assert_eq!(repr(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(repr(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(repr(2.0 / 3.0), "0.6666666666666666");
        assert_eq!(repr(100.0), "100.0");
    }

    #[test]
    // The literals are the exact binary values, halfway between two candidates.
    #[allow(clippy::excessive_precision)]
    fn equally_short_candidates_tie_to_even_like_python() {
        // Exactly halfway between ...62 and ...63: Python prints the even one.
        assert_eq!(repr(70368744177664.625), "70368744177664.62");
        assert_eq!(repr(70368744177664.875), "70368744177664.88");
        assert_eq!(repr(-70368744177664.625), "-70368744177664.62");
    }

    #[test]
    fn non_finite_values_use_json_spelling() {
        assert_eq!(repr(f64::NAN), "NaN");
        assert_eq!(repr(-f64::NAN), "NaN");
        assert_eq!(repr(f64::INFINITY), "Infinity");
        assert_eq!(repr(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn ryu_output_is_read_as_a_normalised_decimal() {
        let d = Decimal::parse("0.00123");
        assert_eq!((d.digits(), d.decpt), (&b"123"[..], -2));
        let d = Decimal::parse("1.5e-7");
        assert_eq!((d.digits(), d.decpt), (&b"15"[..], -6));
        let d = Decimal::parse("100.0");
        assert_eq!((d.digits(), d.decpt), (&b"1"[..], 3));
        let d = Decimal::parse("-0.0");
        assert_eq!((d.digits(), d.decpt), (&b"0"[..], 1));
        let d = Decimal::parse("1e16");
        assert_eq!((d.digits(), d.decpt), (&b"1"[..], 17));
    }

    #[test]
    fn every_output_parses_back_to_the_same_bits() {
        // A cheap deterministic sweep over bit patterns (xorshift).
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f64::from_bits(state);
            if !v.is_finite() {
                continue;
            }
            let text = repr(v);
            let back: f64 = text.parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{text}");
        }
    }
}
