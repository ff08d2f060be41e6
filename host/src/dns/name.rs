//! What a query name asks for: Consul's name forms under the domain.
//!
//! Works on lower-cased labels (the server hands us a `LowerName`), so
//! lookups are case-insensitive without allocating per comparison.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The meaning of a query name relative to the configured domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The domain itself (`consul.`): SOA and NS live here.
    Apex,
    /// `NAME.service`, `TAG.NAME.service` or RFC 2782 `_NAME._TAG.service`.
    Service { name: String, tag: Option<String> },
    /// `NODE.node`.
    Node { name: String },
    /// `HEX.addr`: an address encoded in the name, the target Consul gives
    /// SRV records of instances whose address differs from their node's.
    Addr(IpAddr),
    /// Inside the domain but no such name (unknown form, another
    /// datacenter, a prepared query): NXDOMAIN with the SOA.
    NoSuchName,
    /// Not under the domain: muster does not recurse, so REFUSED.
    Outside,
}

const KINDS: [&[u8]; 4] = [b"service", b"node", b"addr", b"query"];

/// Parses `labels` (lower-cased, most specific first, root excluded)
/// against `domain` (lower-cased labels) and the local `datacenter`.
pub fn parse<D: AsRef<[u8]>>(labels: &[&[u8]], domain: &[D], datacenter: &str) -> Lookup {
    let Some(split) = labels.len().checked_sub(domain.len()) else {
        return Lookup::Outside;
    };
    if !labels[split..]
        .iter()
        .zip(domain)
        .all(|(l, d)| *l == d.as_ref())
    {
        return Lookup::Outside;
    }
    let rest = &labels[..split];
    let Some(last) = rest.last() else {
        return Lookup::Apex;
    };
    // `.service.consul` or `.service.DC.consul`.
    let (kind_at, dc) = if KINDS.contains(last) {
        (rest.len() - 1, None)
    } else if rest.len() >= 2 && KINDS.contains(&rest[rest.len() - 2]) {
        (rest.len() - 2, Some(*last))
    } else {
        return Lookup::NoSuchName;
    };
    if let Some(dc) = dc {
        // Only the local datacenter: muster has no WAN federation.
        if !dc.eq_ignore_ascii_case(datacenter.as_bytes()) {
            return Lookup::NoSuchName;
        }
    }
    let prefix = &rest[..kind_at];
    if prefix.is_empty() {
        return Lookup::NoSuchName;
    }
    match rest[kind_at] {
        b"service" => service(prefix),
        b"node" => join(prefix).map_or(Lookup::NoSuchName, |name| Lookup::Node { name }),
        b"addr" => match prefix {
            [hex] => decode_addr(hex).map_or(Lookup::NoSuchName, Lookup::Addr),
            _ => Lookup::NoSuchName,
        },
        // Prepared queries are not supported.
        _ => Lookup::NoSuchName,
    }
}

fn service(prefix: &[&[u8]]) -> Lookup {
    // RFC 2782: `_name._proto.service`, where `_tcp` stands for any tag.
    if let [name, tag] = prefix {
        if let (Some(name), Some(tag)) = (name.strip_prefix(b"_"), tag.strip_prefix(b"_")) {
            let (Some(name), Ok(tag)) = (text(name), std::str::from_utf8(tag)) else {
                return Lookup::NoSuchName;
            };
            let tag = (tag != "tcp").then(|| tag.to_string());
            return Lookup::Service { name, tag };
        }
    }
    let (name, tag) = match prefix.split_last() {
        Some((name, [])) => (text(name), None),
        Some((name, tag)) => match join(tag) {
            Some(tag) => (text(name), Some(tag)),
            None => return Lookup::NoSuchName,
        },
        None => return Lookup::NoSuchName,
    };
    name.map_or(Lookup::NoSuchName, |name| Lookup::Service { name, tag })
}

fn text(label: &[u8]) -> Option<String> {
    std::str::from_utf8(label)
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Node names and tags may contain dots: their labels are joined back.
fn join(labels: &[&[u8]]) -> Option<String> {
    let parts: Option<Vec<&str>> = labels.iter().map(|l| std::str::from_utf8(l).ok()).collect();
    let joined = parts?.join(".");
    (!joined.is_empty()).then_some(joined)
}

/// 8 hex digits are an IPv4 address, 32 an IPv6 one (Consul's encoding).
fn decode_addr(hex: &[u8]) -> Option<IpAddr> {
    let bytes = hex::decode(hex).ok()?;
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The `.addr.` label for `ip`, the inverse of [`decode_addr`].
pub fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => hex::encode(v4.octets()),
        IpAddr::V6(v6) => hex::encode(v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Lookup {
        let lower = name.to_lowercase();
        let labels: Vec<&[u8]> = lower
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect();
        parse(&labels, &[b"consul"], "dc1")
    }

    fn svc(name: &str, tag: Option<&str>) -> Lookup {
        Lookup::Service {
            name: name.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn every_name_form() {
        assert_eq!(lookup("web.service.consul."), svc("web", None));
        assert_eq!(lookup("WEB.Service.DC1.consul."), svc("web", None));
        assert_eq!(lookup("v2.web.service.consul."), svc("web", Some("v2")));
        assert_eq!(lookup("a.b.web.service.consul."), svc("web", Some("a.b")));
        assert_eq!(lookup("_web._v2.service.consul."), svc("web", Some("v2")));
        assert_eq!(lookup("_web._tcp.service.dc1.consul."), svc("web", None));
        assert_eq!(
            lookup("db-1.node.consul."),
            Lookup::Node {
                name: "db-1".into()
            }
        );
        assert_eq!(
            lookup("host.example.node.dc1.consul."),
            Lookup::Node {
                name: "host.example".into()
            }
        );
        assert_eq!(
            lookup("7f000001.addr.dc1.consul."),
            Lookup::Addr("127.0.0.1".parse().unwrap())
        );
        assert_eq!(lookup("consul."), Lookup::Apex);
    }

    #[test]
    fn names_that_do_not_exist_or_are_not_ours() {
        assert_eq!(lookup("example.com."), Lookup::Outside);
        assert_eq!(lookup("."), Lookup::Outside);
        assert_eq!(lookup("web.service.consul.example."), Lookup::Outside);
        assert_eq!(lookup("service.consul."), Lookup::NoSuchName);
        assert_eq!(lookup("web.service.dc2.consul."), Lookup::NoSuchName);
        assert_eq!(lookup("web.bogus.consul."), Lookup::NoSuchName);
        assert_eq!(lookup("q.query.consul."), Lookup::NoSuchName);
        assert_eq!(lookup("zz.addr.consul."), Lookup::NoSuchName);
        assert_eq!(lookup("7f00.addr.consul."), Lookup::NoSuchName);
    }

    #[test]
    fn addr_round_trips() {
        for ip in ["10.1.2.3", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(decode_addr(encode_addr(ip).as_bytes()), Some(ip));
        }
    }
}
