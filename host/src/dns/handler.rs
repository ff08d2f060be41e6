//! The hickory-server request handler: parses nothing itself (hickory
//! hands over a decoded request), reads the catalog under the state lock,
//! and sends the records [`Zone::answer`] chose.

use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::answer::{Answer, Zone};
use crate::raft::{Applied, Consensus};

/// The largest UDP payload muster sends, whatever the client offers:
/// above this, fragmentation costs more than a TCP retry.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers DNS requests from the local copy of the catalog.
pub struct DnsHandler {
    zone: Zone,
    state: Arc<RwLock<Applied>>,
    /// When `allow_stale = false`, only the Raft leader answers.
    leader_only: Option<Consensus>,
}

impl DnsHandler {
    pub fn new(zone: Zone, state: Arc<RwLock<Applied>>, consensus: Option<Consensus>) -> Self {
        let leader_only = consensus.filter(|_| !zone.settings().allow_stale);
        DnsHandler {
            zone,
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

/// A record's size without name compression: an upper bound.
fn encoded_len(record: &Record) -> usize {
    let mut buf = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut buf);
    match record.emit(&mut encoder) {
        Ok(()) => buf.len(),
        Err(_) => usize::MAX / 4,
    }
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
