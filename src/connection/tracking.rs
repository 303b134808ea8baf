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
//!
//! The connection's own rules are `tracker.rs`'s (a Cluster has one per
//! primary: `cluster_cache.rs`). Behind Sentinel it follows the primary:
//! it is closed when the `+switch-master` watch hears of a switch, and a
//! `READONLY` (or any "not now") answer on it is waited out by the pool.

use super::client_cache::{Effect, Request, Store};
use super::fork::PerProcess;
use super::interrupt;
use super::pool::{batch_resend, Client};
use super::resp::{Cmd, Reply};
use super::retry::{Resend, RetryPolicy};
use super::tracker::{self, Answer, Tracker};
use super::transport::{Describe, Transport};
use super::Config;
use crate::errors::CacheError;
use crate::sync::Mutex;

/// What a process keeps: a forked child starts with its own, empty
/// (`fork::PerProcess`), as no invalidation for the parent's copy reaches it.
#[derive(Default)]
struct Local {
    tracker: Tracker,
    store: Mutex<Store>,
}

pub struct CachingClient {
    pool: Client,
    local: PerProcess<Local>,
}

impl CachingClient {
    pub fn new(pool: Client) -> CachingClient {
        CachingClient {
            pool,
            local: PerProcess::default(),
        }
    }

    fn local(&self) -> &Local {
        self.local.current()
    }

    /// Answers the store has given so far (in this process).
    pub fn hits(&self) -> u64 {
        self.local().store.lock().hits
    }

    fn serve(&self, cmd: &Request<'_>) -> Option<Reply> {
        if !matches!(cmd.effect(), Effect::Read(_)) {
            return None;
        }
        let local = self.local();
        if let Some(mut slot) = local.tracker.try_slot() {
            Tracker::drain(&mut slot, &local.store, &self.pool);
        }
        // When another thread holds the connection, it is reading the
        // pushes: answering without waiting for it is no staler.
        local.store.lock().lookup(cmd)
    }

    /// Through the pool, when the tracking connection is busy or refused.
    fn send_pooled(
        &self,
        cmds: &[Cmd],
        requests: &[Request<'_>],
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        let store = &self.local().store;
        tracker::invalidate(store, requests);
        let result = self.pool.pipeline(cmds, what);
        tracker::invalidate(store, requests);
        result
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
        if let [request] = requests.as_slice() {
            if let Some(reply) = self.serve(request) {
                return Ok(vec![reply]);
            }
        }
        let local = self.local();
        let Some(mut slot) = local.tracker.try_slot() else {
            return self.send_pooled(cmds, &requests, what);
        };
        if !local.tracker.ready(&mut slot, &local.store, &self.pool)? {
            drop(slot);
            return self.send_pooled(cmds, &requests, what);
        }
        match Tracker::answer(&mut slot, &local.store, &self.pool, cmds, &requests) {
            Ok(Answer::Replies(replies)) => Ok(replies),
            // "Not now" (a demoted primary's READONLY, LOADING ...): the
            // pool waits it out and sends again, as without the cache.
            Ok(Answer::Refused(_)) => {
                drop(slot);
                self.send_pooled(cmds, &requests, what)
            }
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
        let local = self.local();
        Tracker::forget(&mut local.tracker.slot(), &local.store);
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
