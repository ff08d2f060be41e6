//! An exporter that misbehaves on purpose. The swap tests offer it as a
//! replacement to show that a version failing `open` is rejected while
//! the running exporter carries on. `config = {mode = "..."}`:
//! "trap-open" panics in `start`, "refuse-open" returns an error from it,
//! "loop-open" never returns from it.

// The generated WASI bindings mirror WIT signatures one to one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "exporter",
    generate_all,
});

struct FaultExporter;

impl Guest for FaultExporter {
    fn start(config: String) -> Result<(), String> {
        if config.contains("trap-open") {
            panic!("fault-exporter: trapping in start as configured");
        }
        if config.contains("loop-open") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if config.contains("refuse-open") {
            return Err("fault-exporter: refusing to start as configured".into());
        }
        Ok(())
    }

    fn apply(_changes: Vec<Change>) -> Result<(), String> {
        Ok(())
    }

    fn resync(_all: Vec<ServiceInstance>) -> Result<(), String> {
        Ok(())
    }

    fn tick() -> Result<(), String> {
        Ok(())
    }
}

export!(FaultExporter);
