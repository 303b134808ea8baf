//! URLs read as redis-py reads them; passwords never in error text.

use super::*;

fn ok(url: &str) -> Parts {
    match parse(url) {
        Ok(parts) => parts,
        Err(e) => panic!("{url}: {e}"),
    }
}

fn tcp(host: &str, port: u16) -> Addr {
    Addr::Tcp {
        host: host.into(),
        port,
    }
}

#[test]
fn reads_what_redis_py_reads() {
    // Expected values observed with redis-py's `redis.connection.parse_url`.
    let p = ok("redis://:p%23w@h:1/2");
    assert_eq!(
        (p.password.as_deref(), p.addr, p.db),
        (Some("p#w"), tcp("h", 1), 2)
    );
    let p = ok("redis://u:p@ss@h:1");
    assert_eq!(p.username.as_deref(), Some("u"));
    assert_eq!(p.password.as_deref(), Some("p@ss"));
    assert_eq!(ok("redis://:p:w@h:1").password.as_deref(), Some("p:w"));
    assert_eq!(ok("redis://:p w@h:1").password.as_deref(), Some("p w"));
    assert_eq!(ok("redis://:pé@h:1").password.as_deref(), Some("pé"));
    assert_eq!(ok("redis://:p%w@h:1").password.as_deref(), Some("p%w"));
    assert_eq!(ok("redis://:p%zz@h:1").password.as_deref(), Some("p%zz"));
    assert_eq!(ok("redis://:p+w@h:1").password.as_deref(), Some("p+w"));
    assert_eq!(ok("redis://:%C3%A9@h").password.as_deref(), Some("é"));
    let p = ok("redis://:a@[::1]:5/0#frag");
    assert_eq!((p.addr, p.db), (tcp("::1", 5), 0));
    let p = ok("redis://h");
    assert_eq!(
        (p.addr, p.username, p.password),
        (tcp("h", 6379), None, None)
    );
    assert_eq!(ok("redis://:a@/").addr, tcp("localhost", 6379));
    assert!(ok("rediss://h").tls && ok("valkeys://h").tls && !ok("valkey://h").tls);
    let p = ok("redis://h/0?max_connections=5&client_name=&db=3&x=a+b%21");
    assert_eq!(
        p.query,
        [
            ("max_connections".to_owned(), "5".to_owned()),
            ("db".to_owned(), "3".to_owned()),
            ("x".to_owned(), "a b!".to_owned())
        ]
    );
    let p = ok("unix://:pw@/tmp/a%20b.sock?db=2");
    assert_eq!(p.addr, Addr::Unix("/tmp/a b.sock".into()));
    assert_eq!(p.password.as_deref(), Some("pw"));
}

#[test]
fn a_raw_separator_in_a_password_is_refused_without_echoing_it() {
    for url in [
        "redis://:Zq#Xk@host:1/0",
        "redis://:Zq/Xk@h:1",
        "redis://user:Zq?Xk@h",
        "redis://u:1?Zq@Xk@h",
        "redis://:Zq@y/Xk@h",
    ] {
        let e = parse(url).err().unwrap_or_else(|| panic!("{url} parsed"));
        assert!(e.contains("percent-encode"), "{e}");
        assert!(!e.contains("Zq") && !e.contains("Xk"), "{url}: {e}");
    }
}

#[test]
fn errors_name_the_problem_only() {
    for (url, expected) in [
        ("redis://:pw@h:notaport/0", "port is not a number"),
        ("redis://:pw@h:99999/0", "out of range"),
        ("redis://:pw@h:1/x", "database number"),
        ("foo://:pw@h:1", "unknown scheme \"foo\""),
        (":pw@h:1", "expected a URL"),
        ("re dis://:pw@h", "expected a URL"),
        ("unix://:pw@h/x", "not a host"),
    ] {
        let e = parse(url).err().unwrap_or_else(|| panic!("{url} parsed"));
        assert!(e.contains(expected), "{url}: {e}");
        assert!(!e.contains("pw"), "{url}: {e}");
    }
}

#[test]
fn redaction_hides_user_information_wherever_it_ends() {
    for (url, shown) in [
        ("redis://a:b@h:1/0", "redis://***@h:1/0"),
        ("redis://:pa#ss@host:1/0", "redis://***@host:1/0"),
        ("redis://:p/w@h:1", "redis://***@h:1"),
        ("redis://user:a?b@h", "redis://***@h"),
        ("redis://user:hunter2", "redis://user:***"),
        ("redis://user:pa#ss", "redis://user:***"),
        (
            "redis://h:1/0?password=s3&db=1",
            "redis://h:1/0?password=***&db=1",
        ),
        ("redis://[::1]:5/0", "redis://[::1]:5/0"),
        ("redis://[::1]/0", "redis://[::1]/0"),
        ("no url at all: hunter2", "(not a URL)"),
    ] {
        assert_eq!(redact(url), shown, "{url}");
    }
}

#[test]
fn unquote_matches_python() {
    assert_eq!(unquote("a%2Fb%3f%"), "a/b?%");
    assert_eq!(unquote("%e9"), "\u{fffd}");
    assert_eq!(unquote("%41%4"), "A%4");
}

fn sentinels(nodes: &[(&str, u16)], service: &str) -> Addr {
    Addr::Sentinel(Sentinels {
        nodes: nodes.iter().map(|(h, p)| (h.to_string(), *p)).collect(),
        service: service.into(),
        username: None,
        password: None,
        tls: SentinelTls::AsDataNodes,
    })
}

#[test]
fn reads_sentinel_urls() {
    let p = ok("redis+sentinel://:pw@s1:26380,s2,[::1]:7/lab/2?socket_timeout=1");
    assert_eq!(
        (p.addr, p.db, p.password.as_deref(), p.tls),
        (
            sentinels(&[("s1", 26380), ("s2", 26379), ("::1", 7)], "lab"),
            2,
            Some("pw"),
            false
        )
    );
    assert_eq!(ok("valkey+sentinel://s/lab").db, 0);
    assert!(ok("rediss+sentinel://s/lab").tls && ok("valkeys+sentinel://s/lab").tls);
    for bad in [
        "redis+sentinel://s1",
        "redis+sentinel://s1/",
        "redis+sentinel://s1/lab/x",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn sentinel_credentials_are_options_of_sentinel_urls_only() {
    let cfg = Config::from_url(
        "redis+sentinel://s/lab?sentinel_password=top%23secret&sentinel_username=watch",
    )
    .unwrap_or_else(|_| panic!("a sentinel URL"));
    let Addr::Sentinel(s) = &cfg.addr else {
        panic!("a sentinel address");
    };
    assert_eq!(s.password.as_deref(), Some("top#secret"));
    assert_eq!(s.username.as_deref(), Some("watch"));
    assert_eq!(cfg.password, None);
    assert!(!format!("{:?}", cfg.addr).contains("secret"));
    let err = Config::from_url("redis://h/0?sentinel_password=top").err();
    assert!(err.is_some_and(|e| e.to_string().contains("redis+sentinel://")));
    let shown = redact("redis+sentinel://s/lab?sentinel_password=top%23secret");
    assert!(!shown.contains("top"), "{shown}");
}

#[test]
fn reads_cluster_urls() {
    let p = ok("redis+cluster://:pw@n1:7000,n2,[::1]:7002/?socket_timeout=1");
    assert_eq!(
        (p.addr, p.db, p.password.as_deref(), p.tls),
        (
            Addr::Cluster(vec![
                ("n1".into(), 7000),
                ("n2".into(), 6379),
                ("::1".into(), 7002)
            ]),
            0,
            Some("pw"),
            false
        )
    );
    assert_eq!(
        ok("valkey+cluster://n1:7000").addr,
        ok("redis+cluster://n1:7000").addr
    );
    for tls in ["rediss+cluster://n:1", "valkeys+cluster://n:1"] {
        assert!(ok(tls).tls, "{tls}");
    }
    assert!(!ok("valkey+cluster://n:1").tls);
    for bad in ["redis+cluster://n1:x", "redis+cluster://n1:1,n2:99999"] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_cluster_has_only_database_0() {
    for url in [
        "redis+cluster://n:1",
        "redis+cluster://n:1/",
        "redis+cluster://n:1/0",
        "redis+cluster://n:1?db=0",
    ] {
        let cfg = Config::from_url(url).unwrap_or_else(|_| panic!("{url}"));
        assert!(cfg.prepare().is_ok(), "{url}");
    }
    for url in ["redis+cluster://:pw@n:1/2", "redis+cluster://:pw@n:1?db=1"] {
        let cfg = Config::from_url(url).unwrap_or_else(|_| panic!("{url}"));
        let e = cfg.prepare().err().expect(url).to_string();
        assert!(e.contains("only database 0") && !e.contains("pw"), "{e}");
    }
}

#[test]
fn cluster_urls_print_without_the_password() {
    let cfg = Config::from_url("rediss+cluster://bob:s3cret@n1:1,[::1]:2")
        .unwrap_or_else(|_| panic!("a cluster URL"));
    assert_eq!(cfg.redacted_url(), "rediss+cluster://bob@n1:1,[::1]:2");
    assert_eq!(cfg.address(), "cluster:n1:1,[::1]:2");
    let cfg = Config::from_url("redis+cluster://:s3cret@n1:1")
        .unwrap_or_else(|_| panic!("a cluster URL"));
    assert_eq!(cfg.redacted_url(), "redis+cluster://***@n1:1");
    for (url, shown) in [
        (
            "redis+cluster://:pw@n1:1,n2:2/?db=0",
            "redis+cluster://***@n1:1,n2:2/?db=0",
        ),
        // A forgotten '@': "user:password" reads as a node.
        ("redis+cluster://n1:1,bob:hunter2", "redis+cluster://***"),
        ("redis+cluster://bob:hunter2,n1:1", "redis+cluster://***"),
        (
            "redis+sentinel://bob:hunter2,s:26379/lab",
            "redis+sentinel://***",
        ),
    ] {
        assert_eq!(redact(url), shown, "{url}");
    }
    for url in [
        "redis+cluster://n1:1,bob:hunter2",
        "redis+cluster://bob:hunter2,n1:1",
    ] {
        let e = Config::from_url(url).err().expect(url).to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
