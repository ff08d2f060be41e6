//! Builds the built-in plugins (`plugins/*`) for wasm32-wasip2 and leaves
//! them in OUT_DIR for `include_bytes!`, so a plain `cargo build` of the
//! node yields a binary that carries its built-ins.
//!
//! The nested cargo gets its own target dir (the outer build holds the lock
//! on the shared one) and none of the outer build's RUSTFLAGS, which are
//! meant for the host target.

use std::path::PathBuf;
use std::process::Command;

/// (crate name, file the component lands in).
const BUILTINS: &[(&str, &str)] = &[
    ("http-check", "http_check.wasm"),
    ("tcp-check", "tcp_check.wasm"),
    ("docker-source", "docker_source.wasm"),
    ("file-source", "file_source.wasm"),
    ("etcd-exporter", "etcd_exporter.wasm"),
    ("zookeeper-exporter", "zookeeper_exporter.wasm"),
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Relative to host/: cargo gives workspace members the same build hash
    // in every checkout sharing a target dir (CI clones use the developer's
    // /var/cache one), so an absolute path would keep watching the checkout
    // that built last and miss changes in this one.
    for watched in ["../plugins", "../wit", "../Cargo.lock"] {
        println!("cargo:rerun-if-changed={watched}");
    }

    let target_dir = out.join("plugin-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        // Under `cargo clippy` the outer build sets a rustc wrapper; the
        // plugins are linted by their own step, not from inside a build.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    for (name, _) in BUILTINS {
        cmd.args(["-p", name]);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the built-in plugins");
    if !status.success() {
        panic!("building the built-in plugins for wasm32-wasip2 failed (is the target installed? rust-toolchain.toml pins it)");
    }
    for (_, file) in BUILTINS {
        let built = target_dir.join("wasm32-wasip2/release").join(file);
        std::fs::copy(&built, out.join(file))
            .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
