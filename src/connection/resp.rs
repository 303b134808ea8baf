//! RESP framing: packing commands (`reply.rs` reads the replies).
//!
//! Written by hand (rather than through the `redis` crate's connection) so
//! the connection layer knows exactly when a command's bytes left, can check
//! a pooled socket for liveness without sending anything, and owns its
//! socket options (`TCP_NODELAY`).

use super::retry::{is_read, Resend};

pub use super::reply::{is_protocol_error, protocol_error, read_reply, Reply};

/// A command packed in RESP form, built while the caller still holds the
/// GIL (values are encoded up front) and sent later without it.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    buf: Vec<u8>,
    args: usize,
    /// The command's name, for error messages.
    name: &'static str,
    /// A script known to change nothing (see `Script::read_only`).
    read_only: bool,
    /// Whether these bytes may be sent again after a lost reply (`retry`).
    resend: Resend,
    /// A write whose loss in a failover harms no one (see
    /// `Script::replicas_not_needed`): `wait_replicas` does not wait for it.
    replicas_not_needed: bool,
    /// For a write sent in its once-form (`once.rs`): the plain command it
    /// stands for, which a client-side cache reads to update its copy.
    origin: Option<Box<Cmd>>,
}

impl Cmd {
    /// A command; reads are marked safe to send again.
    pub fn new(name: &'static str) -> Cmd {
        let mut cmd = Cmd {
            buf: Vec::with_capacity(64),
            args: 0,
            name,
            read_only: false,
            resend: if is_read(name) {
                Resend::Read
            } else {
                Resend::Never
            },
            replicas_not_needed: false,
            origin: None,
        };
        cmd.push(name.as_bytes());
        cmd
    }

    pub fn resend(&self) -> Resend {
        self.resend
    }

    /// Mark a write `wait_replicas` need not wait for.
    pub fn replicas_not_needed(mut self, not_needed: bool) -> Cmd {
        self.replicas_not_needed = not_needed;
        self
    }

    pub fn needs_replicas(&self) -> bool {
        !self.replicas_not_needed
    }

    /// Mark what a re-send of these bytes would do (`retry::Resend`).
    pub fn with_resend(mut self, resend: Resend) -> Cmd {
        self.resend = resend;
        self
    }

    /// The once-form of `origin` (see `once.rs`).
    pub fn standing_for(mut self, origin: Cmd) -> Cmd {
        self.origin = Some(Box::new(origin));
        self
    }

    /// Move the plain command this once-form stands for to its resend by
    /// source (`EVAL` after `NOSCRIPT`), without copying it.
    pub fn take_origin(&mut self) -> Option<Cmd> {
        self.origin.take().map(|b| *b)
    }

    /// The plain command a once-form stands for, or the command itself.
    pub fn origin(&self) -> &Cmd {
        self.origin.as_deref().unwrap_or(self)
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl AsRef<[u8]>) -> Cmd {
        self.push(arg.as_ref());
        self
    }

    pub fn push(&mut self, arg: &[u8]) {
        self.buf.push(b'$');
        self.buf.extend_from_slice(arg.len().to_string().as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(arg);
        self.buf.extend_from_slice(b"\r\n");
        self.args += 1;
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn read_only(mut self, read_only: bool) -> Cmd {
        self.read_only = read_only;
        self
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The arguments after the name, as packed.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.buf[..];
        std::iter::from_fn(move || {
            let digits = rest.get(1..)?;
            let len_end = digits.iter().position(|&c| c == b'\r')?;
            let len: usize = std::str::from_utf8(&digits[..len_end]).ok()?.parse().ok()?;
            let start = 1 + len_end + 2;
            let arg = rest.get(start..start + len)?;
            rest = rest.get(start + len + 2..)?;
            Some(arg)
        })
        .skip(1)
    }

    /// The wire bytes: `*N\r\n` then the arguments.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.head_to(out);
        out.extend_from_slice(&self.buf);
    }

    /// Only the `*N\r\n` that `write_to` starts with: a large command's
    /// `body` is sent from where it is rather than copied.
    pub fn head_to(&self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(self.args.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// The packed arguments that follow `head_to`'s bytes.
    pub fn body(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_commands() {
        let mut out = Vec::new();
        let cmd = Cmd::new("SET").arg("k").arg(b"v\r\n");
        cmd.write_to(&mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
        let mut parts = Vec::new();
        cmd.head_to(&mut parts);
        parts.extend_from_slice(cmd.body());
        assert_eq!(parts, out);
    }

    #[test]
    fn lists_arguments() {
        let cmd = Cmd::new("HSET").arg("k").arg(b"a\r\nb").arg("");
        let args: Vec<&[u8]> = cmd.args().collect();
        assert_eq!(args, [&b"k"[..], &b"a\r\nb"[..], &b""[..]]);
        assert_eq!(Cmd::new("PING").args().count(), 0);
    }
}
