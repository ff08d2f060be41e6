//! Real etcd and ZooKeeper servers for the exporter tests: started on
//! loopback ports in a temporary directory, stoppable and restartable on
//! the same ports and data, killed on drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use crate::{free_port, wait_for, TempDir};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &serde_json::Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or(""))
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A process killed on drop.
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_file(dir: &std::path::Path, name: &str) -> (Stdio, Stdio) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file");
    let g = f.try_clone().expect("log file");
    (Stdio::from(f), Stdio::from(g))
}

/// One etcd 3.4 member.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    dir: TempDir,
    proc: Proc,
}

impl Etcd {
    pub fn start(tag: &str) -> Etcd {
        let mut etcd = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new(&format!("etcd-{tag}")),
            proc: Proc(None),
        };
        etcd.restart();
        etcd
    }

    /// `http://127.0.0.1:PORT`, what the exporter's `endpoints` lists.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Stops the server (SIGKILL: the data stays on disk).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.proc.kill();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let (out, err) = log_file(&self.dir.0, "etcd.log");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.0.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting etcd (apt-get install etcd-server)");
        self.proc = Proc(Some(child));
        let up = wait_for(Duration::from_secs(20), || {
            self.post("/v3/maintenance/status", &serde_json::json!({}))
                .ok()
        });
        assert!(up.is_some(), "etcd did not come up on {}", self.client_port);
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        agent
            .post(&format!("{}{path}", self.endpoint()))
            .send_json(body.clone())
            .map_err(|e| e.to_string())?
            .into_json()
            .map_err(|e| e.to_string())
    }

    /// Every key under `prefix` with its value, read through the JSON
    /// gateway.
    pub fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>, String> {
        Ok(self
            .get_prefix_with_lease(prefix)?
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect())
    }

    /// Every key under `prefix`: (value, lease ID).
    pub fn get_prefix_with_lease(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, (String, String)>, String> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let res = self.post(
            "/v3/kv/range",
            &serde_json::json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&end) }),
        )?;
        Ok(res["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                (
                    unb64(&kv["key"]),
                    (
                        unb64(&kv["value"]),
                        kv["lease"].as_str().unwrap_or("0").to_string(),
                    ),
                )
            })
            .collect())
    }

    /// Writes a key directly (a stale entry the exporter must remove).
    pub fn put(&self, key: &str, value: &str) {
        self.post(
            "/v3/kv/put",
            &serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) }),
        )
        .expect("etcd put");
    }
}

/// A standalone ZooKeeper 3.8 server.
pub struct ZooKeeper {
    pub port: u16,
    dir: TempDir,
    proc: Proc,
}

impl ZooKeeper {
    pub fn start(tag: &str) -> ZooKeeper {
        let mut zk = ZooKeeper {
            port: free_port(),
            dir: TempDir::new(&format!("zk-{tag}")),
            proc: Proc(None),
        };
        zk.restart();
        zk
    }

    /// `127.0.0.1:PORT`, what the exporter's `servers` lists.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same port and data (sessions survive a
    /// restart shorter than their timeout, as on a real ensemble).
    pub fn restart(&mut self) {
        self.proc.kill();
        let cfg: PathBuf = self.dir.0.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n",
                self.dir.0.join("data").display(),
                self.port
            ),
        )
        .expect("writing zoo.cfg");
        let (out, err) = log_file(&self.dir.0, "zookeeper.log");
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(&cfg)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting ZooKeeper (apt-get install zookeeper)");
        self.proc = Proc(Some(child));
        let up = wait_for(Duration::from_secs(60), || {
            self.four_letter("ruok").filter(|a| a == "imok")
        });
        assert!(up.is_some(), "ZooKeeper did not come up on {}", self.port);
    }

    /// A four-letter command's answer (`ruok`, `cons`, ...).
    pub fn four_letter(&self, cmd: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(cmd.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }
}

impl ZooKeeper {
    /// Every znode under `root` (recursively) with its data as text, read
    /// over the wire protocol; an empty map if `root` does not exist.
    pub fn tree(&self, root: &str) -> Result<BTreeMap<String, String>, String> {
        use zookeeper_exporter::client::Client;
        use zookeeper_exporter::jute::{Request, Response};
        use zookeeper_exporter::net::StdEnv;
        let mut client = Client::new(StdEnv, vec![self.address()], 10_000, 3_000);
        client
            .ensure_connected()
            .map_err(|e| format!("connecting to ZooKeeper: {e}"))?;
        let mut out = BTreeMap::new();
        let mut queue = vec![root.to_string()];
        while let Some(path) = queue.pop() {
            let data = match client.call(Request::GetData { path: path.clone() }) {
                Ok(Ok(Response::Data(bytes, _))) => String::from_utf8_lossy(&bytes).into_owned(),
                Ok(Ok(other)) => return Err(format!("getData {path}: unexpected {other:?}")),
                // NONODE: gone between listing and reading (or no root).
                Ok(Err(-101)) => continue,
                Ok(Err(code)) => return Err(format!("getData {path}: error {code}")),
                Err(e) => return Err(format!("getData {path}: {e}")),
            };
            match client.call(Request::GetChildren { path: path.clone() }) {
                Ok(Ok(Response::Children(names))) => {
                    for name in names {
                        queue.push(format!("{}/{name}", path.trim_end_matches('/')));
                    }
                }
                Ok(Err(-101)) => continue,
                other => return Err(format!("getChildren {path}: {other:?}")),
            }
            out.insert(path, data);
        }
        let _ = client.close_session();
        Ok(out)
    }
}
