//! Random UUID4s for lock tokens and exactly-once write records.
//!
//! `uuid::Uuid::new_v4()` makes one `getrandom(2)` syscall per token: half a
//! microsecond here, which was a third of a strict-mode `acquire(); release()`.
//! The bytes still come from the OS's random source, 1 KiB per syscall,
//! kept per thread. Written here rather than with a user-space generator
//! (`uuid`'s `fast-rng`): `rand` 0.9's `ThreadRng` no longer reseeds after
//! `fork()`, and a child that repeated its parent's lock tokens could
//! release its parent's lock. So the buffer is thrown away in a forked
//! child (`fork::generation`), whose tokens are then drawn anew.

use std::cell::RefCell;

use crate::connection::fork;

/// Tokens drawn per syscall (16 bytes each).
const TOKENS_PER_DRAW: usize = 64;

struct Pool {
    generation: u64,
    bytes: [u8; 16 * TOKENS_PER_DRAW],
    /// Bytes of `bytes` already handed out.
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { generation: u64::MAX, bytes: [0; 16 * TOKENS_PER_DRAW], used: 16 * TOKENS_PER_DRAW })
    };
}

/// Sixteen bytes from the OS's random source none other has been given.
fn random_16() -> [u8; 16] {
    let generation = fork::generation();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.generation != generation || pool.used == pool.bytes.len() {
            // A failing OS random source leaves no safe token to give.
            getrandom::fill(&mut pool.bytes).expect("the OS random source failed");
            pool.generation = generation;
            pool.used = 0;
        }
        let at = pool.used;
        let mut out = [0; 16];
        out.copy_from_slice(&pool.bytes[at..at + 16]);
        // Handed-out bytes are not kept where a later reader could find them.
        pool.bytes[at..at + 16].fill(0);
        pool.used = at + 16;
        out
    })
}

/// A fresh random (version 4) UUID.
pub fn uuid4() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(random_16()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn uuids_are_version_4_and_never_repeat_across_refills() {
        let seen: HashSet<uuid::Uuid> = (0..TOKENS_PER_DRAW * 5).map(|_| uuid4()).collect();
        assert_eq!(seen.len(), TOKENS_PER_DRAW * 5);
        assert!(seen
            .iter()
            .all(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122));
    }

    #[test]
    fn threads_draw_their_own_bytes() {
        let here: Vec<_> = (0..8).map(|_| uuid4()).collect();
        let there: Vec<_> = std::thread::spawn(|| (0..8).map(|_| uuid4()).collect())
            .join()
            .unwrap();
        assert!(here.iter().all(|u| !there.contains(u)));
    }
}
