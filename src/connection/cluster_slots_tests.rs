//! Routing rules against the cluster specification's own examples and
//! values observed with redis-py's `redis.crc.key_slot`.

use super::*;

#[test]
fn crc16_is_xmodem() {
    // The specification's check value.
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(crc16(b""), 0);
}

#[test]
fn slots_match_redis_py() {
    for (key, expected) in [
        (&b"foo"[..], 12182),
        (b"bar", 5061),
        (b"123456789", 12739),
        (b"{user1000}.following", 3443),
        (b"{user1000}.followers", 3443),
        (b"foo{}{bar}", 8363),
        (b"foo{{bar}}zap", 4015),
        (b"", 0),
        (b"redlock:lab", 10524),
        ("\u{e9}".as_bytes(), 10180),
    ] {
        assert_eq!(slot(key), expected, "{key:?}");
    }
}

#[test]
fn a_writes_record_key_routes_with_its_data_key() {
    let key = b"workcell:state";
    let record = crate::connection::once::record_key(key, "t0");
    assert_eq!(slot(&record), slot(key));
}

fn strs(cmd: &Cmd) -> Option<String> {
    routing_key(cmd).map(|k| String::from_utf8_lossy(k).into_owned())
}

#[test]
fn the_first_key_routes_a_command() {
    assert_eq!(strs(&Cmd::new("GET").arg("k")).as_deref(), Some("k"));
    assert_eq!(
        strs(&Cmd::new("HSET").arg("h").arg("f").arg("v")).as_deref(),
        Some("h")
    );
    let evalsha = Cmd::new("EVALSHA")
        .arg("abc")
        .arg("2")
        .arg("k1")
        .arg("k2")
        .arg("arg");
    assert_eq!(strs(&evalsha).as_deref(), Some("k1"));
    let eval = Cmd::new("EVAL").arg("return 1").arg("0").arg("arg");
    assert_eq!(strs(&eval), None);
    let broken = Cmd::new("EVAL").arg("return 1").arg("x").arg("k");
    assert_eq!(strs(&broken), None);
    for keyless in [
        Cmd::new("PING"),
        Cmd::new("MULTI"),
        Cmd::new("EXEC"),
        Cmd::new("CLUSTER").arg("SLOTS"),
        Cmd::new("PUBLISH").arg("channel").arg("m"),
        Cmd::new("INFO").arg("commandstats"),
    ] {
        assert_eq!(strs(&keyless), None, "{}", keyless.name());
    }
}

#[test]
fn a_batch_goes_where_its_first_keyed_command_goes() {
    let batch = [
        Cmd::new("MULTI"),
        Cmd::new("HLEN").arg("foo"),
        Cmd::new("GET").arg("bar"),
        Cmd::new("EXEC"),
    ];
    assert_eq!(batch_slot(&batch), Some(12182));
    assert_eq!(batch_slot(&[Cmd::new("PING")]), None);
}

fn int(n: i64) -> Reply {
    Reply::Int(n)
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

fn node(host: &str, port: i64, id: &str) -> Reply {
    Reply::Array(vec![bulk(host), int(port), bulk(id), Reply::Array(vec![])])
}

#[test]
fn reads_cluster_slots() {
    let reply = Reply::Array(vec![
        Reply::Array(vec![
            int(0),
            int(5460),
            node("10.0.0.1", 7000, "a"),
            node("10.0.0.4", 7003, "d"),
        ]),
        Reply::Array(vec![int(5461), int(10922), node("", 7001, "b")]),
        Reply::Array(vec![int(10923), int(16383), node("10.0.0.1", 7000, "a")]),
        // A node that cannot name its endpoint.
        Reply::Array(vec![int(100), int(100), node("?", 7009, "z")]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply, "seed.lab").unwrap();
    let a = ("10.0.0.1".to_owned(), 7000);
    let b = ("seed.lab".to_owned(), 7001);
    assert_eq!(map.node(0), Some(&a));
    assert_eq!(map.node(5460), Some(&a));
    assert_eq!(map.node(5461), Some(&b));
    assert_eq!(map.node(16383), Some(&a));
    assert_eq!(map.nodes(), [a.clone(), b]);
    assert_eq!(map.covered(), SLOTS);
    assert_eq!(map.node(100), Some(&a), "the ? entry changed nothing");
}

#[test]
fn a_partial_map_leaves_slots_unserved() {
    let reply = Reply::Array(vec![Reply::Array(vec![int(0), int(99), node("h", 1, "a")])]);
    let map = SlotMap::from_cluster_slots(&reply, "h").unwrap();
    assert_eq!(map.covered(), 100);
    assert_eq!(map.node(100), None);
    assert!(SlotMap::default().is_empty());
}

#[test]
fn malformed_cluster_slots_are_refused() {
    let error = Reply::Error("ERR This instance has cluster support disabled".into());
    assert!(SlotMap::from_cluster_slots(&error, "h")
        .unwrap_err()
        .contains("cluster support disabled"));
    for bad in [
        Reply::Int(3),
        Reply::Array(vec![int(1)]),
        Reply::Array(vec![Reply::Array(vec![
            int(0),
            int(16384),
            node("h", 1, "a"),
        ])]),
        Reply::Array(vec![Reply::Array(vec![int(9), int(3), node("h", 1, "a")])]),
        Reply::Array(vec![Reply::Array(vec![
            int(0),
            int(1),
            node("h", 70000, "a"),
        ])]),
        Reply::Array(vec![Reply::Array(vec![int(0), int(1), bulk("h")])]),
    ] {
        assert!(SlotMap::from_cluster_slots(&bad, "h").is_err(), "{bad:?}");
    }
}

#[test]
fn moved_updates_one_slot() {
    let reply = Reply::Array(vec![Reply::Array(vec![
        int(0),
        int(16383),
        node("h", 1, "a"),
    ])]);
    let mut map = SlotMap::from_cluster_slots(&reply, "h").unwrap();
    let other = ("h".to_owned(), 2);
    map.assign(7, &other);
    assert_eq!(map.node(7), Some(&other));
    assert_eq!(map.node(8), Some(&("h".to_owned(), 1)));
    map.assign(9, &other);
    assert_eq!(map.nodes().len(), 2, "a node is listed once");
}

#[test]
fn reads_redirections() {
    assert_eq!(
        redirect("MOVED 3999 127.0.0.1:6381", "x"),
        Some(Redirect::Moved {
            slot: 3999,
            node: ("127.0.0.1".into(), 6381)
        })
    );
    assert_eq!(
        redirect("ASK 12182 node-b.lab:7001", "x"),
        Some(Redirect::Ask {
            slot: 12182,
            node: ("node-b.lab".into(), 7001)
        })
    );
    // A node that cannot name its endpoint: the one that answered.
    assert_eq!(
        redirect("MOVED 1 :7002", "asked.lab").map(|r| r.node().clone()),
        Some(("asked.lab".into(), 7002))
    );
    assert_eq!(
        redirect("MOVED 1 ::1:7002", "x").map(|r| r.node().clone()),
        Some(("::1".into(), 7002))
    );
    for not in [
        "ERR MOVED 1 h:1",
        "MOVED",
        "MOVED x h:1",
        "MOVED 16384 h:1",
        "MOVED 1 h",
        "MOVED 1 h:port",
        "ASKING",
        "CLUSTERDOWN The cluster is down",
    ] {
        assert_eq!(redirect(not, "x"), None, "{not}");
    }
}

#[test]
fn the_first_redirection_of_a_batch_is_found() {
    let replies = [
        Reply::Status("OK".into()),
        Reply::Error("ASK 5 b:2".into()),
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into()),
    ];
    assert_eq!(
        redirect_in(&replies, "a"),
        Some(Redirect::Ask {
            slot: 5,
            node: ("b".into(), 2)
        })
    );
    assert_eq!(redirect_in(&[Reply::Int(1)], "a"), None);
}

#[test]
fn a_batch_is_sent_again_only_when_nothing_in_it_applied() {
    let moved = || Reply::Error("MOVED 5 b:2".into());
    let ok = || Reply::Status("OK".into());
    let queued = || Reply::Status("QUEUED".into());
    let incr = || Cmd::new("INCRBY").arg("k").arg("1");
    // One command, redirected: it did not run.
    assert!(nothing_applied(&[incr()], &[moved()]));
    // A MULTI block whose queued command was redirected: EXEC aborted.
    let block = [Cmd::new("MULTI"), incr(), Cmd::new("EXEC")];
    let abort = Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
    assert!(nothing_applied(&block, &[ok(), moved(), abort]));
    // A block that ran is not sent again.
    assert!(!nothing_applied(
        &block,
        &[ok(), queued(), Reply::Array(vec![Reply::Int(1)])]
    ));
    // A write that ran before a later command was redirected.
    assert!(!nothing_applied(
        &[incr(), Cmd::new("GET").arg("k")],
        &[Reply::Int(1), moved()]
    ));
    // A read that ran may run again.
    assert!(nothing_applied(
        &[Cmd::new("GET").arg("k"), incr()],
        &[Reply::Nil, moved()]
    ));
}

#[test]
fn any_node_goes_primaries_from_the_turn_then_unnamed_seeds_and_failed_nodes_last() {
    let n = |p: u16| ("h".to_owned(), p);
    let primaries = [n(1), n(2), n(3)];
    let seeds = [n(9), n(2)];
    let none_failed = |_: &Node| false;
    assert_eq!(
        any_node_order(&primaries, 4, &seeds, none_failed),
        [n(2), n(3), n(1), n(9)]
    );
    // A lost node (the lock listener's) goes last, the rest keep their order.
    assert_eq!(
        any_node_order(&primaries, 0, &seeds, |x| *x == n(1)),
        [n(2), n(3), n(9), n(1)]
    );
    // No map yet: the seeds, as the URL names them.
    assert_eq!(any_node_order(&[], 7, &seeds, none_failed), [n(9), n(2)]);
}
