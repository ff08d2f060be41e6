//! Against a real ZooKeeper (3.8): `ZOOKEEPER_TEST_SERVER=127.0.0.1:2181
//! cargo test -p zookeeper-exporter -- --ignored`. Each test works under
//! its own base path and removes it at the end.
//!
//! A standalone server for this: `zoo.cfg` with tickTime=2000,
//! dataDir=<temp>, clientPort=<port>, clientPortAddress=127.0.0.1, then
//! `java -cp '/etc/zookeeper/conf:/usr/share/java/zookeeper.jar'
//! org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zookeeper_exporter::client::Client;
use zookeeper_exporter::config::Config;
use zookeeper_exporter::exporter::{Change, Exporter};
use zookeeper_exporter::jute::{
    self, code, header_only_frame, op, ConnectRequest, ConnectResponse, CreateMode, Request,
    Response, Stat, Writer,
};
use zookeeper_exporter::layout::{Instance, InstanceKey};
use zookeeper_exporter::net::StdEnv;

fn server() -> String {
    std::env::var("ZOOKEEPER_TEST_SERVER").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

fn unique_base(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("/muster-zk-test-{}-{nanos}/{name}", std::process::id())
}

fn config(base: &str, session_timeout: &str) -> Config {
    Config::parse(&format!(
        r#"{{"servers":["{}"],"path":"{base}","session_timeout":"{session_timeout}","timeout":"3s"}}"#,
        server()
    ))
    .unwrap()
}

fn inst(id: &str, name: &str, addr: &str, port: u16, tags: &[&str]) -> Instance {
    Instance {
        node: "node1".into(),
        id: id.into(),
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        address: addr.into(),
        port,
        meta: vec![("container-id".into(), format!("c-{id}"))],
    }
}

fn key(id: &str) -> InstanceKey {
    InstanceKey {
        node: "node1".into(),
        id: id.into(),
    }
}

/// A plain client to look at what the exporter wrote.
struct Observer(Client<StdEnv>);

impl Observer {
    fn new() -> Self {
        let mut c = Client::new(StdEnv, vec![server()], 10_000, 3_000);
        c.ensure_connected().expect("observer connects");
        Observer(c)
    }

    fn call(&mut self, req: Request) -> Result<Response, i32> {
        self.0.call(req).expect("observer request")
    }

    fn children(&mut self, path: &str) -> Vec<String> {
        match self.call(Request::GetChildren { path: path.into() }) {
            Ok(Response::Children(mut c)) => {
                c.sort();
                c
            }
            Err(code::NO_NODE) => Vec::new(),
            other => panic!("{path}: {other:?}"),
        }
    }

    fn exists(&mut self, path: &str) -> bool {
        match self.call(Request::Exists { path: path.into() }) {
            Ok(_) => true,
            Err(code::NO_NODE) => false,
            Err(c) => panic!("{path}: {}", jute::code_name(c)),
        }
    }

    fn get(&mut self, path: &str) -> (serde_json::Value, Stat) {
        match self.call(Request::GetData { path: path.into() }) {
            Ok(Response::Data(d, stat)) => (
                serde_json::from_slice(&d).unwrap_or(serde_json::Value::Null),
                stat,
            ),
            other => panic!("{path}: {other:?}"),
        }
    }

    fn create(&mut self, path: &str, data: &[u8], mode: CreateMode) {
        for p in zookeeper_exporter::layout::prefixes(path) {
            let is_leaf = p == path;
            let r = self.call(Request::Create {
                path: p.clone(),
                data: if is_leaf { data.to_vec() } else { vec![] },
                mode: if is_leaf {
                    mode
                } else {
                    CreateMode::Persistent
                },
            });
            assert!(
                matches!(r, Ok(_) | Err(code::NODE_EXISTS)),
                "create {p}: {r:?}"
            );
        }
    }

    fn delete_tree(&mut self, path: &str) {
        for child in self.children(path) {
            self.delete_tree(&format!("{path}/{child}"));
        }
        let _ = self.call(Request::Delete {
            path: path.into(),
            version: -1,
        });
    }
}

/// Ends a session from a second connection, as the server would on expiry:
/// its ephemeral nodes go and its own connection is closed.
fn kill_session(id: i64, passwd: Vec<u8>) {
    let mut s = TcpStream::connect(server()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = Writer::default();
    ConnectRequest {
        last_zxid_seen: 0,
        timeout_ms: 10_000,
        session_id: id,
        passwd,
    }
    .encode_frame(&mut w);
    s.write_all(&w.buf).unwrap();
    let frame = read_frame(&mut s);
    let resp = ConnectResponse::decode(&frame).unwrap();
    assert_eq!(resp.session_id, id, "attached to the exporter's session");
    let mut w = Writer::default();
    header_only_frame(1, op::CLOSE_SESSION, &mut w);
    s.write_all(&w.buf).unwrap();
    let _ = read_frame(&mut s);
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).unwrap();
    frame
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn root_of(base: &str) -> String {
    base.split('/').take(2).collect::<Vec<_>>().join("/")
}

#[test]
#[ignore]
fn resync_then_apply() {
    let base = unique_base("services");
    let mut obs = Observer::new();
    // Left over from someone else: an unwanted service with a (persistent)
    // child, an empty service, and an unwanted child of a wanted service.
    obs.create(
        &format!("{base}/old/1.2.3.4:5"),
        b"x",
        CreateMode::Persistent,
    );
    obs.create(&format!("{base}/empty"), b"", CreateMode::Persistent);
    obs.create(
        &format!("{base}/web/10.0.0.9:1"),
        b"x",
        CreateMode::Persistent,
    );

    let mut ex = Exporter::open(&config(&base, "10s"), StdEnv).unwrap();
    let sid = ex.client().session_id().unwrap();
    ex.resync(vec![
        inst("a", "web", "10.0.0.1", 80, &["v1"]),
        inst("b", "web", "10.0.0.2", 80, &[]),
        inst("c", "db", "10.0.0.3", 5432, &[]),
    ])
    .unwrap();
    assert_eq!(obs.children(&base), ["db", "web"]);
    assert_eq!(
        obs.children(&format!("{base}/web")),
        ["10.0.0.1:80", "10.0.0.2:80"]
    );
    let (body, stat) = obs.get(&format!("{base}/web/10.0.0.1:80"));
    assert_eq!(stat.ephemeral_owner, sid);
    assert_eq!(
        body,
        serde_json::json!({"Name":"web","IP":"10.0.0.1","PublicPort":80,"PrivatePort":80,
            "ContainerID":"c-a","Tags":["v1"],"Attrs":{"container-id":"c-a"}})
    );
    let (_, parent) = obs.get(&format!("{base}/web"));
    assert_eq!(parent.ephemeral_owner, 0, "service znode is persistent");

    // Changes: new tags, a removal, a new service, removing the unknown.
    ex.apply(vec![
        Change::Upsert(inst("a", "web", "10.0.0.1", 80, &["v2"])),
        Change::Remove(key("b")),
        Change::Upsert(inst("d", "cache", "10.0.0.4", 6379, &[])),
        Change::Remove(key("never-exported")),
    ])
    .unwrap();
    assert_eq!(obs.children(&base), ["cache", "db", "web"]);
    assert_eq!(obs.children(&format!("{base}/web")), ["10.0.0.1:80"]);
    assert_eq!(
        obs.get(&format!("{base}/web/10.0.0.1:80")).0["Tags"],
        serde_json::json!(["v2"])
    );

    // Two instances on one address:port: the last upsert wins, removing
    // the other leaves the child alone.
    ex.apply(vec![Change::Upsert(inst(
        "e",
        "web",
        "10.0.0.1",
        80,
        &["e"],
    ))])
    .unwrap();
    assert_eq!(
        obs.get(&format!("{base}/web/10.0.0.1:80")).0["ContainerID"],
        "c-e"
    );
    ex.apply(vec![Change::Remove(key("a"))]).unwrap();
    assert_eq!(
        obs.get(&format!("{base}/web/10.0.0.1:80")).0["ContainerID"],
        "c-e"
    );
    // The last one gone: the child and then its service znode go.
    ex.apply(vec![Change::Remove(key("e"))]).unwrap();
    assert!(!obs.exists(&format!("{base}/web")));

    // An instance moving to another port: old child gone, new one there.
    ex.apply(vec![Change::Upsert(inst(
        "d",
        "cache",
        "10.0.0.4",
        6380,
        &[],
    ))])
    .unwrap();
    assert_eq!(obs.children(&format!("{base}/cache")), ["10.0.0.4:6380"]);

    // Applying the same batch twice is harmless.
    let batch = vec![
        Change::Upsert(inst("f", "queue", "10.0.0.6", 5672, &[])),
        Change::Remove(key("c")),
    ];
    ex.apply(batch.clone()).unwrap();
    ex.apply(batch).unwrap();
    assert_eq!(obs.children(&base), ["cache", "queue"]);

    // Resync to a different set repairs everything, including a child
    // someone deleted behind our back and one someone added.
    obs.call(Request::Delete {
        path: format!("{base}/queue/10.0.0.6:5672"),
        version: -1,
    })
    .unwrap();
    obs.create(
        &format!("{base}/cache/9.9.9.9:1"),
        b"x",
        CreateMode::Persistent,
    );
    ex.resync(vec![
        inst("f", "queue", "10.0.0.6", 5672, &[]),
        inst("g", "web", "10.0.0.7", 80, &[]),
    ])
    .unwrap();
    assert_eq!(obs.children(&base), ["queue", "web"]);
    assert_eq!(obs.children(&format!("{base}/queue")), ["10.0.0.6:5672"]);
    assert_eq!(obs.children(&format!("{base}/web")), ["10.0.0.7:80"]);

    // Resync with nothing empties the base path but keeps it.
    ex.resync(vec![]).unwrap();
    assert!(obs.children(&base).is_empty());
    assert!(obs.exists(&base));

    obs.delete_tree(&root_of(&base));
}

#[test]
#[ignore]
fn takes_over_ephemerals_of_another_session() {
    let base = unique_base("services");
    // A previous leader's exporter: its session holds the children.
    let mut old = Observer::new();
    old.create(
        &format!("{base}/web/10.0.0.1:80"),
        b"stale",
        CreateMode::Ephemeral,
    );
    old.create(
        &format!("{base}/web/10.0.0.2:80"),
        b"stale",
        CreateMode::Ephemeral,
    );
    let old_sid = old.0.session_id().unwrap();
    let mut obs = Observer::new();

    let mut ex = Exporter::open(&config(&base, "10s"), StdEnv).unwrap();
    let sid = ex.client().session_id().unwrap();
    ex.resync(vec![inst("a", "web", "10.0.0.1", 80, &[])])
        .unwrap();
    let (body, stat) = obs.get(&format!("{base}/web/10.0.0.1:80"));
    assert_eq!(stat.ephemeral_owner, sid);
    assert_eq!(body["ContainerID"], "c-a");
    // Not wanted: deleted even though another session owns it.
    assert_eq!(obs.children(&format!("{base}/web")), ["10.0.0.1:80"]);

    // Through apply: a create meets another session's node.
    old.create(
        &format!("{base}/web/10.0.0.3:80"),
        b"stale",
        CreateMode::Ephemeral,
    );
    ex.apply(vec![Change::Upsert(inst("b", "web", "10.0.0.3", 80, &[]))])
        .unwrap();
    let (body, stat) = obs.get(&format!("{base}/web/10.0.0.3:80"));
    assert_eq!(stat.ephemeral_owner, sid);
    assert_eq!(body["ContainerID"], "c-b");

    // Through apply of an instance we believe is ours and unchanged: during
    // a hot swap the old version re-creates it under its session after our
    // resync; applying the same upsert claims it back.
    obs.delete_tree(&format!("{base}/web/10.0.0.1:80"));
    old.create(
        &format!("{base}/web/10.0.0.1:80"),
        b"stale",
        CreateMode::Ephemeral,
    );
    ex.apply(vec![Change::Upsert(inst("a", "web", "10.0.0.1", 80, &[]))])
        .unwrap();
    let (body, stat) = obs.get(&format!("{base}/web/10.0.0.1:80"));
    assert_eq!(stat.ephemeral_owner, sid);
    assert_eq!(body["ContainerID"], "c-a");

    // The old session ends: nothing we export goes with it.
    assert_ne!(old_sid, sid);
    old.0.close_session().unwrap();
    assert_eq!(
        obs.children(&format!("{base}/web")),
        ["10.0.0.1:80", "10.0.0.3:80"]
    );

    ex.resync(vec![]).unwrap();
    obs.delete_tree(&root_of(&base));
}

#[test]
#[ignore]
fn recovers_from_session_expiry() {
    let base = unique_base("services");
    let mut obs = Observer::new();
    let mut ex = Exporter::open(&config(&base, "4s"), StdEnv).unwrap();
    ex.resync(vec![
        inst("a", "web", "10.0.0.1", 80, &[]),
        inst("b", "db", "10.0.0.2", 5432, &[]),
    ])
    .unwrap();
    assert_eq!(ex.client().negotiated_timeout_ms(), Some(4000));

    // Expired while idle: the next ticks notice, open a new session and
    // re-create everything.
    let (sid, passwd) = ex.client().session_credentials().unwrap();
    kill_session(sid, passwd);
    wait_for("ephemerals of the killed session gone", || {
        obs.children(&format!("{base}/web")).is_empty()
    });
    wait_for("children re-created by tick", || {
        ex.tick().unwrap();
        obs.children(&format!("{base}/web")) == ["10.0.0.1:80"]
            && obs.children(&format!("{base}/db")) == ["10.0.0.2:5432"]
    });
    let new_sid = ex.client().session_id().unwrap();
    assert_ne!(new_sid, sid);
    assert_eq!(
        obs.get(&format!("{base}/web/10.0.0.1:80"))
            .1
            .ephemeral_owner,
        new_sid
    );

    // Expired just before a change: apply reconnects within the call.
    let (sid, passwd) = ex.client().session_credentials().unwrap();
    kill_session(sid, passwd);
    wait_for("ephemerals gone again", || {
        obs.children(&format!("{base}/web")).is_empty()
    });
    ex.apply(vec![Change::Upsert(inst("c", "web", "10.0.0.3", 80, &[]))])
        .unwrap();
    let newer = ex.client().session_id().unwrap();
    assert_ne!(newer, sid);
    assert_eq!(
        obs.children(&format!("{base}/web")),
        ["10.0.0.1:80", "10.0.0.3:80"]
    );
    assert_eq!(obs.children(&format!("{base}/db")), ["10.0.0.2:5432"]);

    ex.resync(vec![]).unwrap();
    obs.delete_tree(&root_of(&base));
}

#[test]
#[ignore]
fn pings_keep_the_session_and_reconnects_resume_it() {
    let base = unique_base("services");
    let mut obs = Observer::new();
    let mut ex = Exporter::open(&config(&base, "4s"), StdEnv).unwrap();
    ex.resync(vec![inst("a", "web", "10.0.0.1", 80, &[])])
        .unwrap();
    let sid = ex.client().session_id().unwrap();

    // Twice the session timeout with only ticks.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        ex.tick().unwrap();
    }
    assert_eq!(ex.client().session_id(), Some(sid));
    assert_eq!(obs.children(&format!("{base}/web")), ["10.0.0.1:80"]);

    // A dropped connection resumes the same session: ephemerals stay.
    ex.client_mut().disconnect();
    ex.apply(vec![Change::Upsert(inst("b", "web", "10.0.0.2", 80, &[]))])
        .unwrap();
    assert_eq!(ex.client().session_id(), Some(sid));
    assert_eq!(
        obs.children(&format!("{base}/web")),
        ["10.0.0.1:80", "10.0.0.2:80"]
    );
    ex.client_mut().disconnect();
    ex.tick().unwrap();
    assert_eq!(ex.client().session_id(), Some(sid));

    ex.resync(vec![]).unwrap();
    obs.delete_tree(&root_of(&base));
}

#[test]
#[ignore]
fn sustains_a_thousand_changes_per_second() {
    let base = unique_base("services");
    let mut obs = Observer::new();
    let mut ex = Exporter::open(&config(&base, "10s"), StdEnv).unwrap();
    ex.resync(vec![]).unwrap();
    let n = 3000u16;
    let started = Instant::now();
    let upserts: Vec<Change> = (0..n)
        .map(|i| {
            Change::Upsert(inst(
                &format!("i{i}"),
                &format!("svc{}", i % 50),
                "10.1.0.1",
                10_000 + i,
                &["t"],
            ))
        })
        .collect();
    for batch in upserts.chunks(200) {
        ex.apply(batch.to_vec()).unwrap();
    }
    let removes: Vec<Change> = (0..n)
        .map(|i| Change::Remove(key(&format!("i{i}"))))
        .collect();
    for batch in removes.chunks(200) {
        ex.apply(batch.to_vec()).unwrap();
    }
    let took = started.elapsed();
    let rate = f64::from(2 * n) / took.as_secs_f64();
    eprintln!("{} changes in {took:?}: {rate:.0}/s", 2 * n);
    assert!(rate > 1000.0, "only {rate:.0} changes/s");
    assert!(obs.children(&base).is_empty());

    obs.delete_tree(&root_of(&base));
}

#[test]
fn unreachable_server_is_named() {
    let cfg = Config::parse(r#"{"servers":["127.0.0.1:1"],"timeout":"1s"}"#).unwrap();
    let err = Exporter::open(&cfg, StdEnv).err().expect("no server there");
    assert_eq!(err.to_string(), "127.0.0.1:1: connection refused");
}

#[test]
#[ignore]
fn failed_multi_reports_the_failing_op() {
    let base = unique_base("multi");
    let mut obs = Observer::new();
    obs.create(&format!("{base}/x"), b"1", CreateMode::Persistent);
    let r = obs.call(Request::Multi(vec![
        Request::Delete {
            path: format!("{base}/x"),
            version: 42,
        },
        Request::Create {
            path: format!("{base}/x"),
            data: vec![],
            mode: CreateMode::Ephemeral,
        },
    ]));
    let first = match r {
        Err(c) => c,
        Ok(Response::Multi(results)) => jute::multi_error(&results).expect("an error"),
        other => panic!("{other:?}"),
    };
    assert_eq!(first, code::BAD_VERSION, "{}", jute::code_name(first));
    assert!(obs.exists(&format!("{base}/x")), "rolled back");
    obs.delete_tree(&root_of(&base));
}
