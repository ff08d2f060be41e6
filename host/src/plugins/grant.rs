//! Capabilities: what a plugin may reach. A grant is read from TOML; the
//! imports a component declares are checked against it at load time, and
//! every connection it makes is checked against an `AllowList` at call time.

use std::net::{IpAddr, SocketAddr};

use crate::config::Grant;

use super::World;

/// A capability a component asks for that its grant does not give, or a
/// grant that cannot be understood.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("imports {import}, which needs `grant = {{ docker = true }}` in its TOML block")]
    Docker { import: String },
    #[error("imports {import}, which needs `grant.connect` to list the addresses it may reach")]
    Connect { import: String },
    #[error("imports {import}, which a {world} plugin cannot use")]
    NotForWorld { import: String, world: &'static str },
    #[error("targets {import}; this node accepts muster:plugin@0.1.x (rebuild the plugin against this node's wit/)")]
    Version { import: String },
    #[error("grant.connect entry \"{entry}\": {why} (write HOST:PORT or HOST:*)")]
    BadConnect { entry: String, why: String },
}

/// Checks a component's imports against its world and grant, before it is
/// linked, so that the error names the grant rather than a missing symbol.
pub fn check_imports<'a>(
    world: World,
    grant: &Grant,
    imports: impl Iterator<Item = &'a str>,
) -> Result<(), GrantError> {
    for import in imports {
        let (package, version) = import.split_once('@').unwrap_or((import, ""));
        if let Some(interface) = package.strip_prefix("muster:plugin/") {
            if !version.starts_with("0.1.") {
                return Err(GrantError::Version {
                    import: import.to_string(),
                });
            }
            if interface == "docker" {
                if world != World::Source {
                    return Err(GrantError::NotForWorld {
                        import: import.to_string(),
                        world: world.as_str(),
                    });
                }
                if !grant.docker {
                    return Err(GrantError::Docker {
                        import: import.to_string(),
                    });
                }
            }
            continue;
        }
        let network =
            package.starts_with("wasi:sockets/") || package.starts_with("wasi:http/outgoing");
        // A health check may always reach its own target; other worlds
        // reach only what they were granted.
        if network && world != World::HealthCheck && grant.connect.is_empty() {
            return Err(GrantError::Connect {
                import: import.to_string(),
            });
        }
    }
    Ok(())
}

/// Splits a `grant.connect` entry into host and port (None for `*`).
pub fn parse_connect(entry: &str) -> Result<(String, Option<u16>), GrantError> {
    let bad = |why: &str| GrantError::BadConnect {
        entry: entry.to_string(),
        why: why.to_string(),
    };
    let (host, port) = entry.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        "*" => None,
        p => Some(p.parse::<u16>().map_err(|_| bad("port is not a number"))?),
    };
    Ok((host.to_string(), port))
}

/// The addresses one call may connect to.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<(IpAddr, Option<u16>)>,
}

impl AllowList {
    /// Whether a connection to `addr` is allowed.
    pub fn permits(&self, addr: SocketAddr) -> bool {
        self.entries
            .iter()
            .any(|(ip, port)| *ip == addr.ip() && port.is_none_or(|p| p == addr.port()))
    }

    /// Allows `host:port` (`None` = any port), resolving a host name now.
    /// A name that does not resolve allows nothing, and says so in the log.
    pub async fn allow(&mut self, host: &str, port: Option<u16>) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.entries.push((ip, port));
            return;
        }
        match tokio::net::lookup_host((host, port.unwrap_or(0))).await {
            Ok(addrs) => self.entries.extend(addrs.map(|a| (a.ip(), port))),
            Err(e) => tracing::debug!(host, error = %e, "granted host does not resolve"),
        }
    }

    /// Allows every `grant.connect` entry (validated when the config loaded).
    pub async fn allow_grant(&mut self, grant: &Grant) {
        for entry in &grant.connect {
            if let Ok((host, port)) = parse_connect(entry) {
                self.allow(&host, port).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_import_needs_the_docker_grant() {
        let none = Grant::default();
        let err = check_imports(
            World::Source,
            &none,
            ["muster:plugin/docker@0.1.0"].into_iter(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("docker = true"), "{err}");
        let docker = Grant {
            docker: true,
            ..Grant::default()
        };
        assert!(check_imports(
            World::Source,
            &docker,
            ["muster:plugin/docker@0.1.0"].into_iter()
        )
        .is_ok());
    }

    #[test]
    fn exporters_need_connect_but_checks_reach_their_target() {
        let none = Grant::default();
        let imports = ["wasi:sockets/tcp@0.2.6", "wasi:io/poll@0.2.6"];
        assert!(check_imports(World::HealthCheck, &none, imports.into_iter()).is_ok());
        let err = check_imports(World::Exporter, &none, imports.into_iter()).unwrap_err();
        assert!(err.to_string().contains("grant.connect"), "{err}");
    }

    #[test]
    fn other_contract_versions_are_named() {
        let err = check_imports(
            World::HealthCheck,
            &Grant::default(),
            ["muster:plugin/log@0.2.0"].into_iter(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("0.1.x"), "{err}");
    }

    #[tokio::test]
    async fn allow_list_matches_ip_and_port() {
        let mut a = AllowList::default();
        a.allow("127.0.0.1", Some(80)).await;
        a.allow("127.0.0.2", None).await;
        assert!(a.permits("127.0.0.1:80".parse().unwrap()));
        assert!(!a.permits("127.0.0.1:81".parse().unwrap()));
        assert!(a.permits("127.0.0.2:9".parse().unwrap()));
        assert!(!a.permits("10.0.0.1:80".parse().unwrap()));
        assert!(parse_connect("redis:*").is_ok());
        assert!(parse_connect("nohost").is_err());
    }
}
