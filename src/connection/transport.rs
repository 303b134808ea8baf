//! `Transport`: what the structures need from a server connection, and
//! nothing more. `Client` (one standalone server, pooled) implements it;
//! Redis Cluster and Sentinel (a later issue) implement it too and slot in
//! beneath `PyCacheHandler`, `RedisDict` and `RedisList` unchanged.
//!
//! Routing contract for a cluster: every command the structures send has
//! its key as the first argument after the name, and scripts get their
//! keys in `keys`; no command touches two keys.

use super::pool::Describe;
use super::resp::{Cmd, Reply};
use super::{Config, Script};
use crate::errors::CacheError;

pub trait Transport: Send + Sync {
    /// Send `cmds` in one round trip; replies in order, server errors as
    /// `Reply::Error`. Must never re-send a command that may have been sent.
    fn pipeline(&self, cmds: &[Cmd], what: Describe<'_>) -> Result<Vec<Reply>, CacheError>;

    /// Close idle connections; the transport stays usable.
    fn close(&self);

    /// The server(s) for messages and `repr`, without any password.
    fn redacted_url(&self) -> String;

    /// `host:port` for messages.
    fn address(&self) -> String;

    /// The settings of the one server behind this transport, if it is a
    /// single server: a lock's release listener (`server::subscriber`)
    /// opens its own connection with them. `None`: lock waiters poll.
    fn server_config(&self) -> Option<&Config> {
        None
    }

    /// Reads answered from a client-side cache so far; `None` when the
    /// transport has none.
    fn client_cache_hits(&self) -> Option<u64> {
        None
    }

    /// One command; a server error becomes `CacheError::Response`.
    fn call(&self, cmd: Cmd, what: Describe<'_>) -> Result<Reply, CacheError> {
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
        let build = |name: &'static str, body: &[u8]| {
            let mut cmd = Cmd::new(name);
            cmd.push(body);
            cmd.push(keys.len().to_string().as_bytes());
            keys.iter().chain(args).for_each(|a| cmd.push(a));
            cmd.read_only(script.read_only)
        };
        let first = self.pipeline(&[build("EVALSHA", script.sha.as_bytes())], what)?;
        match first.into_iter().next().unwrap_or(Reply::Nil) {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                let again = self.pipeline(&[build("EVAL", script.src.as_bytes())], what)?;
                checked(self, again.into_iter().next().unwrap_or(Reply::Nil), what)
            }
            other => checked(self, other, what),
        }
    }
}

fn checked<T: Transport + ?Sized>(
    transport: &T,
    reply: Reply,
    what: Describe<'_>,
) -> Result<Reply, CacheError> {
    match reply {
        Reply::Error(detail) => Err(CacheError::Response {
            context: format!("{} on {}", what(), transport.address()),
            detail,
        }),
        other => Ok(other),
    }
}
