//! The `repo` binary: see `cli` for arguments, rendering and exit codes.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
