//! Reading a server URL as redis-py's `from_url` does (its query options
//! included), and showing one without its password.
//!
//! Written here rather than taken from the `redis` crate: that parser (the
//! `url` crate's) splits a raw `#`, `/` or `?` in a password the way
//! WHATWG browsers do, and the error paths then had only a half-split URL
//! to redact. Every message built here names what is wrong, never the text
//! around the user information.

use std::path::PathBuf;
use std::time::Duration;

use super::{positive_count, Addr, Config, TlsOptions};
use crate::connection::sentinel::{self, SentinelTls, Sentinels};

pub const DEFAULT_PORT: u16 = 6379;

/// A URL taken apart; `Config::apply_query` applies the query options. No
/// `Debug`: it holds the password.
pub struct Parts {
    pub tls: bool,
    pub addr: Addr,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Percent-decoded `(name, value)` pairs, blank values left out (as
    /// redis-py's `parse_qs` does), first occurrence first.
    pub query: Vec<(String, String)>,
}

const SCHEMES: &str = "redis://, rediss://, valkey://, valkeys://, unix://, \
     redis+sentinel:// or redis+cluster:// (rediss+, valkey+, valkeys+)";

/// Take `url` apart: `redis://[[user]:password@]host[:port][/db][?options]`
/// (also `rediss`, `valkey`, `valkeys`) or `unix://[[user]:password@]/path[?options]`.
/// The error text never holds any part of the URL but its scheme.
pub fn parse(url: &str) -> Result<Parts, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("expected a URL starting with {SCHEMES}"));
    };
    let (tls, unix, sentinel, cluster) = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => (false, false, false, false),
        "rediss" | "valkeys" => (true, false, false, false),
        "unix" | "redis+unix" | "valkey+unix" => (false, true, false, false),
        "redis+sentinel" | "valkey+sentinel" => (false, false, true, false),
        "rediss+sentinel" | "valkeys+sentinel" => (true, false, true, false),
        "redis+cluster" | "valkey+cluster" => (false, false, false, true),
        "rediss+cluster" | "valkeys+cluster" => (true, false, false, true),
        // Only a well-formed scheme is echoed: a mangled one may hold
        // anything the user typed.
        other if is_scheme(other) => {
            return Err(format!("unknown scheme {other:?}: expected {SCHEMES}"))
        }
        _ => return Err(format!("expected a URL starting with {SCHEMES}")),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if tail.contains('@') {
        // A raw '/', '?' or '#' in a user name or password ends the host
        // part early (redis-py then fails, or connects somewhere else);
        // guessing where the password ends could send it as a host name.
        return Err(
            "an '@' follows the host: percent-encode '/', '?', '#' and '@' \
                    in a user name or password (%2F, %3F, %23, %40)"
                .into(),
        );
    }
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (non_empty(unquote(user)), non_empty(unquote(pass))),
            None => (non_empty(unquote(info)), None),
        },
        None => (None, None),
    };
    let tail = tail.split('#').next().unwrap_or_default();
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query = parse_query(query);
    let addr = if unix {
        if !hostport.is_empty() {
            return Err(
                "a unix:// URL names a socket path, not a host: unix:///path/to.sock".into(),
            );
        }
        if path.is_empty() {
            return Err("a unix:// URL needs a socket path: unix:///path/to.sock".into());
        }
        Addr::Unix(PathBuf::from(unquote(path)))
    } else if sentinel {
        let (service, db) = service_and_db(path)?;
        let nodes = node_list(hostport, sentinel::DEFAULT_PORT)?;
        let addr = Addr::Sentinel(Sentinels {
            nodes,
            service,
            username: None,
            password: None,
            tls: SentinelTls::AsDataNodes,
        });
        return Ok(Parts {
            tls,
            addr,
            db,
            username,
            password,
            query,
        });
    } else if cluster {
        Addr::Cluster(node_list(hostport, DEFAULT_PORT)?)
    } else {
        host_and_port(hostport, DEFAULT_PORT)?
    };
    let db = if unix { 0 } else { path_db(path)? };
    Ok(Parts {
        tls,
        addr,
        db,
        username,
        password,
        query,
    })
}

fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `h1:p1,h2:p2`: the nodes of a Sentinel or Cluster URL.
fn node_list(hostport: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    hostport
        .split(',')
        .map(|node| match host_and_port(node, default_port)? {
            Addr::Tcp { host, port } => Ok((host, port)),
            _ => unreachable!("host_and_port gives a TCP address"),
        })
        .collect()
}

/// A Sentinel URL's `/service[/db]`.
fn service_and_db(path: &str) -> Result<(String, i64), String> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = unquote(parts.next().unwrap_or_default());
    if service.is_empty() {
        return Err("a Sentinel URL names the service: redis+sentinel://host:26379/service".into());
    }
    let db = path_db(parts.next().unwrap_or_default())?;
    Ok((service, db))
}

fn host_and_port(hostport: &str, default_port: u16) -> Result<Addr, String> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("an IPv6 address in [...] is not closed".into());
        };
        match after {
            "" => (host.to_owned(), None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host.to_owned(), Some(port)),
                None => return Err("expected ':port' after an IPv6 address".into()),
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (unquote(host).to_ascii_lowercase(), Some(port)),
            None => (unquote(hostport).to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        // Never echoed: with the '@' forgotten, "user:password" reads as
        // host and port.
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse()
            .map_err(|_| "the port is out of range 0-65535".to_owned())?,
        Some(_) => return Err("the port is not a number".into()),
    };
    // As redis-py: no host is the local one.
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    Ok(Addr::Tcp { host, port })
}

/// `/N`: the database number; nothing is database 0.
fn path_db(path: &str) -> Result<i64, String> {
    let digits = unquote(path).replace('/', "");
    if digits.is_empty() {
        return Ok(0);
    }
    digits
        .parse()
        .map_err(|_| "the path must be /N, a database number".into())
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = unquote(&value.replace('+', " "));
            (!value.is_empty()).then(|| (unquote(&name.replace('+', " ")), value))
        })
        .collect()
}

/// Percent-decoding as Python's `urllib.parse.unquote`: a `%` not followed
/// by two hex digits stays as it is; bytes that are not UTF-8 become U+FFFD.
pub fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` for an error message: the user information masked wherever it may
/// end (up to the last '@' anywhere: a password holding '/', '?' or '#'
/// still ends at an '@'), a port that is not a number masked (a forgotten
/// '@' makes the password a port), and query `password`/`username` values
/// masked.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    if !is_scheme(scheme) {
        return "(not a URL)".to_owned();
    }
    let (masked, rest) = match rest.rfind('@') {
        Some(at) => ("***@", &rest[at + 1..]),
        None => ("", rest),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // A fragment means nothing to a server URL; it may hold a password's
    // tail when the user information was left unencoded.
    let tail = tail.split('#').next().unwrap_or_default();
    let not_a_port = |p: &&str| !p.bytes().all(|b| b.is_ascii_digit());
    if authority.contains(',')
        && authority
            .split(',')
            .any(|n| port_of(n).is_some_and(|p| not_a_port(&p)))
    {
        // Several nodes (Sentinel, Cluster), one of which may be a
        // "user:password" whose '@' was forgotten: none is shown.
        return format!("{scheme}://{masked}***");
    }
    if let Some(port) = port_of(authority).filter(not_a_port) {
        // No host part proper: what follows may be the rest of a password.
        let host = &authority[..authority.len() - port.len() - 1];
        return format!("{scheme}://{masked}{host}:***");
    }
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => tail.to_owned(),
    };
    format!("{scheme}://{masked}{authority}{tail}")
}

/// What follows a node's last ':' (after the ']' of an IPv6 address).
fn port_of(node: &str) -> Option<&str> {
    if node.starts_with('[') {
        node.split_once(']')
            .and_then(|(_, after)| after.strip_prefix(':'))
    } else {
        node.rsplit_once(':').map(|(_, port)| port)
    }
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(&unquote(name)) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret(name: &str) -> bool {
    matches!(
        name.trim().to_ascii_lowercase().as_str(),
        "password" | "username" | "user" | "pass" | "sentinel_password" | "sentinel_username"
    )
}

impl Config {
    /// One `?name=value` of a URL. Values of `password`/`username` are
    /// never echoed.
    pub(super) fn apply_query(&mut self, name: &str, value: &str) -> Result<(), String> {
        let number = |min_exclusive: bool| -> Result<f64, String> {
            match value.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && (s > 0.0 || !min_exclusive && s == 0.0) => Ok(s),
                _ if min_exclusive => {
                    Err(format!("{name} must be a positive number, not {value:?}"))
                }
                _ => Err(format!(
                    "{name} must be 0 or a positive number, not {value:?}"
                )),
            }
        };
        let seconds = |min_exclusive| number(min_exclusive).map(Duration::from_secs_f64);
        let on_off = || match value.trim().to_ascii_lowercase().as_str() {
            "0" | "f" | "false" | "n" | "no" | "off" => Ok(false),
            "1" | "t" | "true" | "y" | "yes" | "on" => Ok(true),
            _ => Err(format!("{name} must be true or false, not {value:?}")),
        };
        let tls = |cfg: &mut Config| cfg.tls.get_or_insert_with(TlsOptions::verified).clone();
        match name {
            "db" => {
                self.db = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("db must be a whole number, not {value:?}"))?
            }
            "username" => self.username = Some(value.to_owned()),
            "password" => self.password = Some(value.to_owned()),
            "socket_timeout" => self.command_timeout = Some(seconds(true)?),
            "socket_connect_timeout" => self.connect_timeout = Some(seconds(true)?),
            "retry_window" => self.retry_window = Some(seconds(false)?),
            "spin_wait" => self.spin_wait = Some(seconds(false)?),
            "client_cache" => self.client_cache = Some(on_off()?),
            "client_name" => self.client_name = Some(value.to_owned()),
            "wait_replicas" => {
                let n = positive_count(name, value.trim().parse().ok())
                    .map_err(|rule| format!("{rule}, not {value:?}"))?;
                self.wait_replicas = Some(u32::try_from(n).unwrap_or(u32::MAX))
            }
            "wait_timeout" => self.wait_timeout = seconds(true)?,
            "sentinel_username" | "sentinel_password" => {
                self.set_sentinel_credential(name, Some(value.to_owned()))?
            }
            "max_connections" => {
                let n = positive_count(name, value.trim().parse().ok())
                    .map_err(|rule| format!("{rule}, not {value:?}"))?;
                self.max_connections = Some(usize::try_from(n).unwrap_or(usize::MAX))
            }
            // Every pooled connection is checked before each use already.
            "health_check_interval" => {
                number(false)?;
            }
            "ssl_cert_reqs" => {
                let mut t = tls(self);
                t.verify = match value.trim().to_ascii_lowercase().as_str() {
                    "none" => false,
                    "optional" | "required" => true,
                    _ => {
                        return Err(format!(
                            "ssl_cert_reqs must be none, optional or required, not {value:?}"
                        ))
                    }
                };
                self.tls = Some(t);
            }
            "ssl_check_hostname" => {
                let mut t = tls(self);
                t.check_hostname = on_off()?;
                self.tls = Some(t);
            }
            "ssl_ca_certs" | "ssl_certfile" | "ssl_keyfile" => {
                let mut t = tls(self);
                let path = Some(PathBuf::from(value));
                match name {
                    "ssl_ca_certs" => t.ca_certs = path,
                    "ssl_certfile" => t.certfile = path,
                    _ => t.keyfile = path,
                }
                self.tls = Some(t);
            }
            _ => {
                return Err(format!(
                    "unknown option {name:?} in the query: expected db, username, password, \
                     socket_timeout, socket_connect_timeout, client_name, max_connections, \
                     health_check_interval, retry_window, spin_wait, client_cache, \
                     sentinel_username, sentinel_password, wait_replicas, wait_timeout, \
                     ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile or ssl_check_hostname"
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_url_tests.rs"]
mod tests;
