//! Server-side scripts for the operations Redis has no single command for,
//! so each is still one round trip and atomic.

use std::sync::LazyLock;

use crate::connection::Script;

/// Stands in for a list element while it is removed by index. JSON text
/// never holds a NUL byte, so no stored value can be mistaken for it.
pub const TOMBSTONE: &[u8] = b"\x00madsci-cache-rs:removed\x00";

pub static DICT_POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('HGET', KEYS[1], ARGV[1])
         if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
         return v",
    )
});

/// The first field in iteration (HKEYS) order, with its value.
pub static DICT_POPITEM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local f = redis.call('HKEYS', KEYS[1])[1]
         if not f then return false end
         local v = redis.call('HGET', KEYS[1], f)
         redis.call('HDEL', KEYS[1], f)
         return {f, v}",
    )
});

pub static DICT_SETDEFAULT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
         return redis.call('HGET', KEYS[1], ARGV[1])",
    )
});

/// ARGV: index, tombstone. Returns the removed element or nil.
pub static LIST_POP_AT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('LINDEX', KEYS[1], ARGV[1])
         if not v then return false end
         redis.call('LSET', KEYS[1], ARGV[1], ARGV[2])
         redis.call('LREM', KEYS[1], 1, ARGV[2])
         return v",
    )
});

/// ARGV: index (Python `list.insert` clamping), value, tombstone.
pub static LIST_INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local n = redis.call('LLEN', KEYS[1])
         local i = tonumber(ARGV[1])
         if i < 0 then i = i + n; if i < 0 then i = 0 end end
         if i >= n then return redis.call('RPUSH', KEYS[1], ARGV[2]) end
         if i == 0 then return redis.call('LPUSH', KEYS[1], ARGV[2]) end
         local old = redis.call('LINDEX', KEYS[1], i)
         redis.call('LSET', KEYS[1], i, ARGV[3])
         redis.call('LINSERT', KEYS[1], 'BEFORE', ARGV[3], ARGV[2])
         redis.call('LSET', KEYS[1], i + 1, old)
         return n + 1",
    )
});

/// ARGV: the encodings equal to the value. Returns the first index holding
/// any of them, or nil.
pub static LIST_FIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local best = false
         for i = 1, #ARGV do
           local p = redis.call('LPOS', KEYS[1], ARGV[i])
           if p and (not best or p < best) then best = p end
         end
         return best",
    )
    .reading()
});

/// ARGV: tombstone, then the encodings equal to the value. Removes the
/// first element holding any of them; returns 1, or 0 when there is none.
pub static LIST_REMOVE_ANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local best = false
         for i = 2, #ARGV do
           local p = redis.call('LPOS', KEYS[1], ARGV[i])
           if p and (not best or p < best) then best = p end
         end
         if not best then return 0 end
         redis.call('LSET', KEYS[1], best, ARGV[1])
         redis.call('LREM', KEYS[1], 1, ARGV[1])
         return 1",
    )
});

/// Python's slice rules (`slice.indices`) in Lua, shared by the slice
/// scripts: ARGV[1..3] are start, stop, step ('' for None). Leaves `n`
/// (the length) and `idx` (the selected indices, in slice order).
const SLICE_INDICES: &str = "
    local n = redis.call('LLEN', KEYS[1])
    local step = tonumber(ARGV[3])
    local lower, upper = 0, n
    if step < 0 then lower, upper = -1, n - 1 end
    local function bound(v, default)
      if v == '' then return default end
      v = tonumber(v)
      if v < 0 then
        v = v + n
        if v < lower then v = lower end
      elseif v > upper then v = upper end
      return v
    end
    local start, stop
    if step > 0 then
      start, stop = bound(ARGV[1], lower), bound(ARGV[2], upper)
    else
      start, stop = bound(ARGV[1], upper), bound(ARGV[2], lower)
    end
    local idx = {}
    local i = start
    while (step > 0 and i < stop) or (step < 0 and i > stop) do
      idx[#idx + 1] = i
      i = i + step
    end
";

fn slice_script(body: &str) -> Script {
    Script::new(Box::leak(format!("{SLICE_INDICES}{body}").into_boxed_str()))
}

/// `lst[start:stop:step]`: only the slice travels.
pub static LIST_SLICE: LazyLock<Script> = LazyLock::new(|| {
    slice_script(
        "local out = {}
         if #idx == 0 then return out end
         local lo, hi = idx[1], idx[#idx]
         if lo > hi then lo, hi = hi, lo end
         local items = redis.call('LRANGE', KEYS[1], lo, hi)
         for k = 1, #idx do out[k] = items[idx[k] - lo + 1] end
         return out",
    )
    .reading()
});

/// `del lst[start:stop:step]`. ARGV[4]: tombstone.
pub static LIST_SLICE_DEL: LazyLock<Script> = LazyLock::new(|| {
    slice_script(
        "for k = 1, #idx do redis.call('LSET', KEYS[1], idx[k], ARGV[4]) end
         if #idx > 0 then redis.call('LREM', KEYS[1], 0, ARGV[4]) end
         return #idx",
    )
});

/// `lst[start:stop:step] = values` (ARGV[4..]), atomically. A step-1 slice
/// may change the length; an extended one must match it, as in Python.
pub static LIST_SLICE_SET: LazyLock<Script> = LazyLock::new(|| {
    slice_script(
        "local values = {}
         for k = 4, #ARGV do values[#values + 1] = ARGV[k] end
         if step ~= 1 then
           if #values ~= #idx then
             return redis.error_reply('SLICE attempt to assign sequence of size ' ..
               #values .. ' to extended slice of size ' .. #idx)
           end
           for k = 1, #idx do redis.call('LSET', KEYS[1], idx[k], values[k]) end
           return #idx
         end
         if stop < start then stop = start end
         local all = {}
         if start > 0 then all = redis.call('LRANGE', KEYS[1], 0, start - 1) end
         for k = 1, #values do all[#all + 1] = values[k] end
         local tail = redis.call('LRANGE', KEYS[1], stop, -1)
         for k = 1, #tail do all[#all + 1] = tail[k] end
         redis.call('DEL', KEYS[1])
         for k = 1, #all, 1000 do
           redis.call('RPUSH', KEYS[1], unpack(all, k, math.min(k + 999, #all)))
         end
         return #values",
    )
});

pub static LIST_REVERSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local items = redis.call('LRANGE', KEYS[1], 0, -1)
         if #items < 2 then return #items end
         local rev = {}
         for k = #items, 1, -1 do rev[#rev + 1] = items[k] end
         redis.call('DEL', KEYS[1])
         for k = 1, #rev, 1000 do
           redis.call('RPUSH', KEYS[1], unpack(rev, k, math.min(k + 999, #rev)))
         end
         return #rev",
    )
});

// --- `Redlock` (pottery's lock keys), on one server or on each of several masters.

/// ARGV: token, lease in ms. Takes a free key; `OK` also when the key
/// already holds our token, which makes a try safe to repeat after a lost
/// reply. Otherwise the holder's PTTL, so the waiter knows when to look again.
pub static LOCK_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
           return redis.status_reply('OK')
         end
         if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.status_reply('OK') end
         return redis.call('PTTL', KEYS[1])",
    )
    .repeatable()
});

/// ARGV: token, channel, message. Deletes the key only if it holds our
/// token, and announces the release to our waiting processes.
pub static LOCK_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           redis.call('DEL', KEYS[1])
           -- pcall: a user not allowed to publish can still release.
           redis.pcall('PUBLISH', ARGV[2], ARGV[3])
           return 1
         end
         return 0",
    )
    .replicas_not_needed()
});

/// ARGV: token, lease in ms. 1 if renewed.
pub static LOCK_EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           return redis.call('PEXPIRE', KEYS[1], ARGV[2])
         end
         return 0",
    )
});

/// ARGV: token. Milliseconds left on our lease, 0 if it is not ours.
pub static LOCK_REMAINING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
           local t = redis.call('PTTL', KEYS[1])
           if t > 0 then return t end
         end
         return 0",
    )
    .reading()
});
