//! Recursion over nested documents on whatever stack the caller's thread
//! has: every few nesting levels make sure enough stack is left for the
//! next few, and continue on a fresh heap segment when it is not.
//!
//! Why: a thread started after `threading.stack_size(256 * 1024)` has a
//! fraction of the main thread's stack, and the depth the recursion limit
//! allows (CPython's own C parser copes with 1000 levels there) would
//! overflow it.

/// Checked every this many levels: a check costs a few nanoseconds, and
/// most documents are shallower than this, so they never pay it below the
/// top level.
const EVERY: usize = 8;
/// Left free at a check: `EVERY` levels' frames (a few KiB each in debug
/// builds, far less in release) plus whatever CPython runs at the deepest,
/// such as building a `JSONDecodeError` in Python code.
const RED_ZONE: usize = 128 * 1024;
/// Each new segment; about a thousand levels of frames.
const SEGMENT: usize = 2 * 1024 * 1024;

/// Run `f`, the nesting level at `depth`, with enough stack for it and
/// the levels below it up to the next check.
#[inline]
pub fn grow<R>(depth: usize, f: impl FnOnce() -> R) -> R {
    if depth % EVERY == 0 {
        stacker::maybe_grow(RED_ZONE, SEGMENT, f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::grow;

    fn depth(n: usize) -> usize {
        // A frame that cannot be optimised away, about 1 KiB.
        let pad = std::hint::black_box([0u8; 1024]);
        if n == 0 {
            return pad[0] as usize;
        }
        grow(n, || depth(n - 1)) + 1 + pad[1] as usize
    }

    #[test]
    fn deep_recursion_fits_a_small_thread() {
        let done = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| depth(20_000))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(done, 20_000);
    }
}
