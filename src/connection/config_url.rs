//! Reading a server URL as redis-py's `from_url` does, and showing one
//! without its password.
//!
//! Written here rather than taken from the `redis` crate: that parser (the
//! `url` crate's) splits a raw `#`, `/` or `?` in a password the way
//! WHATWG browsers do, and the error paths then had only a half-split URL
//! to redact. Every message built here names what is wrong, never the text
//! around the user information.

use std::path::PathBuf;

use super::Addr;

pub const DEFAULT_PORT: u16 = 6379;

/// A URL taken apart; query options are left for `Config` to apply. No
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

const SCHEMES: &str = "redis://, rediss://, valkey://, valkeys:// or unix://";

/// Take `url` apart: `redis://[[user]:password@]host[:port][/db][?options]`
/// (also `rediss`, `valkey`, `valkeys`) or `unix://[[user]:password@]/path[?options]`.
/// The error text never holds any part of the URL but its scheme.
pub fn parse(url: &str) -> Result<Parts, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("expected a URL starting with {SCHEMES}"));
    };
    let (tls, unix) = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => (false, false),
        "rediss" | "valkeys" => (true, false),
        "unix" | "redis+unix" | "valkey+unix" => (false, true),
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
    } else {
        host_and_port(hostport)?
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

fn host_and_port(hostport: &str) -> Result<Addr, String> {
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
        None | Some("") => DEFAULT_PORT,
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
    let port = if authority.starts_with('[') {
        authority
            .split_once(']')
            .and_then(|(_, after)| after.strip_prefix(':'))
    } else {
        authority.rsplit_once(':').map(|(_, port)| port)
    };
    if let Some(port) = port.filter(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
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
        "password" | "username" | "user" | "pass"
    )
}

#[cfg(test)]
#[path = "config_url_tests.rs"]
mod tests;
