//! Redis Cluster routing rules, pure: which slot a key hashes to, which
//! key of a command routes it, the slot map `CLUSTER SLOTS` describes, and
//! the `MOVED`/`ASK` redirections. `cluster.rs` does the network work.

use super::once::hash_tag;
use super::resp::{Cmd, Reply};
use super::retry::Resend;

/// Slots in a cluster (the cluster specification's 16384).
pub const SLOTS: usize = 16384;

/// A node's `(host, port)`.
pub type Node = (String, u16);

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), as the cluster
/// specification names it.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot `key` lives in: its hash tag's CRC16, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// Commands that name no key: sent to any node. (`PUBLISH`'s argument is a
/// channel; classic Pub/Sub reaches the whole cluster from any node.)
fn is_keyless(name: &str) -> bool {
    matches!(
        name,
        "PING"
            | "ECHO"
            | "INFO"
            | "CONFIG"
            | "DBSIZE"
            | "ROLE"
            | "LASTSAVE"
            | "SCAN"
            | "TIME"
            | "MULTI"
            | "EXEC"
            | "DISCARD"
            | "UNWATCH"
            | "ASKING"
            | "READONLY"
            | "READWRITE"
            | "CLUSTER"
            | "SCRIPT"
            | "FUNCTION"
            | "CLIENT"
            | "COMMAND"
            | "HELLO"
            | "AUTH"
            | "SELECT"
            | "WAIT"
            | "PUBLISH"
            | "SUBSCRIBE"
            | "UNSUBSCRIBE"
            | "FLUSHALL"
            | "FLUSHDB"
    )
}

/// The key that decides where `cmd` goes: a script's first key (`EVAL`,
/// `EVALSHA`, their `_RO` forms, `FCALL`), else the first argument of a
/// keyed command; `None` for keyless commands and scripts without keys.
pub fn routing_key(cmd: &Cmd) -> Option<&[u8]> {
    let name = cmd.name();
    if is_keyless(name) {
        return None;
    }
    let mut args = cmd.args();
    if matches!(
        name,
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO"
    ) {
        let _script = args.next()?;
        let numkeys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
        return if numkeys > 0 { args.next() } else { None };
    }
    args.next()
}

/// The slot a batch goes to: its first keyed command's (the structures
/// keep every batch on one key, or on keys of one slot).
pub fn batch_slot(cmds: &[Cmd]) -> Option<u16> {
    cmds.iter().find_map(routing_key).map(slot)
}

/// The order in which nodes are tried when any node will do (a keyless
/// command, a map read, the lock release listener): the map's `primaries`
/// from `start` on (rotating spreads the load), then the `seeds` the map
/// does not name (they may be replicas), nodes that `failed_lately` last.
pub fn any_node_order(
    primaries: &[Node],
    start: usize,
    seeds: &[Node],
    failed_lately: impl Fn(&Node) -> bool,
) -> Vec<Node> {
    let mut nodes = primaries.to_vec();
    if !nodes.is_empty() {
        let first = start % nodes.len();
        nodes.rotate_left(first);
    }
    for seed in seeds {
        if !nodes.contains(seed) {
            nodes.push(seed.clone());
        }
    }
    // Stable: the order above holds within each group.
    nodes.sort_by_key(|n| failed_lately(n));
    nodes
}

/// Which node serves each slot, as `CLUSTER SLOTS` last said (updated by
/// `MOVED` meanwhile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    /// The primaries, each once.
    nodes: Vec<Node>,
    /// Per slot, an index into `nodes`; `NONE` where no node serves it.
    owner: Vec<u16>,
}

const NONE: u16 = u16::MAX;

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap {
            nodes: Vec::new(),
            owner: vec![NONE; SLOTS],
        }
    }
}

impl SlotMap {
    /// The primary serving `slot`, if the map knows one.
    pub fn node(&self, slot: u16) -> Option<&Node> {
        let index = *self.owner.get(usize::from(slot))?;
        self.nodes.get(usize::from(index))
    }

    /// Every primary the map names.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// How many slots have a node.
    pub fn covered(&self) -> usize {
        self.owner.iter().filter(|&&o| o != NONE).count()
    }

    /// `MOVED slot node`: the slot is served there now.
    pub fn assign(&mut self, slot: u16, node: &Node) {
        let index = match self.nodes.iter().position(|n| n == node) {
            Some(i) => i,
            None => {
                self.nodes.push(node.clone());
                self.nodes.len() - 1
            }
        };
        if let Some(owner) = self.owner.get_mut(usize::from(slot)) {
            *owner = index as u16;
        }
    }

    fn assign_range(&mut self, first: u16, last: u16, node: &Node) {
        for s in first..=last.min(SLOTS as u16 - 1) {
            self.assign(s, node);
        }
    }

    /// Read a `CLUSTER SLOTS` reply from the node at `asked`: each entry is
    /// `[first slot, last slot, [host, port, id, ...], replicas...]`. An
    /// empty host means the node that answered (a node that does not know
    /// its own address says so); `?` is an endpoint the node cannot name,
    /// left out.
    pub fn from_cluster_slots(reply: &Reply, asked: &str) -> Result<SlotMap, String> {
        let Reply::Array(entries) = reply else {
            return Err(match reply {
                Reply::Error(e) => format!("CLUSTER SLOTS answered {e}"),
                _ => "CLUSTER SLOTS sent an answer that is not an array".into(),
            });
        };
        let mut map = SlotMap::default();
        for entry in entries {
            let Reply::Array(fields) = entry else {
                return Err("CLUSTER SLOTS sent an entry that is not an array".into());
            };
            let (Some(Reply::Int(first)), Some(Reply::Int(last)), Some(primary)) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err("CLUSTER SLOTS sent an entry without a slot range and node".into());
            };
            let in_range = |n: i64| (0..SLOTS as i64).contains(&n);
            if !in_range(*first) || !in_range(*last) || first > last {
                return Err(format!("CLUSTER SLOTS sent the slot range {first}-{last}"));
            }
            if let Some(node) = node_of(primary, asked)? {
                map.assign_range(*first as u16, *last as u16, &node);
            }
        }
        Ok(map)
    }
}

/// `[host, port, ...]` of a `CLUSTER SLOTS` entry; `None` for `?`.
fn node_of(reply: &Reply, asked: &str) -> Result<Option<Node>, String> {
    let Reply::Array(parts) = reply else {
        return Err("CLUSTER SLOTS sent a node that is not an array".into());
    };
    let host = match parts.first() {
        Some(Reply::Bulk(b)) => {
            std::str::from_utf8(b).map_err(|_| "CLUSTER SLOTS sent a host that is not text")?
        }
        Some(Reply::Status(s)) => s.as_str(),
        _ => return Err("CLUSTER SLOTS sent a node without a host".into()),
    };
    let port = match parts.get(1) {
        Some(Reply::Int(p)) => u16::try_from(*p).map_err(|_| "CLUSTER SLOTS sent a bad port")?,
        _ => return Err("CLUSTER SLOTS sent a node without a port".into()),
    };
    Ok(match host {
        "?" => None,
        "" => Some((asked.to_owned(), port)),
        host => Some((host.to_owned(), port)),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives on `node` now: update the map, send there.
    Moved { slot: u16, node: Node },
    /// This key is being moved to `node`: send there once, after `ASKING`,
    /// and leave the map as it is.
    Ask { slot: u16, node: Node },
}

impl Redirect {
    pub fn node(&self) -> &Node {
        match self {
            Redirect::Moved { node, .. } | Redirect::Ask { node, .. } => node,
        }
    }
}

/// `MOVED <slot> <host:port>` or `ASK <slot> <host:port>` from a node at
/// host `asked`; an empty host (`:port`, a node that cannot name its
/// endpoint) is the node that answered. Anything else is no redirection.
pub fn redirect(error: &str, asked: &str) -> Option<Redirect> {
    let mut words = error.split_ascii_whitespace();
    let kind = words.next()?;
    if kind != "MOVED" && kind != "ASK" {
        return None;
    }
    let slot: u16 = words
        .next()?
        .parse()
        .ok()
        .filter(|&s| usize::from(s) < SLOTS)?;
    let endpoint = words.next()?;
    // The host is printed as it is, IPv6 without brackets: the port is
    // after the last colon.
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { asked } else { host };
    let node = (host.to_owned(), port);
    Some(match kind {
        "MOVED" => Redirect::Moved { slot, node },
        _ => Redirect::Ask { slot, node },
    })
}

/// The first redirection among a batch's replies: nothing of the batch
/// ran where it was sent (a `MULTI` block answers the redirection to the
/// queued command and `EXECABORT` to `EXEC`).
pub fn redirect_in(replies: &[Reply], asked: &str) -> Option<Redirect> {
    replies.iter().find_map(|r| match r {
        Reply::Error(e) => redirect(e, asked),
        _ => None,
    })
}

/// Whether a batch that met a redirection can be sent again elsewhere:
/// nothing in it applied a change where it went. A redirected command did
/// not run; in a `MULTI` block whose `EXEC` answered `EXECABORT` nothing
/// ran; a command safe to repeat may have run. Anything else that ran (a
/// write answered before a later command was redirected: a batch whose key
/// moved between its commands) must not run twice.
pub fn nothing_applied(cmds: &[Cmd], replies: &[Reply]) -> bool {
    let aborted = cmds.iter().zip(replies).any(|(cmd, reply)| {
        cmd.name() == "EXEC" && matches!(reply, Reply::Error(e) if e.starts_with("EXECABORT"))
    });
    let mut in_block = false;
    cmds.iter().zip(replies).all(|(cmd, reply)| {
        match cmd.name() {
            "MULTI" => in_block = true,
            "EXEC" | "DISCARD" => in_block = false,
            _ => {}
        }
        matches!(reply, Reply::Error(_))
            || cmd.resend() != Resend::Never
            || aborted && (in_block || cmd.name() == "MULTI")
    })
}

#[cfg(test)]
#[path = "cluster_slots_tests.rs"]
mod tests;
