//! Answers computed from the catalog: which records a query gets, before
//! anything is encoded. Pure (catalog in, records out), so it is tested and
//! fuzzed without sockets.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_server::proto::op::{LowerQuery, ResponseCode};
use hickory_server::proto::rr::domain::Label;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use super::name::{self, Lookup};
use crate::catalog::types::{CheckStatus, Node, Service};
use crate::catalog::Catalog;
use crate::config::DnsSettings;

/// What goes into a response, before encoding.
#[derive(Debug)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, for the authority section of negative answers.
    pub soa: Option<Record>,
    /// Whether `max_udp_answers` left instances out.
    pub trimmed: bool,
}

impl Answer {
    fn empty(rcode: ResponseCode) -> Answer {
        Answer {
            rcode,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: None,
            trimmed: false,
        }
    }
}

/// The zone muster is authoritative for, and how it answers.
pub struct Zone {
    settings: DnsSettings,
    datacenter: String,
    /// This agent's node name: the NS of the zone.
    node_name: String,
    domain: Name,
    domain_labels: Vec<Vec<u8>>,
    mname: Name,
    rname: Name,
    /// `node.DC.DOMAIN` and `addr.DC.DOMAIN`: SRV targets are built by
    /// prepending raw labels to these, which is much cheaper than parsing
    /// a formatted string per record.
    node_suffix: Name,
    addr_suffix: Name,
}

/// An instance that may be answered, with what its records need.
struct Candidate<'a> {
    node: &'a Node,
    service: &'a Service,
    status: CheckStatus,
}

impl Zone {
    pub fn new(
        settings: DnsSettings,
        datacenter: &str,
        node_name: &str,
    ) -> Result<Zone, hickory_server::proto::ProtoError> {
        let domain = Name::from_ascii(&settings.domain)?;
        let domain_labels = domain.iter().map(|l| l.to_ascii_lowercase()).collect();
        let mname = Name::from_ascii(format!("ns.{}", settings.domain))?;
        let rname = Name::from_ascii(format!("hostmaster.{}", settings.domain))?;
        let dc = datacenter.to_lowercase();
        let node_suffix = Name::from_ascii(format!("node.{dc}.{}", settings.domain))?;
        let addr_suffix = Name::from_ascii(format!("addr.{dc}.{}", settings.domain))?;
        Ok(Zone {
            node_suffix,
            addr_suffix,
            settings,
            datacenter: datacenter.to_lowercase(),
            node_name: node_name.to_string(),
            domain,
            domain_labels,
            mname,
            rname,
        })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Parses a query name against this zone.
    pub fn lookup(&self, qname: &LowerName) -> Lookup {
        let labels: Vec<&[u8]> = qname.iter().collect();
        name::parse(&labels, &self.domain_labels, &self.datacenter)
    }

    /// Answers `query` from `catalog`. `udp` applies `max_udp_answers`.
    pub fn answer(&self, catalog: &Catalog, query: &LowerQuery, udp: bool) -> Answer {
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
            return Answer::empty(ResponseCode::Refused);
        }
        // Answers carry the name as the client wrote it (0x20 case
        // randomisation in resolvers checks it).
        let owner = query.original().name().clone();
        let mut answer = match self.lookup(query.name()) {
            Lookup::Outside => return Answer::empty(ResponseCode::Refused),
            Lookup::NoSuchName => Answer::empty(ResponseCode::NXDomain),
            Lookup::Apex => self.apex(catalog, &owner, qtype),
            Lookup::Node { name } => self.node(catalog, &owner, qtype, &name),
            Lookup::Addr(ip) => {
                let mut a = Answer::empty(ResponseCode::NoError);
                if let Some(r) = address_record(&owner, ip, self.settings.node_ttl, qtype) {
                    a.answers.push(r);
                }
                a
            }
            Lookup::Service { name, tag } => {
                self.service(catalog, &owner, qtype, &name, tag.as_deref(), udp)
            }
        };
        // Negative answers (NXDOMAIN, or a name without records of this
        // type) carry the SOA so that resolvers can cache the negation.
        if answer.answers.is_empty() {
            answer.soa = Some(self.soa(catalog));
        }
        answer
    }

    fn soa(&self, catalog: &Catalog) -> Record {
        // The serial follows the catalog, so it moves whenever answers may.
        let serial = catalog.last_index() as u32;
        let soa = SOA::new(
            self.mname.clone(),
            self.rname.clone(),
            serial,
            3600,
            600,
            86400,
            0,
        );
        Record::from_rdata(self.domain.clone(), 0, RData::SOA(soa))
    }

    /// `NODE.node.DC.DOMAIN` (a node name with dots spans labels).
    fn node_name(&self, node: &str) -> Option<Name> {
        prefixed(node.split('.').map(str::as_bytes), &self.node_suffix)
    }

    fn apex(&self, catalog: &Catalog, owner: &Name, qtype: RecordType) -> Answer {
        let mut a = Answer::empty(ResponseCode::NoError);
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            let mut soa = self.soa(catalog);
            soa.name = owner.clone();
            a.answers.push(soa);
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            if let Some(ns) = self.node_name(&self.node_name) {
                a.answers.push(Record::from_rdata(
                    owner.clone(),
                    0,
                    RData::NS(NS(ns.clone())),
                ));
                if let Some(node) = find_node(catalog, &self.node_name) {
                    a.additionals
                        .extend(node_address(&ns, node, self.settings.node_ttl));
                }
            }
        }
        a
    }

    fn node(&self, catalog: &Catalog, owner: &Name, qtype: RecordType, name: &str) -> Answer {
        let Some(node) = find_node(catalog, name) else {
            return Answer::empty(ResponseCode::NXDomain);
        };
        let ttl = self.settings.node_ttl;
        let mut a = Answer::empty(ResponseCode::NoError);
        if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            a.answers
                .extend(stored_address_record(owner, &node.address, ttl, qtype));
        }
        if matches!(qtype, RecordType::TXT | RecordType::ANY) && self.settings.node_meta_txt {
            a.answers.extend(meta_txt(owner, node, ttl));
        }
        a
    }

    fn service(
        &self,
        catalog: &Catalog,
        owner: &Name,
        qtype: RecordType,
        name: &str,
        tag: Option<&str>,
        udp: bool,
    ) -> Answer {
        // Over UDP only `max_udp_answers` instances are sent: walk the
        // instances in random order and stop once that many are healthy,
        // so a service of thousands costs a shuffle, not thousands of
        // health evaluations.
        let limit = match self.settings.max_udp_answers {
            n if udp && n > 0 => n,
            _ => usize::MAX,
        };
        let mut a = Answer::empty(ResponseCode::NoError);
        let mut healthy: Vec<Candidate> = Vec::new();
        for (node, service) in catalog.shuffled_instances(name, &mut rand::thread_rng()) {
            if tag.is_some_and(|t| !service.has_tag(t)) {
                continue;
            }
            let status = catalog.instance_status(&node.name, &service.id);
            let shown = match status {
                CheckStatus::Passing => true,
                CheckStatus::Warning => !self.settings.only_passing,
                CheckStatus::Critical => false,
            };
            if !shown {
                continue;
            }
            if healthy.len() == limit {
                a.trimmed = true;
                break;
            }
            healthy.push(Candidate {
                node,
                service,
                status,
            });
        }
        // No healthy instance: the name does not exist, as in Consul.
        if healthy.is_empty() {
            return Answer::empty(ResponseCode::NXDomain);
        }
        let ttl = self.settings.service_ttl.for_name(&name.to_lowercase());
        match qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                // One record per address: two instances on one host are
                // one answer.
                let mut seen = HashSet::new();
                for c in &healthy {
                    let addr = instance_address(c);
                    if seen.insert(addr) {
                        a.answers
                            .extend(stored_address_record(owner, addr, ttl, qtype));
                    }
                }
            }
            RecordType::SRV => {
                let mut glued = HashSet::new();
                for c in &healthy {
                    self.srv(c, owner, ttl, &mut a, &mut glued);
                }
            }
            _ => {}
        }
        a
    }

    /// One SRV record and the additionals that resolve its target: the
    /// node (`NODE.node.DC.consul`) when the instance uses its node's
    /// address, else the address itself (`HEX.addr.DC.consul`), else, for
    /// a host name, the name with no glue.
    fn srv(
        &self,
        c: &Candidate,
        owner: &Name,
        ttl: u32,
        a: &mut Answer,
        glued: &mut HashSet<Name>,
    ) {
        let addr = instance_address(c);
        let ip = addr.parse::<IpAddr>().ok();
        let on_node = c.service.address.is_empty() || c.service.address == c.node.address;
        let target = match ip {
            _ if on_node => self.node_name(&c.node.name),
            Some(ip) => prefixed(
                std::iter::once(name::encode_addr(ip).as_bytes()),
                &self.addr_suffix,
            ),
            None => Name::from_utf8(addr).ok().map(|mut n| {
                n.set_fqdn(true);
                n
            }),
        };
        let Some(target) = target else {
            return;
        };
        let weight = match c.status {
            CheckStatus::Warning => c.service.weights.warning,
            _ => c.service.weights.passing,
        };
        let srv = SRV::new(
            1,
            u16::try_from(weight).unwrap_or(u16::MAX),
            c.service.port,
            target.clone(),
        );
        a.answers
            .push(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
        if !glued.insert(target.clone()) {
            return;
        }
        if let Some(ip) = ip {
            a.additionals
                .extend(address_record(&target, ip, ttl, RecordType::ANY));
        }
        if on_node && self.settings.node_meta_txt {
            a.additionals.extend(meta_txt(&target, c.node, ttl));
        }
    }
}

/// `labels` followed by `suffix`, or None if a label is empty or too long.
fn prefixed<'a>(labels: impl Iterator<Item = &'a [u8]>, suffix: &'a Name) -> Option<Name> {
    let labels: Option<Vec<Label>> = labels
        .chain(suffix.iter())
        .map(|l| Label::from_raw_bytes(l).ok())
        .collect();
    Name::from_labels(labels?).ok()
}

/// Node names are matched case-insensitively, as DNS names are.
fn find_node<'a>(catalog: &'a Catalog, name: &str) -> Option<&'a Node> {
    catalog
        .node(name)
        .or_else(|| catalog.nodes().find(|n| n.name.eq_ignore_ascii_case(name)))
}

/// The address an instance is reached at: its own, else its node's.
fn instance_address<'a>(c: &Candidate<'a>) -> &'a str {
    if c.service.address.is_empty() {
        &c.node.address
    } else {
        &c.service.address
    }
}

/// The A or AAAA record for `ip` if `qtype` asks for its family.
fn address_record(owner: &Name, ip: IpAddr, ttl: u32, qtype: RecordType) -> Option<Record> {
    let rdata = match ip {
        IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(v4)),
        IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
            RData::AAAA(AAAA(v6))
        }
        _ => return None,
    };
    Some(Record::from_rdata(owner.clone(), ttl, rdata))
}

/// Records for an address as stored in the catalog: A/AAAA for an IP, a
/// CNAME for a host name (Consul answers those with a CNAME too).
fn stored_address_record(
    owner: &Name,
    address: &str,
    ttl: u32,
    qtype: RecordType,
) -> Option<Record> {
    match address.parse::<IpAddr>() {
        Ok(ip) => address_record(owner, ip, ttl, qtype),
        Err(_) => {
            let mut target = Name::from_utf8(address).ok()?;
            target.set_fqdn(true);
            Some(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::CNAME(CNAME(target)),
            ))
        }
    }
}

fn node_address(owner: &Name, node: &Node, ttl: u32) -> Option<Record> {
    let ip = node.address.parse::<IpAddr>().ok()?;
    address_record(owner, ip, ttl, RecordType::ANY)
}

/// Node metadata as TXT records, one `key=value` each (split into
/// 255-byte character-strings when longer, as RFC 1035 requires).
fn meta_txt<'a>(owner: &'a Name, node: &'a Node, ttl: u32) -> impl Iterator<Item = Record> + 'a {
    node.meta.iter().map(move |(k, v)| {
        let text = format!("{k}={v}");
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
        Record::from_rdata(owner.clone(), ttl, RData::TXT(TXT::from_bytes(chunks)))
    })
}
