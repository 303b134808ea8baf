//! The client-side cache on a Cluster (`client_cache=True` on a
//! `redis+cluster://` URL): one store for the whole cluster, kept honest
//! by one tracking connection per primary (`tracker.rs`).
//!
//! Rules that keep it correct:
//! - A reply is kept only when it was read on the tracking connection of
//!   the node that served it (the node then owes us an invalidation when the
//!   key changes); reads sent elsewhere (the node's pool while its tracking
//!   connection is busy, a node named by `ASK`) are never kept.
//! - Any topology change empties the whole store: a `MOVED` or `ASK`, a
//!   slot map read that differs from the one held, a tracking connection
//!   lost (its node's invalidations may be lost with it). A key whose slot
//!   moved is then read again from its new primary, which tracks it.
//!   Between a change and the moment we hear of it, a kept key stays right:
//!   a slot's keys leave their old primary by `MIGRATE`, which deletes them
//!   there (an invalidation), and a primary demoted by a failover applies
//!   the new primary's writes as a replica and announces them as before.
//! - A cached answer first takes in what the key's primary has announced,
//!   without waiting. As on one server, another client's write is seen by
//!   our next round trip to that primary, and our own writes at once.
//!
//! The map's bookkeeping is `cluster.rs`'s; this file says what a cached
//! read or an attempt on a node does to the store.

use std::collections::HashMap;
use std::sync::Arc;

use super::client_cache::{Effect, Request, Store};
use super::cluster_slots::Node;
use super::interrupt;
use super::pool::{Client, Setback, Stop};
use super::resp::{Cmd, Reply};
use super::retry::Resend;
use super::tracker::{self, Answer, Tracker};
use super::transport::Describe;
use crate::errors::CacheError;
use crate::sync::Mutex;

const LOG: &str = "madsci_cache_rs";

/// One process's cache for one cluster (a forked child starts empty: no
/// invalidation for its parent's copy reaches it).
#[derive(Default)]
pub struct ClusterCache {
    store: Mutex<Store>,
    trackers: Mutex<HashMap<Node, Arc<Tracker>>>,
}

impl ClusterCache {
    fn tracker(&self, node: &Node) -> Arc<Tracker> {
        self.trackers
            .lock()
            .entry(node.clone())
            .or_default()
            .clone()
    }

    /// The answer to a read from memory, after taking in what `owner` (the
    /// primary of the key's slot, as the map says) has announced.
    pub fn serve(
        &self,
        request: &Request<'_>,
        owner: Option<(Node, Arc<Client>)>,
    ) -> Option<Reply> {
        if !matches!(request.effect(), Effect::Read(_)) {
            return None;
        }
        // No primary known for the slot: nothing can be held for it.
        let (node, pool) = owner?;
        let tracker = self.tracker(&node);
        if let Some(mut slot) = tracker.try_slot() {
            Tracker::drain(&mut slot, &self.store, &pool);
        }
        // When another thread holds the connection, it is reading the
        // pushes: answering without waiting for it is no staler.
        self.store.lock().lookup(request)
    }

    /// One attempt of `cmds` on `node`: on its tracking connection when
    /// that is free and `tracked` (not after `ASK`), else on its pool with
    /// what the batch writes dropped before and after.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attempt(
        &self,
        node: &Node,
        pool: &Client,
        cmds: &[Cmd],
        requests: &[Request<'_>],
        resend: Resend,
        tracked: bool,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, Stop> {
        if tracked {
            if let Some(answered) = self.attempt_tracked(node, pool, cmds, requests)? {
                return answered;
            }
        }
        tracker::invalidate(&self.store, requests);
        let result = pool.attempt(cmds, resend, what);
        tracker::invalidate(&self.store, requests);
        result
    }

    /// The attempt on `node`'s tracking connection; `None` when it is busy
    /// or cannot be opened (the pool carries the batch).
    fn attempt_tracked(
        &self,
        node: &Node,
        pool: &Client,
        cmds: &[Cmd],
        requests: &[Request<'_>],
    ) -> Result<Option<Result<Vec<Reply>, Stop>>, Stop> {
        let tracker = self.tracker(node);
        let Some(mut slot) = tracker.try_slot() else {
            return Ok(None);
        };
        if !tracker
            .ready(&mut slot, &self.store, pool)
            .map_err(Stop::Fatal)?
        {
            return Ok(None);
        }
        let answered = match Tracker::answer(&mut slot, &self.store, pool, cmds, requests) {
            Ok(Answer::Replies(replies)) => Ok(replies),
            Ok(Answer::Refused(error)) => Err(Stop::Retry(Setback::refused(format!(
                "the server answered {error}"
            )))),
            Err(e) if interrupt::is_interrupted(&e) => Err(Stop::Fatal(CacheError::Interrupted)),
            Err(e) => Err(pool.reply_lost(&e)),
        };
        Ok(Some(answered))
    }

    /// The cluster's topology changed (or may have): nothing held is
    /// trusted any more.
    pub fn topology_changed(&self, why: &str) {
        let mut store = self.store.lock();
        if store.cached_keys() > 0 {
            log::debug!(target: LOG, "{why}: the client-side cache starts over");
        }
        store.flush();
    }

    /// Close every tracking connection (and forget what they kept).
    pub fn close(&self) {
        let trackers: Vec<Arc<Tracker>> = self.trackers.lock().drain().map(|(_, t)| t).collect();
        for tracker in trackers {
            Tracker::forget(&mut tracker.slot(), &self.store);
        }
        self.store.lock().flush();
    }

    pub fn hits(&self) -> u64 {
        self.store.lock().hits
    }

    pub fn usage(&self) -> usize {
        self.store.lock().usage()
    }

    pub fn clear(&self) {
        self.store.lock().flush();
    }
}
