//! The `gregor-jepsen` binary; see `cli.rs`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
