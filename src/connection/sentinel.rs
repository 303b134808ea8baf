//! Finding the primary behind Sentinel.
//!
//! Every new connection asks the sentinels, in turn, where the service's
//! primary is (`SENTINEL GET-MASTER-ADDR-BY-NAME`), connects there, and
//! checks with `ROLE` in its handshake's round trip that the node is a
//! primary: a sentinel can answer with a node that has just been demoted.
//! A pooled connection stays with its node until the node answers
//! `READONLY` (it was demoted: `pool.rs` then drops every idle connection,
//! and the retry connects afresh, so asks again) or the connection breaks.
//! The rules here are pure; the socket work is `Conn::open`'s, and
//! `failover_watch.rs` follows the sentinels' announcements.

use super::resp::{Cmd, Reply};
use super::tls::TlsOptions;

/// Sentinel's own port, when a URL names none.
pub const DEFAULT_PORT: u16 = 26379;

/// Where to find a service's primary. `Debug` shows `describe()`, never
/// the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Sentinels {
    /// The sentinels, asked in this order.
    pub nodes: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub service: String,
    /// Who to log in to the sentinels as (their own `requirepass`, often
    /// not the data nodes').
    pub username: Option<String>,
    pub password: Option<String>,
    /// How to talk to the sentinels themselves, which is not always how to
    /// talk to the data nodes.
    pub tls: SentinelTls,
}

/// The sentinels' own TLS. redis-py's `Sentinel(..., ssl=True)` speaks TLS
/// to the data nodes only and plain text to the sentinels (those take
/// their settings from `sentinel_kwargs`, by default only the `socket_*`
/// options); a `rediss+sentinel://` URL has one scheme, so one TLS setting
/// for both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SentinelTls {
    /// As the data nodes: a URL's rule.
    AsDataNodes,
    /// Plain text whatever the data nodes use.
    Plain,
    /// TLS with these settings whatever the data nodes use.
    Tls(TlsOptions),
}

impl Sentinels {
    /// `sentinel:service@h1:p1,h2:p2`, for messages.
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(h, p)| match h.contains(':') {
                true => format!("[{h}]:{p}"),
                false => format!("{h}:{p}"),
            })
            .collect();
        format!("sentinel:{}@{}", self.service, nodes.join(","))
    }

    /// The question asked of each sentinel.
    pub fn query(&self) -> Cmd {
        Cmd::new("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.service)
    }
}

impl std::fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A sentinel's answer: the primary's host and port; `Err` says why not.
pub fn primary_from(reply: &Reply) -> Result<(String, u16), String> {
    match reply {
        Reply::Nil => Err("does not know the service".into()),
        Reply::Error(e) => Err(format!("answered {e}")),
        reply => match reply.elements().as_slice() {
            [Some(host), Some(port)] => {
                let host = std::str::from_utf8(host).map_err(|_| "sent a host that is not text")?;
                let port = std::str::from_utf8(port)
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .ok_or("sent a port that is not a number")?;
                Ok((host.to_owned(), port))
            }
            _ => Err("sent an answer that is not [host, port]".into()),
        },
    }
}

/// Whether a `ROLE` reply is a primary's (`["master", offset, replicas]`).
pub fn is_primary(role: &Reply) -> bool {
    let elements = role.elements();
    matches!(elements.first(), Some(Some(kind)) if *kind == b"master")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulks(items: &[&str]) -> Reply {
        Reply::Array(
            items
                .iter()
                .map(|s| Reply::Bulk(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn reads_the_primarys_address() {
        assert_eq!(
            primary_from(&bulks(&["10.0.0.7", "6380"])),
            Ok(("10.0.0.7".into(), 6380))
        );
        assert!(primary_from(&Reply::Nil).unwrap_err().contains("service"));
        assert!(primary_from(&bulks(&["h", "port"])).is_err());
        assert!(primary_from(&bulks(&["h"])).is_err());
        let refused = Reply::Error("NOAUTH Authentication required.".into());
        assert!(primary_from(&refused).unwrap_err().contains("NOAUTH"));
    }

    #[test]
    fn only_a_primary_role_counts() {
        let primary = Reply::Array(vec![
            Reply::Bulk(b"master".to_vec()),
            Reply::Int(3129),
            Reply::Array(vec![]),
        ]);
        assert!(is_primary(&primary));
        let replica = bulks(&["slave", "127.0.0.1", "6380", "connected"]);
        assert!(!is_primary(&replica));
        assert!(!is_primary(&Reply::Error("ERR unknown command".into())));
    }

    #[test]
    fn describes_itself_without_credentials() {
        let s = Sentinels {
            nodes: vec![("a".into(), 26379), ("::1".into(), 26380)],
            service: "lab".into(),
            username: Some("u".into()),
            password: Some("secret".into()),
            tls: SentinelTls::Plain,
        };
        assert_eq!(s.describe(), "sentinel:lab@a:26379,[::1]:26380");
        assert_eq!(
            s.query().args().collect::<Vec<_>>(),
            [&b"GET-MASTER-ADDR-BY-NAME"[..], b"lab"]
        );
    }
}
