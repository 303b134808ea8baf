//! pottery's rules for a lock held on several independent masters
//! (`Redlock(masters=…)`), free of Python and of any I/O so they are
//! unit-tested here; `server::lock_masters` asks every master and feeds
//! the answers in as they arrive.
//!
//! * Quorum: more than half the masters, `n // 2 + 1`.
//! * An acquire is granted once a quorum took our token and time is left on
//!   the lease: `auto_release_time − elapsed − drift > 0` (the drift as in
//!   `lease::LockLease::drift`). Otherwise it is refused as soon as that is
//!   certain, and every master that took the token is given it back.
//! * `release`/`extend` succeed when a quorum did it; `locked()` reports
//!   the smallest remaining lease among a quorum, less drift and elapsed.
//! * Errors count as "no"; with `raise_on_redis_errors`, more than half
//!   the masters failing raises instead of answering.

use std::time::Duration;

/// The number of masters that must agree: more than half.
pub fn quorum(masters: usize) -> usize {
    masters / 2 + 1
}

/// What one master said to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It did it (took the token, released, extended, holds our lease).
    Yes,
    /// It answered no (someone else holds the key; not ours).
    No,
    /// It could not be asked (down, timed out, refused the command).
    Failed,
}

/// The answers gathered so far from `masters` masters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    masters: usize,
    yes: usize,
    no: usize,
    failed: usize,
}

/// Where an acquire stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A quorum took our token in time; this much of the lease is left.
    Granted(Duration),
    /// Not decided: masters are still to answer.
    Pending,
    /// Cannot be granted: give the token back wherever it was taken.
    Refused,
}

impl Tally {
    pub fn new(masters: usize) -> Tally {
        Tally {
            masters,
            yes: 0,
            no: 0,
            failed: 0,
        }
    }

    pub fn add(&mut self, answer: Answer) {
        match answer {
            Answer::Yes => self.yes += 1,
            Answer::No => self.no += 1,
            Answer::Failed => self.failed += 1,
        }
    }

    pub fn yes(&self) -> usize {
        self.yes
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    fn pending(&self) -> usize {
        self.masters - self.yes - self.no - self.failed
    }

    /// A quorum said yes.
    pub fn reached(&self) -> bool {
        self.yes >= quorum(self.masters)
    }

    /// Even if every master still to answer says yes, no quorum.
    pub fn impossible(&self) -> bool {
        self.yes + self.pending() < quorum(self.masters)
    }

    /// The outcome is known: reached, or out of reach.
    pub fn decided(&self) -> bool {
        self.reached() || self.impossible()
    }

    /// pottery's `raise_on_redis_errors` rule: more than half the masters
    /// failed, so a quorum could not have been had whatever they held.
    pub fn too_many_failed(&self) -> bool {
        self.failed > self.masters / 2
    }

    /// An acquire `elapsed` after it began, on a lease of `lease` with
    /// `drift` allowed for clock drift.
    pub fn verdict(&self, lease: Duration, drift: Duration, elapsed: Duration) -> Verdict {
        if self.reached() {
            return match validity(lease, drift, elapsed) {
                Some(left) => Verdict::Granted(left),
                // Time only takes more off: later answers cannot help.
                None => Verdict::Refused,
            };
        }
        if self.impossible() {
            Verdict::Refused
        } else {
            Verdict::Pending
        }
    }
}

/// What is left of a lease of `lease` taken `elapsed` ago, less `drift`;
/// `None` when nothing is.
pub fn validity(lease: Duration, drift: Duration, elapsed: Duration) -> Option<Duration> {
    lease
        .checked_sub(drift)
        .and_then(|l| l.checked_sub(elapsed))
        .filter(|left| !left.is_zero())
}

/// `locked()`: the leases left on the masters that hold ours (`remaining`,
/// one per such master), asked `elapsed` ago in all. With a quorum of them,
/// the shortest less drift and elapsed, at least zero, in seconds; without,
/// `None` (pottery answers `0`).
pub fn locked_for(
    masters: usize,
    remaining: &[Duration],
    drift: Duration,
    elapsed: Duration,
) -> Option<f64> {
    if remaining.len() < quorum(masters) {
        return None;
    }
    let shortest = remaining.iter().min()?;
    Some(
        shortest
            .saturating_sub(drift)
            .saturating_sub(elapsed)
            .as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);
    const DRIFT: Duration = Duration::from_millis(102);

    fn tally(masters: usize, answers: &[Answer]) -> Tally {
        let mut t = Tally::new(masters);
        answers.iter().for_each(|a| t.add(*a));
        t
    }

    #[test]
    fn quorum_is_more_than_half() {
        assert_eq!(
            [1, 2, 3, 4, 5, 6].map(quorum),
            [1, 2, 2, 3, 3, 4],
            "n // 2 + 1"
        );
    }

    #[test]
    fn granted_as_soon_as_a_quorum_took_it_in_time() {
        use Answer::*;
        let ms = Duration::from_millis;
        assert_eq!(
            tally(3, &[Yes]).verdict(LEASE, DRIFT, ms(1)),
            Verdict::Pending
        );
        assert_eq!(
            tally(3, &[Yes, Yes]).verdict(LEASE, DRIFT, ms(1)),
            Verdict::Granted(LEASE - DRIFT - ms(1)),
            "the third master need not answer"
        );
        assert_eq!(
            tally(3, &[Yes, Failed, Yes]).verdict(LEASE, DRIFT, ms(1)),
            Verdict::Granted(LEASE - DRIFT - ms(1)),
            "one master down: still a quorum"
        );
        assert_eq!(
            tally(1, &[Yes]).verdict(LEASE, DRIFT, ms(1)),
            Verdict::Granted(LEASE - DRIFT - ms(1))
        );
    }

    #[test]
    fn refused_as_soon_as_a_quorum_is_out_of_reach() {
        use Answer::*;
        let ms = Duration::from_millis;
        // Two of three down: refused without waiting for the third.
        let t = tally(3, &[Failed, Failed]);
        assert!(t.impossible() && t.too_many_failed());
        assert_eq!(t.verdict(LEASE, DRIFT, ms(1)), Verdict::Refused);
        // A master holding the key for someone else counts against us.
        assert_eq!(
            tally(3, &[No, Yes]).verdict(LEASE, DRIFT, ms(1)),
            Verdict::Pending
        );
        let t = tally(3, &[No, Yes, No]);
        assert!(!t.too_many_failed(), "refusals are not errors");
        assert_eq!(t.verdict(LEASE, DRIFT, ms(1)), Verdict::Refused);
        // Four masters: two is not a quorum.
        assert_eq!(
            tally(4, &[Yes, Yes, No, Failed]).verdict(LEASE, DRIFT, ms(1)),
            Verdict::Refused
        );
    }

    #[test]
    fn a_quorum_reached_too_late_is_refused() {
        use Answer::*;
        let t = tally(3, &[Yes, Yes]);
        let slow = LEASE - DRIFT;
        assert_eq!(t.verdict(LEASE, DRIFT, slow), Verdict::Refused);
        assert_eq!(
            t.verdict(LEASE, DRIFT, slow - Duration::from_millis(1)),
            Verdict::Granted(Duration::from_millis(1))
        );
        assert_eq!(
            validity(Duration::from_millis(1), DRIFT, Duration::ZERO),
            None
        );
    }

    #[test]
    fn too_many_failed_is_more_than_half() {
        use Answer::*;
        assert!(!tally(3, &[Failed]).too_many_failed());
        assert!(tally(3, &[Failed, Failed]).too_many_failed());
        assert!(!tally(4, &[Failed, Failed]).too_many_failed());
        assert!(tally(1, &[Failed]).too_many_failed());
    }

    #[test]
    fn locked_reports_the_shortest_lease_of_a_quorum() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(locked_for(3, &[s(9)], DRIFT, ms(0)), None);
        let v = locked_for(3, &[s(9), s(8)], DRIFT, ms(10)).unwrap();
        assert!((v - (8.0 - 0.102 - 0.010)).abs() < 1e-9, "{v}");
        assert_eq!(locked_for(3, &[ms(50), s(8)], DRIFT, ms(0)), Some(0.0));
    }
}
