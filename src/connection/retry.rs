//! When a failed command may be tried again. Pure Rust, no I/O, so the rule
//! that matters most is unit-tested: a command that may have reached the
//! server is never sent a second time (no double `INCRBY`, no double `RPUSH`).

use std::time::Duration;

/// How far a command got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No connection could be made (refused, reset, or the handshake
    /// broke): the command's bytes never left.
    Connect,
    /// The connection attempt ran out of time: the command never left,
    /// but another attempt would only wait as long again, so it is not
    /// retried (an unreachable host fails after one connect timeout).
    ConnectTimedOut,
    /// The command was (or may have been) written: its effect is unknown.
    Sent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Connection attempts per command, the first included.
    pub connect_attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Three quick attempts (about 30 ms in all): enough to ride over a
    /// server that is just coming back, short enough that an unreachable
    /// server is reported at once.
    fn default() -> Self {
        RetryPolicy {
            connect_attempts: 3,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// After `failed` attempts have failed at `stage`, how long to wait
    /// before the next one, or `None` to give up and report the error.
    pub fn next_delay(&self, stage: Stage, failed: u32) -> Option<Duration> {
        match stage {
            Stage::Sent | Stage::ConnectTimedOut => None,
            Stage::Connect if failed >= self.connect_attempts => None,
            Stage::Connect => {
                let doubling = failed.saturating_sub(1).min(16);
                Some((self.first_delay * (1u32 << doubling)).min(self.max_delay))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_command_is_never_retried() {
        let p = RetryPolicy {
            connect_attempts: 100,
            ..RetryPolicy::default()
        };
        for failed in 0..5 {
            assert_eq!(p.next_delay(Stage::Sent, failed), None);
        }
    }

    #[test]
    fn connect_failures_retry_with_backoff_then_give_up() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.next_delay(Stage::Connect, 1),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            p.next_delay(Stage::Connect, 2),
            Some(Duration::from_millis(20))
        );
        assert_eq!(p.next_delay(Stage::Connect, 3), None);
    }

    #[test]
    fn a_connect_timeout_is_not_multiplied() {
        assert_eq!(
            RetryPolicy::default().next_delay(Stage::ConnectTimedOut, 1),
            None
        );
    }

    #[test]
    fn backoff_is_capped() {
        let p = RetryPolicy {
            connect_attempts: 40,
            ..RetryPolicy::default()
        };
        assert_eq!(p.next_delay(Stage::Connect, 39), Some(p.max_delay));
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let p = RetryPolicy {
            connect_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(p.next_delay(Stage::Connect, 1), None);
    }
}
