//! The lock rules of pottery's `Redlock`, free of Python and of any store,
//! shared by strict in-memory locks and the server `Redlock`.
//!
//! Two halves:
//! * `LockLease` is the client's side: the token of its latest attempt, how
//!   often it extended, and which error each outcome maps to.
//! * `Lease` plus `acquire_slot`/`release_slot`/`extend_slot`/`remaining_in_slot`
//!   are the server's side for a store that keeps leases itself (strict
//!   memory); the server family runs the same rules as scripts on the server.

use std::time::{Duration, Instant};

use crate::errors::CacheError;

/// pottery's default number of `extend()` calls per acquisition.
pub const DEFAULT_NUM_EXTENSIONS: u32 = 3;
/// pottery stores lock `k` at the key `redlock:k`.
pub const KEY_PREFIX: &str = "redlock:";

/// How long an `acquire` may wait.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wait {
    /// `blocking=False`: try once.
    Once,
    /// `blocking=True, timeout=-1`: until acquired.
    Forever,
    /// `blocking=True, timeout=t`: at least one try, then until `t` has passed.
    For(Duration),
}

impl Wait {
    /// pottery's argument rules: a timeout with `blocking=False` is a
    /// `ValueError`; so is a negative timeout other than `-1` (pottery would
    /// silently give up without trying; `threading.Lock` refuses it too).
    pub fn from_args(blocking: bool, timeout: f64) -> Result<Wait, CacheError> {
        let invalid = |detail: &str| CacheError::InvalidValue {
            context: "acquire".into(),
            detail: detail.into(),
        };
        match (blocking, timeout) {
            (false, -1.0) => Ok(Wait::Once),
            (false, _) => Err(invalid("can't specify a timeout for a non-blocking call")),
            (true, -1.0) => Ok(Wait::Forever),
            (true, t) if t.is_nan() || t < 0.0 => {
                Err(invalid("timeout value must be a non-negative number or -1"))
            }
            (true, t) => Ok(Wait::For(
                Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX),
            )),
        }
    }
}

/// A fresh token, as pottery's: `str(uuid4())` (`crate::token`: never one
/// a forked child's parent drew).
pub fn new_token() -> String {
    crate::token::uuid4().hyphenated().to_string()
}

/// One lock object's view of its lease.
#[derive(Debug, Clone)]
pub struct LockLease {
    key: String,
    auto_release: Duration,
    num_extensions: u32,
    extensions: u32,
    token: Option<String>,
}

impl LockLease {
    pub fn new(key: &str, auto_release_secs: f64, num_extensions: u32) -> Result<Self, CacheError> {
        if !(auto_release_secs.is_finite() && auto_release_secs > 0.0) {
            return Err(CacheError::InvalidValue {
                context: format!("lock {key:?}"),
                detail: format!("auto_release_time must be a positive number of seconds, not {auto_release_secs}"),
            });
        }
        Ok(Self {
            key: key.to_owned(),
            auto_release: Duration::from_secs_f64(auto_release_secs),
            num_extensions,
            extensions: 0,
            token: None,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where the lease lives in the store: `redlock:<key>`.
    pub fn store_key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.key)
    }

    pub fn auto_release(&self) -> Duration {
        self.auto_release
    }

    /// The lease length in whole milliseconds, as pottery sends it (`PX`).
    pub fn ttl_ms(&self) -> u64 {
        (self.auto_release.as_secs_f64() * 1000.0) as u64
    }

    pub fn num_extensions(&self) -> u32 {
        self.num_extensions
    }

    pub fn extensions(&self) -> u32 {
        self.extensions
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Begin an acquisition attempt: pottery draws a new token and resets
    /// the extension count on every attempt, so re-acquiring while holding
    /// orphans the earlier lease until it expires.
    pub fn start_attempt(&mut self) -> String {
        let token = new_token();
        self.token = Some(token.clone());
        self.extensions = 0;
        token
    }

    /// Outcome of a release: not ours (never held, expired) is an error.
    pub fn released(&self, removed: bool) -> Result<(), CacheError> {
        if removed {
            Ok(())
        } else {
            Err(CacheError::ReleaseUnlockedLock {
                key: self.store_key(),
            })
        }
    }

    /// Before extending: the count is checked first, as pottery does.
    pub fn check_extend(&self) -> Result<(), CacheError> {
        if self.extensions >= self.num_extensions {
            Err(CacheError::TooManyExtensions {
                key: self.store_key(),
                limit: self.num_extensions,
            })
        } else {
            Ok(())
        }
    }

    /// Outcome of an extension.
    pub fn extended(&mut self, renewed: bool) -> Result<(), CacheError> {
        if renewed {
            self.extensions += 1;
            Ok(())
        } else {
            Err(CacheError::ExtendUnlockedLock {
                key: self.store_key(),
            })
        }
    }

    /// pottery's allowance for clock drift, subtracted from what `locked()` reports.
    pub fn drift(&self) -> Duration {
        self.auto_release.mul_f64(0.01) + Duration::from_millis(2)
    }

    /// `locked()`: seconds left on our lease (less drift), or `None` when we
    /// do not hold it (pottery then returns `0`).
    pub fn validity(&self, remaining: Option<Duration>) -> Option<f64> {
        let left = remaining?;
        if left.is_zero() {
            return None;
        }
        Some(left.saturating_sub(self.drift()).as_secs_f64())
    }

    /// The error for a `with` block that could not acquire.
    pub fn not_acquired(&self) -> CacheError {
        CacheError::QuorumNotAchieved {
            key: self.store_key(),
        }
    }
}

/// A lease as a store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub expires: Instant,
}

impl Lease {
    pub fn live(&self, now: Instant) -> bool {
        now < self.expires
    }
}

/// `SET key token NX PX ttl`: take a free (or expired) slot.
pub fn acquire_slot(slot: &mut Option<Lease>, token: &str, ttl: Duration, now: Instant) -> bool {
    if slot.as_ref().is_some_and(|l| l.live(now)) {
        return false;
    }
    *slot = Some(Lease {
        token: token.to_owned(),
        expires: now + ttl,
    });
    true
}

/// Delete the lease only if it is live and ours.
pub fn release_slot(slot: &mut Option<Lease>, token: &str, now: Instant) -> bool {
    let ours = slot
        .as_ref()
        .is_some_and(|l| l.live(now) && l.token == token);
    if ours || slot.as_ref().is_some_and(|l| !l.live(now)) {
        *slot = None;
    }
    ours
}

/// Renew the lease to a full `ttl` only if it is live and ours.
pub fn extend_slot(slot: &mut Option<Lease>, token: &str, ttl: Duration, now: Instant) -> bool {
    match slot {
        Some(l) if l.live(now) && l.token == token => {
            l.expires = now + ttl;
            true
        }
        _ => false,
    }
}

/// Time left on the lease if it is live and ours.
pub fn remaining_in_slot(slot: &Option<Lease>, token: &str, now: Instant) -> Option<Duration> {
    match slot {
        Some(l) if l.live(now) && l.token == token => Some(l.expires - now),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn one_holder_at_a_time_until_expiry() {
        let t0 = Instant::now();
        let mut slot = None;
        assert!(acquire_slot(&mut slot, "a", TTL, t0));
        assert!(!acquire_slot(
            &mut slot,
            "b",
            TTL,
            t0 + Duration::from_secs(9)
        ));
        assert!(acquire_slot(&mut slot, "b", TTL, t0 + TTL));
        assert!(!release_slot(&mut slot, "a", t0 + TTL), "a's lease expired");
        assert!(release_slot(&mut slot, "b", t0 + TTL));
        assert!(slot.is_none());
    }

    #[test]
    fn extend_and_remaining_act_only_for_the_owner() {
        let t0 = Instant::now();
        let mut slot = None;
        acquire_slot(&mut slot, "a", TTL, t0);
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            remaining_in_slot(&slot, "a", t1),
            Some(Duration::from_secs(6))
        );
        assert_eq!(remaining_in_slot(&slot, "b", t1), None);
        assert!(!extend_slot(&mut slot, "b", TTL, t1));
        assert!(extend_slot(&mut slot, "a", TTL, t1));
        assert_eq!(remaining_in_slot(&slot, "a", t1), Some(TTL));
        assert!(!extend_slot(&mut slot, "a", TTL, t1 + TTL));
    }

    #[test]
    fn extension_budget_and_errors() {
        let mut lease = LockLease::new("k", 10.0, 2).unwrap();
        assert_eq!(lease.store_key(), "redlock:k");
        assert_eq!(lease.ttl_ms(), 10_000);
        lease.start_attempt();
        for _ in 0..2 {
            lease.check_extend().unwrap();
            lease.extended(true).unwrap();
        }
        assert!(matches!(
            lease.check_extend(),
            Err(CacheError::TooManyExtensions { limit: 2, .. })
        ));
        assert!(matches!(
            lease.extended(false),
            Err(CacheError::ExtendUnlockedLock { .. })
        ));
        assert!(matches!(
            lease.released(false),
            Err(CacheError::ReleaseUnlockedLock { .. })
        ));
        lease.start_attempt();
        assert_eq!(lease.extensions(), 0, "a new attempt resets the count");
    }

    #[test]
    fn validity_subtracts_drift_and_reports_none_when_not_held() {
        let lease = LockLease::new("k", 10.0, 3).unwrap();
        assert_eq!(lease.validity(None), None);
        let v = lease.validity(Some(Duration::from_secs(10))).unwrap();
        assert!((v - (10.0 - 0.102)).abs() < 1e-9, "{v}");
        assert!(LockLease::new("k", 0.0, 3).is_err());
        assert!(LockLease::new("k", f64::NAN, 3).is_err());
    }

    #[test]
    fn wait_rules_follow_pottery() {
        assert_eq!(Wait::from_args(false, -1.0).unwrap(), Wait::Once);
        assert_eq!(Wait::from_args(true, -1.0).unwrap(), Wait::Forever);
        assert_eq!(
            Wait::from_args(true, 0.5).unwrap(),
            Wait::For(Duration::from_millis(500))
        );
        assert!(Wait::from_args(false, 1.0).is_err());
        assert!(Wait::from_args(true, -2.0).is_err());
    }

    #[test]
    fn tokens_are_distinct_uuid4_text() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
    }
}
