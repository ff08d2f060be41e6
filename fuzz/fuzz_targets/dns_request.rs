//! Any bytes, as a UDP or TCP DNS request, through the request path the
//! server runs (hickory's decoder, muster's handler, the encoder) over a
//! catalog with every answer shape. It must never panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use muster::config::DnsSettings;
use muster::dns::{fixture, handler_for, respond, DnsHandler, Protocol};

static HANDLER: OnceLock<DnsHandler> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let handler = HANDLER.get_or_init(|| {
        // No UDP answer limit, so that truncation paths are reached too.
        let settings = DnsSettings {
            max_udp_answers: 0,
            ..Default::default()
        };
        handler_for(fixture::catalog(), settings).expect("fixture handler")
    });
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        futures::executor::block_on(respond(handler, data, protocol));
    }
});
