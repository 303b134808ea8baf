//! Recursion over nested documents on whatever stack the caller's thread
//! has: each nesting level first makes sure enough stack is left, and
//! continues on a fresh heap segment when it is not.
//!
//! Why: a thread started after `threading.stack_size(256 * 1024)` has a
//! fraction of the main thread's stack, and the depth the recursion limit
//! allows (CPython's own C parser copes with 1000 levels there) would
//! overflow it.

/// Left free below every level: one level's frames (larger in debug
/// builds) plus whatever CPython runs inside it, such as building a
/// `JSONDecodeError` in Python code.
const RED_ZONE: usize = 128 * 1024;
/// Each new segment; about a thousand levels of frames.
const SEGMENT: usize = 2 * 1024 * 1024;

/// Run `f` (one nesting level) with at least `RED_ZONE` of stack left.
#[inline]
pub fn grow<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
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
        grow(|| depth(n - 1)) + 1 + pad[1] as usize
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
