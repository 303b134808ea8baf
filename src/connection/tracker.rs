//! One server's tracking connection for the client-side cache: RESP3 with
//! `CLIENT TRACKING ON`, so the server queues an invalidation on it, ahead
//! of any later reply, whenever a key read on it changes. Commands sent on
//! it may fill the store (`client_cache.rs` says when); the store is the
//! caller's, so a Cluster's trackers (one per primary) share one.
//!
//! `tracking.rs` (one server, Sentinel) and `cluster_cache.rs` (a Cluster)
//! decide which commands come here; the rules for one connection are here.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use super::client_cache::{expiry_probe, keeps, Request, Store};
use super::conn::Conn;
use super::interrupt;
use super::pool::{Client, Stop};
use super::resp::{Cmd, Reply};
use super::retry::{demoted, not_run};
use super::transport::Transport;
use crate::errors::CacheError;
use crate::sync::{Mutex, MutexGuard};

const LOG: &str = "madsci_cache_rs";

/// The open tracking connection, and the primary switch count (Sentinel's
/// `+switch-master`, `failover_watch.rs`) it was opened under: after a
/// switch it may be talking to the demoted primary.
pub struct Tracked {
    conn: Conn,
    epoch: u64,
}

/// A tracking connection to one server, opened on first use.
#[derive(Default)]
pub struct Tracker {
    tracked: Mutex<Option<Tracked>>,
    /// The server cannot track keys (no RESP3): everything goes to the pool.
    unsupported: AtomicBool,
}

pub type Slot<'a> = MutexGuard<'a, Option<Tracked>>;

/// What a batch answered on the tracking connection says about the node.
pub enum Answer {
    /// The replies, to be used as they are.
    Replies(Vec<Reply>),
    /// The server said "not now" (`LOADING`, `READONLY` ...): nothing ran
    /// (or what ran may be repeated); the caller waits and sends again.
    Refused(String),
}

/// A "not now" answer among a batch's replies that says the batch may be
/// sent again: `pool.rs`'s rule (in a batch that may not be repeated, a
/// command may have run before another was refused).
pub fn refusal(cmds: &[Cmd], replies: &[Reply]) -> Option<String> {
    let repeatable =
        cmds.len() == 1 || super::pool::batch_resend(cmds) != super::retry::Resend::Never;
    if !repeatable {
        return None;
    }
    replies.iter().find_map(|r| match r {
        Reply::Error(e) if not_run(e) => Some(e.clone()),
        _ => None,
    })
}

impl Tracker {
    /// The connection, unless another thread is using it.
    pub fn try_slot(&self) -> Option<Slot<'_>> {
        self.tracked.try_lock()
    }

    pub fn slot(&self) -> Slot<'_> {
        self.tracked.lock()
    }

    /// Whether a connection is open (it may have closed since).
    pub fn is_open(slot: &Slot<'_>) -> bool {
        slot.is_some()
    }

    /// Drop the connection: invalidations may have been lost with it, so
    /// the store forgets everything.
    pub fn forget(slot: &mut Slot<'_>, store: &Mutex<Store>) {
        **slot = None;
        store.lock().flush();
    }

    /// Apply the invalidations that have arrived; drop a connection that
    /// the server closed, that a forked parent opened, or that was opened
    /// before the primary switched.
    pub fn drain(slot: &mut Slot<'_>, store: &Mutex<Store>, pool: &Client) {
        let Some(tracked) = slot.as_mut() else {
            return;
        };
        if tracked.conn.generation != super::fork::generation() {
            return Self::forget(slot, store);
        }
        if tracked.epoch != pool.switch_epoch() {
            log::debug!(target: LOG, "the primary of {} switched: the client-side cache starts over", pool.address());
            return Self::forget(slot, store);
        }
        if let Err(e) = tracked
            .conn
            .drain_pushes(&mut |items| store.lock().on_push(items))
        {
            log::debug!(target: LOG, "client-side cache connection to {} closed: {e}", pool.address());
            pool.mark_lost();
            Self::forget(slot, store);
        }
    }

    /// Open the tracking connection if needed (one attempt: while the
    /// server is away the pool does the waiting); `false` when the pool
    /// must carry the command.
    pub fn ready(
        &self,
        slot: &mut Slot<'_>,
        store: &Mutex<Store>,
        pool: &Client,
    ) -> Result<bool, CacheError> {
        Self::drain(slot, store, pool);
        if slot.is_none() && !self.unsupported.load(Ordering::Relaxed) {
            let epoch = pool.switch_epoch();
            let mut conn = match pool.connect_once() {
                Ok(conn) => conn,
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::Retry(_)) => return Ok(false),
            };
            let setup = [
                Cmd::new("HELLO").arg("3"),
                // Our own writes are not announced to us: we drop or update
                // what they touch ourselves (`client_cache.rs`).
                Cmd::new("CLIENT").arg("TRACKING").arg("ON").arg("NOLOOP"),
            ];
            // Only the setup was sent: the caller's command was not.
            let replies = match conn.request_many(&setup) {
                Ok(replies) => replies,
                Err(e) if interrupt::is_interrupted(&e) => return Err(CacheError::Interrupted),
                Err(_) => return Ok(false),
            };
            if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
                log::warn!(target: LOG, "{} cannot track keys ({e}): the client-side cache is off", pool.address());
                self.unsupported.store(true, Ordering::Relaxed);
            } else {
                log::debug!(target: LOG, "client-side cache tracking on {}", pool.address());
                // Nothing read before this connection was tracked.
                **slot = Some(Tracked { conn, epoch });
            }
        }
        Ok(slot.is_some())
    }

    /// Send `cmds` (read by the store as `requests`) on the tracking
    /// connection (`ready` opened it) and keep what the reads among them may
    /// keep.
    fn exchange(
        slot: &mut Slot<'_>,
        store: &Mutex<Store>,
        cmds: &[Cmd],
        requests: &[Request<'_>],
    ) -> io::Result<Vec<Reply>> {
        let tracked = slot.as_mut().expect("ready() opened the connection");
        let claims: Vec<_> = {
            let mut store = store.lock();
            requests.iter().map(|r| store.claim_fill(r)).collect()
        };
        // Each read that may fill asks for its key's expiry in the same round
        // trip: a value that expires is not kept (`client_cache::keeps`).
        let probes: Vec<Cmd> = claims
            .iter()
            .zip(requests)
            .filter(|(claim, _)| claim.is_some())
            .map(|(_, request)| expiry_probe(request))
            .collect();
        let sent: std::borrow::Cow<'_, [Cmd]> = if probes.is_empty() {
            cmds.into()
        } else {
            cmds.iter()
                .cloned()
                .chain(probes)
                .collect::<Vec<_>>()
                .into()
        };
        let on_push = &mut |items| store.lock().on_push(items);
        match tracked.conn.request_many_with(&sent, on_push) {
            Ok(mut replies) => {
                let expiries = replies.split_off(cmds.len());
                let mut expiries = expiries.iter();
                let mut store = store.lock();
                for ((claim, request), reply) in claims.into_iter().zip(requests).zip(&replies) {
                    if let Some(claim) = claim {
                        if expiries.next().is_some_and(keeps) {
                            store.fill(claim, request, reply);
                        }
                    }
                }
                Ok(replies)
            }
            Err(e) => {
                Self::forget(slot, store);
                Err(e)
            }
        }
    }

    /// A field read of a hash that is usually read whole: fetch and keep
    /// the whole hash, answer the field from it. `None`: send `cmd` itself.
    fn read_whole(
        slot: &mut Slot<'_>,
        store: &Mutex<Store>,
        cmd: &Request<'_>,
    ) -> io::Result<Option<Reply>> {
        let Some(whole) = store.lock().read_ahead(cmd) else {
            return Ok(None);
        };
        let sent = [Request::parse(&whole)];
        let replies = Self::exchange(slot, store, std::slice::from_ref(&whole), &sent)?;
        Ok(replies.first().and_then(|reply| match reply {
            // The whole read was refused: the field read's answer is the
            // same refusal, which the caller waits out.
            Reply::Error(e) if not_run(e) => Some(reply.clone()),
            _ => Store::answer_from(cmd, &sent[0], reply),
        }))
    }

    /// `HSET` (in its once-form, `cmd`) to a hash we hold whole: sent as
    /// `MULTI HSET HLEN EXEC`, so the key is tracked again (a write
    /// untracks it) with nothing in between, and our copy takes the write
    /// instead of being dropped.
    fn write_through(
        slot: &mut Slot<'_>,
        store: &Mutex<Store>,
        cmd: &Cmd,
    ) -> io::Result<Option<Reply>> {
        let plain = Request::parse(cmd.origin());
        let Some(claim) = store.lock().claim_write(&plain) else {
            return Ok(None);
        };
        let key = plain.key().unwrap_or_default();
        let cmds = [
            Cmd::new("MULTI"),
            cmd.clone(),
            Cmd::new("HLEN").arg(key),
            Cmd::new("EXEC"),
        ];
        let requests: Vec<_> = cmds.iter().map(Request::parse).collect();
        let mut replies = Self::exchange(slot, store, &cmds, &requests)?;
        // The write's refusal when it was queued (`MOVED`, `READONLY` ...):
        // the answer the caller acts on, rather than `EXECABORT`.
        let queued = match replies.get_mut(1) {
            Some(Reply::Error(e)) => Some(Reply::Error(std::mem::take(e))),
            _ => None,
        };
        let mut store = store.lock();
        Ok(Some(match replies.into_iter().nth(3) {
            // NOSCRIPT included: the write did not run, and the caller sends
            // it again by source.
            Some(Reply::Array(mut done))
                if done.len() == 2 && !matches!(done[0], Reply::Error(_)) =>
            {
                let len = done.pop().unwrap_or(Reply::Nil);
                let set = done.pop().unwrap_or(Reply::Nil);
                store.apply_write(claim, &plain, &set, &len);
                set
            }
            Some(Reply::Array(mut done)) if done.len() == 2 => {
                store.invalidate(key);
                done.swap_remove(0)
            }
            // EXECABORT and the like: HSET's answer.
            other => {
                store.invalidate(key);
                queued.or(other).unwrap_or(Reply::Nil)
            }
        }))
    }

    /// Send a batch on the tracking connection (`ready` opened it): a field
    /// read of a hash read whole goes out as `HGETALL`, a write to a hash
    /// held whole updates the copy, and any other write drops what it
    /// touches before it is sent and again after its reply.
    pub fn send(
        slot: &mut Slot<'_>,
        store: &Mutex<Store>,
        cmds: &[Cmd],
        requests: &[Request<'_>],
    ) -> io::Result<Vec<Reply>> {
        if let ([cmd], [request]) = (cmds, requests) {
            if let Some(reply) = Self::read_whole(slot, store, request)? {
                return Ok(vec![reply]);
            }
            if let Some(reply) = Self::write_through(slot, store, cmd)? {
                return Ok(vec![reply]);
            }
        }
        invalidate(store, requests);
        let result = Self::exchange(slot, store, cmds, requests);
        invalidate(store, requests);
        result
    }

    /// `send`, and what its replies say: a refusal to wait out (a demoted
    /// primary's `READONLY` drops this connection, which cannot track the
    /// new primary's keys).
    pub fn answer(
        slot: &mut Slot<'_>,
        store: &Mutex<Store>,
        pool: &Client,
        cmds: &[Cmd],
        requests: &[Request<'_>],
    ) -> io::Result<Answer> {
        let replies = Self::send(slot, store, cmds, requests)?;
        Ok(match refusal(cmds, &replies) {
            Some(error) => {
                if demoted(&error) {
                    log::debug!(target: LOG, "{} is a replica now: the client-side cache starts over", pool.address());
                    Self::forget(slot, store);
                }
                Answer::Refused(error)
            }
            None => Answer::Replies(replies),
        })
    }
}

/// Before and after a write is sent: a read that raced it cannot fill.
pub fn invalidate(store: &Mutex<Store>, requests: &[Request<'_>]) {
    let mut store = store.lock();
    requests.iter().for_each(|r| store.before_write(r));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::retry::Resend;

    #[test]
    fn a_not_now_answer_is_a_refusal_unless_something_else_may_have_run() {
        let get = Cmd::new("GET").arg("k");
        let readonly = Reply::Error("READONLY You can't write against a read only replica.".into());
        assert_eq!(
            refusal(std::slice::from_ref(&get), std::slice::from_ref(&readonly)).as_deref(),
            Some("READONLY You can't write against a read only replica.")
        );
        let loading = Reply::Error("LOADING loading the dataset".into());
        let once = Cmd::new("EVALSHA").arg("sha").with_resend(Resend::Once);
        let reads = [get.clone(), once];
        assert!(refusal(&reads, &[Reply::Nil, loading.clone()]).is_some());
        // A write that may not be repeated, answered before a refusal: the
        // caller sees the replies as they are.
        let never = Cmd::new("RPUSH")
            .arg("l")
            .arg("x")
            .with_resend(Resend::Never);
        assert!(refusal(&[never, get.clone()], &[Reply::Int(1), loading]).is_none());
        // Other errors are answers.
        let wrong = Reply::Error("WRONGTYPE Operation against a key".into());
        assert!(refusal(std::slice::from_ref(&get), &[wrong]).is_none());
    }
}
