//! A health check that misbehaves on purpose. The tests load it with
//! `config = {mode = "..."}` to show that a bad plugin ends as a critical
//! check with a clear output while the node carries on; the call-overhead
//! bench uses `mode = "pass"`, the cheapest possible check.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "health-check",
    generate_all,
});

use muster::plugin::log::{log, Level};
use muster::plugin::types::CheckStatus;

struct FaultCheck;

/// Reads `"key": "value"` out of the config without a JSON library, so
/// the component stays as small as a trivial check can be.
fn setting<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    let at = config.find(&format!("\"{key}\""))?;
    let rest = &config[at + key.len() + 2..];
    let rest = rest[rest.find('"')? + 1..].trim_start();
    Some(&rest[..rest.find('"')?])
}

impl Guest for FaultCheck {
    fn check(target: Target, config: String) -> CheckResult {
        match setting(&config, "mode").unwrap_or("pass") {
            "pass" => CheckResult {
                status: CheckStatus::Passing,
                output: "ok".into(),
            },
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => {
                // An out-of-bounds index: a panic, which is a wasm trap.
                let v: Vec<u8> = std::hint::black_box(Vec::new());
                CheckResult {
                    status: CheckStatus::Passing,
                    output: format!("{}", v[target.port as usize + 1]),
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "huge-output" => CheckResult {
                status: CheckStatus::Passing,
                output: "x".repeat(10 << 20),
            },
            "log" => {
                log(Level::Info, &format!("checking {}", target.service_id));
                CheckResult {
                    status: CheckStatus::Warning,
                    output: "logged".into(),
                }
            }
            "connect" => {
                let addr = setting(&config, "addr").unwrap_or("127.0.0.1:1");
                match std::net::TcpStream::connect(addr) {
                    Ok(_) => CheckResult {
                        status: CheckStatus::Passing,
                        output: format!("connected to {addr}"),
                    },
                    Err(e) => CheckResult {
                        status: CheckStatus::Critical,
                        output: format!("connect {addr}: {e}"),
                    },
                }
            }
            other => CheckResult {
                status: CheckStatus::Critical,
                output: format!("unknown mode {other}"),
            },
        }
    }
}

export!(FaultCheck);
