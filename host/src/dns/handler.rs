//! The hickory-server request handler: parses nothing itself (hickory
//! hands over a decoded request), reads the catalog under the state lock,
//! and sends the records [`Zone::answer`] chose.

use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::answer::{Answer, Zone};
use crate::raft::{Applied, Consensus};

/// The largest UDP payload muster sends, whatever the client offers:
/// above this, fragmentation costs more than a TCP retry.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers DNS requests from the local copy of the catalog.
#[derive(Clone)]
pub struct DnsHandler {
    zone: Arc<Zone>,
    state: Arc<RwLock<Applied>>,
    /// When `allow_stale = false`, only the Raft leader answers.
    leader_only: Option<Consensus>,
}

impl DnsHandler {
    pub fn new(zone: Zone, state: Arc<RwLock<Applied>>, consensus: Option<Consensus>) -> Self {
        let leader_only = consensus.filter(|_| !zone.settings().allow_stale);
        DnsHandler {
            zone: Arc::new(zone),
            state,
            leader_only,
        }
    }

    fn answer(&self, request: &Request) -> Result<Answer, ResponseCode> {
        if request.metadata.op_code != OpCode::Query {
            return Err(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Err(ResponseCode::BADVERS);
        }
        let info = request.request_info().map_err(|_| ResponseCode::FormErr)?;
        if let Some(consensus) = &self.leader_only {
            if !consensus.is_leader() {
                return Err(ResponseCode::ServFail);
            }
        }
        let udp = request.protocol() == Protocol::Udp;
        // A poisoned lock means a writer panicked mid-apply; the catalog
        // itself is still the last consistent state, so keep answering.
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut answer = self.zone.answer(&state.catalog, info.query, udp);
        drop(state);
        if udp {
            fit_additionals(&mut answer, request);
        }
        Ok(answer)
    }
}

/// Drops additional records that would not fit the client's UDP payload
/// once the answers are in, so that TC is set only when the answer
/// section itself is cut (RFC 2181 §9), not for missing glue.
fn fit_additionals(answer: &mut Answer, request: &Request) {
    if answer.additionals.is_empty() {
        return;
    }
    let mut budget = i64::from(udp_payload(request))
        - 12 // header
        - request.queries.as_bytes().len() as i64
        - if request.edns.is_some() { 11 } else { 0 };
    for r in answer.answers.iter().chain(&answer.soa) {
        budget -= encoded_len(r) as i64;
    }
    let keep = answer
        .additionals
        .iter()
        .take_while(|r| {
            budget -= encoded_len(r) as i64;
            budget >= 0
        })
        .count();
    answer.additionals.truncate(keep);
}

/// A record's size without name compression: an upper bound, computed
/// without encoding (this runs for every UDP answer with glue).
fn encoded_len(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name_len(&srv.target),
        RData::CNAME(n) => name_len(&n.0),
        RData::NS(n) => name_len(&n.0),
        RData::TXT(txt) => txt.txt_data.iter().map(|t| t.len() + 1).sum(),
        RData::SOA(soa) => name_len(&soa.mname) + name_len(&soa.rname) + 20,
        // Nothing else is answered; count it as a whole UDP message.
        _ => 512,
    };
    name_len(&record.name) + 10 + rdata
}

/// A name's wire length: each label with its length byte, plus the root.
fn name_len(name: &Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

/// What the client can take over UDP: 512 without EDNS (RFC 1035), else
/// its advertised size within [512, MAX_UDP_PAYLOAD].
fn udp_payload(request: &Request) -> u16 {
    request
        .edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD))
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // The response's OPT advertises the size the encoder will respect.
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(udp_payload(request));
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let sent = match self.answer(request) {
            Ok(answer) => {
                metadata.response_code = answer.rcode;
                metadata.truncation = answer.trimmed && self.zone.settings().enable_truncate;
                let response = builder.build(
                    metadata,
                    answer.answers.iter(),
                    std::iter::empty(),
                    answer.soa.iter(),
                    answer.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Err(rcode) => {
                response_handle
                    .send_response(builder.error_msg(&request.metadata, rcode))
                    .await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "could not send a DNS response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
