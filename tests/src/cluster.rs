//! Clusters of real `muster` processes: servers on 127.0.0.2, .3, … (one
//! loopback IP each, as separate machines would have), client agents after
//! them, each with its own data dir and fixed ports so that a restart comes
//! back at the same addresses.

use std::time::{Duration, Instant};

use crate::{free_port, Agent, AgentOptions, TempDir};

/// One member: its process (None while stopped) and how to start it again.
pub struct Member {
    pub agent: Option<Agent>,
    pub opts: AgentOptions,
    pub server: bool,
    _dir: TempDir,
}

pub struct TestCluster {
    pub members: Vec<Member>,
    /// The servers' `addresses.server`, which later members retry-join.
    pub join: Vec<String>,
    config: std::path::PathBuf,
    _config_dir: TempDir,
}

impl TestCluster {
    /// `servers` servers that bootstrap together; `config` is TOML every
    /// member reads (timeouts, snapshot threshold).
    pub fn start(servers: usize, config: &str) -> TestCluster {
        let config_dir = TempDir::new("cluster-config");
        let path = config_dir.0.join("cluster.toml");
        std::fs::write(&path, config).expect("writing the cluster config");
        let mut c = TestCluster {
            members: Vec::new(),
            join: Vec::new(),
            config: path,
            _config_dir: config_dir,
        };
        let ports: Vec<u16> = (0..servers).map(|_| free_port()).collect();
        c.join = (0..servers)
            .map(|i| format!("127.0.0.{}:{}", i + 2, ports[i]))
            .collect();
        for (i, port) in ports.iter().enumerate() {
            let expect = servers.to_string();
            c.spawn(true, Some(*port), &["--bootstrap-expect", &expect]);
            let _ = i;
        }
        for m in &c.members {
            if let Some(a) = &m.agent {
                a.wait_ready(Duration::from_secs(30));
            }
        }
        c
    }

    fn spawn(&mut self, server: bool, server_port: Option<u16>, mode: &[&str]) -> usize {
        let i = self.members.len();
        let dir = TempDir::new(&format!("member-{i}"));
        let mut args: Vec<String> = Vec::new();
        if server {
            args.push("--server".into());
        }
        args.extend(mode.iter().map(|s| s.to_string()));
        for j in &self.join {
            args.push("--retry-join".into());
            args.push(j.clone());
        }
        args.push("--config".into());
        args.push(self.config.display().to_string());
        let opts = AgentOptions {
            data_dir: Some(dir.0.clone()),
            node: Some(if server {
                format!("server-{}", i + 1)
            } else {
                format!("client-{}", i + 1)
            }),
            http_port: Some(free_port()),
            server_port: Some(server_port.unwrap_or_else(free_port)),
            dns_port: Some(free_port()),
            ip: Some(format!("127.0.0.{}", i + 2)),
            mode: Some(args),
            extra_args: Vec::new(),
        };
        let agent = Agent::spawn(&opts);
        self.members.push(Member {
            agent: Some(agent),
            opts,
            server,
            _dir: dir,
        });
        i
    }

    /// A server that joins the running cluster (no bootstrap_expect).
    pub fn add_server(&mut self) -> usize {
        let i = self.spawn(true, None, &[]);
        self.agent(i).wait_ready(Duration::from_secs(30));
        i
    }

    /// A client agent joined to the servers.
    pub fn add_client(&mut self) -> usize {
        let i = self.spawn(false, None, &[]);
        self.agent(i).wait_ready(Duration::from_secs(30));
        i
    }

    /// A running member's process.
    #[track_caller]
    pub fn agent(&self, i: usize) -> &Agent {
        self.members[i].agent.as_ref().expect("member is running")
    }

    pub fn agent_mut(&mut self, i: usize) -> &mut Agent {
        self.members[i].agent.as_mut().expect("member is running")
    }

    /// Indexes of running servers.
    pub fn running_servers(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].server && self.members[i].agent.is_some())
            .collect()
    }

    /// A running server other than `leader`.
    #[track_caller]
    pub fn follower_of(&self, leader: usize) -> usize {
        self.running_servers()
            .into_iter()
            .find(|&i| i != leader)
            .expect("a running follower")
    }

    /// The member whose `addresses.server` is `addr`.
    pub fn by_server_addr(&self, addr: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.agent.as_ref().is_some_and(|a| a.server_addr == addr))
    }

    /// The leader, as a running server sees it, once all running servers
    /// agree (up to `timeout`).
    pub fn leader(&self, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let views: Vec<Option<String>> = self
                .running_servers()
                .iter()
                .map(|&i| {
                    let a = self.agent(i);
                    ureq::get(&a.url("/v1/status/leader"))
                        .timeout(Duration::from_secs(1))
                        .call()
                        .ok()
                        .and_then(|r| r.into_json::<String>().ok())
                        .filter(|s| !s.is_empty())
                })
                .collect();
            if let Some(Some(first)) = views.first() {
                if views.iter().all(|v| v.as_ref() == Some(first)) {
                    if let Some(i) = self.by_server_addr(first) {
                        return i;
                    }
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no agreed leader after {timeout:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL a member; it stays down until `restart`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut a) = self.members[i].agent.take() {
            a.kill9();
        }
    }

    /// Starts a stopped member again from its data dir, on its addresses.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        let agent = Agent::spawn(&self.members[i].opts);
        agent.wait_ready(Duration::from_secs(30));
        self.members[i].agent = Some(agent);
    }

    /// Starts a stopped member without waiting for it.
    pub fn respawn(&mut self, i: usize) {
        self.kill9(i);
        self.members[i].agent = Some(Agent::spawn(&self.members[i].opts));
    }
}
