//! `gregor`: the broker binary. Owns the process's edges: command line and config file,
//! logging, the data-directory lock, signals and the exit code. Everything else is the
//! engine, driven by the gregor-net shell. Errors are one `gregor: …` line on stderr.

mod cli;
mod config;
mod datadir;
mod planted;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use gregor_engine::Engine;
use gregor_net::{Shell, ShellConfig, ShellError};
use rand::RngCore as _;
use tracing::{info, warn};

/// Keeps a hostile frame's huge array counts from aborting the broker (see `gregor_net::alloc`).
#[global_allocator]
static ALLOC: gregor_net::alloc::GuardedAlloc = gregor_net::alloc::GuardedAlloc;
use tracing_subscriber::EnvFilter;

use crate::cli::Args;
use crate::datadir::DataDir;

/// Why the broker could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Flag(String),
    #[error("config file {file}: {reason}")]
    Config { file: String, reason: String },
    #[error("cannot use data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("data directory {0} is locked by another gregor process")]
    Locked(String),
    #[error("cannot start: {0}")]
    Runtime(String),
    #[error("engine stopped on a fatal error: {reason} (data directory {dir})")]
    Fatal { dir: String, reason: String },
    #[error(transparent)]
    Shell(#[from] ShellError),
}

fn main() -> ExitCode {
    gregor_net::alloc::tune_system_allocator();
    let args = Args::parse();
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gregor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(args: Args) -> Result<(), NodeError> {
    // Flags and the config file fail first, before any port or directory is touched.
    let settings = config::load(&args)?;
    raise_fd_limit();
    // One runtime thread (the default) runs connections and the driver together: a
    // request, the step it causes and its answer need no thread hand-offs. More threads
    // spread connection work, at the cost of waking the driver across threads.
    let threads = settings.network_threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("gregor-rt")
        .build()
        .map_err(|e| NodeError::Runtime(gregor_net::describe_io_error(&e)))?;
    runtime.block_on(serve(args, settings))
}

async fn serve(args: Args, settings: config::Settings) -> Result<(), NodeError> {
    // A busy port is the first thing to fail on; the data dir comes next.
    let mut shell_config = ShellConfig::new(args.listen.clone(), args.data_dir.clone());
    shell_config.peers = settings.peers().cloned();
    let shell = Shell::bind(shell_config).await?;
    let listen_addr = shell.local_addr().to_string();
    let peer_addr = shell.peer_addr();
    let broker = settings.finish(&listen_addr, rand::rngs::OsRng.next_u64())?;
    let data_dir = DataDir::open(&args.data_dir)?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = broker.node_id,
        listen = %listen_addr,
        advertised = %format!("{}:{}", broker.advertised_host, broker.advertised_port),
        data_dir = %data_dir.path.display(),
        "gregor starting"
    );
    if let Some(peer_addr) = peer_addr {
        info!(
            peer_listen = %peer_addr,
            voters = %broker.get("controller.quorum.voters").unwrap_or_default(),
            "listening for peers"
        );
    }
    let shell = shell.with_broker(&broker);
    let shutdown = shutdown_signal()?;
    let result = shell.run(Engine::new(broker), shutdown).await;
    let dir = data_dir.path.display().to_string();
    drop(data_dir);
    match result {
        Ok(()) => Ok(()),
        // Most fatal errors are about the data directory's contents: name it.
        Err(ShellError::Fatal(reason)) => Err(NodeError::Fatal { dir, reason }),
        Err(e) => Err(e.into()),
    }
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let cannot = |e: std::io::Error| NodeError::Runtime(format!("signal handler: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
    let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{name} received; stopping");
    })
}

/// A broker holds a descriptor per segment file and per connection: lift the soft limit
/// on open files to the hard limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            warn!("cannot raise the open-file limit above {}", limit.rlim_cur);
        }
    }
}
