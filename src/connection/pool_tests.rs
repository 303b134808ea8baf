//! The pool against scripted fake servers: no interpreter, no real server.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::slots::{pool_wait_limit, stale};
use super::*;
use crate::connection::config::Config;
use crate::connection::fake_server_tests::read_command_name;
use crate::connection::Script;

/// A server that handles each connection with `script`, counting commands.
/// How a fake server takes its connections.
#[derive(Clone, Copy)]
enum Serving {
    /// Each to the end before the next (a script that hangs stops accepting).
    OneAtATime,
    /// Each on its own thread.
    Concurrently,
}

/// A server on a free loopback port that runs `script(i, connection,
/// counter)` for its i-th connection; the counter is the script's to keep.
fn fake_server(
    serving: Serving,
    script: fn(usize, &mut BufReader<TcpStream>, &AtomicUsize),
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let counter = counter.clone();
            let mut reader = BufReader::new(stream.unwrap());
            match serving {
                Serving::OneAtATime => script(i, &mut reader, &counter),
                Serving::Concurrently => {
                    thread::spawn(move || script(i, &mut reader, &counter));
                }
            }
        }
    });
    (port, seen)
}

fn client(port: u16) -> Client {
    Client::new(Config::tcp("127.0.0.1", port), RetryPolicy::default())
}

fn incr(c: &Client) -> Result<Reply, CacheError> {
    c.call(Cmd::new("INCRBY").arg("n").arg("1"), &|| {
        "INCRBY \"n\"".into()
    })
}

/// Every connection: read one command, then hang up without answering.
fn hang_up_after_one(_: usize, r: &mut BufReader<TcpStream>, seen: &AtomicUsize) {
    if read_command_name(r).is_some() {
        seen.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_lost_reply_to_a_command_that_may_not_repeat_is_never_resent() {
    let (port, seen) = fake_server(Serving::OneAtATime, hang_up_after_one);
    let c = client(port);
    let raw = Cmd::new("INCRBY").arg("n").arg("1");
    let err = c.pipeline(&[raw], &|| "INCRBY \"n\"".into()).unwrap_err();
    assert!(matches!(err, CacheError::OutcomeUnknown { .. }), "{err}");
    assert!(err.to_string().contains("may or may not have run"), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // Give a (wrong) retry every chance to show up before counting.
    thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn a_write_goes_out_in_its_once_form_and_is_resent_with_the_same_bytes() {
    let (port, seen) = fake_server(Serving::OneAtATime, hang_up_after_one);
    let c = Client::new(
        Config::tcp("127.0.0.1", port),
        RetryPolicy {
            window: Duration::from_millis(300),
            ..RetryPolicy::default()
        },
    );
    let err = incr(&c).unwrap_err();
    assert!(matches!(err, CacheError::OutcomeUnknown { .. }), "{err}");
    assert!(err.to_string().contains("gave up after"), "{err}");
    assert!(
        seen.load(Ordering::SeqCst) >= 2,
        "re-sent within the window"
    );
}

#[test]
fn a_lost_reply_to_a_read_is_sent_again() {
    // Connection 0 hangs up on its command; later ones answer.
    let (port, seen) = fake_server(Serving::OneAtATime, |i, r, seen| {
        while read_command_name(r).is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
            if i == 0 {
                return;
            }
            r.get_mut().write_all(b"$1\r\nv\r\n").unwrap();
        }
    });
    let c = client(port);
    let reply = c.call(Cmd::new("GET").arg("k"), &|| "GET".into()).unwrap();
    assert_eq!(reply, Reply::Bulk(b"v".to_vec()));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn a_loading_server_is_asked_again() {
    let (port, seen) = fake_server(Serving::OneAtATime, |_, r, seen| {
        while read_command_name(r).is_some() {
            let reply: &[u8] = match seen.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => b"-LOADING Valkey is loading the dataset in memory\r\n",
                _ => b":7\r\n",
            };
            r.get_mut().write_all(reply).unwrap();
        }
    });
    let c = client(port);
    assert_eq!(incr(&c).unwrap(), Reply::Int(7));
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_before_sending() {
    // Connection 0 answers once and closes; later ones answer everything.
    let (port, seen) = fake_server(Serving::OneAtATime, |i, r, seen| {
        while read_command_name(r).is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
            r.get_mut().write_all(b":1\r\n").unwrap();
            if i == 0 {
                return;
            }
        }
    });
    let c = client(port);
    assert_eq!(incr(&c).unwrap(), Reply::Int(1));
    // Wait until the fake server has closed connection 0.
    thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(incr(&c).unwrap(), Reply::Int(1));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn server_errors_keep_the_connection() {
    let (port, seen) = fake_server(Serving::OneAtATime, |_, r, seen| {
        while read_command_name(r).is_some() {
            seen.fetch_add(1, Ordering::SeqCst);
            r.get_mut().write_all(b"-ERR nope\r\n").unwrap();
        }
    });
    let c = client(port);
    for _ in 0..3 {
        let err = incr(&c).unwrap_err();
        assert!(matches!(err, CacheError::Response { .. }), "{err}");
        assert!(err.to_string().contains("ERR nope"));
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[test]
fn refused_connections_are_retried_within_the_window_then_reported() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let policy = RetryPolicy {
        window: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let started = std::time::Instant::now();
    let err = incr(&Client::new(Config::tcp("127.0.0.1", port), policy)).unwrap_err();
    assert!(matches!(err, CacheError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(err.to_string().contains("gave up after"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_noscript_reply_falls_back_to_eval_once() {
    let (port, seen) = fake_server(Serving::OneAtATime, |_, r, seen| {
        while let Some(name) = read_command_name(r) {
            seen.fetch_add(1, Ordering::SeqCst);
            let reply: &[u8] = match name.as_str() {
                "EVALSHA" => b"-NOSCRIPT No matching script\r\n",
                _ => b"$2\r\nok\r\n",
            };
            r.get_mut().write_all(reply).unwrap();
        }
    });
    let c = client(port);
    let script = Script::new("return 'ok'");
    let reply = c.eval(&script, &[b"k"], &[], &|| "script".into()).unwrap();
    assert_eq!(reply, Reply::Bulk(b"ok".to_vec()));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn only_connections_idle_past_the_limit_are_stale_and_only_from_the_front() {
    let now = Instant::now() + Duration::from_secs(1000);
    let limit = Duration::from_secs(300);
    let ages = |secs: &[u64]| -> Vec<Instant> {
        secs.iter().map(|s| now - Duration::from_secs(*s)).collect()
    };
    assert_eq!(stale(ages(&[]).into_iter(), now, limit), 0);
    assert_eq!(stale(ages(&[301, 300, 299, 1]).into_iter(), now, limit), 2);
    // However many are idle, young ones are kept: no count cap.
    assert_eq!(stale(ages(&[10; 5000]).into_iter(), now, limit), 0);
    // Oldest first by construction: a stale one behind a young one waits.
    assert_eq!(stale(ages(&[1, 900]).into_iter(), now, limit), 0);
}

#[test]
fn a_full_pool_waits_as_long_as_a_holder_may_keep_a_connection() {
    let s = Duration::from_secs;
    assert_eq!(pool_wait_limit(s(30), Some(s(5))), Some(s(30)));
    assert_eq!(pool_wait_limit(Duration::ZERO, Some(s(5))), Some(s(5)));
    assert_eq!(pool_wait_limit(s(30), None), None);
}

/// Every connection: answer every command with `:1`, counting connections.
fn answer_all(_: usize, r: &mut BufReader<TcpStream>, seen: &AtomicUsize) {
    seen.fetch_add(1, Ordering::SeqCst);
    while read_command_name(r).is_some() {
        if r.get_mut().write_all(b":1\r\n").is_err() {
            return;
        }
    }
}

/// Like `fake_server`, but each connection gets its own thread.
fn get(c: &Client) -> Result<Reply, CacheError> {
    c.call(Cmd::new("GET").arg("k"), &|| "GET \"k\"".into())
}

#[test]
fn many_threads_keep_their_connections() {
    let (port, opened) = fake_server(Serving::Concurrently, answer_all);
    let c = client(port);
    thread::scope(|s| {
        for _ in 0..100 {
            s.spawn(|| (0..200).for_each(|_| assert!(get(&c).is_ok())));
        }
    });
    let n = opened.load(Ordering::SeqCst);
    assert!(n <= 100, "{n} connections for 100 threads");
    assert_eq!(c.local.current().slots.lock().open, n);
}

#[test]
fn max_connections_bounds_what_is_open_and_a_waiter_gives_up_in_time() {
    let (port, opened) = fake_server(Serving::Concurrently, answer_all);
    let mut cfg = Config::tcp("127.0.0.1", port);
    cfg.max_connections = Some(2);
    let busy = client_with(cfg.clone());
    thread::scope(|s| {
        for _ in 0..20 {
            s.spawn(|| (0..100).for_each(|_| assert!(get(&busy).is_ok())));
        }
    });
    assert!(opened.load(Ordering::SeqCst) <= 2);
    cfg.command_timeout = Some(Duration::from_millis(150));
    let c = Client::new(
        cfg,
        RetryPolicy {
            window: Duration::ZERO,
            ..RetryPolicy::default()
        },
    );
    let opened_before = opened.load(Ordering::SeqCst);
    // Both connections lent out: the next caller waits, then gives up
    // without opening a third.
    let what: Describe<'_> = &|| "GET \"k\"".into();
    let held = [
        c.checkout(what).ok().unwrap(),
        c.checkout(what).ok().unwrap(),
    ];
    let started = Instant::now();
    let err = get(&c).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(matches!(err, CacheError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("max_connections is 2"), "{err}");
    assert_eq!(opened.load(Ordering::SeqCst), opened_before + 2);
    // One dropped (as a broken one is): the waiter may open another.
    let [first, second] = held;
    drop(first);
    assert!(get(&c).is_ok());
    c.checkin(second);
    assert!(get(&c).is_ok());
    assert!(c.local.current().slots.lock().open <= 2);
}

#[test]
fn a_waiter_is_woken_when_a_connection_comes_back() {
    let (port, _) = fake_server(Serving::Concurrently, answer_all);
    let mut cfg = Config::tcp("127.0.0.1", port);
    cfg.max_connections = Some(1);
    let c = client_with(cfg);
    let what: Describe<'_> = &|| "GET \"k\"".into();
    let held = c.checkout(what).ok().unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| get(&c));
        thread::sleep(Duration::from_millis(50));
        c.checkin(held);
        assert!(waiter.join().unwrap().is_ok());
    });
}

fn client_with(cfg: Config) -> Client {
    Client::new(cfg, RetryPolicy::default())
}

fn stop_now() -> bool {
    true
}

#[test]
fn a_signal_ends_the_wait_for_a_connection() {
    let (port, _) = fake_server(Serving::Concurrently, answer_all);
    let mut cfg = Config::tcp("127.0.0.1", port);
    cfg.max_connections = Some(1);
    let c = client_with(cfg);
    let what: Describe<'_> = &|| "GET \"k\"".into();
    let held = c.checkout(what).ok().unwrap();
    let _armed = interrupt::arm(stop_now);
    let started = Instant::now();
    let err = get(&c).unwrap_err();
    assert!(matches!(err, CacheError::Interrupted), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(held);
    assert_eq!(c.local.current().slots.lock().waiting, 0);
}

#[test]
fn with_wait_replicas_a_noscript_still_falls_back_to_eval() {
    // Too few replicas: the WAIT after the refused EVALSHA must not turn
    // "did not run" into "not replicated".
    let (port, seen) = fake_server(Serving::OneAtATime, |_, r, seen| {
        while let Some(name) = read_command_name(r) {
            seen.fetch_add(1, Ordering::SeqCst);
            let reply: &[u8] = match name.as_str() {
                "EVALSHA" => b"-NOSCRIPT No matching script\r\n",
                "WAIT" => b":0\r\n",
                _ => b"$2\r\nok\r\n",
            };
            r.get_mut().write_all(reply).unwrap();
        }
    });
    let mut cfg = Config::tcp("127.0.0.1", port);
    cfg.wait_replicas = Some(1);
    let c = Client::new(cfg, RetryPolicy::default());
    let script = Script::new("return 'ok'");
    let err = c
        .eval(&script, &[b"k"], &[], &|| "script".into())
        .unwrap_err();
    assert!(matches!(err, CacheError::NotReplicated { .. }), "{err}");
    // EVALSHA + WAIT, then EVAL + WAIT: the fallback ran, and only its
    // WAIT counted.
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[test]
fn a_standalone_client_meeting_moved_says_to_use_a_cluster_url() {
    let (port, _) = fake_server(Serving::OneAtATime, |_, r, _| {
        while read_command_name(r).is_some() {
            r.get_mut()
                .write_all(b"-MOVED 3999 10.0.0.2:7001\r\n")
                .unwrap();
        }
    });
    let err = client(port)
        .call(Cmd::new("GET").arg("k"), &|| "GET \"k\"".into())
        .unwrap_err();
    assert!(matches!(err, CacheError::Response { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("redis+cluster://"), "{text}");
    assert!(text.contains("10.0.0.2:7001"), "{text}");
}

#[test]
fn wait_replicas_waits_for_writes_but_not_for_writes_that_need_no_replicas() {
    let mut cfg = Config::from_url("redis://h?wait_replicas=1").unwrap();
    cfg.wait_timeout = Duration::from_millis(250);
    let write = Cmd::new("SET").arg("k").arg("v");
    let batch = with_wait(&cfg, std::slice::from_ref(&write)).expect("a write waits");
    let wait: Vec<&[u8]> = batch[1].args().collect();
    assert_eq!((batch[1].name(), wait), ("WAIT", vec![&b"1"[..], b"250"]));
    let release = Cmd::new("EVALSHA").arg("sha").replicas_not_needed(true);
    assert!(with_wait(&cfg, &[release]).is_none());
    assert!(with_wait(&cfg, &[Cmd::new("GET").arg("k")]).is_none());
}
