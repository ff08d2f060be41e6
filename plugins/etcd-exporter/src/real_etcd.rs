//! Against a real etcd: the exporter over a minimal std::net HTTP/1.1
//! client, an `etcd` child process on free local ports with a temporary
//! data directory, and `etcdctl` to look at the result. Needs `etcd` and
//! `etcdctl` on PATH, hence `#[ignore]`:
//! `cargo test -p etcd-exporter -- --ignored --nocapture`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Config, Endpoint};
use crate::exporter::{Exporter, Host, Level, Response};
use crate::layout::tests::inst;
use crate::layout::{Change, InstanceKey};

/// A blocking HTTP/1.1 POST per call (`Connection: close`), enough for the
/// gateway: Content-Length or chunked responses.
#[derive(Clone)]
struct StdHost {
    start: Instant,
    logs: Rc<RefCell<Vec<String>>>,
}

impl Host for StdHost {
    fn post(
        &mut self,
        endpoint: &Endpoint,
        path: &str,
        body: &str,
        timeout_ms: u32,
    ) -> Result<Response, String> {
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let addr: SocketAddr = endpoint
            .authority
            .parse()
            .map_err(|e| format!("bad address: {e}"))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection refused".to_string()
            } else {
                e.to_string()
            }
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            endpoint.authority,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        parse_response(&raw)
    }

    fn now_ms(&mut self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn log(&mut self, level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
        self.logs.borrow_mut().push(message.to_string());
    }
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|e| e.to_string())?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The etcd child, killed and its data removed on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    client: String,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!("etcd-exporter-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd on PATH");
        let etcd = Etcd { child, dir, client };
        let deadline = Instant::now() + Duration::from_secs(20);
        while etcd.ctl(&["endpoint", "health"]).is_none() {
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
        etcd
    }

    /// Runs etcdctl; its stdout if it succeeded.
    fn ctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.client, "--dial-timeout", "1s"])
            .args(args)
            .output()
            .expect("etcdctl on PATH");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `etcdctl get --prefix`, as a map.
    fn get(&self, prefix: &str) -> BTreeMap<String, String> {
        let out = self.ctl(&["get", "--prefix", prefix]).expect("etcdctl get");
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
            .collect()
    }

    fn leases(&self) -> Vec<String> {
        let out = self.ctl(&["lease", "list"]).expect("etcdctl lease list");
        out.lines()
            .skip(1)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The lease a key is under, in hex as etcdctl prints it.
    fn lease_of(&self, key: &str) -> String {
        let out = self
            .ctl(&["get", key, "-w", "json"])
            .expect("etcdctl get -w json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let id = v["kvs"][0]["lease"].as_i64().unwrap_or(0);
        format!("{id:x}")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Ticks once a second for `secs` seconds.
fn tick_for(ex: &mut Exporter<StdHost>, secs: u64) {
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        ex.tick().expect("tick");
    }
}

#[test]
#[ignore = "needs etcd and etcdctl on PATH; run with --ignored"]
fn against_real_etcd() {
    let etcd = Etcd::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let host = StdHost {
        start: Instant::now(),
        logs: Rc::default(),
    };
    let logs = host.logs.clone();

    // Nothing answers: open fails naming the endpoint.
    let config = Config::parse(&format!(r#"{{"endpoints": ["{dead}"]}}"#)).expect("config");
    let err = Exporter::open(config, host.clone())
        .err()
        .expect("open must fail");
    assert_eq!(err, format!("{dead}: connection refused"));

    // A dead first endpoint, then the real one.
    let config = Config::parse(&format!(
        r#"{{"endpoints": ["{dead}", "{}"], "lease_ttl": "2s", "timeout": "1s"}}"#,
        etcd.client
    ))
    .expect("config");
    etcd.ctl(&["put", "/services/stale/x", "1.1.1.1:1"])
        .expect("put");
    etcd.ctl(&["put", "/other", "keep"]).expect("put");
    let mut ex = Exporter::open(config, host.clone()).expect("open");
    assert!(
        logs.borrow()
            .iter()
            .any(|l| l.contains("connection refused; switched to")),
        "{:?}",
        logs.borrow()
    );

    // A big resync: 300 puts and a delete, in txns of at most 128.
    let many: Vec<_> = (0..300)
        .map(|i| inst("n1", &format!("s{i:03}"), "bulk", "10.0.1.1", 1000 + i))
        .collect();
    ex.resync(many).expect("big resync");
    let got = etcd.get("/services/");
    assert_eq!(got.len(), 300);
    assert_eq!(got["/services/bulk/s299"], "10.0.1.1:1299");

    ex.resync(vec![
        inst("n1", "web-1", "web", "10.0.0.1", 80),
        inst("n2", "web/2", "web", "10.0.0.2", 80),
    ])
    .expect("resync");
    assert_eq!(
        etcd.get("/services/"),
        map(&[
            ("/services/web/web-1", "10.0.0.1:80"),
            ("/services/web/web_2", "10.0.0.2:80"),
        ])
    );
    assert_eq!(etcd.get("/other"), map(&[("/other", "keep")]));

    ex.apply(vec![
        Change::Upsert(inst("n3", "db-1", "db", "10.0.0.3", 5432)),
        Change::Remove(InstanceKey {
            node: "n1".into(),
            id: "web-1".into(),
        }),
        Change::Upsert(inst("n2", "web/2", "web", "10.0.0.9", 8080)),
        Change::Remove(InstanceKey {
            node: "n9".into(),
            id: "never".into(),
        }),
    ])
    .expect("apply");
    let want = map(&[
        ("/services/db/db-1", "10.0.0.3:5432"),
        ("/services/web/web_2", "10.0.0.9:8080"),
    ]);
    assert_eq!(etcd.get("/services/"), want);

    // Keepalives hold the 2s lease well past its TTL.
    tick_for(&mut ex, 5);
    assert_eq!(etcd.get("/services/"), want);
    let first_lease = etcd.lease_of("/services/db/db-1");

    // The lease is revoked behind our back: the keys vanish, and the next
    // renewal grants a new lease and puts them back.
    etcd.ctl(&["lease", "revoke", &first_lease])
        .expect("revoke");
    assert!(etcd.get("/services/").is_empty());
    tick_for(&mut ex, 2);
    assert_eq!(etcd.get("/services/"), want);
    let second_lease = etcd.lease_of("/services/db/db-1");
    assert_ne!(second_lease, first_lease);
    assert!(logs
        .borrow()
        .iter()
        .any(|l| l.contains("re-putting 2 keys")));

    // No ticks for longer than the TTL: the lease expires; the next apply
    // finds it gone and puts everything back under a new one.
    std::thread::sleep(Duration::from_secs(4));
    assert!(etcd.get("/services/").is_empty());
    ex.apply(vec![Change::Upsert(inst(
        "n4", "api-1", "api", "10.0.0.4", 443,
    ))])
    .expect("apply after expiry");
    assert_eq!(etcd.get("/services/").len(), 3);
    assert_ne!(etcd.lease_of("/services/api/api-1"), second_lease);
    // Leases we replaced are not left behind (etcd dropped them); only the
    // current one is alive.
    assert_eq!(etcd.leases().len(), 1, "{:?}", etcd.leases());

    // The JSON layout, under another prefix, beside the first exporter.
    let config = Config::parse(&format!(
        r#"{{"endpoints": ["{}"], "prefix": "/json/", "value": "json"}}"#,
        etcd.client
    ))
    .expect("config");
    let mut json = Exporter::open(config, host.clone()).expect("open");
    json.resync(vec![inst("n1", "web-1", "web", "10.0.0.1", 80)])
        .expect("resync");
    let got = etcd.get("/json/");
    let v: serde_json::Value = serde_json::from_str(&got["/json/web/web-1"]).expect("JSON value");
    assert_eq!(v["Port"], 80);
    assert_eq!(v["Meta"]["zone"], "a");
    assert_eq!(etcd.get("/services/").len(), 3, "other prefixes untouched");

    // etcd goes away: calls fail, naming every endpoint.
    drop(etcd);
    let err = ex.resync(Vec::new()).expect_err("etcd is gone");
    assert!(
        err.contains(&format!("{dead}: connection refused")),
        "{err}"
    );
    assert!(err.matches("connection refused").count() == 2, "{err}");
}

#[test]
fn chunked_responses() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = parse_response(raw).expect("valid");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello world");
    let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
    assert_eq!(
        parse_response(raw).map(|r| (r.status, r.body)),
        Ok((404, "no".into()))
    );
}
