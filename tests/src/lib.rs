//! Harness for end-to-end tests: starts real `muster` binaries on loopback
//! ports and talks to them over HTTP. Nothing here imitates the server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `muster` binary under test: `$MUSTER_BIN`, else the one cargo built
/// next to this test executable (target/<profile>/muster).
pub fn muster_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MUSTER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps layout");
    let bin = profile_dir.join("muster");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --release)",
        bin.display()
    );
    bin
}

/// A free loopback port for an agent or backend to take.
///
/// Ports come from below the kernel's ephemeral range (32768+): a port
/// picked there can be handed to some agent's outgoing connection in the
/// moment between our check and the agent's bind, which made DNS binds fail
/// with "address in use" under parallel tests. Each test process walks its
/// own stretch of 20000–32000 (seeded by pid), and a port is only handed out
/// once per process, after TCP and UDP binds on it both succeeded.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 997) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("muster-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent process; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub http: String,
    pub server_addr: String,
    /// DNS (UDP and TCP) address.
    pub dns: std::net::SocketAddr,
    pub node: String,
    pub log: PathBuf,
    pub data_dir: Option<PathBuf>,
}

/// How to start an agent.
#[derive(Clone, Default)]
pub struct AgentOptions {
    pub data_dir: Option<PathBuf>,
    pub node: Option<String>,
    pub http_port: Option<u16>,
    pub server_port: Option<u16>,
    pub dns_port: Option<u16>,
    /// The loopback IP every address binds (default 127.0.0.1).
    pub ip: Option<String>,
    /// Replaces the mode flags (`--server --bootstrap-expect 1` with a data
    /// dir, `--dev` without): cluster members pass their own.
    pub mode: Option<Vec<String>>,
    pub extra_args: Vec<String>,
}

impl AgentOptions {
    /// A persistent single server on `dir`, on fixed ports so that a
    /// restart comes back at the same addresses.
    pub fn persistent(dir: &Path) -> AgentOptions {
        AgentOptions {
            data_dir: Some(dir.to_path_buf()),
            node: Some("server-1".into()),
            http_port: Some(free_port()),
            server_port: Some(free_port()),
            dns_port: Some(free_port()),
            ..Default::default()
        }
    }
}

impl Agent {
    /// An in-memory dev agent.
    pub fn dev() -> Agent {
        Agent::start(AgentOptions::default())
    }

    /// A persistent single server on `dir`.
    pub fn persistent(dir: &Path) -> Agent {
        Agent::start(AgentOptions::persistent(dir))
    }

    /// Starts an agent and waits until it answers with a leader.
    pub fn start(opts: AgentOptions) -> Agent {
        let agent = Agent::spawn(&opts);
        agent.wait_ready(Duration::from_secs(15));
        agent
    }

    /// Starts an agent without waiting for it.
    pub fn spawn(opts: &AgentOptions) -> Agent {
        let ip = opts.ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        let http = format!("{ip}:{}", opts.http_port.unwrap_or_else(free_port));
        let server_addr = format!("{ip}:{}", opts.server_port.unwrap_or_else(free_port));
        // Every test agent gets its own DNS port: 8600 is for people.
        let dns: std::net::SocketAddr = format!("{ip}:{}", opts.dns_port.unwrap_or_else(free_port))
            .parse()
            .expect("DNS address");
        let node = opts
            .node
            .clone()
            .unwrap_or_else(|| format!("node-{}", free_port()));
        let log_dir = std::env::temp_dir().join("muster-test-logs");
        let _ = std::fs::create_dir_all(&log_dir);
        let log = log_dir.join(format!("{node}-{}.log", free_port()));
        let mut cmd = Command::new(muster_bin());
        cmd.arg("agent").args([
            "--node",
            &node,
            "--http-addr",
            &http,
            "--server-addr",
            &server_addr,
            "--dns-addr",
            &dns.to_string(),
        ]);
        match (&opts.mode, &opts.data_dir) {
            (Some(mode), dir) => {
                cmd.args(mode);
                if let Some(d) = dir {
                    cmd.arg("--data-dir").arg(d);
                }
            }
            (None, Some(d)) => {
                cmd.args(["--server", "--bootstrap-expect", "1", "--data-dir"])
                    .arg(d);
            }
            (None, None) => {
                cmd.arg("--dev");
            }
        }
        cmd.args(&opts.extra_args);
        let log_file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(Stdio::null()).stderr(Stdio::from(log_file));
        let child = cmd.spawn().expect("spawning muster");
        Agent {
            child,
            http,
            server_addr,
            dns,
            node,
            log,
            data_dir: opts.data_dir.clone(),
        }
    }

    /// Waits until `/v1/status/leader` names a leader.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(r) = ureq::get(&self.url("/v1/status/leader"))
                .timeout(Duration::from_millis(500))
                .call()
            {
                if r.into_string().map(|s| s.len() > 2).unwrap_or(false) {
                    return start.elapsed();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "agent {} not ready after {timeout:?}; log:\n{}",
            self.node,
            self.log_text()
        );
    }

    /// The agent's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Sends a request and returns (status, headers we care about, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        let req = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(700));
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let r = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = r.status();
        let index = r.header("X-Consul-Index").and_then(|v| v.parse().ok());
        let known_leader = r.header("X-Consul-KnownLeader").map(str::to_string);
        let content_type = r.header("content-type").map(str::to_string);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).expect("reading body");
        Resp {
            status,
            index,
            known_leader,
            content_type,
            body: bytes,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }

    pub fn put(&self, path: &str, body: &str) -> Resp {
        self.call("PUT", path, Some(body.as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None)
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(muster_bin())
            .args(args)
            .env("MUSTER_HTTP_ADDR", &self.http)
            .output()
            .expect("running the CLI")
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `dig +short NAME RTYPE` against the agent's DNS, one try of
    /// `timeout_s` seconds; the answer lines, sorted.
    pub fn dig_short(&self, name: &str, rtype: &str, timeout_s: u32) -> Vec<String> {
        let out = Command::new("dig")
            .arg(format!("@{}", self.dns.ip()))
            .args(["-p", &self.dns.port().to_string(), "+short"])
            .arg(format!("+time={timeout_s}"))
            .args(["+tries=1", name, rtype])
            .output()
            .expect("running dig (install dnsutils)");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// Sends a signal (STOP, CONT, TERM) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod backends;
pub mod cluster;
pub mod history;

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub index: Option<u64>,
    pub known_leader: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status, showing the body if it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }
}

/// Decodes a KV entry's base64 value.
pub fn kv_value(entry: &Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = entry["Value"].as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 value")
}

/// Polls `probe` every 50 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace root (for building test plugins and examples).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// Builds `tests/plugins/fault-check` for wasm32-wasip2 and returns the
/// component's path.
pub fn fault_plugin() -> PathBuf {
    wasm_plugin("fault-check")
}

/// Builds a workspace plugin crate for wasm32-wasip2 (once per test binary
/// and crate) and returns the component's path. Its own target dir: the
/// `cargo test` that runs us holds the lock on the shared one.
pub fn wasm_plugin(package: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(p, _)| p == package) {
        return path.clone();
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("test-plugins");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {package}: {e}"));
    assert!(
        status.success(),
        "building {package} for wasm32-wasip2 failed"
    );
    let path = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    built.push((package.to_string(), path.clone()));
    path
}

/// A real HTTP server on 127.0.0.1 whose answer the test sets: every
/// request gets `status` with a short body. `stop` closes the listener.
pub struct HttpTarget {
    pub addr: std::net::SocketAddr,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl HttpTarget {
    /// Starts answering `status` on a free port.
    pub fn start(status: u16) -> HttpTarget {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind"), status)
    }

    /// Starts answering on `listener`.
    pub fn start_on(listener: TcpListener, status: u16) -> HttpTarget {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let code = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (code.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 4096];
                        let mut req = Vec::new();
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => req.extend_from_slice(&buf[..n]),
                            }
                        }
                        let code = c.load(Ordering::Relaxed);
                        let body = format!("status {code}");
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpTarget {
            addr,
            status: code,
            stop,
            handle: Some(handle),
        }
    }

    /// Changes the status every later request gets.
    pub fn set_status(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes the listening socket: connections are refused from now on.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server process the test started (redis-server, an HTTPS server, ...),
/// up once its port accepts connections, killed on drop.
pub struct ChildServer {
    pub child: Child,
    pub port: u16,
}

impl ChildServer {
    /// Spawns `cmd` and waits up to 5 s for 127.0.0.1:`port` to accept.
    pub fn spawn(mut cmd: Command, port: u16, what: &str) -> ChildServer {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let server = ChildServer { child, port };
        let up = wait_for(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "{what} did not listen on {port}");
        server
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
