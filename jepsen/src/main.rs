#[cfg(feature = "harness-run")]
mod cli;

#[cfg(feature = "harness-run")]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(feature = "harness-run"))]
fn main() {}
