//! `Transport`: what the structures need from a server connection, and
//! nothing more. `Client` (one standalone server, pooled) implements it;
//! Redis Cluster and Sentinel (a later issue) implement it too and slot in
//! beneath `PyCacheHandler`, `RedisDict` and `RedisList` unchanged.
//!
//! Routing contract for a cluster: every command the structures send has
//! its key as the first argument after the name, and scripts get their
//! keys in `keys`; no command touches two keys but a write's own record
//! (`once.rs`), which shares its key's slot.
//!
//! Writes go out in their once-form here, in one place for every
//! transport: `call` and `eval` wrap any write that is not safe to repeat.

use std::sync::{LazyLock, OnceLock};

use super::conn::handshake::refuses_credentials;
use super::once;
use super::resp::{Cmd, Reply};
use super::retry::{is_keyed_write, Resend};
use super::{Config, RetryPolicy};
use crate::errors::CacheError;

/// Describes the operation for error messages, e.g. `GET 'k'`. Only
/// called when something fails.
pub type Describe<'a> = &'a (dyn Fn() -> String + Sync);

/// `GET "k"`: an operation on a key, for messages (the key as text, never
/// a value).
pub fn describe(op: &str, key: &[u8]) -> String {
    format!("{op} {:?}", String::from_utf8_lossy(key))
}

/// A Lua script run with EVALSHA, falling back to EVAL when the server
/// does not know it yet (a fresh or restarted server).
pub struct Script {
    pub src: &'static str,
    pub sha: String,
    /// Changes nothing: a client-side cache need not drop its keys.
    pub read_only: bool,
    /// What sending it again after a lost reply would do. `Never` scripts
    /// are sent in their once-form, which makes a re-send safe.
    resend: Resend,
    /// A write whose loss in a failover harms no one: `wait_replicas`
    /// does not wait for it.
    replicas_not_needed: bool,
    once_form: OnceLock<Box<Script>>,
}

impl Script {
    /// A script that writes: sent in its once-form (`once.rs`).
    pub fn new(src: &'static str) -> Script {
        Script {
            src,
            sha: redis::Script::new(src).get_hash().to_owned(),
            read_only: false,
            resend: Resend::Never,
            replicas_not_needed: false,
            once_form: OnceLock::new(),
        }
    }

    /// A write that may be lost in a failover without harm, so
    /// `wait_replicas` neither waits for it nor reports it unconfirmed: a
    /// lock release, which a failover can only undo into a lease that
    /// expires on its own, never into a second holder. (Raised as an
    /// unknown outcome, an unconfirmed release halted madsci's workcell
    /// engine in the miniature lab.)
    pub fn replicas_not_needed(self) -> Script {
        Script {
            replicas_not_needed: true,
            ..self
        }
    }

    /// A script that only reads.
    pub fn reading(self) -> Script {
        Script {
            read_only: true,
            resend: Resend::Read,
            ..self
        }
    }

    /// A write that already leaves the same state and answer when run
    /// twice (a lock try by its token): sent as it is, and re-sent.
    pub fn repeatable(self) -> Script {
        Script {
            resend: Resend::Read,
            ..self
        }
    }

    fn once_form(&self) -> &Script {
        self.once_form.get_or_init(|| {
            let src: &'static str = Box::leak(once::wrap(self.src).into_boxed_str());
            Box::new(Script {
                resend: Resend::Once,
                replicas_not_needed: self.replicas_not_needed,
                ..Script::new(src)
            })
        })
    }
}

/// One plain write (`SET`, `INCRBY`, `HSET`, `RPUSH` …) as a script, so it
/// can go out in a once-form.
static COMMAND: LazyLock<Script> = LazyLock::new(|| Script::new(once::COMMAND_BODY));

pub trait Transport: Send + Sync {
    /// Send `cmds` in one round trip; replies in order, server errors as
    /// `Reply::Error`. Re-sends only what `Cmd::resend` allows.
    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError>;

    /// `pipeline` under another retry policy for this one call: a lock on
    /// several masters asks each once (`server::lock_masters`) instead of
    /// waiting out one master's outage. Transports without a policy of
    /// their own per call use theirs.
    fn pipeline_with(
        &self,
        cmds: &[Cmd],
        policy: &RetryPolicy,
        what: Describe<'_>,
    ) -> Result<Vec<Reply>, CacheError> {
        let _ = policy;
        self.pipeline(cmds, what)
    }

    /// Close idle connections; the transport stays usable.
    fn close(&self);

    /// The server(s) for messages and `repr`, without any password.
    fn redacted_url(&self) -> String;

    /// `host:port` for messages.
    fn address(&self) -> String;

    /// How long calls wait for the server, which also sets how long a
    /// once-record must live.
    fn policy(&self) -> &RetryPolicy;

    /// Whether the server answers `PING` now: the quick connection
    /// attempts only, no waiting out an outage (`ping()` never blocks long).
    fn probe(&self) -> bool;

    /// The settings of the one server behind this transport, if it is a
    /// single server: a lock's release listener (`server::subscriber`)
    /// opens its own connection with them. `None`: lock waiters poll.
    fn server_config(&self) -> Option<&Config> {
        None
    }

    /// Where a lone subscriber connection (the lock release listener) may
    /// connect, best first: any of them hears what is published (a
    /// cluster's classic Pub/Sub reaches every node). `lost`: the one it
    /// was on (or last tried) failed it, so the topology may have changed
    /// (a cluster puts that node last and reads its slot map again first).
    /// By default `server_config`, as it is.
    fn listen_targets(&self, lost: Option<&Config>) -> Vec<Config> {
        let _ = lost;
        self.server_config().cloned().into_iter().collect()
    }

    /// Reads answered from a client-side cache so far; `None` when the
    /// transport has none.
    fn client_cache_hits(&self) -> Option<u64> {
        None
    }

    /// Bytes the client-side cache holds (an estimate, bookkeeping
    /// included); `None` when the transport has none.
    fn client_cache_usage(&self) -> Option<usize> {
        None
    }

    /// Empty the client-side cache, if any.
    fn client_cache_clear(&self) {}

    /// One command; a server error becomes `CacheError::Response`. A write
    /// goes out in its once-form.
    fn call(&self, cmd: Cmd, what: Describe<'_>) -> Result<Reply, CacheError> {
        if cmd.resend() == Resend::Never && is_keyed_write(cmd.name()) {
            let mut args = cmd.args();
            if let Some(key) = args.next() {
                let rest: Vec<&[u8]> = std::iter::once(cmd.name().as_bytes()).chain(args).collect();
                let (script, once) = self.script_cmd(&COMMAND, &[key], &rest);
                // The plain command rides along (moved, not copied) for a
                // client-side cache that updates its copy from it.
                return send_script(self, script, once.standing_for(cmd), what);
            }
        }
        let reply = self.pipeline(std::slice::from_ref(&cmd), what)?.pop();
        checked(self, reply.unwrap_or(Reply::Nil), what)
    }

    /// Run a script atomically, by SHA; when the server does not know it
    /// (NOSCRIPT: it did not run, so sending again is safe), by source.
    fn eval(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
        what: Describe<'_>,
    ) -> Result<Reply, CacheError> {
        let (script, cmd) = self.script_cmd(script, keys, args);
        send_script(self, script, cmd, what)
    }

    /// The `EVALSHA` that runs `script`, in its once-form (with a fresh
    /// token and its record key) when a repeat could apply it twice; and
    /// the script it runs.
    fn script_cmd<'s>(
        &self,
        script: &'s Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> (&'s Script, Cmd) {
        match keys.first() {
            Some(key) if script.resend == Resend::Never => {
                let token = once::new_token();
                let record = once::record_key(key, &token);
                let life = once::record_life_ms(self.policy().window).to_string();
                let once = script.once_form();
                let args: Vec<&[u8]> = std::iter::once(life.as_bytes())
                    .chain(args.iter().copied())
                    .collect();
                (once, evalsha(once, &[key, record.as_slice()], &args))
            }
            _ => (script, evalsha(script, keys, args)),
        }
    }
}

fn evalsha(script: &Script, keys: &[&[u8]], args: &[&[u8]]) -> Cmd {
    let mut cmd = Cmd::new("EVALSHA");
    cmd.push(script.sha.as_bytes());
    cmd.push(keys.len().to_string().as_bytes());
    keys.iter().chain(args).for_each(|a| cmd.push(a));
    cmd.read_only(script.read_only)
        .with_resend(script.resend)
        .replicas_not_needed(script.replicas_not_needed)
}

/// Send `cmd` (an `EVALSHA` of `script`); after `NOSCRIPT`, the same
/// arguments by source.
fn send_script<T: Transport + ?Sized>(
    transport: &T,
    script: &Script,
    mut cmd: Cmd,
    what: Describe<'_>,
) -> Result<Reply, CacheError> {
    let first = transport.pipeline(std::slice::from_ref(&cmd), what)?;
    match first.into_iter().next().unwrap_or(Reply::Nil) {
        Reply::Error(e) if e.starts_with("NOSCRIPT") => {
            let mut again = Cmd::new("EVAL");
            again.push(script.src.as_bytes());
            cmd.args().skip(1).for_each(|a| again.push(a));
            let mut again = again
                .read_only(script.read_only)
                .with_resend(script.resend)
                .replicas_not_needed(script.replicas_not_needed);
            if let Some(origin) = cmd.take_origin() {
                again = again.standing_for(origin);
            }
            let reply = transport.pipeline(std::slice::from_ref(&again), what)?;
            checked(
                transport,
                reply.into_iter().next().unwrap_or(Reply::Nil),
                what,
            )
        }
        other => checked(transport, other, what),
    }
}

fn checked<T: Transport + ?Sized>(
    transport: &T,
    reply: Reply,
    what: Describe<'_>,
) -> Result<Reply, CacheError> {
    match reply {
        // The server stopped accepting who we are (a password set or
        // changed while connected): as at connect time, and never retried.
        Reply::Error(detail) if refuses_credentials(&detail) => Err(CacheError::Authentication {
            context: format!("{} on {}", what(), transport.address()),
            detail,
        }),
        Reply::Error(detail) => Err(CacheError::Response {
            context: format!("{} on {}", what(), transport.address()),
            detail,
        }),
        other => Ok(other),
    }
}
