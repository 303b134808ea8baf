//! When a failed command may be sent again, and for how long. Pure Rust, no
//! I/O, so the rules that decide safety are unit-tested without a server.
//!
//! A lab's server restarts, stalls and fails over; madsci's engine makes
//! cache calls inside its own error handling, so one error at the wrong
//! moment ends it. Every call therefore waits for the server, up to a
//! `retry_window`, but only re-sends what cannot apply twice:
//! - a command that provably did not run (no connection; `LOADING` and the
//!   other "not now" answers of [`not_run`]): always;
//! - a command marked [`Resend::Read`] or [`Resend::Once`] whose reply was
//!   lost: reads change nothing, and `Once` writes carry a token the server
//!   remembers (`once.rs`), so a second arrival is answered, not applied;
//! - anything else whose reply was lost: never (the outcome is unknown).

use std::time::Duration;

/// What re-sending a command after its reply was lost would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resend {
    /// It might apply twice: never re-sent once it may have left.
    #[default]
    Never,
    /// It changes nothing (or, like a lock try by its token, leaves the same
    /// state and answer when repeated): re-sent freely.
    Read,
    /// A write made idempotent by a token (`once.rs`): re-sent with the same
    /// token; when the window runs out after it may have run, its outcome is
    /// unknown and the error says so.
    Once,
}

/// How far an attempt got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, reset, handshake broken): nothing was sent.
    NotConnected,
    /// The connection attempt ran out of time: nothing was sent.
    ConnectTimedOut,
    /// The server answered that it did not run the command (`not_run`).
    Refused,
    /// The command was (or may have been) written and no reply came.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Connection attempts made even when the window is spent (or zero):
    /// a server that is just coming back is ridden over at once.
    pub connect_attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long one call may keep trying, from its first attempt.
    pub window: Duration,
}

/// Rides a Valkey restart of 10 s (plus loading its append-only file) or a
/// stall of 10 s with the default 5 s reply timeout: attempts at 0, 5, 10
/// and 15 s all fit.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            connect_attempts: 3,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(500),
            window: DEFAULT_WINDOW,
        }
    }
}

impl RetryPolicy {
    /// A policy for calls that must answer at once (`ping()`): the quick
    /// connection attempts only, no window.
    pub fn without_window(self) -> RetryPolicy {
        RetryPolicy {
            window: Duration::ZERO,
            ..self
        }
    }

    fn backoff(&self, failed: u32) -> Duration {
        let doubling = failed.saturating_sub(1).min(16);
        (self.first_delay * (1u32 << doubling)).min(self.max_delay)
    }

    /// After `failed` attempts, the last of which failed with `failure`,
    /// `elapsed` after the first began: how long to wait before the next
    /// one, or `None` to give up and report.
    pub fn next_delay(
        &self,
        failure: Failure,
        resend: Resend,
        failed: u32,
        elapsed: Duration,
    ) -> Option<Duration> {
        if failure == Failure::Lost && resend == Resend::Never {
            return None;
        }
        let delay = self.backoff(failed);
        let quick = failure == Failure::NotConnected && failed < self.connect_attempts;
        (quick || elapsed + delay <= self.window).then_some(delay)
    }
}

/// A server error meaning "the command did not run; ask again later": the
/// server is loading its data, busy in a script, without its primary, in a
/// failover or resharding, or a replica that takes no writes (a failover
/// demoted it). Matched on the error's first word, as the server sends it.
pub fn not_run(error: &str) -> bool {
    let code = error.split_ascii_whitespace().next().unwrap_or("");
    matches!(
        code,
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY"
    )
}

/// A refusal saying the node we write to has been demoted to a replica
/// (a failover): the connections to it are of no more use for writes.
pub fn demoted(error: &str) -> bool {
    error.split_ascii_whitespace().next() == Some("READONLY")
}

/// Commands that only read (or, `PING`, touch nothing): re-sent freely.
pub fn is_read(name: &str) -> bool {
    matches!(
        name,
        "GET"
            | "HGET"
            | "HGETALL"
            | "HEXISTS"
            | "HLEN"
            | "HKEYS"
            | "HVALS"
            | "HMGET"
            | "LRANGE"
            | "LLEN"
            | "LINDEX"
            | "LPOS"
            | "EXISTS"
            | "TYPE"
            | "PTTL"
            | "TTL"
            | "PING"
    )
}

/// The plain writes the structures send, each with its key first: sent in
/// their once-form (`once.rs`), so a lost reply can be settled.
pub fn is_keyed_write(name: &str) -> bool {
    matches!(
        name,
        "SET"
            | "INCRBY"
            | "HSET"
            | "HDEL"
            | "HSETNX"
            | "LSET"
            | "RPUSH"
            | "LPUSH"
            | "RPOP"
            | "LPOP"
            | "LREM"
            | "DEL"
            | "UNLINK"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn a_lost_reply_is_never_resent_unless_the_command_allows_it() {
        let p = RetryPolicy::default();
        for failed in 1..5 {
            assert_eq!(
                p.next_delay(Failure::Lost, Resend::Never, failed, NOW),
                None
            );
            assert!(p
                .next_delay(Failure::Lost, Resend::Read, failed, NOW)
                .is_some());
            assert!(p
                .next_delay(Failure::Lost, Resend::Once, failed, NOW)
                .is_some());
        }
    }

    #[test]
    fn what_did_not_run_is_resent_whatever_the_command() {
        let p = RetryPolicy::default();
        for failure in [
            Failure::NotConnected,
            Failure::ConnectTimedOut,
            Failure::Refused,
        ] {
            assert!(p.next_delay(failure, Resend::Never, 1, NOW).is_some());
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        let d = |n| p.next_delay(Failure::Refused, Resend::Never, n, NOW);
        assert_eq!(d(1), Some(Duration::from_millis(10)));
        assert_eq!(d(2), Some(Duration::from_millis(20)));
        assert_eq!(d(3), Some(Duration::from_millis(40)));
        assert_eq!(d(40), Some(p.max_delay));
    }

    #[test]
    fn the_window_bounds_the_whole_call() {
        let p = RetryPolicy::default();
        let late = p.window - Duration::from_millis(5);
        assert_eq!(p.next_delay(Failure::Refused, Resend::Read, 9, late), None);
        assert_eq!(p.next_delay(Failure::Lost, Resend::Once, 9, p.window), None);
        assert!(p
            .next_delay(Failure::Lost, Resend::Read, 9, p.window / 2)
            .is_some());
    }

    #[test]
    fn without_a_window_only_the_quick_connection_attempts_remain() {
        let p = RetryPolicy::default().without_window();
        assert!(p
            .next_delay(Failure::NotConnected, Resend::Read, 1, NOW)
            .is_some());
        assert!(p
            .next_delay(Failure::NotConnected, Resend::Read, 2, NOW)
            .is_some());
        assert_eq!(
            p.next_delay(Failure::NotConnected, Resend::Read, 3, NOW),
            None
        );
        assert_eq!(
            p.next_delay(Failure::ConnectTimedOut, Resend::Read, 1, NOW),
            None
        );
        assert_eq!(p.next_delay(Failure::Refused, Resend::Read, 1, NOW), None);
        assert_eq!(p.next_delay(Failure::Lost, Resend::Read, 1, NOW), None);
    }

    #[test]
    fn quick_connection_attempts_hold_even_when_the_window_is_spent() {
        let p = RetryPolicy::default();
        let spent = p.window * 2;
        assert!(p
            .next_delay(Failure::NotConnected, Resend::Never, 1, spent)
            .is_some());
        assert_eq!(
            p.next_delay(Failure::NotConnected, Resend::Never, 3, spent),
            None
        );
    }

    #[test]
    fn not_run_answers_are_matched_by_their_code_only() {
        for e in [
            "LOADING Valkey is loading the dataset in memory",
            "BUSY Redis is busy running a script.",
            "MASTERDOWN Link with MASTER is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "READONLY You can't write against a read only replica.",
        ] {
            assert!(not_run(e), "{e}");
        }
        assert!(demoted(
            "READONLY You can't write against a read only replica."
        ));
        assert!(!demoted("LOADING Valkey is loading the dataset in memory"));
        for e in [
            "BUSYKEY Target key name already exists.",
            "ERR value is not an integer or out of range",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOSCRIPT No matching script",
            "ERR LOADING",
            "",
        ] {
            assert!(!not_run(e), "{e}");
        }
    }

    #[test]
    fn reads_are_told_from_writes() {
        for r in ["GET", "HGETALL", "LRANGE", "LPOS", "PING"] {
            assert!(is_read(r));
        }
        for w in ["SET", "INCRBY", "HSET", "HDEL", "RPUSH", "LREM", "DEL"] {
            assert!(!is_read(w));
            assert!(is_keyed_write(w));
        }
        for other in ["EVALSHA", "MULTI", "EXEC", "PING", "GET", "AUTH"] {
            assert!(!is_keyed_write(other));
        }
    }
}
