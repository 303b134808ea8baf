//! `ClusterClient`: a Valkey/Redis Cluster behind the same `Transport` the
//! structures use on one server.
//!
//! Routing is ours, because the clients we could borrow re-send a write
//! after an I/O error (the `redis` crate's sync cluster client applied one
//! `INCRBY` three times; redis-py's `RedisCluster` twice), and the crate's
//! one knob that stops it (`retries(0)`) also stops it from following
//! `MOVED`, while its slot map is private. Here each node
//! has its own pool (`Client`, made lazily from the URL's settings), and
//! every call is `Client::send`'s loop spread over nodes: one attempt at a
//! time on the node that serves the batch's slot, the same `Resend` rules
//! and waits and the same errors when it gives up. What is new:
//! * `MOVED` and `ASK` say the command did not run, so they are followed at
//!   once, whatever the command: `MOVED` updates that slot in the map (and
//!   the whole map is read again on the next call); `ASK` sends `ASKING`
//!   and the batch, in one write, to the node named, once, map unchanged.
//! * any failure (no connection, a lost reply, `CLUSTERDOWN` …) may mean
//!   the slot has moved, e.g. to a replica promoted after its primary
//!   died: the map is read again before the next attempt.
//!
//! Writes need nothing more: their once-form's record key lives on their
//! key's slot (`once.rs`), so a write re-sent to a new primary is settled
//! there as on one server.
//!
//! With `client_cache`, each attempt on a node goes through that node's
//! tracking connection when it is free, and every topology change this
//! file hears of empties the cache (`cluster_cache.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client_cache::Request;
use super::cluster_cache::ClusterCache;
use super::cluster_slots::{
    any_node_order, batch_slot, nothing_applied, redirect_in, Node, Redirect, SlotMap,
};
use super::config::{node_list, Addr, Config};
use super::fork::PerProcess;
use super::pool::{batch_resend, waited, with_wait, Client, Setback, Stop};
use super::resp::{Cmd, Reply};
use super::retry::{Failure, RetryPolicy};
use super::transport::{Describe, Transport};
use crate::errors::CacheError;
use crate::sync::Mutex;

const LOG: &str = "madsci_cache_rs";

/// Redirections followed in a row before a call waits (nodes that disagree
/// about a slot during a failover), as after a "not now" answer.
const MAX_REDIRECTS: u32 = 5;

/// A node that failed this recently is asked for the map last.
const SUSPECT_FOR: Duration = Duration::from_secs(30);

pub struct ClusterClient {
    /// The URL's settings; `addr` holds the seeds. Each node's pool gets
    /// a copy with its own address.
    template: Config,
    seeds: Vec<Node>,
    policy: RetryPolicy,
    /// The client-side cache is on (`cluster_cache.rs`).
    cached: bool,
    /// A forked child starts with no map and no pools of its parent's:
    /// a lock a vanished thread held must not be inherited (`fork.rs`).
    state: PerProcess<State>,
}

struct State {
    routing: Mutex<Routing>,
    /// The map may be out of date: read it again before the next call.
    stale: AtomicBool,
    /// One thread reads the map at a time; the others route meanwhile
    /// by the map they have.
    refreshing: Mutex<()>,
    /// Spreads keyless commands, and map reads, over the nodes.
    turn: AtomicUsize,
    /// The client-side cache, when it is on.
    cache: ClusterCache,
}

impl Default for State {
    fn default() -> Self {
        State {
            routing: Mutex::default(),
            // No map yet: read it before the first call.
            stale: AtomicBool::new(true),
            refreshing: Mutex::default(),
            turn: AtomicUsize::new(0),
            cache: ClusterCache::default(),
        }
    }
}

#[derive(Default)]
struct Routing {
    map: SlotMap,
    pools: HashMap<Node, Arc<Client>>,
    /// Nodes that failed us lately, and when.
    suspects: HashMap<Node, Instant>,
}

impl ClusterClient {
    /// Lazy: nothing touches the network until the first command.
    /// `cfg.addr` must be `Addr::Cluster` (`cfg` prepared).
    pub fn new(cfg: Config, policy: RetryPolicy) -> ClusterClient {
        let seeds = match &cfg.addr {
            Addr::Cluster(seeds) => seeds.clone(),
            _ => Vec::new(),
        };
        ClusterClient {
            template: cfg,
            seeds,
            policy,
            cached: false,
            state: PerProcess::default(),
        }
    }

    /// With the client-side cache on (`cluster_cache.rs`).
    pub fn with_client_cache(self, on: bool) -> ClusterClient {
        ClusterClient { cached: on, ..self }
    }

    /// The cache, when it is on.
    fn cache(&self) -> Option<&ClusterCache> {
        self.cached.then(|| &self.state().cache)
    }

    /// The primary of `slot` as the map says, and its pool.
    fn owner(&self, slot: u16) -> Option<(Node, Arc<Client>)> {
        let mut routing = self.state().routing.lock();
        let node = routing.map.node(slot)?.clone();
        let pool = self.pool(&mut routing, &node);
        Some((node, pool))
    }

    fn state(&self) -> &State {
        self.state.current()
    }

    /// The pool for `node`, made on first use.
    fn pool(&self, routing: &mut Routing, node: &Node) -> Arc<Client> {
        if let Some(pool) = routing.pools.get(node) {
            return pool.clone();
        }
        let pool = Arc::new(Client::new(self.node_config(node), self.policy));
        routing.pools.insert(node.clone(), pool.clone());
        pool
    }

    /// The URL's settings for one node.
    fn node_config(&self, node: &Node) -> Config {
        let mut cfg = self.template.clone();
        cfg.addr = Addr::Tcp {
            host: node.0.clone(),
            port: node.1,
        };
        cfg
    }

    fn pool_for(&self, node: &Node) -> Arc<Client> {
        let mut routing = self.state().routing.lock();
        self.pool(&mut routing, node)
    }

    /// Every node we know of, in `any_node_order`, from a rotating place.
    fn candidates(&self, routing: &Routing) -> Vec<Node> {
        let start = self.state().turn.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        any_node_order(routing.map.nodes(), start, &self.seeds, |n| {
            routing
                .suspects
                .get(n)
                .is_some_and(|at| now.duration_since(*at) < SUSPECT_FOR)
        })
    }

    /// The node for `slot` and its pool: the map's, or (no map yet, a
    /// slot no node serves, a keyless batch) any node, which redirects.
    fn route(&self, slot: Option<u16>) -> (Node, Arc<Client>) {
        let mut routing = self.state().routing.lock();
        let node = match slot.and_then(|s| routing.map.node(s)) {
            Some(node) => node.clone(),
            // A URL names at least one node.
            None => self
                .candidates(&routing)
                .into_iter()
                .next()
                .unwrap_or_else(|| ("localhost".to_owned(), 6379)),
        };
        let pool = self.pool(&mut routing, &node);
        (node, pool)
    }

    fn suspect(&self, node: &Node) {
        let mut routing = self.state().routing.lock();
        routing.suspects.insert(node.clone(), Instant::now());
    }

    fn trusted(&self, node: &Node) {
        let mut routing = self.state().routing.lock();
        if !routing.suspects.is_empty() {
            routing.suspects.remove(node);
        }
    }

    /// Read the slot map again from the first node that gives it, unless
    /// another thread is reading it now. One attempt per node.
    fn refresh(&self) {
        let state = self.state();
        let Some(_reading) = state.refreshing.try_lock() else {
            return;
        };
        // Cleared first: a `MOVED` that arrives while we read is kept.
        state.stale.store(false, Ordering::Relaxed);
        let candidates = self.candidates(&state.routing.lock());
        let ask = [Cmd::new("CLUSTER")
            .arg("SLOTS")
            .with_resend(super::retry::Resend::Read)];
        let what = || "CLUSTER SLOTS".to_owned();
        let mut why = Vec::new();
        for node in candidates {
            let pool = self.pool_for(&node);
            let reply = match pool.attempt(&ask, super::retry::Resend::Read, &what) {
                Ok(mut replies) => replies.pop().unwrap_or(Reply::Nil),
                Err(_) => {
                    self.suspect(&node);
                    why.push(format!("{}: no answer", pool.address()));
                    continue;
                }
            };
            match SlotMap::from_cluster_slots(&reply, &node.0) {
                Ok(map) if !map.is_empty() => {
                    let mut routing = state.routing.lock();
                    routing.suspects.remove(&node);
                    if routing.map != map {
                        log::debug!(target: LOG, "cluster {}: slot map from {}: {} primaries, {} slots served", node_list(&self.seeds), pool.address(), map.nodes().len(), map.covered());
                        if let Some(cache) = self.cache() {
                            cache.topology_changed("the slot map changed");
                        }
                    }
                    routing.map = map;
                    return;
                }
                Ok(_) => why.push(format!("{}: no slots assigned", pool.address())),
                Err(e) => why.push(format!("{}: {e}", pool.address())),
            }
        }
        state.stale.store(true, Ordering::Relaxed);
        log::debug!(target: LOG, "cluster {}: could not read the slot map ({})", node_list(&self.seeds), why.join("; "));
    }

    /// `Client::send`'s loop, spread over the cluster's nodes.
    fn send(
        &self,
        cmds: &[Cmd],
        policy: &RetryPolicy,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        // The batch as the client-side cache reads it, when it is on.
        let requests: Vec<Request<'_>> = match self.cached {
            true => cmds.iter().map(Request::parse).collect(),
            false => Vec::new(),
        };
        let resend = batch_resend(cmds);
        let slot = batch_slot(cmds);
        let state = self.state();
        let started = Instant::now();
        let mut failed = 0;
        let mut maybe_ran = false;
        let mut redirects = 0;
        let mut ask: Option<Node> = None;
        // Where the last MOVED said to go: straight there, before any map
        // read (a node that has not heard of the move yet could undo it).
        let mut moved: Option<Node> = None;
        loop {
            let (node, pool, asking) = match (ask.take(), moved.take()) {
                (Some(node), _) => {
                    let pool = self.pool_for(&node);
                    (node, pool, true)
                }
                (None, Some(node)) => {
                    let pool = self.pool_for(&node);
                    (node, pool, false)
                }
                (None, None) => {
                    if state.stale.load(Ordering::Relaxed) {
                        self.refresh();
                    }
                    let (node, pool) = self.route(slot);
                    (node, pool, false)
                }
            };
            let attempt = |batch: &[Cmd]| match self.cache() {
                // After ASK the node does not serve the slot yet: what it
                // answers is not kept.
                Some(cache) => cache.attempt(&node, &pool, batch, &requests, resend, !asking, what),
                None => pool.attempt(batch, resend, what),
            };
            let result = if asking {
                let batch: Vec<Cmd> = std::iter::once(Cmd::new("ASKING"))
                    .chain(cmds.iter().cloned())
                    .collect();
                attempt(&batch).map(|mut replies| {
                    replies.remove(0);
                    replies
                })
            } else {
                attempt(cmds)
            };
            let setback = match result {
                Ok(replies) => {
                    pool.back_up();
                    match redirect_in(&replies, &node.0) {
                        Some(redirect) if nothing_applied(cmds, &replies) => {
                            if let Some(cache) = self.cache() {
                                cache.topology_changed("a slot moved");
                            }
                            redirects += 1;
                            if redirects <= MAX_REDIRECTS {
                                match redirect {
                                    Redirect::Moved { slot, node } => {
                                        state.routing.lock().map.assign(slot, &node);
                                        state.stale.store(true, Ordering::Relaxed);
                                        moved = Some(node);
                                    }
                                    Redirect::Ask { node, .. } => ask = Some(node),
                                }
                                continue;
                            }
                            Setback::refused(format!(
                                "the nodes kept redirecting the command (last to {}:{})",
                                redirect.node().0,
                                redirect.node().1
                            ))
                        }
                        _ => {
                            self.trusted(&node);
                            return Ok(replies);
                        }
                    }
                }
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::Retry(setback)) => setback,
            };
            if setback.failure != Failure::Refused {
                self.suspect(&node);
            }
            maybe_ran |= setback.failure == Failure::Lost;
            failed += 1;
            // Redirections are counted between waits only.
            redirects = 0;
            // The slot may have moved (a replica promoted, a reshard):
            // the map is read again before the next attempt.
            state.stale.store(true, Ordering::Relaxed);
            pool.wait_or_give_up(policy, setback, resend, maybe_ran, failed, started, what)?;
        }
    }
}

impl Transport for ClusterClient {
    /// With `wait_replicas`, a batch that writes carries a `WAIT` for the
    /// replicas of the primary it lands on, in the same round trip.
    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError> {
        if let (Some(cache), [cmd]) = (self.cache(), cmds) {
            let request = Request::parse(cmd);
            let owner = batch_slot(cmds).and_then(|slot| self.owner(slot));
            if let Some(reply) = cache.serve(&request, owner) {
                return Ok(vec![reply]);
            }
        }
        match with_wait(&self.template, cmds) {
            Some(batch) => {
                let replies = self.send(&batch, &self.policy, what)?;
                waited(&self.template, replies, || {
                    format!("{} on {}", what(), self.address())
                })
            }
            None => self.send(cmds, &self.policy, what),
        }
    }

    /// Whether some node answers `PING`: one connection attempt per node,
    /// no waiting.
    fn probe(&self) -> bool {
        let candidates = self.candidates(&self.state().routing.lock());
        let ping = [Cmd::new("PING")];
        candidates.iter().any(|node| {
            matches!(
                self.pool_for(node)
                    .attempt(&ping, super::retry::Resend::Read, &|| "PING".to_owned())
                    .as_deref(),
                Ok([Reply::Status(_)])
            )
        })
    }

    fn close(&self) {
        if let Some(cache) = self.cache() {
            cache.close();
        }
        let pools: Vec<Arc<Client>> = self
            .state()
            .routing
            .lock()
            .pools
            .values()
            .cloned()
            .collect();
        for pool in pools {
            pool.close();
        }
    }

    fn redacted_url(&self) -> String {
        self.template.redacted_url()
    }

    fn address(&self) -> String {
        self.template.address()
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The cluster's settings: what the lock listener is known by (its
    /// nodes come from `listen_targets`).
    fn server_config(&self) -> Option<&Config> {
        Some(&self.template)
    }

    /// Classic Pub/Sub reaches every node, so the listener may be on any:
    /// the nodes of the current map (a lost node put last, the map read
    /// again first), then the seeds, each with the URL's settings.
    fn listen_targets(&self, lost: Option<&Config>) -> Vec<Config> {
        let state = self.state();
        if let Some(Addr::Tcp { host, port }) = lost.map(|cfg| &cfg.addr) {
            self.suspect(&(host.clone(), *port));
            state.stale.store(true, Ordering::Relaxed);
        }
        if state.stale.load(Ordering::Relaxed) {
            self.refresh();
        }
        let nodes = self.candidates(&state.routing.lock());
        nodes
            .into_iter()
            .map(|node| self.node_config(&node))
            .collect()
    }

    fn client_cache_hits(&self) -> Option<u64> {
        self.cache().map(ClusterCache::hits)
    }

    fn client_cache_usage(&self) -> Option<usize> {
        self.cache().map(ClusterCache::usage)
    }

    fn client_cache_clear(&self) {
        if let Some(cache) = self.cache() {
            cache.clear();
        }
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
