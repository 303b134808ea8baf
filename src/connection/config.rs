//! Where and how to connect. Holds the password, so it never implements
//! `Debug`/`Display` with it: every printable form goes through `address`
//! or `redacted_url`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[path = "config_url.rs"]
mod config_url;

use super::sentinel::{SentinelTls, Sentinels};
use super::spin::DEFAULT_SPIN_WAIT;
use super::tls::{client_config, TlsOptions};
use crate::errors::CacheError;

/// Where the server is: one node, the primary the sentinels name (found
/// again by every new connection, `sentinel.rs`), or a Cluster known by
/// some of its nodes (`cluster.rs` routes each command to its slot's node;
/// a lone connection opened with the seeds goes to the first that answers:
/// the lock listener's, when no client can say where its map's nodes are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    Sentinel(Sentinels),
    /// The seed nodes, asked in this order for the slot map.
    Cluster(Vec<(String, u16)>),
}

#[derive(Clone)]
pub struct Config {
    pub addr: Addr,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `None` waits as long as the OS does. Default 5 s, as redis-py 8's.
    pub connect_timeout: Option<Duration>,
    /// Per-command read/write timeout; `None` waits however long the
    /// server takes. Default 5 s, as redis-py 8's.
    pub command_timeout: Option<Duration>,
    /// `Some` for `rediss://`: TLS with these settings.
    pub tls: Option<TlsOptions>,
    /// Built from `tls` by `prepare`.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Built by `prepare` from a Sentinel address's own `SentinelTls::Tls`.
    pub sentinel_tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Answer reads from a client-side cache the server invalidates
    /// (`tracking.rs`). `None`: as the `MADSCI_CACHE_RS_CLIENT_CACHE`
    /// environment variable says, off when it is unset.
    pub client_cache: Option<bool>,
    /// How long to poll for a reply before sleeping in `read` (`spin.rs`).
    /// `None`: as the `MADSCI_CACHE_RS_SPIN_WAIT` environment variable says
    /// (seconds), else `DEFAULT_SPIN_WAIT`. Zero never spins.
    pub spin_wait: Option<Duration>,
    /// How long a call waits out an outage (`retry.rs`). `None`: as the
    /// `MADSCI_CACHE_RS_RETRY_WINDOW` environment variable says (seconds),
    /// else `retry::DEFAULT_WINDOW`. Zero: only quick connection attempts.
    pub retry_window: Option<Duration>,
    /// At most this many pooled connections at once; past it a caller
    /// waits for one to come back. `None`: no bound, as redis-py's
    /// `ConnectionPool` (2**31).
    pub max_connections: Option<usize>,
    /// Sent as `CLIENT SETNAME` on every connection, so `CLIENT LIST`
    /// tells which process holds which connection.
    pub client_name: Option<String>,
    /// Send the handshake's optional steps (`handshake.rs`): announce the
    /// library, and find out at connect time whether the server wants a
    /// password we lack. Off for a bare `Config` (a test server scripted
    /// reply by reply); every handler turns it on.
    pub greet: bool,
    /// Writes and lock acquires wait (server `WAIT`, in the same round
    /// trip) until this many replicas have them, so that a failover keeps
    /// them; fewer within `wait_timeout` is an error. `None`: no wait.
    pub wait_replicas: Option<u32>,
    pub wait_timeout: Duration,
}

/// How long a write waits for `wait_replicas` confirmations, as Redisson's
/// `syncTimeout`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl Config {
    pub fn tcp(host: &str, port: u16) -> Config {
        Config {
            addr: Addr::Tcp {
                host: host.to_owned(),
                port,
            },
            db: 0,
            username: None,
            password: None,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            command_timeout: Some(DEFAULT_COMMAND_TIMEOUT),
            tls: None,
            tls_config: None,
            sentinel_tls_config: None,
            client_cache: None,
            spin_wait: None,
            retry_window: None,
            max_connections: None,
            wait_replicas: None,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            client_name: None,
            greet: false,
        }
    }

    /// Whether to use a client-side cache: as set, or else as the
    /// `MADSCI_CACHE_RS_CLIENT_CACHE` environment variable says.
    pub fn wants_client_cache(&self) -> Result<bool, CacheError> {
        match self.client_cache {
            Some(on) => Ok(on),
            None => flag(
                "MADSCI_CACHE_RS_CLIENT_CACHE",
                std::env::var("MADSCI_CACHE_RS_CLIENT_CACHE")
                    .ok()
                    .as_deref(),
            ),
        }
    }

    /// The spin budget `prepare` settled on.
    pub fn spin_wait(&self) -> Duration {
        self.spin_wait.unwrap_or(DEFAULT_SPIN_WAIT)
    }

    /// Check what can be checked without the network (TLS files, the
    /// environment, the client name) once all options are set.
    pub fn prepare(mut self) -> Result<Config, CacheError> {
        if matches!(self.addr, Addr::Cluster(_)) && self.db != 0 {
            return Err(CacheError::InvalidValue {
                context: "db".into(),
                detail: format!(
                    "a Cluster has only database 0, not {}: leave db out of a cluster URL or options",
                    self.db
                ),
            });
        }
        // As redis-py: an empty name is no name.
        self.client_name = self.client_name.take().filter(|n| !n.is_empty());
        if let Some(name) = &self.client_name {
            check_client_name(name).map_err(|detail| CacheError::InvalidValue {
                context: "client_name".into(),
                detail,
            })?;
        }
        self.tls_config = match &self.tls {
            Some(options) => Some(client_config(options)?),
            None => None,
        };
        self.sentinel_tls_config = match &self.addr {
            Addr::Sentinel(Sentinels {
                tls: SentinelTls::Tls(options),
                ..
            }) => Some(client_config(options)?),
            _ => None,
        };
        if self.retry_window.is_none() {
            self.retry_window = env_seconds(
                "MADSCI_CACHE_RS_RETRY_WINDOW",
                std::env::var("MADSCI_CACHE_RS_RETRY_WINDOW")
                    .ok()
                    .as_deref(),
            )?;
        }
        if self.spin_wait.is_none() {
            self.spin_wait = Some(
                env_seconds(
                    "MADSCI_CACHE_RS_SPIN_WAIT",
                    std::env::var("MADSCI_CACHE_RS_SPIN_WAIT").ok().as_deref(),
                )?
                .unwrap_or(DEFAULT_SPIN_WAIT),
            );
        }
        Ok(self)
    }

    /// Parse `redis://[[user]:password@]host[:port][/db][?option=value…]`,
    /// the same with `rediss://` (TLS, verified as redis-py does by
    /// default), `valkey://`, `valkeys://`, or `unix:///path?db=N`, as
    /// redis-py's `from_url` reads them (percent-decoding included). Query
    /// options are redis-py's that apply here, plus ours.
    pub fn from_url(url: &str) -> Result<Config, CacheError> {
        let invalid = |detail: String| CacheError::InvalidValue {
            context: format!("cache server URL {}", redact_url(url)),
            detail,
        };
        let parts = config_url::parse(url).map_err(invalid)?;
        let mut cfg = Config::tcp("", 0);
        cfg.addr = parts.addr;
        cfg.db = parts.db;
        cfg.tls = parts.tls.then(TlsOptions::verified);
        for (name, value) in &parts.query {
            cfg.apply_query(name, value).map_err(invalid)?;
        }
        // As redis-py: the user information wins over query values.
        if parts.username.is_some() {
            cfg.username = parts.username;
        }
        if parts.password.is_some() {
            cfg.password = parts.password;
        }
        Ok(cfg)
    }

    /// The server `from_settings` connects to when the environment variable
    /// `name` holds `value` (a URL): `None` when it is unset or blank. Its
    /// errors name the variable, never the password.
    pub fn from_env_url(name: &str, value: Option<&str>) -> Result<Option<Config>, CacheError> {
        let Some(url) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        Config::from_url(url).map(Some).map_err(|e| match e {
            CacheError::InvalidValue { context, detail } => CacheError::InvalidValue {
                context: format!("environment variable {name}: {context}"),
                detail,
            },
            other => other,
        })
    }

    /// Why `wait_replicas` cannot work as configured, if it cannot: the
    /// client-side cache writes on its own connection, without the `WAIT`;
    /// and a `WAIT` longer than the reply timeout would read as a lost reply.
    pub fn wait_problem(&self, client_cache: bool) -> Option<String> {
        self.wait_replicas?;
        if client_cache {
            return Some("wait_replicas cannot be combined with client_cache yet".into());
        }
        match self.command_timeout {
            Some(t) if t <= self.wait_timeout => Some(format!(
                "wait_timeout ({:.2} s) must be shorter than socket_timeout ({:.2} s)",
                self.wait_timeout.as_secs_f64(),
                t.as_secs_f64()
            )),
            _ => None,
        }
    }

    /// `sentinel_username` or `sentinel_password`: only a Sentinel address
    /// has sentinels to log in to.
    pub fn set_sentinel_credential(
        &mut self,
        name: &str,
        value: Option<String>,
    ) -> Result<(), String> {
        let Addr::Sentinel(sentinels) = &mut self.addr else {
            return Err(format!("{name} is for redis+sentinel:// URLs"));
        };
        match name {
            "sentinel_username" => sentinels.username = value,
            _ => sentinels.password = value,
        }
        Ok(())
    }

    /// How to reach the sentinel at `host:port` of this Sentinel
    /// deployment: the sentinels' own TLS (`SentinelTls`), the connect
    /// timeout, the sentinels' credentials, no database, and the connect
    /// timeout for replies too (a sentinel answers at once or not at all).
    pub fn sentinel_node(&self, sentinels: &Sentinels, host: &str, port: u16) -> Config {
        let mut ask = Config::tcp(host, port);
        ask.tls_config = match &sentinels.tls {
            SentinelTls::AsDataNodes => self.tls_config.clone(),
            SentinelTls::Plain => None,
            SentinelTls::Tls(_) => self.sentinel_tls_config.clone(),
        };
        ask.connect_timeout = self.connect_timeout;
        ask.command_timeout = self.connect_timeout.or(self.command_timeout);
        ask.username.clone_from(&sentinels.username);
        ask.password.clone_from(&sentinels.password);
        ask
    }

    /// Who we log in as, for messages: the user name, never the password.
    pub fn user(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }

    /// `host:port` or `unix:/path`: what error messages name.
    pub fn address(&self) -> String {
        match &self.addr {
            Addr::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Addr::Tcp { host, port } => format!("{host}:{port}"),
            Addr::Unix(path) => format!("unix:{}", path.display()),
            Addr::Sentinel(sentinels) => sentinels.describe(),
            Addr::Cluster(seeds) => format!("cluster:{}", node_list(seeds)),
        }
    }

    /// A URL for `repr`: the user name is shown, the password never is.
    pub fn redacted_url(&self) -> String {
        let user = match (&self.username, &self.password) {
            (Some(u), _) => format!("{u}@"),
            (None, Some(_)) => "***@".to_owned(),
            (None, None) => String::new(),
        };
        match &self.addr {
            Addr::Tcp { .. } => {
                let scheme = if self.tls.is_some() {
                    "rediss"
                } else {
                    "redis"
                };
                format!("{scheme}://{user}{}/{}", self.address(), self.db)
            }
            Addr::Unix(path) => format!("unix://{user}{}?db={}", path.display(), self.db),
            Addr::Sentinel(s) => {
                let scheme = if self.tls.is_some() {
                    "rediss+sentinel"
                } else {
                    "redis+sentinel"
                };
                let nodes: Vec<String> = s.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                format!(
                    "{scheme}://{user}{}/{}/{}",
                    nodes.join(","),
                    s.service,
                    self.db
                )
            }
            Addr::Cluster(seeds) => {
                let scheme = if self.tls.is_some() {
                    "rediss+cluster"
                } else {
                    "redis+cluster"
                };
                format!("{scheme}://{user}{}", node_list(seeds))
            }
        }
    }
}

/// `h1:p1,[::1]:p2`: nodes as a URL names them.
pub fn node_list(nodes: &[(String, u16)]) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|(h, p)| match h.contains(':') {
            true => format!("[{h}]:{p}"),
            false => format!("{h}:{p}"),
        })
        .collect();
    nodes.join(",")
}

/// `wait_replicas` and `max_connections`: whole numbers from 1; the error
/// is the rule, for the caller to add what it was given.
pub fn positive_count(name: &str, n: Option<i64>) -> Result<u64, String> {
    n.and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{name} must be a positive whole number"))
}

/// A name the server takes for `CLIENT SETNAME`: printable ASCII without
/// spaces (the server's own rule), checked here so a bad one is a
/// `ValueError` at construction rather than a refused connect later.
pub fn check_client_name(name: &str) -> Result<(), String> {
    match name.chars().find(|c| !('!'..='~').contains(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{name:?} holds {c:?}: the server takes printable ASCII without spaces"
        )),
    }
}

/// `url` for an error message, without its password (`config_url::redact`).
pub fn redact_url(url: &str) -> String {
    config_url::redact(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_start_at_one() {
        assert_eq!(positive_count("n", Some(1)), Ok(1));
        for bad in [None, Some(0), Some(-3)] {
            assert_eq!(
                positive_count("n", bad),
                Err("n must be a positive whole number".to_owned())
            );
        }
    }

    #[test]
    fn only_a_sentinel_address_takes_sentinel_credentials() {
        let mut plain = Config::from_url("redis://h").unwrap();
        let err = plain.set_sentinel_credential("sentinel_password", Some("pw".into()));
        assert_eq!(
            err,
            Err("sentinel_password is for redis+sentinel:// URLs".into())
        );
        let mut watched = Config::from_url("redis+sentinel://s1:26379/svc").unwrap();
        watched
            .set_sentinel_credential("sentinel_password", Some("pw".into()))
            .unwrap();
        let Addr::Sentinel(sentinels) = &watched.addr else {
            panic!("not a sentinel address")
        };
        assert_eq!(sentinels.password.as_deref(), Some("pw"));
    }

    /// Whether `cfg`'s sentinel connections use TLS, and its data nodes'.
    fn tls_of_sentinels_and_data(cfg: Config) -> (bool, bool) {
        let cfg = cfg.prepare().unwrap();
        let Addr::Sentinel(sentinels) = &cfg.addr else {
            panic!("not a sentinel address")
        };
        let ask = cfg.sentinel_node(sentinels, "s1", 26379);
        (ask.tls_config.is_some(), cfg.tls_config.is_some())
    }

    fn with_sentinel_tls(url: &str, tls: SentinelTls) -> Config {
        let mut cfg = Config::from_url(url).unwrap();
        let Addr::Sentinel(sentinels) = &mut cfg.addr else {
            panic!("not a sentinel address")
        };
        sentinels.tls = tls;
        cfg
    }

    #[test]
    fn a_sentinel_url_uses_one_tls_setting_for_sentinels_and_data_nodes() {
        let plain = Config::from_url("redis+sentinel://s1/svc").unwrap();
        assert_eq!(tls_of_sentinels_and_data(plain), (false, false));
        let tls = Config::from_url("rediss+sentinel://s1/svc?ssl_cert_reqs=none").unwrap();
        assert_eq!(tls_of_sentinels_and_data(tls), (true, true));
    }

    #[test]
    fn sentinels_keep_their_own_tls_apart_from_the_data_nodes() {
        // redis-py's Sentinel(..., ssl=True): TLS to the data nodes only.
        let data_only = with_sentinel_tls(
            "rediss+sentinel://s1/svc?ssl_cert_reqs=none",
            SentinelTls::Plain,
        );
        assert_eq!(tls_of_sentinels_and_data(data_only), (false, true));
        // sentinel_kwargs={"ssl": True}: TLS to the sentinels only.
        let unverified = TlsOptions {
            verify: false,
            ..TlsOptions::verified()
        };
        let sentinels_only =
            with_sentinel_tls("redis+sentinel://s1/svc", SentinelTls::Tls(unverified));
        let prepared = sentinels_only.clone().prepare().unwrap();
        assert!(prepared.tls.is_none());
        assert_eq!(tls_of_sentinels_and_data(sentinels_only), (true, false));
    }

    #[test]
    fn parses_tcp_urls() {
        let c = Config::from_url("redis://bob:s3cret@example.org:7000/3").unwrap();
        assert!(
            c.addr
                == Addr::Tcp {
                    host: "example.org".into(),
                    port: 7000
                }
        );
        assert_eq!(c.db, 3);
        assert_eq!(c.username.as_deref(), Some("bob"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.redacted_url(), "redis://bob@example.org:7000/3");
        let c = Config::from_url("redis://:pw@localhost").unwrap();
        assert_eq!(c.address(), "localhost:6379");
        assert_eq!(c.redacted_url(), "redis://***@localhost:6379/0");
    }

    #[test]
    fn rediss_turns_tls_on_with_verification() {
        let c = Config::from_url("rediss://:pw@example.org:6380/1").unwrap();
        assert_eq!(c.tls, Some(TlsOptions::verified()));
        assert_eq!(c.redacted_url(), "rediss://***@example.org:6380/1");
        assert!(Config::from_url("redis://h").unwrap().tls.is_none());
    }

    #[test]
    fn parses_unix_urls() {
        let c = Config::from_url("unix:///tmp/r.sock?db=2").unwrap();
        assert!(c.addr == Addr::Unix("/tmp/r.sock".into()));
        assert_eq!(c.db, 2);
        assert_eq!(c.address(), "unix:/tmp/r.sock");
    }

    #[test]
    fn query_options_apply_and_unknown_ones_are_named() {
        let c = Config::from_url(
            "rediss://:pw@h/1?db=2&max_connections=4&socket_timeout=0.5&ssl_cert_reqs=none&password=q",
        )
        .unwrap();
        assert_eq!((c.db, c.max_connections), (2, Some(4)));
        assert_eq!(c.command_timeout, Some(Duration::from_millis(500)));
        assert!(!c.tls.unwrap().verify);
        assert_eq!(
            c.password.as_deref(),
            Some("pw"),
            "the user information wins"
        );
        let c = Config::from_url("redis://h?password=q%26r&client_cache=yes").unwrap();
        assert_eq!(c.password.as_deref(), Some("q&r"));
        assert_eq!(c.client_cache, Some(true));
        for (url, named) in [
            ("redis://:pw@h?bogus=1", "unknown option \"bogus\""),
            ("redis://:pw@h?max_connections=0", "max_connections must be"),
            ("redis://:pw@h?socket_timeout=-1", "socket_timeout must be"),
        ] {
            let e = Config::from_url(url).err().expect(url).to_string();
            assert!(e.contains(named) && !e.contains("pw"), "{e}");
        }
    }

    #[test]
    fn client_names_are_checked_as_the_server_would() {
        assert!(check_client_name("madsci-node_1:robot").is_ok());
        for bad in ["two words", "tab\there", "caf\u{e9}"] {
            assert!(check_client_name(bad).is_err(), "{bad:?}");
        }
        let mut c = Config::tcp("h", 1);
        c.client_name = Some("a b".into());
        let e = c.prepare().err().expect("a space").to_string();
        assert!(e.contains("client_name") && e.contains("\"a b\""), "{e}");
        let mut c = Config::tcp("h", 1);
        c.client_name = Some(String::new());
        assert_eq!(c.prepare().ok().and_then(|c| c.client_name), None);
    }

    #[test]
    fn an_environment_url_names_the_variable_and_hides_the_password() {
        assert!(Config::from_env_url("V", None).unwrap().is_none());
        assert!(Config::from_env_url("V", Some("  ")).unwrap().is_none());
        let c = Config::from_env_url("V", Some("redis://h:7/2?client_name=n"))
            .unwrap()
            .unwrap();
        assert_eq!((c.address().as_str(), c.db), ("h:7", 2));
        assert_eq!(c.client_name.as_deref(), Some("n"));
        for url in [
            "redis://:hunter2@h?bogus=1",
            "redis://:hunter2@h:x/0",
            "http://:hunter2@h",
        ] {
            let e = Config::from_env_url("MADSCI_CACHE_RS_URL", Some(url))
                .err()
                .expect(url)
                .to_string();
            assert!(
                e.starts_with("environment variable MADSCI_CACHE_RS_URL"),
                "{e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn errors_never_show_the_password() {
        for url in [
            "rediss://u:hunter2@h:notaport/0",
            "redis://u:hunter2@h:notaport/0",
            "redis://:hunter2@/x",
        ] {
            let err = Config::from_url(url).err().expect(url).to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert_eq!(redact_url("redis://a:b@h:1/0"), "redis://***@h:1/0");
    }
}

/// An on/off environment variable: unset or empty is off.
/// A non-negative number of seconds from an environment variable; unset or
/// empty is `None`.
fn env_seconds(name: &str, value: Option<&str>) -> Result<Option<Duration>, CacheError> {
    let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(CacheError::InvalidValue {
            context: format!("environment variable {name}"),
            detail: format!("expected a number of seconds, 0 or more, not {text:?}"),
        }),
    }
}

fn flag(name: &str, value: Option<&str>) -> Result<bool, CacheError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => Err(CacheError::InvalidValue {
            context: format!("environment variable {name}"),
            detail: format!("expected 1/true/yes/on or 0/false/no/off, not {other:?}"),
        }),
    }
}

#[cfg(test)]
mod flag_tests {
    use super::{env_seconds, flag};
    use std::time::Duration;

    #[test]
    fn reads_seconds() {
        assert_eq!(env_seconds("X", None).unwrap(), None);
        assert_eq!(env_seconds("X", Some(" ")).unwrap(), None);
        assert_eq!(env_seconds("X", Some("0")).unwrap(), Some(Duration::ZERO));
        assert_eq!(
            env_seconds("X", Some("0.00025")).unwrap(),
            Some(Duration::from_micros(250))
        );
        for bad in ["-1", "soon", "inf", "nan"] {
            let e = env_seconds("X", Some(bad)).unwrap_err().to_string();
            assert!(e.contains('X') && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn reads_on_and_off() {
        assert!(!flag("X", None).unwrap());
        assert!(!flag("X", Some("")).unwrap());
        assert!(!flag("X", Some("Off")).unwrap());
        assert!(flag("X", Some(" 1 ")).unwrap());
        assert!(flag("X", Some("TRUE")).unwrap());
        let e = flag("X", Some("maybe")).unwrap_err().to_string();
        assert!(e.contains('X') && e.contains("maybe"), "{e}");
    }
}
