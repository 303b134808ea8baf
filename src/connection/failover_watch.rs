//! Hearing the sentinels announce a new primary (`+switch-master`).
//!
//! A forced failover promotes a replica while the old primary, not yet
//! reconfigured, still takes writes for seconds (about 10 s with default
//! timers); a write it acknowledges then is lost when it becomes a replica.
//! A `READONLY` answer comes only after that, so the pool would go on
//! writing to the old primary until then. One thread per process and
//! Sentinel deployment subscribes to a sentinel's `+switch-master` channel
//! and bumps an epoch when our service switches (or when it may have missed
//! a switch: its subscription broke); the pool drops every connection opened
//! in an earlier epoch, so the next command asks the sentinels again.
//! The thread stops once no pool holds its `Watch`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use super::config::{Addr, Config};
use super::conn::Conn;
use super::fork::PerProcess;
use super::resp::{Cmd, Reply};
use super::sentinel::Sentinels;
use crate::sync::Mutex;

const LOG: &str = "madsci_cache_rs";
/// How often an idle watcher looks whether it is still wanted.
const TICK: Duration = Duration::from_millis(200);
/// The announcements' channel on every sentinel.
const CHANNEL: &str = "+switch-master";

/// The count of primary switches heard, for one Sentinel deployment.
#[derive(Default)]
pub struct Watch {
    epoch: AtomicU64,
}

impl Watch {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// The watches running, by deployment and who we log in as.
type Watches = HashMap<String, Weak<Watch>>;

/// Per process: a forked child has none of its parent's watcher threads.
static WATCHES: LazyLock<PerProcess<Mutex<Watches>>> = LazyLock::new(PerProcess::default);

/// The watch for `cfg`'s deployment, its thread started if needed; `None`
/// when `cfg` is not a Sentinel address.
pub fn watch(cfg: &Config) -> Option<Arc<Watch>> {
    let Addr::Sentinel(sentinels) = &cfg.addr else {
        return None;
    };
    let key = format!(
        "{} tls={} sentinel_tls={:?} user={:?}",
        sentinels.describe(),
        cfg.tls_config.is_some(),
        sentinels.tls,
        sentinels.username
    );
    let mut all = WATCHES.current().lock();
    if let Some(watch) = all.get(&key).and_then(Weak::upgrade) {
        return Some(watch);
    }
    let watch = Arc::new(Watch::default());
    let spawned = std::thread::Builder::new()
        .name("madsci_cache_rs-failover-watch".into())
        .spawn({
            let (cfg, weak) = (cfg.clone(), Arc::downgrade(&watch));
            move || run(&cfg, &weak)
        });
    match spawned {
        Ok(_) => {
            all.insert(key, Arc::downgrade(&watch));
        }
        Err(e) => {
            log::warn!(target: LOG, "cannot follow {}'s failovers ({e}): a demoted primary is found by its READONLY answer instead", sentinels.describe());
        }
    }
    Some(watch)
}

/// The new primary, when `reply` is a `+switch-master` message about
/// `service` (`<name> <old-ip> <old-port> <new-ip> <new-port>`).
pub fn switched(reply: &Reply, service: &str) -> Option<(String, u16)> {
    let elements = reply.elements();
    let [Some(kind), Some(_), Some(payload)] = elements.as_slice() else {
        return None;
    };
    if *kind != b"message" {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    match text.split(' ').collect::<Vec<_>>().as_slice() {
        [name, _, _, host, port] if *name == service => {
            Some((host.to_string(), port.parse().ok()?))
        }
        _ => None,
    }
}

fn subscribe(cfg: &Config, sentinels: &Sentinels, node: &(String, u16)) -> Option<Conn> {
    let ask = cfg.sentinel_node(sentinels, &node.0, node.1);
    let mut conn = Conn::open(&ask).ok()?;
    let reply = conn.request(&Cmd::new("SUBSCRIBE").arg(CHANNEL)).ok()?;
    (!matches!(reply, Reply::Error(_))).then_some(conn)
}

fn run(cfg: &Config, watch: &Weak<Watch>) {
    // This thread outlives the interpreter: it must never attach to it.
    crate::logger::mark_background();
    let Addr::Sentinel(sentinels) = &cfg.addr else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        for node in &sentinels.nodes {
            let Some(mut conn) = subscribe(cfg, sentinels, node) else {
                continue;
            };
            backoff = Duration::from_millis(100);
            loop {
                let Some(watching) = watch.upgrade() else {
                    return;
                };
                match conn.next_unasked(TICK) {
                    Ok(Some(reply)) => {
                        if let Some((host, port)) = switched(&reply, &sentinels.service) {
                            log::info!(target: LOG, "the sentinels switched {:?} to {host}:{port}", sentinels.service);
                            watching.bump();
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // A switch may have gone unheard: new connections
                        // ask the sentinels again.
                        log::debug!(target: LOG, "lost the failover subscription to sentinel {}:{} ({e})", node.0, node.1);
                        watching.bump();
                        break;
                    }
                }
            }
        }
        if watch.strong_count() == 0 {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel: &str, payload: &str) -> Reply {
        Reply::Array(
            ["message", channel, payload]
                .iter()
                .map(|s| Reply::Bulk(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn reads_a_switch_of_our_service_only() {
        let m = message(CHANNEL, "lab 127.0.0.1 6379 10.0.0.2 6380");
        assert_eq!(switched(&m, "lab"), Some(("10.0.0.2".into(), 6380)));
        assert_eq!(switched(&m, "other"), None);
        assert_eq!(switched(&message(CHANNEL, "lab 1 2 3"), "lab"), None);
        let confirm = Reply::Array(vec![
            Reply::Bulk(b"subscribe".to_vec()),
            Reply::Bulk(CHANNEL.as_bytes().to_vec()),
            Reply::Int(1),
        ]);
        assert_eq!(switched(&confirm, "lab"), None);
    }

    #[test]
    fn only_sentinel_addresses_are_watched() {
        assert!(watch(&Config::tcp("h", 1)).is_none());
    }
}
