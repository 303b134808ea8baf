//! The store behind client-side caching: which commands it can answer,
//! from what, and when an answer may be kept. No I/O and no Python here;
//! `tracking.rs` feeds it replies and the server's invalidations.
//!
//! Rules that keep it correct:
//! - Only a reply read on the tracking connection is kept (the server then
//!   owes us an invalidation when the key changes), and only if nothing
//!   invalidated its key between sending and reading: a read takes a
//!   `Claim` before it is sent and `fill` checks it.
//! - A write of ours invalidates its keys before it is sent and again after
//!   its reply, so a read that raced it can never leave the old value.
//! - A command we cannot classify empties everything.

use std::collections::HashMap;

use super::resp::{Cmd, Reply};

/// Past this many bytes (an estimate of what the store holds, bookkeeping
/// included) it starts over rather than grow.
const MAX_BYTES: usize = 64 << 20;
/// What one byte string costs besides its bytes: a `Vec` header and the
/// allocator's rounding.
const VEC_COST: usize = 32;
/// What one key costs besides its name: its map entry, `Entry` and `Claim`
/// bookkeeping.
const ENTRY_COST: usize = 96;

/// What a command does to the keys it names.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Reads one key; the store may answer it and, for some, keep the reply.
    Read(&'a [u8]),
    /// Touches no key's value.
    None,
    /// Changes these keys.
    Writes(Vec<&'a [u8]>),
    /// Could change anything.
    Unknown,
}

const READS: &[&str] = &[
    "GET", "HGET", "HGETALL", "HEXISTS", "HLEN", "HKEYS", "LRANGE", "LLEN", "LINDEX", "LPOS",
];
const KEYLESS: &[&str] = &["PING", "ECHO", "PUBLISH", "INFO", "TIME"];
const KEY_FIRST_WRITES: &[&str] = &[
    "SET",
    "SETNX",
    "SETEX",
    "PSETEX",
    "GETSET",
    "GETDEL",
    "GETEX",
    "INCR",
    "INCRBY",
    "DECR",
    "DECRBY",
    "INCRBYFLOAT",
    "APPEND",
    "HSET",
    "HSETNX",
    "HMSET",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "LPUSH",
    "RPUSH",
    "LPUSHX",
    "RPUSHX",
    "LPOP",
    "RPOP",
    "LSET",
    "LREM",
    "LTRIM",
    "LINSERT",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
];

/// A command as the store reads it, parsed once from its packed bytes:
/// the rules below look at a command several times per round trip.
pub struct Request<'a> {
    name: &'static str,
    /// The arguments after the name.
    args: Vec<&'a [u8]>,
    effect: Effect<'a>,
}

impl<'a> Request<'a> {
    pub fn parse(cmd: &'a Cmd) -> Request<'a> {
        let name = cmd.name();
        let args: Vec<&[u8]> = cmd.args().collect();
        let effect = effect(name, cmd.is_read_only(), &args);
        Request { name, args, effect }
    }

    pub fn effect(&self) -> &Effect<'a> {
        &self.effect
    }

    /// The key the command names first.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.args.first().copied()
    }

    /// The arguments after the key.
    fn rest(&self) -> &[&'a [u8]] {
        self.args.get(1..).unwrap_or_default()
    }
}

fn effect<'a>(name: &str, read_only: bool, args: &[&'a [u8]]) -> Effect<'a> {
    let first = args.first().copied();
    if READS.contains(&name) {
        return first.map_or(Effect::Unknown, Effect::Read);
    }
    if KEYLESS.contains(&name) {
        return Effect::None;
    }
    if KEY_FIRST_WRITES.contains(&name) {
        return first.map_or(Effect::Unknown, |k| Effect::Writes(vec![k]));
    }
    match name {
        "DEL" | "UNLINK" => Effect::Writes(args.to_vec()),
        "EVAL" | "EVALSHA" if read_only => Effect::None,
        "EVAL" | "EVALSHA" => {
            let keys = args
                .get(1)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            match keys.and_then(|n| args.get(2..2 + n)) {
                Some(keys) => Effect::Writes(keys.to_vec()),
                None => Effect::Unknown,
            }
        }
        _ => Effect::Unknown,
    }
}

enum Data {
    Str(Option<Vec<u8>>),
    /// Fields read one by one (HGET); absent ones remembered as `None`.
    Fields(HashMap<Vec<u8>, Option<Vec<u8>>>),
    /// The whole hash (HGETALL), in the server's order.
    Hash {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        index: HashMap<Vec<u8>, usize>,
    },
    /// The whole list (`LRANGE 0 -1`).
    List(Vec<Vec<u8>>),
}

impl Data {
    /// An honest estimate of the memory held, not just the payload: a store
    /// of many small fields is mostly headers.
    fn size(&self) -> usize {
        let text = |v: &[u8]| VEC_COST + v.len();
        match self {
            Data::Str(v) => v.as_deref().map_or(0, text),
            Data::Fields(f) => f
                .iter()
                .map(|(k, v)| text(k) + v.as_deref().map_or(VEC_COST, text))
                .sum(),
            Data::Hash { pairs, .. } => pairs.iter().map(|(k, v)| field_size(k, v)).sum(),
            Data::List(items) => items.iter().map(|v| text(v)).sum(),
        }
    }
}

/// A whole hash's field: the pair, and the field again in the index.
fn field_size(field: &[u8], value: &[u8]) -> usize {
    3 * VEC_COST + 2 * field.len() + value.len() + std::mem::size_of::<usize>()
}

fn entry_size(key: &[u8]) -> usize {
    ENTRY_COST + key.len()
}

struct Entry {
    generation: u64,
    data: Option<Data>,
    /// This hash has been read whole before: a single-field read of it is
    /// sent as `HGETALL` (madsci reads a field, then the whole hash, then
    /// fields again).
    whole: bool,
}

/// A claim on a key's entry as it was before a command was sent: a read's
/// claim to keep its reply, or a write's to apply itself to a whole hash.
/// It holds only if nothing changed the key (or emptied the store) since.
#[derive(Debug, Clone)]
pub struct Claim {
    key: Vec<u8>,
    generation: u64,
    epoch: u64,
}

/// `PTTL` of the key a cacheable read reads, sent with it.
pub fn expiry_probe(read: &Request<'_>) -> Cmd {
    Cmd::new("PTTL").arg(read.key().unwrap_or_default())
}

/// Whether a read may be kept, given its key's `PTTL` from the same round
/// trip: not when the key expires. The server announces an expiry only
/// when it gets round to deleting the key, which can be seconds late on a
/// server with many expiring keys, so a kept copy would outlive its TTL.
/// A missing key (-2) is kept: creating it later is announced at once.
pub fn keeps(pttl: &Reply) -> bool {
    matches!(pttl, Reply::Int(-1 | -2))
}

#[derive(Default)]
pub struct Store {
    entries: HashMap<Vec<u8>, Entry>,
    /// Bumped by `flush`: no claim taken before it fills after it.
    epoch: u64,
    /// The last generation given to a entry. Store-wide, so a key dropped
    /// and read again never gets a generation an old claim still holds.
    generation: u64,
    bytes: usize,
    pub hits: u64,
}

fn bulk(v: &[u8]) -> Reply {
    Reply::Bulk(v.to_vec())
}

fn flat<'a>(items: impl Iterator<Item = &'a [u8]>) -> Reply {
    let (mut data, mut ends) = (Vec::new(), Vec::new());
    for item in items {
        data.extend_from_slice(item);
        ends.push(data.len());
    }
    Reply::Bulks { data, ends }
}

/// Redis's `LRANGE`/`LINDEX` index rules: negative counts from the end.
fn index(i: &[u8], len: usize) -> Option<i64> {
    let i: i64 = std::str::from_utf8(i).ok()?.parse().ok()?;
    Some(if i < 0 { i + len as i64 } else { i })
}

fn answer(data: &Data, cmd: &Request<'_>) -> Option<Reply> {
    Some(match (cmd.name, data, cmd.rest()) {
        ("GET", Data::Str(v), []) => v.as_deref().map_or(Reply::Nil, bulk),
        ("HGET", Data::Hash { pairs, index }, [f]) => {
            index.get(*f).map_or(Reply::Nil, |&i| bulk(&pairs[i].1))
        }
        ("HGET", Data::Fields(fields), [f]) => fields.get(*f)?.as_deref().map_or(Reply::Nil, bulk),
        ("HEXISTS", Data::Hash { index, .. }, [f]) => Reply::Int(index.contains_key(*f).into()),
        ("HEXISTS", Data::Fields(fields), [f]) => Reply::Int(fields.get(*f)?.is_some().into()),
        ("HLEN", Data::Hash { pairs, .. }, []) => Reply::Int(pairs.len() as i64),
        ("HGETALL", Data::Hash { pairs, .. }, []) => {
            flat(pairs.iter().flat_map(|(k, v)| [k.as_slice(), v.as_slice()]))
        }
        ("HKEYS", Data::Hash { pairs, .. }, []) => flat(pairs.iter().map(|(k, _)| k.as_slice())),
        ("LLEN", Data::List(items), []) => Reply::Int(items.len() as i64),
        ("LINDEX", Data::List(items), [i]) => {
            let i = index(i, items.len())?;
            usize::try_from(i)
                .ok()
                .and_then(|i| items.get(i))
                .map_or(Reply::Nil, |v| bulk(v))
        }
        ("LRANGE", Data::List(items), [start, stop]) => {
            let len = items.len() as i64;
            let start = index(start, items.len())?.max(0);
            let stop = index(stop, items.len())?.min(len - 1);
            let range = if start > stop {
                &items[..0]
            } else {
                &items[start as usize..=stop as usize]
            };
            flat(range.iter().map(Vec::as_slice))
        }
        ("LPOS", Data::List(items), [value]) => items
            .iter()
            .position(|item| item == value)
            .map_or(Reply::Nil, |i| Reply::Int(i as i64)),
        _ => return None,
    })
}

/// What a read's reply says about its key; `old` is what was known before.
fn data_from(cmd: &Request<'_>, reply: &Reply, old: Option<Data>) -> Option<Data> {
    match (cmd.name, reply, old) {
        ("GET", Reply::Bulk(v), _) => Some(Data::Str(Some(v.clone()))),
        ("GET", Reply::Nil, _) => Some(Data::Str(None)),
        ("HGET", _, Some(full @ Data::Hash { .. })) => Some(full),
        ("HGET", Reply::Bulk(_) | Reply::Nil, old) => {
            let mut fields = match old {
                Some(Data::Fields(fields)) => fields,
                _ => HashMap::new(),
            };
            let field = cmd.rest().first().copied().unwrap_or_default().to_vec();
            let value = match reply {
                Reply::Bulk(v) => Some(v.clone()),
                _ => None,
            };
            fields.insert(field, value);
            Some(Data::Fields(fields))
        }
        ("HGETALL", Reply::Bulks { .. } | Reply::Array(_), _) => {
            let elements = reply.elements();
            let pairs: Option<Vec<(Vec<u8>, Vec<u8>)>> = elements
                .chunks_exact(2)
                .map(|p| Some((p[0]?.to_vec(), p[1]?.to_vec())))
                .collect();
            pairs.filter(|_| elements.len() % 2 == 0).map(|pairs| {
                let index = pairs
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.clone(), i))
                    .collect();
                Data::Hash { pairs, index }
            })
        }
        ("LRANGE", Reply::Bulks { .. } | Reply::Array(_), _) => reply
            .elements()
            .into_iter()
            .map(|e| e.map(<[u8]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .map(Data::List),
        _ => None,
    }
}

impl Store {
    /// The reply the server would give `cmd` now, if the store knows it.
    pub fn lookup(&mut self, cmd: &Request<'_>) -> Option<Reply> {
        let Effect::Read(key) = cmd.effect else {
            return None;
        };
        let reply = answer(self.entries.get(key)?.data.as_ref()?, cmd)?;
        self.hits += 1;
        Some(reply)
    }

    /// The read to send instead of `cmd` when its whole key is worth
    /// fetching: `HGETALL` for a field read of a hash that was read whole.
    pub fn read_ahead(&self, cmd: &Request<'_>) -> Option<Cmd> {
        let Effect::Read(key) = cmd.effect else {
            return None;
        };
        let fields = ["HGET", "HEXISTS", "HLEN", "HKEYS"].contains(&cmd.name);
        (fields && self.entries.get(key)?.whole).then(|| Cmd::new("HGETALL").arg(key))
    }

    /// The answer to `cmd` from the reply to the read sent in its place;
    /// an error reply is the answer.
    pub fn answer_from(cmd: &Request<'_>, sent: &Request<'_>, reply: &Reply) -> Option<Reply> {
        match reply {
            Reply::Error(_) => Some(reply.clone()),
            _ => answer(&data_from(sent, reply, None)?, cmd),
        }
    }

    /// Before sending `HSET` to a hash held whole: the claim to apply the
    /// write to the copy (`apply_write`) instead of dropping it.
    pub fn claim_write(&mut self, cmd: &Request<'_>) -> Option<Claim> {
        let key = cmd.key().filter(|_| cmd.name == "HSET")?;
        let entry = self.entries.get(key)?;
        matches!(entry.data, Some(Data::Hash { .. })).then(|| Claim {
            key: key.to_vec(),
            generation: entry.generation,
            epoch: self.epoch,
        })
    }

    /// After the server ran `cmd` (an `HSET`) and then `HLEN` on the same
    /// key atomically: apply the write to our copy if nothing touched the key
    /// meanwhile and the lengths agree; otherwise drop the copy.
    pub fn apply_write(&mut self, claim: Claim, cmd: &Request<'_>, set: &Reply, len: &Reply) {
        let valid = claim.epoch == self.epoch
            && matches!(set, Reply::Int(_))
            && self
                .entries
                .get(&claim.key)
                .is_some_and(|s| s.generation == claim.generation);
        let entry = self.entries.get_mut(&claim.key);
        let Some(Entry {
            data: Some(Data::Hash { pairs, index }),
            ..
        }) = entry.filter(|_| valid)
        else {
            return self.invalidate(&claim.key);
        };
        let args = cmd.rest();
        let (mut added, mut removed) = (0, 0);
        for pair in args.chunks_exact(2) {
            let (field, value) = (pair[0].to_vec(), pair[1].to_vec());
            added += field_size(&field, &value);
            match index.get(&field) {
                Some(&i) => {
                    removed += field_size(&field, &pairs[i].1);
                    pairs[i].1 = value;
                }
                None => {
                    index.insert(field.clone(), pairs.len());
                    pairs.push((field, value));
                }
            }
        }
        self.bytes = self.bytes + added - removed;
        if *len != Reply::Int(pairs.len() as i64) || args.len() % 2 != 0 {
            self.invalidate(&claim.key);
        }
    }

    /// Before sending a read that could fill the store.
    pub fn claim_fill(&mut self, cmd: &Request<'_>) -> Option<Claim> {
        let Effect::Read(key) = cmd.effect else {
            return None;
        };
        let fills = match cmd.name {
            "GET" | "HGET" | "HGETALL" => true,
            "LRANGE" => cmd.rest() == [&b"0"[..], &b"-1"[..]],
            _ => false,
        };
        if !fills {
            return None;
        }
        if !self.entries.contains_key(key) {
            let generation = self.next_generation();
            self.bytes += entry_size(key);
            let fresh = Entry {
                generation,
                data: None,
                whole: false,
            };
            self.entries.insert(key.to_vec(), fresh);
        }
        let entry = &self.entries[key];
        Some(Claim {
            key: key.to_vec(),
            generation: entry.generation,
            epoch: self.epoch,
        })
    }

    /// Keep `reply` to the read `cmd` if its claim is still good.
    pub fn fill(&mut self, claim: Claim, cmd: &Request<'_>, reply: &Reply) {
        let Some(entry) = self.entries.get_mut(&claim.key) else {
            return;
        };
        if claim.epoch != self.epoch || claim.generation != entry.generation {
            if entry.data.is_none() && !entry.whole {
                self.drop_entry(&claim.key);
            }
            return;
        }
        let before = entry.data.as_ref().map_or(0, Data::size);
        let new = data_from(cmd, reply, entry.data.take());
        entry.whole |= matches!(new, Some(Data::Hash { .. }));
        self.bytes = self.bytes - before + new.as_ref().map_or(0, Data::size);
        match new {
            Some(data) => entry.data = Some(data),
            None if !entry.whole => self.drop_entry(&claim.key),
            None => {}
        }
        if self.bytes > MAX_BYTES {
            self.flush();
        }
    }

    /// The key changed: its copy goes, and so does its entry unless it
    /// remembers that the hash is read whole (entries of keys read once must
    /// not pile up).
    pub fn invalidate(&mut self, key: &[u8]) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.generation += 1;
        entry.generation = self.generation;
        if let Some(old) = entry.data.take() {
            self.bytes -= old.size();
        }
        if !entry.whole {
            self.drop_entry(key);
        }
    }

    fn drop_entry(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry_size(key) + entry.data.as_ref().map_or(0, Data::size);
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Forget everything (the server flushed, or we may have missed an
    /// invalidation); claims already taken can no longer fill.
    pub fn flush(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.epoch += 1;
    }

    /// What a command about to be sent (and just answered) does to the store.
    pub fn before_write(&mut self, cmd: &Request<'_>) {
        match &cmd.effect {
            Effect::Read(_) | Effect::None => {}
            Effect::Writes(keys) => keys.iter().for_each(|k| self.invalidate(k)),
            Effect::Unknown => self.flush(),
        }
    }

    /// An `invalidate` push from the server: its keys, or nil for a flush.
    pub fn on_push(&mut self, items: Vec<Reply>) {
        let mut items = items.into_iter();
        if !matches!(items.next(), Some(Reply::Bulk(kind)) if kind == b"invalidate") {
            return;
        }
        match items.next() {
            Some(keys @ (Reply::Bulks { .. } | Reply::Array(_))) => {
                for key in keys.elements().into_iter().flatten() {
                    self.invalidate(key);
                }
            }
            _ => self.flush(),
        }
    }

    /// The estimated bytes held (`MAX_BYTES` at most).
    pub fn usage(&self) -> usize {
        self.bytes
    }

    /// Keys with a cached value.
    pub fn cached_keys(&self) -> usize {
        self.entries.values().filter(|s| s.data.is_some()).count()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn values_that_expire_are_not_kept() {
        assert!(keeps(&Reply::Int(-1)));
        assert!(keeps(&Reply::Int(-2)));
        assert!(!keeps(&Reply::Int(300)));
        assert!(!keeps(&Reply::Int(0)));
        assert!(!keeps(&Reply::Error("ERR".into())));
        let probe = expiry_probe(&req(&["HGETALL", "h"]));
        assert_eq!(probe.name(), "PTTL");
        assert_eq!(probe.args().collect::<Vec<_>>(), vec![&b"h"[..]]);
    }

    use super::*;

    fn cmd(parts: &[&str]) -> Cmd {
        // Test commands live for the whole test run.
        let mut c = Cmd::new(Box::leak(parts[0].to_owned().into_boxed_str()));
        parts[1..].iter().for_each(|p| c.push(p.as_bytes()));
        c
    }

    fn bulks(items: &[&str]) -> Reply {
        flat(items.iter().map(|s| s.as_bytes()))
    }

    /// A test command as the store reads it; the command lives for the
    /// whole test run.
    fn req(parts: &[&str]) -> Request<'static> {
        Request::parse(Box::leak(Box::new(cmd(parts))))
    }

    fn read(store: &mut Store, parts: &[&str], reply: Reply) {
        let c = req(parts);
        let claim = store.claim_fill(&c).expect("a filling read");
        store.fill(claim, &c, &reply);
    }

    #[test]
    fn classifies_commands() {
        assert_eq!(*req(&["HGET", "h", "f"]).effect(), Effect::Read(b"h"));
        assert_eq!(
            *req(&["HSET", "h", "f", "v"]).effect(),
            Effect::Writes(vec![b"h"])
        );
        assert_eq!(
            *req(&["DEL", "a", "b"]).effect(),
            Effect::Writes(vec![b"a", b"b"])
        );
        assert_eq!(
            *req(&["EVALSHA", "abc", "2", "k1", "k2", "arg"]).effect(),
            Effect::Writes(vec![b"k1", b"k2"])
        );
        let reading = cmd(&["EVALSHA", "abc", "1", "k1"]).read_only(true);
        assert_eq!(*Request::parse(&reading).effect(), Effect::None);
        assert_eq!(*req(&["PING"]).effect(), Effect::None);
        assert_eq!(*req(&["FLUSHALL"]).effect(), Effect::Unknown);
        // Fewer keys than announced: a malformed script call, so anything.
        assert_eq!(
            *req(&["EVALSHA", "abc", "2", "k1"]).effect(),
            Effect::Unknown
        );
    }

    #[test]
    fn answers_from_a_whole_hash() {
        let mut s = Store::default();
        read(&mut s, &["HGETALL", "h"], bulks(&["a", "1", "b", "2"]));
        assert_eq!(s.lookup(&req(&["HGET", "h", "b"])), Some(bulk(b"2")));
        assert_eq!(s.lookup(&req(&["HGET", "h", "z"])), Some(Reply::Nil));
        assert_eq!(s.lookup(&req(&["HEXISTS", "h", "a"])), Some(Reply::Int(1)));
        assert_eq!(s.lookup(&req(&["HLEN", "h"])), Some(Reply::Int(2)));
        assert_eq!(s.lookup(&req(&["HKEYS", "h"])), Some(bulks(&["a", "b"])));
        assert_eq!(
            s.lookup(&req(&["HGETALL", "h"])),
            Some(bulks(&["a", "1", "b", "2"]))
        );
        // Another type's command goes to the server, which says WRONGTYPE.
        assert_eq!(s.lookup(&req(&["GET", "h"])), None);
        assert_eq!(s.lookup(&req(&["LLEN", "h"])), None);
    }

    #[test]
    fn remembers_single_fields_present_or_not() {
        let mut s = Store::default();
        read(&mut s, &["HGET", "h", "a"], bulk(b"1"));
        read(&mut s, &["HGET", "h", "b"], Reply::Nil);
        assert_eq!(s.lookup(&req(&["HGET", "h", "a"])), Some(bulk(b"1")));
        assert_eq!(s.lookup(&req(&["HGET", "h", "b"])), Some(Reply::Nil));
        assert_eq!(s.lookup(&req(&["HEXISTS", "h", "b"])), Some(Reply::Int(0)));
        assert_eq!(s.lookup(&req(&["HGET", "h", "c"])), None);
        assert_eq!(s.lookup(&req(&["HGETALL", "h"])), None);
        assert_eq!(s.lookup(&req(&["HLEN", "h"])), None);
    }

    #[test]
    fn answers_list_reads_with_redis_index_rules() {
        let mut s = Store::default();
        read(&mut s, &["LRANGE", "l", "0", "-1"], bulks(&["x", "y", "z"]));
        assert_eq!(s.lookup(&req(&["LLEN", "l"])), Some(Reply::Int(3)));
        assert_eq!(s.lookup(&req(&["LINDEX", "l", "-1"])), Some(bulk(b"z")));
        assert_eq!(s.lookup(&req(&["LINDEX", "l", "3"])), Some(Reply::Nil));
        assert_eq!(s.lookup(&req(&["LINDEX", "l", "-4"])), Some(Reply::Nil));
        assert_eq!(
            s.lookup(&req(&["LRANGE", "l", "1", "99"])),
            Some(bulks(&["y", "z"]))
        );
        assert_eq!(
            s.lookup(&req(&["LRANGE", "l", "-2", "-2"])),
            Some(bulks(&["y"]))
        );
        assert_eq!(s.lookup(&req(&["LRANGE", "l", "2", "1"])), Some(bulks(&[])));
        assert_eq!(s.lookup(&req(&["LPOS", "l", "y"])), Some(Reply::Int(1)));
        assert_eq!(s.lookup(&req(&["LPOS", "l", "w"])), Some(Reply::Nil));
        // Only the whole list is kept.
        let part = req(&["LRANGE", "m", "0", "1"]);
        assert!(s.claim_fill(&part).is_none());
    }

    #[test]
    fn a_write_or_push_between_send_and_reply_keeps_the_reply_out() {
        let mut s = Store::default();
        let c = req(&["HGETALL", "h"]);
        let claim = s.claim_fill(&c).unwrap();
        s.before_write(&req(&["HSET", "h", "a", "2"]));
        s.fill(claim, &c, &bulks(&["a", "1"]));
        assert_eq!(s.lookup(&c), None);

        let claim = s.claim_fill(&c).unwrap();
        s.on_push(vec![bulk(b"invalidate"), bulks(&["h"])]);
        s.fill(claim, &c, &bulks(&["a", "1"]));
        assert_eq!(s.lookup(&c), None);

        let claim = s.claim_fill(&c).unwrap();
        s.on_push(vec![bulk(b"invalidate"), Reply::Nil]);
        s.fill(claim, &c, &bulks(&["a", "1"]));
        assert_eq!(s.lookup(&c), None);

        // Another key's invalidation does not matter.
        let claim = s.claim_fill(&c).unwrap();
        s.on_push(vec![bulk(b"invalidate"), bulks(&["other"])]);
        s.fill(claim, &c, &bulks(&["a", "1"]));
        assert_eq!(s.lookup(&req(&["HGET", "h", "a"])), Some(bulk(b"1")));
    }

    #[test]
    fn writes_and_pushes_drop_what_they_touch() {
        let mut s = Store::default();
        read(&mut s, &["GET", "k"], bulk(b"5"));
        read(&mut s, &["HGETALL", "h"], bulks(&["a", "1"]));
        read(&mut s, &["LRANGE", "l", "0", "-1"], bulks(&["x"]));
        s.before_write(&req(&["EVALSHA", "sha", "1", "h", "arg"]));
        assert_eq!(s.lookup(&req(&["HLEN", "h"])), None);
        assert_eq!(s.lookup(&req(&["GET", "k"])), Some(bulk(b"5")));
        s.on_push(vec![bulk(b"invalidate"), bulks(&["k"])]);
        assert_eq!(s.lookup(&req(&["GET", "k"])), None);
        assert_eq!(s.cached_keys(), 1);
        s.before_write(&req(&["FLUSHALL"]));
        assert_eq!(s.cached_keys(), 0);
        assert_eq!(s.bytes, 0);
    }

    #[test]
    fn keys_read_once_leave_no_bookkeeping_behind() {
        let mut s = Store::default();
        for i in 0..1000 {
            let key = format!("workflow:{i}");
            read(&mut s, &["GET", &key], bulk(b"{}"));
            s.invalidate(key.as_bytes());
        }
        assert_eq!((s.entries.len(), s.bytes), (0, 0));
    }

    #[test]
    fn a_claim_from_before_a_key_was_dropped_never_fills_its_new_entry() {
        let mut s = Store::default();
        let get = req(&["GET", "k"]);
        let old = s.claim_fill(&get).unwrap();
        s.invalidate(b"k"); // the entry goes
        let new = s.claim_fill(&get).unwrap(); // and comes back
        s.fill(new, &get, &bulk(b"fresh"));
        s.fill(old, &get, &bulk(b"stale"));
        assert_eq!(s.lookup(&get), Some(bulk(b"fresh")));
        assert_eq!(s.usage(), entry_size(b"k") + VEC_COST + 5);
    }

    #[test]
    fn a_hash_read_whole_once_is_fetched_whole_for_a_field() {
        let mut s = Store::default();
        let field = req(&["HGET", "h", "a"]);
        assert!(s.read_ahead(&field).is_none());
        read(&mut s, &["HGETALL", "h"], bulks(&["a", "1"]));
        s.invalidate(b"h");
        let whole = s.read_ahead(&field).expect("read whole");
        assert_eq!(whole.name(), "HGETALL");
        assert_eq!(whole.args().collect::<Vec<_>>(), [&b"h"[..]]);
        let whole = Request::parse(&whole);
        let reply = bulks(&["a", "2", "b", "3"]);
        assert_eq!(Store::answer_from(&field, &whole, &reply), Some(bulk(b"2")));
        let len = req(&["HLEN", "h"]);
        assert_eq!(
            Store::answer_from(&len, &whole, &reply),
            Some(Reply::Int(2))
        );
        let wrong = Reply::Error("WRONGTYPE".into());
        assert_eq!(
            Store::answer_from(&field, &whole, &wrong),
            Some(wrong.clone())
        );
        // The hint survives a rejected fill; a flush forgets it.
        let claim = s.claim_fill(&whole).unwrap();
        s.invalidate(b"h");
        s.fill(claim, &whole, &reply);
        assert!(s.read_ahead(&field).is_some());
        s.flush();
        assert!(s.read_ahead(&field).is_none());
    }

    #[test]
    fn a_write_to_a_whole_hash_is_applied_to_the_copy() {
        let mut s = Store::default();
        let set = req(&["HSET", "h", "b", "9", "c", "3"]);
        assert!(s.claim_write(&set).is_none(), "nothing held");
        read(&mut s, &["HGETALL", "h"], bulks(&["a", "1", "b", "2"]));
        let claim = s.claim_write(&set).unwrap();
        s.apply_write(claim, &set, &Reply::Int(1), &Reply::Int(3));
        assert_eq!(
            s.lookup(&req(&["HGETALL", "h"])),
            Some(bulks(&["a", "1", "b", "9", "c", "3"]))
        );
        assert_eq!(s.lookup(&req(&["HGET", "h", "c"])), Some(bulk(b"3")));
        assert_eq!(s.bytes, entry_size(b"h") + 3 * field_size(b"a", b"1"));

        // The server's length disagrees: someone else wrote; drop the copy.
        let one = req(&["HSET", "h", "d", "4"]);
        let claim = s.claim_write(&one).unwrap();
        s.apply_write(claim, &one, &Reply::Int(1), &Reply::Int(7));
        assert_eq!(s.lookup(&req(&["HLEN", "h"])), None);

        // An invalidation while the write was out: drop, do not apply.
        read(&mut s, &["HGETALL", "h"], bulks(&["a", "1"]));
        let claim = s.claim_write(&one).unwrap();
        s.on_push(vec![bulk(b"invalidate"), bulks(&["h"])]);
        s.apply_write(claim, &one, &Reply::Int(1), &Reply::Int(2));
        assert_eq!(s.lookup(&req(&["HLEN", "h"])), None);

        // The write failed (WRONGTYPE): drop.
        read(&mut s, &["HGETALL", "h"], bulks(&["a", "1"]));
        let claim = s.claim_write(&one).unwrap();
        s.apply_write(claim, &one, &Reply::Error("WRONGTYPE".into()), &Reply::Nil);
        assert_eq!(s.lookup(&req(&["HLEN", "h"])), None);
    }

    #[test]
    fn error_replies_are_not_kept() {
        let mut s = Store::default();
        read(&mut s, &["GET", "h"], Reply::Error("WRONGTYPE".into()));
        assert_eq!(s.lookup(&req(&["GET", "h"])), None);
        assert!(s.entries.is_empty());
    }
}
