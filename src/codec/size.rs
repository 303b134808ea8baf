//! What the objects a decode produces take in memory, roughly as
//! `sys.getsizeof` reports them on CPython 3.11 (the object, its GC header
//! and a container's own storage), rounded up to the allocator's 16-byte
//! granularity.
//!
//! Why: the decode memo is bounded by what it keeps alive, and a document's
//! objects take 20 to 40 times its text (`[{}, {}, ...]` far more), so the
//! text length is no measure of it. Only layouts are known here, no Python.

/// The allocator rounds every block up to this.
const ALIGN: usize = 16;
/// `sys.getsizeof(0.5)`.
pub const FLOAT: usize = 24;

fn rounded(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN) * ALIGN
}

/// A dict of `len` entries built by inserting them one by one (or copied
/// from one). `str_keys`: all keys are `str`, whose entries leave the
/// hash out.
pub fn dict(len: usize, str_keys: bool) -> usize {
    // The object with its GC header; an empty dict shares a static table.
    const OBJECT: usize = 64;
    const KEYS_HEADER: usize = 32;
    if len == 0 {
        return OBJECT;
    }
    let mut slots = 8usize;
    while slots * 2 / 3 < len {
        slots *= 2;
    }
    let index_width = match slots.trailing_zeros() {
        0..=7 => 1,
        8..=15 => 2,
        16..=31 => 4,
        _ => 8,
    };
    let entry = if str_keys { 16 } else { 24 };
    OBJECT + rounded(KEYS_HEADER + slots * index_width + slots * 2 / 3 * entry)
}

/// A list of exactly `len` items (a slice copy allocates no spare room).
pub fn list(len: usize) -> usize {
    rounded(56) + rounded(8 * len)
}

/// A `str` of `len` code points, each `width` bytes (1, 2 or 4); `ascii`
/// strings have the smaller header.
pub fn str(len: usize, width: usize, ascii: bool) -> usize {
    let header = match (ascii, width) {
        (true, _) => 49,
        (false, 1) => 73,
        (false, 2) => 74,
        _ => 76,
    };
    rounded(header + len * width)
}

/// An `int` whose magnitude takes `bits` bits (30 to a digit).
pub fn int(bits: u32) -> usize {
    rounded(24 + 4 * (bits as usize).div_ceil(30).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sys.getsizeof` on CPython 3.11, before rounding to 16 (a list's
    /// items are a block of their own, rounded on their own).
    #[test]
    fn sizes_follow_getsizeof() {
        let cases = [
            (dict(0, true), 64),
            (dict(1, true), 184),
            (dict(5, true), 184),
            (dict(6, true), 272),
            (dict(11, true), 464),
            (dict(100, true), 3328),
            (dict(5, false), 224),
            (list(0), 56),
            (list(3), 56 + 24 + 8),
            (str(0, 1, true), 49),
            (str(1, 1, false), 74),
            (str(1, 2, false), 76),
            (str(1, 4, false), 80),
            (int(1), 28),
            (int(41), 32),
        ];
        for (ours, getsizeof) in cases {
            assert_eq!(ours, rounded(getsizeof), "getsizeof {getsizeof}");
        }
    }
}
