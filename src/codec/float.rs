//! Python's float `repr` layout, as `json.dumps` writes floats.
//!
//! Python prints the shortest digit string that round-trips (David Gay's
//! mode 0). Rust's `{:e}` formatting produces the same shortest, closest digits
//! (Grisu with a Dragon4 fallback), so only the layout differs: Python switches
//! to exponent form when the decimal point sits outside `(-4, 16]`, pads the
//! exponent to two digits and always shows a sign on it.

use std::io::Write;

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
    // Longest `{:e}` output is 24 bytes ("-2.2250738585072014e-308").
    let mut sci = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut sci[..]);
    write!(cursor, "{value:e}").expect("32 bytes hold any f64 in {:e}");
    let len = cursor.position() as usize;
    let text = &sci[..len];

    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let e_at = text
        .iter()
        .position(|&b| b == b'e')
        .expect("{:e} has an exponent");
    let exponent = parse_exponent(&text[e_at + 1..]);
    let mut digits = [0u8; 24];
    let mut n = 0;
    for &b in &text[..e_at] {
        if b != b'.' {
            digits[n] = b;
            n += 1;
        }
    }
    if negative {
        out.push(b'-');
    }
    layout_repr(out, &digits[..n], exponent + 1);
}

fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
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
    use super::write_json_float;

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
    fn non_finite_values_use_json_spelling() {
        assert_eq!(repr(f64::NAN), "NaN");
        assert_eq!(repr(-f64::NAN), "NaN");
        assert_eq!(repr(f64::INFINITY), "Infinity");
        assert_eq!(repr(f64::NEG_INFINITY), "-Infinity");
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
