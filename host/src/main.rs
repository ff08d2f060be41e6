//! The `muster` binary: `muster agent` runs a node; every other command is
//! a client of a running agent's HTTP API.

fn main() -> std::process::ExitCode {
    muster::cli::main()
}
