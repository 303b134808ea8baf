//! The cluster transport against scripted fake nodes: no interpreter, no
//! real server.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex as StdMutex};
use std::thread;
use std::time::Duration;

use super::*;
use crate::connection::cluster_slots::slot;
use crate::connection::fake_server_tests::read_command;
use crate::connection::retry::DEFAULT_WINDOW;

/// What a fake node received, command by command (name and arguments).
type Log = Arc<StdMutex<Vec<Vec<String>>>>;

/// A node on a free port; `answer(command)` gives each command's reply
/// bytes, or `None` to hang up without answering.
struct FakeNode {
    port: u16,
    log: Log,
}

impl FakeNode {
    fn start(answer: impl Fn(&[String]) -> Option<Vec<u8>> + Send + Sync + 'static) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Log = Arc::default();
        let answer = Arc::new(answer);
        let seen = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let (answer, seen) = (answer.clone(), seen.clone());
                let mut reader = BufReader::new(stream.unwrap());
                thread::spawn(move || {
                    while let Some(cmd) = read_command(&mut reader) {
                        seen.lock().unwrap().push(cmd.clone());
                        match answer(&cmd) {
                            Some(reply) => reader.get_mut().write_all(&reply).unwrap(),
                            None => return,
                        }
                    }
                });
            }
        });
        FakeNode { port, log }
    }

    /// The commands received, as `NAME first-argument`.
    fn seen(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|c| c[..c.len().min(2)].join(" "))
            .collect()
    }
}

/// `CLUSTER SLOTS`: every slot on the node at `port`.
fn all_slots_on(port: u16) -> Vec<u8> {
    format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n").into_bytes()
}

fn cluster(seeds: &[u16], window: Duration) -> ClusterClient {
    let mut cfg = Config::tcp("", 0);
    cfg.addr = Addr::Cluster(seeds.iter().map(|p| ("127.0.0.1".into(), *p)).collect());
    let policy = RetryPolicy {
        window,
        ..RetryPolicy::default()
    };
    ClusterClient::new(cfg, policy)
}

fn get(c: &ClusterClient) -> Result<Reply, CacheError> {
    c.call(Cmd::new("GET").arg("k"), &|| "GET \"k\"".into())
}

/// Node B answers reads; node A answers `redirect` (with B's port) to a
/// GET. A's map puts every slot on A, and, once it has sent a `MOVED`, on
/// B (as a cluster's map does once a slot has moved).
fn pair(redirect: &'static str) -> (FakeNode, FakeNode) {
    let b_port = Arc::new(StdMutex::new(0u16));
    let own_b = b_port.clone();
    let b = FakeNode::start(move |cmd| match cmd[0].as_str() {
        "ASKING" => Some(b"+OK\r\n".to_vec()),
        "PING" => Some(b"+PONG\r\n".to_vec()),
        "CLUSTER" => Some(all_slots_on(*own_b.lock().unwrap())),
        _ => Some(b"$1\r\nv\r\n".to_vec()),
    });
    *b_port.lock().unwrap() = b.port;
    let b_port = b.port;
    // (A's port, whether A has sent a MOVED)
    let state = Arc::new(StdMutex::new((0u16, false)));
    let own = state.clone();
    let a = FakeNode::start(move |cmd| {
        let mut own = own.lock().unwrap();
        match cmd[0].as_str() {
            "PING" => Some(b"+PONG\r\n".to_vec()),
            "CLUSTER" if own.1 => Some(all_slots_on(b_port)),
            "CLUSTER" => Some(all_slots_on(own.0)),
            _ => {
                own.1 |= redirect == "MOVED";
                Some(format!("-{redirect} {} 127.0.0.1:{b_port}\r\n", slot(b"k")).into_bytes())
            }
        }
    });
    state.lock().unwrap().0 = a.port;
    (a, b)
}

#[test]
fn moved_is_followed_and_remembered() {
    let (a, b) = pair("MOVED");
    let c = cluster(&[a.port], DEFAULT_WINDOW);
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    // The second GET went straight to B.
    assert_eq!(a.seen().iter().filter(|c| c.starts_with("GET")).count(), 1);
    assert_eq!(b.seen().iter().filter(|c| c.starts_with("GET")).count(), 2);
}

#[test]
fn ask_is_followed_with_asking_in_the_same_write_and_not_remembered() {
    let (a, b) = pair("ASK");
    let c = cluster(&[a.port], DEFAULT_WINDOW);
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert_eq!(a.seen().iter().filter(|c| c.starts_with("GET")).count(), 2);
    let to_b: Vec<String> = b
        .seen()
        .into_iter()
        .filter(|c| c != "CLUSTER SLOTS")
        .collect();
    assert_eq!(to_b, ["ASKING", "GET k", "ASKING", "GET k"]);
}

#[test]
fn a_seed_that_is_down_is_passed_over() {
    let (a, _b) = pair("MOVED");
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = cluster(&[dead, a.port], DEFAULT_WINDOW);
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert!(c.probe());
}

#[test]
fn a_lost_reply_to_a_command_that_may_not_repeat_is_sent_nowhere_else() {
    let a_port = Arc::new(StdMutex::new(0u16));
    let own = a_port.clone();
    let a = FakeNode::start(move |cmd| match cmd[0].as_str() {
        "CLUSTER" => Some(all_slots_on(*own.lock().unwrap())),
        _ => None,
    });
    *a_port.lock().unwrap() = a.port;
    let c = cluster(&[a.port], DEFAULT_WINDOW);
    let raw = Cmd::new("INCRBY").arg("n").arg("1");
    let err = c.pipeline(&[raw], &|| "INCRBY \"n\"".into()).unwrap_err();
    assert!(matches!(err, CacheError::OutcomeUnknown { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{}", a.port)),
        "{err}"
    );
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        a.seen().iter().filter(|c| c.starts_with("INCRBY")).count(),
        1
    );
}

#[test]
fn nodes_that_keep_redirecting_are_waited_out_then_reported() {
    // Two nodes that each say the slot lives on the other.
    let ports = Arc::new(StdMutex::new((0u16, 0u16)));
    let (pa, pb) = (ports.clone(), ports.clone());
    let a = FakeNode::start(move |cmd| match cmd[0].as_str() {
        "CLUSTER" => Some(all_slots_on(pa.lock().unwrap().0)),
        _ => Some(
            format!(
                "-MOVED {} 127.0.0.1:{}\r\n",
                slot(b"k"),
                pa.lock().unwrap().1
            )
            .into_bytes(),
        ),
    });
    let b = FakeNode::start(move |cmd| match cmd[0].as_str() {
        "CLUSTER" => Some(all_slots_on(pb.lock().unwrap().0)),
        _ => Some(
            format!(
                "-MOVED {} 127.0.0.1:{}\r\n",
                slot(b"k"),
                pb.lock().unwrap().0
            )
            .into_bytes(),
        ),
    });
    *ports.lock().unwrap() = (a.port, b.port);
    let c = cluster(&[a.port], Duration::from_millis(200));
    let err = get(&c).unwrap_err();
    assert!(matches!(err, CacheError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("kept redirecting"), "{err}");
}

/// The client-side cache against fake nodes: A serves every slot, tracks
/// (accepts `HELLO 3` and `CLIENT TRACKING`) and answers `GET k`; a `GET j`
/// it redirects to B with `MOVED`.
#[test]
fn the_client_cache_keeps_tracked_reads_and_a_moved_empties_it() {
    let b = FakeNode::start(|cmd| match cmd[0].as_str() {
        "HELLO" | "CLIENT" => Some(b"+OK\r\n".to_vec()),
        "PTTL" => Some(b":-1\r\n".to_vec()),
        _ => Some(b"$1\r\nw\r\n".to_vec()),
    });
    let b_port = b.port;
    let a_port = Arc::new(StdMutex::new(0u16));
    let own = a_port.clone();
    let a = FakeNode::start(
        move |cmd| match (cmd[0].as_str(), cmd.get(1).map(String::as_str)) {
            ("HELLO" | "CLIENT", _) => Some(b"+OK\r\n".to_vec()),
            ("CLUSTER", _) => Some(all_slots_on(*own.lock().unwrap())),
            ("PTTL", _) => Some(b":-1\r\n".to_vec()),
            (_, Some("j")) => {
                Some(format!("-MOVED {} 127.0.0.1:{b_port}\r\n", slot(b"j")).into_bytes())
            }
            _ => Some(b"$1\r\nv\r\n".to_vec()),
        },
    );
    *a_port.lock().unwrap() = a.port;
    let c = cluster(&[a.port], DEFAULT_WINDOW).with_client_cache(true);
    let gets = |node: &FakeNode, key: &str| {
        let wanted = format!("GET {key}");
        node.seen().iter().filter(|c| **c == wanted).count()
    };
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert_eq!(gets(&a, "k"), 1, "the second read came from memory");
    assert_eq!(c.client_cache_hits(), Some(1));
    // The read was sent on A's tracking connection, set up first.
    let seen = a.seen();
    let hello = seen
        .iter()
        .position(|c| c == "HELLO 3")
        .expect("tracking set up");
    assert!(seen[hello + 1].starts_with("CLIENT TRACKING"));
    assert!(hello < seen.iter().position(|c| c == "GET k").unwrap());

    let j = c.call(Cmd::new("GET").arg("j"), &|| "GET \"j\"".into());
    assert_eq!(j.unwrap(), Reply::Bulk(b"w".to_vec()));
    assert_eq!(gets(&b, "j"), 1);
    // The MOVED emptied the cache: k is asked for again.
    assert_eq!(get(&c).unwrap(), Reply::Bulk(b"v".to_vec()));
    assert_eq!(gets(&a, "k"), 2);
    assert_eq!(c.client_cache_hits(), Some(1));
}
