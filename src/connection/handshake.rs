//! What a new connection sends before any command of the caller's, and which
//! error replies to it end the connect. Pure rules: `Conn::open` does the
//! socket work, in one round trip for all of them.

use crate::connection::config::Config;
use crate::connection::resp::{Cmd, Reply};

/// What `CLIENT LIST` shows as `lib-name` for our connections.
pub const LIB_NAME: &str = "madsci-cache-rs";
pub const LIB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether an error reply to a step ends the connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Fail,
    /// A courtesy the server may not know (`CLIENT SETINFO` is Redis 7.2+;
    /// Debian's 7.0 answers "unknown subcommand"): only a refusal of who we
    /// are counts, since it means every later command would be refused too.
    FailIfRefused,
}

/// The handshake for `cfg`, in the order sent.
pub fn steps(cfg: &Config) -> Vec<(Cmd, OnError)> {
    let mut steps = Vec::new();
    if let Some(password) = &cfg.password {
        // Always with a user name: `AUTH default <password>` is what
        // redis-py 8's `HELLO 3 AUTH default` sends, and a server without
        // a password (its default user is `nopass`) accepts it, where it
        // refuses the one-argument form. madsci always passes its
        // configured password, so this is what keeps such labs working.
        let user = cfg.username.as_deref().unwrap_or("default");
        let auth = Cmd::new("AUTH").arg(user).arg(password);
        steps.push((auth, OnError::Fail));
    }
    if let Some(name) = &cfg.client_name {
        let setname = Cmd::new("CLIENT").arg("SETNAME").arg(name);
        steps.push((setname, OnError::Fail));
    }
    if cfg.db != 0 {
        steps.push((Cmd::new("SELECT").arg(cfg.db.to_string()), OnError::Fail));
    }
    if cfg.greet && cfg.password.is_none() {
        // A server that wants a password answers NOAUTH; Valkey says so to
        // SETINFO as well, but Redis 7.0 first calls SETINFO unknown. Asked
        // in the same round trip, so a missing password is told at connect
        // time, as a refused one is, and never retried.
        steps.push((Cmd::new("PING"), OnError::FailIfRefused));
    }
    if cfg.greet {
        for (attr, value) in [("LIB-NAME", LIB_NAME), ("LIB-VER", LIB_VERSION)] {
            let setinfo = Cmd::new("CLIENT").arg("SETINFO").arg(attr).arg(value);
            steps.push((setinfo, OnError::FailIfRefused));
        }
    }
    steps
}

/// The first error reply that ends the connect, as (command, error).
pub fn first_failure(
    steps: &[(Cmd, OnError)],
    replies: Vec<Reply>,
) -> Option<(&'static str, String)> {
    steps
        .iter()
        .zip(replies)
        .find_map(|((cmd, on_error), reply)| match reply {
            Reply::Error(e) if *on_error == OnError::Fail || refuses_credentials(&e) => {
                Some((cmd.name(), e))
            }
            _ => None,
        })
}

/// Whether an error reply says the server does not accept who we are: a
/// wrong password or user (`WRONGPASS`, Redis < 6's `ERR invalid
/// password`), none given where one is needed (`NOAUTH`), or one given
/// where none is configured (the one-argument `AUTH`). redis-py raises
/// `AuthenticationError` for the same replies.
pub fn refuses_credentials(error: &str) -> bool {
    let (code, rest) = error.split_once(' ').unwrap_or((error, ""));
    match code {
        "WRONGPASS" | "NOAUTH" => true,
        "ERR" => {
            rest.starts_with("invalid password")
                || rest.starts_with("AUTH <password> called without any password configured")
                || rest.starts_with("Client sent AUTH, but no password is set")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cfg: &Config) -> Vec<String> {
        steps(cfg)
            .iter()
            .map(|(cmd, _)| {
                let args: Vec<String> = cmd
                    .args()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                format!("{} {}", cmd.name(), args.join(" "))
            })
            .collect()
    }

    #[test]
    fn a_plain_config_sends_nothing() {
        assert!(steps(&Config::tcp("h", 1)).is_empty());
    }

    #[test]
    fn steps_come_in_order_with_the_default_user_named() {
        let mut cfg = Config::tcp("h", 1);
        cfg.password = Some("pw".into());
        cfg.client_name = Some("node-1".into());
        cfg.db = 2;
        cfg.greet = true;
        assert_eq!(
            names(&cfg),
            [
                "AUTH default pw".to_owned(),
                "CLIENT SETNAME node-1".into(),
                "SELECT 2".into(),
                format!("CLIENT SETINFO LIB-NAME {LIB_NAME}"),
                format!("CLIENT SETINFO LIB-VER {LIB_VERSION}"),
            ]
        );
        cfg.username = Some("bob".into());
        assert_eq!(names(&cfg)[0], "AUTH bob pw");
    }

    #[test]
    fn an_old_server_may_not_know_setinfo_but_must_take_the_rest() {
        let mut cfg = Config::tcp("h", 1);
        cfg.db = 1;
        cfg.greet = true;
        let s = steps(&cfg);
        assert_eq!(s.len(), 4, "SELECT, PING, and SETINFO twice");
        let unknown = || Reply::Error("ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.".into());
        let ok = || Reply::Status("OK".into());
        assert_eq!(
            first_failure(&s, vec![ok(), ok(), unknown(), unknown()]),
            None
        );
        let noauth = || Reply::Error("NOAUTH Authentication required.".into());
        // Redis 7.0 checks the subcommand before the login: only PING says.
        assert_eq!(
            first_failure(&s, vec![noauth(), noauth(), unknown(), unknown()]),
            Some(("SELECT", "NOAUTH Authentication required.".into()))
        );
        assert_eq!(
            first_failure(&s, vec![ok(), noauth(), unknown(), unknown()]),
            Some(("PING", "NOAUTH Authentication required.".into()))
        );
        let bad_db = Reply::Error("ERR DB index is out of range".into());
        assert_eq!(
            first_failure(&s, vec![bad_db, ok(), ok(), ok()]).map(|f| f.0),
            Some("SELECT")
        );
    }

    #[test]
    fn refusals_of_credentials_are_told_from_other_errors() {
        for e in [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOAUTH Authentication required.",
            "ERR invalid password",
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
            "ERR Client sent AUTH, but no password is set",
        ] {
            assert!(refuses_credentials(e), "{e}");
        }
        for e in [
            "ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.",
            "ERR DB index is out of range",
            "NOPERM this user has no permissions to run the 'get' command",
            "LOADING Valkey is loading the dataset in memory",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "",
        ] {
            assert!(!refuses_credentials(e), "{e}");
        }
    }
}
