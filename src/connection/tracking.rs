//! `CachingClient`: a `Client` whose reads may be answered from memory,
//! kept honest by the server (RESP3 `CLIENT TRACKING`). Opt-in.
//!
//! One dedicated connection speaks RESP3 with tracking on. Every command
//! goes through it while it is free (other threads use the pool meanwhile),
//! and the server queues an invalidation on it, ahead of any later reply,
//! whenever a key it has read changes. So a cached answer reflects every
//! write the server applied before this handler's last reply on that
//! connection, plus every invalidation that has arrived since (pushes are
//! read before each cached answer, without waiting). That is weaker than
//! asking the server each time: a write another client makes while we
//! answer from memory is seen on our next round trip, not before. Our own
//! writes are always seen at once (see `client_cache.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::sync::Mutex;

use std::io;

use super::client_cache::{expiry_probe, keeps, Effect, Request, Store};
use super::conn::Conn;
use super::fork::PerProcess;
use super::interrupt;
use super::pool::{batch_resend, Client, Stop};
use super::resp::{Cmd, Reply};
use super::retry::{Resend, RetryPolicy};
use super::transport::{Describe, Transport};
use super::Config;
use crate::errors::CacheError;

const LOG: &str = "madsci_cache_rs";

/// What a process keeps: a forked child starts with its own, empty
/// (`fork::PerProcess`), as no invalidation for the parent's copy reaches it.
#[derive(Default)]
struct Local {
    /// The tracking connection, opened on first use.
    tracked: Mutex<Option<Conn>>,
    store: Mutex<Store>,
}

pub struct CachingClient {
    pool: Client,
    local: PerProcess<Local>,
    /// The server cannot track keys (no RESP3): everything goes to the pool.
    unsupported: AtomicBool,
}

impl CachingClient {
    pub fn new(pool: Client) -> CachingClient {
        CachingClient {
            pool,
            local: PerProcess::default(),
            unsupported: AtomicBool::new(false),
        }
    }

    fn local(&self) -> &Local {
        self.local.current()
    }

    /// Answers the store has given so far (in this process).
    pub fn hits(&self) -> u64 {
        self.local().store.lock().hits
    }

    fn forget(&self, slot: &mut Option<Conn>) {
        *slot = None;
        // Invalidations may have been lost with the connection.
        self.local().store.lock().flush();
    }

    /// Apply the invalidations that have arrived; drop a connection that
    /// the server closed or that a forked parent opened.
    fn drain(&self, slot: &mut Option<Conn>) {
        let Some(conn) = slot.as_mut() else {
            return;
        };
        if conn.generation != super::fork::generation() {
            return self.forget(slot);
        }
        if let Err(e) = conn.drain_pushes(&mut |items| self.local().store.lock().on_push(items)) {
            log::debug!(target: LOG, "client-side cache connection to {} closed: {e}", self.pool.address());
            self.pool.mark_lost();
            self.forget(slot);
        }
    }

    fn serve(&self, cmd: &Request<'_>) -> Option<Reply> {
        if !matches!(cmd.effect(), Effect::Read(_)) {
            return None;
        }
        if let Some(mut slot) = self.local().tracked.try_lock() {
            self.drain(&mut slot);
        }
        // When another thread holds the connection, it is reading the
        // pushes: answering without waiting for it is no staler.
        self.local().store.lock().lookup(cmd)
    }

    /// Open the tracking connection if needed (one attempt: while the
    /// server is away the pool does the waiting); `false` when the pool
    /// must carry the command.
    fn ready(&self, slot: &mut Option<Conn>) -> Result<bool, CacheError> {
        self.drain(slot);
        if slot.is_none() && !self.unsupported.load(Ordering::Relaxed) {
            let mut conn = match self.pool.connect_once() {
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
                log::warn!(target: LOG, "{} cannot track keys ({e}): the client-side cache is off", self.pool.address());
                self.unsupported.store(true, Ordering::Relaxed);
            } else {
                log::debug!(target: LOG, "client-side cache tracking on {}", self.pool.address());
                *slot = Some(conn);
            }
        }
        Ok(slot.is_some())
    }

    /// Send `cmds` (read by the store as `requests`) on the tracking
    /// connection (`ready` opened it) and keep what the reads among them may
    /// keep.
    fn exchange(
        &self,
        slot: &mut Option<Conn>,
        cmds: &[Cmd],
        requests: &[Request<'_>],
    ) -> io::Result<Vec<Reply>> {
        let conn = slot.as_mut().expect("ready() opened the connection");
        let claims: Vec<_> = {
            let mut store = self.local().store.lock();
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
        let on_push = &mut |items| self.local().store.lock().on_push(items);
        match conn.request_many_with(&sent, on_push) {
            Ok(mut replies) => {
                let expiries = replies.split_off(cmds.len());
                let mut expiries = expiries.iter();
                let mut store = self.local().store.lock();
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
                self.forget(slot);
                Err(e)
            }
        }
    }

    /// A field read of a hash that is usually read whole: fetch and keep
    /// the whole hash, answer the field from it. `None`: send `cmd` itself.
    fn read_whole(&self, slot: &mut Option<Conn>, cmd: &Request<'_>) -> io::Result<Option<Reply>> {
        let Some(whole) = self.local().store.lock().read_ahead(cmd) else {
            return Ok(None);
        };
        let sent = [Request::parse(&whole)];
        let replies = self.exchange(slot, std::slice::from_ref(&whole), &sent)?;
        Ok(replies
            .first()
            .and_then(|reply| Store::answer_from(cmd, &sent[0], reply)))
    }

    /// `HSET` (in its once-form, `cmd`) to a hash we hold whole: sent as
    /// `MULTI HSET HLEN EXEC`, so the key is tracked again (a write
    /// untracks it) with nothing in between, and our copy takes the write
    /// instead of being dropped.
    fn write_through(&self, slot: &mut Option<Conn>, cmd: &Cmd) -> io::Result<Option<Reply>> {
        let plain = Request::parse(cmd.origin());
        let Some(claim) = self.local().store.lock().claim_write(&plain) else {
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
        let replies = self.exchange(slot, &cmds, &requests)?;
        let mut store = self.local().store.lock();
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
            // EXECABORT and the like: the error is HSET's answer.
            other => {
                store.invalidate(key);
                other.unwrap_or(Reply::Nil)
            }
        }))
    }

    /// Through the pool, when the tracking connection is busy or refused.
    fn send_pooled(
        &self,
        cmds: &[Cmd],
        requests: &[Request<'_>],
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        // Before and after: a read that raced the write cannot fill.
        self.invalidate(requests);
        let result = self.pool.pipeline(cmds, what);
        self.invalidate(requests);
        result
    }

    fn invalidate(&self, requests: &[Request<'_>]) {
        let mut store = self.local().store.lock();
        requests.iter().for_each(|r| store.before_write(r));
    }
}

impl Transport for CachingClient {
    /// Past the cache: only locks call it, and no lock key is cached.
    fn pipeline_with(
        &self,
        cmds: &[Cmd],
        policy: &RetryPolicy,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        self.pool.pipeline_with(cmds, policy, what)
    }

    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError> {
        let requests: Vec<_> = cmds.iter().map(Request::parse).collect();
        let single = match (cmds, requests.as_slice()) {
            ([cmd], [request]) => Some((cmd, request)),
            _ => None,
        };
        if let Some(reply) = single.and_then(|(_, request)| self.serve(request)) {
            return Ok(vec![reply]);
        }
        let Some(mut slot) = self.local().tracked.try_lock() else {
            return self.send_pooled(cmds, &requests, what);
        };
        if !self.ready(&mut slot)? {
            drop(slot);
            return self.send_pooled(cmds, &requests, what);
        }
        let tracked = (|| {
            if let Some((cmd, request)) = single {
                if let Some(reply) = self.read_whole(&mut slot, request)? {
                    return Ok(vec![reply]);
                }
                if let Some(reply) = self.write_through(&mut slot, cmd)? {
                    return Ok(vec![reply]);
                }
            }
            self.invalidate(&requests);
            let result = self.exchange(&mut slot, cmds, &requests);
            self.invalidate(&requests);
            result
        })();
        match tracked {
            Ok(replies) => Ok(replies),
            Err(e) if interrupt::is_interrupted(&e) => Err(CacheError::Interrupted),
            Err(e) => {
                drop(slot);
                self.pool.mark_lost();
                // The pool re-sends what may be repeated, waiting out the
                // outage; anything else may have run.
                if batch_resend(cmds) != Resend::Never {
                    self.send_pooled(cmds, &requests, what)
                } else {
                    Err(self.pool.lost(&e, what))
                }
            }
        }
    }

    fn probe(&self) -> bool {
        self.pool.probe()
    }

    fn policy(&self) -> &RetryPolicy {
        self.pool.policy()
    }

    fn close(&self) {
        self.forget(&mut self.local().tracked.lock());
        self.pool.close();
    }

    fn redacted_url(&self) -> String {
        self.pool.redacted_url()
    }

    fn address(&self) -> String {
        self.pool.address()
    }

    fn server_config(&self) -> Option<&Config> {
        self.pool.server_config()
    }

    fn client_cache_hits(&self) -> Option<u64> {
        Some(self.hits())
    }

    fn client_cache_usage(&self) -> Option<usize> {
        Some(self.local().store.lock().usage())
    }

    fn client_cache_clear(&self) {
        self.local().store.lock().flush();
    }
}
