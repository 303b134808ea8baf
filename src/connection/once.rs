//! Exactly-once writes over a connection that may lose replies.
//!
//! A write whose reply was lost may or may not have run, and on a stalled
//! server it may still be sitting in a socket buffer, to run later. So
//! asking the server "did it land?" cannot settle it; a token can. Each
//! write is sent as a script that first looks for its token's record and,
//! when there is none, runs the write and records its answer under the
//! token, atomically. A second arrival of the same bytes (our re-send, or
//! the original arriving late) finds the record and returns the recorded
//! answer instead of applying again, in whichever order they arrive.
//!
//! The data keeps pottery's bytes: the record is a side key beside it, on
//! the same Cluster hash slot, expiring after twice the retry window (the
//! longest time between two arrivals of one write).

use std::time::Duration;

/// Every record key starts with this.
pub const KEY_PREFIX: &str = "madsci-cache-rs:once:";

/// Records live at least this long, whatever the window.
const MIN_RECORD_LIFE: Duration = Duration::from_secs(60);

/// The bytes Redis Cluster hashes to find `key`'s slot: the content of the
/// first `{...}` when it is not empty, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&c| c == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&c| c == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The record key for one write to `key`: on `key`'s slot whenever a key
/// can be (a key holding a `}` but no hash tag has no such sibling; it
/// only matters on a Cluster, where such a key is refused as cross-slot).
pub fn record_key(key: &[u8], token: &str) -> Vec<u8> {
    let tag = hash_tag(key);
    let mut out = Vec::with_capacity(KEY_PREFIX.len() + tag.len() + token.len() + 3);
    out.extend_from_slice(KEY_PREFIX.as_bytes());
    out.push(b'{');
    out.extend_from_slice(tag);
    out.extend_from_slice(b"}:");
    out.extend_from_slice(token.as_bytes());
    out
}

/// A fresh token: a random UUID4, as pottery's lock tokens are (no process
/// or thread shares one, forked children included: each is drawn anew).
pub fn new_token() -> String {
    crate::token::uuid4().simple().to_string()
}

/// How long a record is kept, in milliseconds.
pub fn record_life_ms(window: Duration) -> u64 {
    (window * 2).max(MIN_RECORD_LIFE).as_millis() as u64
}

/// The once-form of a script `body` written for `KEYS[1]` and `ARGV`: it
/// is called with KEYS = [key, record key] and ARGV = [record life in ms,
/// the body's own ARGV...]. The answer is kept with cmsgpack (both Valkey
/// and Redis ship it), which round-trips every reply a script can give:
/// integers, bulk strings, nil, arrays, status and error tables.
///
/// The body runs under `pcall` so that a command it refuses (`WRONGTYPE`,
/// a non-integer `INCRBY`) comes back as the server's own error, as the
/// plain command's would: a script error escaping the script gets the
/// server's " script: ..., on @user_script:N." suffix. A refused body
/// leaves no record, as before: sending it again meets the same refusal.
pub fn wrap(body: &str) -> String {
    format!(
        "local done = redis.call('GET', KEYS[2])
if done then return cmsgpack.unpack(done) end
local args = {{}}
for i = 2, #ARGV do args[i - 1] = ARGV[i] end
local function body(KEYS, ARGV)
{body}
end
local ok, result = pcall(body, {{KEYS[1]}}, args)
if not ok then
  if type(result) == 'table' and result.err then return result end
  return redis.error_reply(tostring(result))
end
redis.call('SET', KEYS[2], cmsgpack.pack(result), 'PX', ARGV[1])
return result"
    )
}

/// The body that runs one plain command (ARGV: its name, then its
/// arguments after the key). `INCRBY` answers the stored text: a script's
/// numbers are doubles, exact only up to 2^53, and a counter must be exact.
/// Lua unpacks at most about 8,000 values at once, so a long variadic write
/// (`HSET` of many fields, `RPUSH`/`LPUSH` of many items, `HDEL`) runs in
/// chunks of 1,000 arguments (an even number: `HSET` takes pairs), still in
/// one script, so still atomic; its answer is what the one command's would
/// be (new fields or removed ones summed, the list's final length).
pub const COMMAND_BODY: &str = "local name, n = ARGV[1], #ARGV
if n <= 1001 then
  local r = redis.call(name, KEYS[1], unpack(ARGV, 2))
  if name == 'INCRBY' then return redis.call('GET', KEYS[1]) end
  return r
end
local total = 0
for i = 2, n, 1000 do
  local r = redis.call(name, KEYS[1], unpack(ARGV, i, math.min(i + 999, n)))
  if name == 'RPUSH' or name == 'LPUSH' then total = r else total = total + r end
end
return total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_share_the_slot_of_their_key() {
        for key in [
            &b"workcell:state"[..],
            b"{lab}:queue",
            b"a{b}c",
            b"{",
            b"redlock:node:1",
        ] {
            let record = record_key(key, "t0");
            assert_eq!(hash_tag(&record), hash_tag(key), "{key:?}");
            assert!(record.starts_with(KEY_PREFIX.as_bytes()));
        }
    }

    #[test]
    fn a_key_with_a_closing_brace_and_no_tag_has_no_sibling() {
        // Documented limit: only a Cluster would refuse it (CROSSSLOT).
        let key = b"x{}y";
        assert_ne!(hash_tag(&record_key(key, "t0")), hash_tag(key));
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"plain"), b"plain");
    }

    #[test]
    fn tokens_are_fresh_uuid4s() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(a.as_bytes()[12], b'4');
    }

    #[test]
    fn records_outlive_twice_the_window() {
        assert_eq!(record_life_ms(Duration::from_secs(1)), 60_000);
        assert_eq!(record_life_ms(Duration::from_secs(45)), 90_000);
    }

    #[test]
    fn the_wrapper_keeps_the_body_and_looks_up_the_record_first() {
        let src = wrap("return 7");
        assert!(src.starts_with("local done = redis.call('GET', KEYS[2])"));
        assert!(src.contains("local function body(KEYS, ARGV)\nreturn 7\nend"));
        assert!(src.ends_with("return result"));
    }
}
