//! Connection settings from Python: `from_settings`/`from_url` options and
//! a redis-py client's connection pool, under redis-py's option names.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::connection::config::{positive_count, Addr};
use crate::connection::sentinel::{self, SentinelTls, Sentinels};
use crate::connection::tls::TlsOptions;
use crate::connection::{Config, RetryPolicy};

fn seconds(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if value.is_none() {
        return Ok(None);
    }
    let s: f64 = value.extract()?;
    if !(s > 0.0 && s.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds or None, not {s}"
        )));
    }
    Ok(Some(Duration::from_secs_f64(s)))
}

/// `spin_wait` (seconds to poll for a reply before sleeping) and
/// `retry_window` (seconds a call waits out an outage): 0 or `None` is off.
fn zero_or_seconds(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if value.is_none() {
        return Ok(Duration::ZERO);
    }
    let s: f64 = value.extract()?;
    if !(s >= 0.0 && s.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{name} must be 0 or a positive number of seconds, not {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// redis-py's `ssl_cert_reqs`: "none" (or `ssl.CERT_NONE`, 0) turns
/// verification off; "required"/"optional" (1, 2) keep it on.
fn cert_reqs(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    if value.is_none() {
        return Ok(false);
    }
    if let Ok(n) = value.extract::<i64>() {
        return Ok(n != 0);
    }
    match value.extract::<String>()?.to_ascii_lowercase().as_str() {
        "none" => Ok(false),
        "required" | "optional" => Ok(true),
        other => Err(PyValueError::new_err(format!(
            "ssl_cert_reqs must be 'none', 'optional' or 'required', not {other:?}"
        ))),
    }
}

fn tls_options(cfg: &mut Config) -> &mut TlsOptions {
    cfg.tls.get_or_insert_with(TlsOptions::verified)
}

/// `max_connections` or `wait_replicas`: a positive count, or `None` for
/// no bound (no waiting).
fn optional_count(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if value.is_none() {
        return Ok(None);
    }
    match positive_count(name, value.extract().ok()) {
        Ok(n) => Ok(Some(n)),
        Err(rule) => Err(PyValueError::new_err(format!(
            "{rule} or None, not {}",
            value.repr()?
        ))),
    }
}

/// `max_connections`: a positive count, or `None` for no bound.
fn connection_count(value: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    Ok(optional_count("max_connections", value)?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
}

/// Apply `db`, `username`, `password`, `socket_timeout`,
/// `socket_connect_timeout`, `connect_attempts`, `client_cache`, `client_name`,
/// `spin_wait`, `retry_window`, `max_connections` and redis-py's `ssl` and
/// `ssl_*` options.
pub fn apply_options(
    cfg: &mut Config,
    policy: &mut RetryPolicy,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let Some(options) = options else {
        return Ok(());
    };
    for (name, value) in options.iter() {
        let name: String = name.extract()?;
        match name.as_str() {
            "db" => cfg.db = value.extract()?,
            "username" => cfg.username = value.extract()?,
            "password" => cfg.password = value.extract()?,
            "socket_timeout" => cfg.command_timeout = seconds(&name, &value)?,
            "socket_connect_timeout" => cfg.connect_timeout = seconds(&name, &value)?,
            "ssl" => {
                if value.is_truthy()? {
                    tls_options(cfg);
                } else {
                    cfg.tls = None;
                }
            }
            "ssl_ca_certs" => tls_options(cfg).ca_certs = value.extract()?,
            "ssl_certfile" => tls_options(cfg).certfile = value.extract()?,
            "ssl_keyfile" => tls_options(cfg).keyfile = value.extract()?,
            "ssl_cert_reqs" => tls_options(cfg).verify = cert_reqs(&value)?,
            "ssl_check_hostname" => tls_options(cfg).check_hostname = value.is_truthy()?,
            "client_cache" => cfg.client_cache = Some(value.is_truthy()?),
            "client_name" => cfg.client_name = value.extract()?,
            "spin_wait" => cfg.spin_wait = Some(zero_or_seconds(&name, &value)?),
            "retry_window" => cfg.retry_window = Some(zero_or_seconds(&name, &value)?),
            "max_connections" => cfg.max_connections = connection_count(&value)?,
            "wait_replicas" => {
                cfg.wait_replicas = optional_count(&name, &value)?
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            }
            "wait_timeout" => {
                cfg.wait_timeout = seconds(&name, &value)?.ok_or_else(|| {
                    PyValueError::new_err("wait_timeout must be a positive number of seconds")
                })?
            }
            "sentinel_username" | "sentinel_password" => cfg
                .set_sentinel_credential(&name, value.extract()?)
                .map_err(PyValueError::new_err)?,
            "connect_attempts" => {
                policy.connect_attempts = value.extract()?;
                if policy.connect_attempts == 0 {
                    return Err(PyValueError::new_err("connect_attempts must be at least 1"));
                }
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unexpected option {name:?}: expected db, username, password, \
                     socket_timeout, socket_connect_timeout, connect_attempts, client_cache, client_name, \
                     spin_wait, retry_window, \
                     max_connections, ssl, sentinel_username, sentinel_password, \
                     wait_replicas, wait_timeout, \
                     ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs or ssl_check_hostname"
                )))
            }
        }
    }
    Ok(())
}

/// The sentinels behind a redis-py `Sentinel(...).master_for(service)`
/// client's pool (a `SentinelConnectionPool`); `None` for any other pool.
/// Each sentinel is a redis-py `Redis` client of its own, built from
/// `sentinel_kwargs` (by default only the `socket_*` options): so its
/// password and TLS are read from it, not from the data nodes' settings.
fn sentinels_of(pool: &Bound<'_, PyAny>) -> PyResult<Option<Sentinels>> {
    let (Ok(service), Ok(manager)) = (
        pool.getattr("service_name"),
        pool.getattr("sentinel_manager"),
    ) else {
        return Ok(None);
    };
    let mut found = Sentinels {
        nodes: Vec::new(),
        service: service.extract()?,
        username: None,
        password: None,
        tls: SentinelTls::Plain,
    };
    for sentinel in manager.getattr("sentinels")?.try_iter()? {
        let sentinel_pool = sentinel?.getattr("connection_pool")?;
        let kwargs = sentinel_pool.getattr("connection_kwargs")?;
        let kwargs = kwargs.cast::<PyDict>()?;
        let host: String = match kwargs.get_item("host")? {
            Some(h) if !h.is_none() => h.extract()?,
            _ => "localhost".into(),
        };
        let port: u16 = match kwargs.get_item("port")? {
            Some(p) if !p.is_none() => p.extract()?,
            _ => sentinel::DEFAULT_PORT,
        };
        found.nodes.push((host, port));
        // `sentinel_kwargs` are the same for every sentinel.
        found.username = kwargs.get_item("username")?.and_then(|v| v.extract().ok());
        found.password = kwargs.get_item("password")?.and_then(|v| v.extract().ok());
        found.tls = if is_ssl_pool(&sentinel_pool)? {
            let mut options = TlsOptions::verified();
            read_ssl_options(&mut options, kwargs)?;
            SentinelTls::Tls(options)
        } else {
            SentinelTls::Plain
        };
    }
    if found.nodes.is_empty() {
        return Err(PyValueError::new_err(format!(
            "the redis-py Sentinel client for {:?} names no sentinels",
            found.service
        )));
    }
    Ok(Some(found))
}

/// Whether a redis-py pool's connections use TLS: its connection class is
/// `SSLConnection` or `SentinelManagedSSLConnection` (redis-py takes `ssl`
/// out of the keyword arguments once it has picked the class).
fn is_ssl_pool(pool: &Bound<'_, PyAny>) -> PyResult<bool> {
    let class_name: String = pool
        .getattr("connection_class")?
        .getattr("__name__")?
        .extract()?;
    Ok(class_name.contains("SSL"))
}

/// A redis-py client's settings: a `Redis` client's, read from its
/// connection pool, or a `RedisCluster`'s, read from its nodes manager.
pub fn config_from_redis_py(client: &Bound<'_, PyAny>) -> PyResult<Config> {
    if let Ok(nodes) = client.getattr("nodes_manager") {
        return config_from_redis_cluster(&nodes);
    }
    let pool = client.getattr("connection_pool")?;
    let kwargs = pool.getattr("connection_kwargs")?;
    let kwargs = kwargs.cast::<PyDict>()?;
    let get = |name: &str| kwargs.get_item(name);
    let mut cfg = if let Some(sentinels) = sentinels_of(&pool)? {
        let mut cfg = Config::tcp("", 0);
        cfg.addr = Addr::Sentinel(sentinels);
        cfg
    } else if let Some(path) = get("path")?.filter(|p| !p.is_none()) {
        let mut cfg = Config::tcp("", 0);
        cfg.addr = Addr::Unix(path.extract::<String>()?.into());
        cfg
    } else {
        let host: String = match get("host")? {
            Some(h) if !h.is_none() => h.extract()?,
            _ => "localhost".into(),
        };
        let port: u16 = match get("port")? {
            Some(p) if !p.is_none() => p.extract()?,
            _ => 6379,
        };
        Config::tcp(&host, port)
    };
    if let Ok(max) = pool.getattr("max_connections") {
        // Its default, 2**31, is as good as no bound.
        cfg.max_connections = connection_count(&max)?.filter(|&n| n < 1 << 31);
    }
    apply_connection_kwargs(&mut cfg, kwargs, is_ssl_pool(&pool)?)?;
    Ok(cfg)
}

/// A redis-py `RedisCluster`'s nodes (all it has found, replicas too: any
/// of them gives the slot map) and the connection settings it gives each.
fn config_from_redis_cluster(nodes: &Bound<'_, PyAny>) -> PyResult<Config> {
    let mut seeds = Vec::new();
    for node in nodes
        .getattr("startup_nodes")?
        .call_method0("values")?
        .try_iter()?
    {
        let node = node?;
        let seed: (String, u16) = (
            node.getattr("host")?.extract()?,
            node.getattr("port")?.extract()?,
        );
        if !seeds.contains(&seed) {
            seeds.push(seed);
        }
    }
    if seeds.is_empty() {
        return Err(PyValueError::new_err(
            "the redis-py RedisCluster client names no nodes",
        ));
    }
    let kwargs = nodes.getattr("connection_kwargs")?;
    let kwargs = kwargs.cast::<PyDict>()?;
    let mut cfg = Config::tcp("", 0);
    cfg.addr = Addr::Cluster(seeds);
    if let Some(max) = kwargs.get_item("max_connections")? {
        cfg.max_connections = connection_count(&max)?.filter(|&n| n < 1 << 31);
    }
    // `ssl=True`, or a `rediss://` URL's connection class.
    let tls = match kwargs.get_item("ssl")? {
        Some(on) => on.is_truthy()?,
        None => false,
    } || match kwargs.get_item("connection_class")? {
        Some(class) => class
            .getattr("__name__")?
            .extract::<String>()?
            .contains("SSL"),
        None => false,
    };
    apply_connection_kwargs(&mut cfg, kwargs, tls)?;
    Ok(cfg)
}

/// redis-py's `ssl_*` connection arguments, into `tls`.
fn read_ssl_options(tls: &mut TlsOptions, kwargs: &Bound<'_, PyDict>) -> PyResult<()> {
    let get = |name: &str| kwargs.get_item(name);
    let path = |name: &str| -> PyResult<Option<std::path::PathBuf>> {
        Ok(match get(name)? {
            Some(v) if !v.is_none() => Some(v.extract()?),
            _ => None,
        })
    };
    tls.ca_certs = path("ssl_ca_certs")?;
    tls.certfile = path("ssl_certfile")?;
    tls.keyfile = path("ssl_keyfile")?;
    if let Some(reqs) = get("ssl_cert_reqs")? {
        tls.verify = cert_reqs(&reqs)?;
    }
    if let Some(check) = get("ssl_check_hostname")? {
        tls.check_hostname = check.is_truthy()?;
    }
    Ok(())
}

/// The settings redis-py gives each connection: database, who we are,
/// timeouts, and TLS when `tls`.
fn apply_connection_kwargs(
    cfg: &mut Config,
    kwargs: &Bound<'_, PyDict>,
    tls: bool,
) -> PyResult<()> {
    let get = |name: &str| kwargs.get_item(name);
    if let Some(db) = get("db")?.filter(|v| !v.is_none()) {
        cfg.db = db.extract()?;
    }
    cfg.username = get("username")?.and_then(|v| v.extract().ok());
    cfg.password = get("password")?.and_then(|v| v.extract().ok());
    cfg.client_name = get("client_name")?.and_then(|v| v.extract().ok());
    if let Some(t) = get("socket_timeout")? {
        cfg.command_timeout = seconds("socket_timeout", &t)?;
    }
    if let Some(t) = get("socket_connect_timeout")?.filter(|v| !v.is_none()) {
        cfg.connect_timeout = seconds("socket_connect_timeout", &t)?;
    }
    if tls {
        read_ssl_options(tls_options(cfg), kwargs)?;
    }
    Ok(())
}
