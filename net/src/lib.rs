//! gregor-net: the tokio shell that drives one engine.
//!
//! One task (the driver, `driver.rs`) owns the engine and is the only caller of its `step`;
//! client connections (`conn.rs`), the disk executor ([`disk`]) and timers (`timer.rs`) talk
//! to it over channels. Bind with [`Shell::bind`] (a busy port fails before anything else),
//! then [`Shell::run`] until the engine stops.

pub mod alloc;
mod conn;
pub mod disk;
mod driver;
mod error;
pub mod framing;
pub mod peer;
mod sync;
mod timer;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use gregor_engine::{BrokerConfig, Engine, Input, Output, Time};
use tokio::net::TcpListener;

pub use error::{describe_io_error, ShellError};

/// Requests one connection may have in flight (read but not yet answered and written). At the
/// bound the connection stops reading from its socket, which pushes back on the client.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// Anything the shell can drive: the real [`Engine`], or a test fake.
pub trait Driven: Send + 'static {
    /// Feeds one input; appends the outputs it causes to `out`.
    fn step(&mut self, now: Time, input: Input, out: &mut Vec<Output>);
}

impl Driven for Engine {
    fn step(&mut self, now: Time, input: Input, out: &mut Vec<Output>) {
        Engine::step(self, now, input, out)
    }
}

/// How the shell runs; the broker's own settings live in [`BrokerConfig`].
#[derive(Clone, Debug)]
pub struct ShellConfig {
    /// `HOST:PORT` to listen on for Kafka clients (port 0 picks a free one).
    pub listen: String,
    /// Root of every path the engine names in its IO ops.
    pub data_dir: PathBuf,
    /// `socket.request.max.bytes`: a larger request frame closes its connection.
    pub socket_request_max_bytes: usize,
    /// `connections.max.idle.ms`: a connection with nothing read or in flight for this long
    /// is closed.
    pub connections_max_idle_ms: u64,
    /// Open client connections at most; more are accepted and closed at once.
    pub connections_max: usize,
    /// How long a graceful stop may wait for the engine's `Stopped` before giving up.
    pub shutdown_timeout_ms: u64,
    /// Threads that run ordered (non-read) IO ops, each owning a share of the ordering keys.
    /// Many, because each partition's fsync blocks its thread for milliseconds, and fsyncs
    /// issued together let the file system commit them in one journal transaction.
    pub disk_writer_threads: usize,
    /// Threads that run `Read` ops.
    pub disk_reader_threads: usize,
    /// Print the one `gregor listening on …` line to stdout once the engine is ready.
    pub announce: bool,
    /// The inter-broker transport, for a node with peers: the engine's `SendPeer` outputs
    /// go out through it and what peers send arrives as `Input::PeerMessage`.
    pub peers: Option<peer::PeerConfig>,
}

impl ShellConfig {
    /// Kafka's and our defaults for everything but the listen address and data directory.
    pub fn new(listen: impl Into<String>, data_dir: impl Into<PathBuf>) -> ShellConfig {
        ShellConfig {
            listen: listen.into(),
            data_dir: data_dir.into(),
            socket_request_max_bytes: 100 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            connections_max: 10_000,
            shutdown_timeout_ms: 30_000,
            disk_writer_threads: 16,
            disk_reader_threads: 4,
            announce: true,
            peers: None,
        }
    }

    /// Takes the settings the shell enforces on the broker's behalf from its config.
    pub fn with_broker(mut self, broker: &BrokerConfig) -> ShellConfig {
        // A negative value is refused by `BrokerConfig::set`; treat one as "no frames at all".
        self.socket_request_max_bytes = usize::try_from(broker.socket_request_max_bytes).unwrap_or(0);
        self
    }
}

/// A shell whose listeners are bound but which does not accept connections yet.
pub struct Shell {
    config: ShellConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    peer_listener: Option<TcpListener>,
}

impl Shell {
    /// Binds the client listener. Nothing else happens before this succeeds.
    pub async fn bind(config: ShellConfig) -> Result<Shell, ShellError> {
        let bind_error = |e: std::io::Error| ShellError::Bind {
            addr: config.listen.clone(),
            reason: describe_io_error(&e),
        };
        let listener = TcpListener::bind(config.listen.as_str())
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let peer_listener = match &config.peers {
            None => None,
            Some(p) => {
                let peer_error = |e: std::io::Error| ShellError::Bind {
                    addr: p.listen.to_string(),
                    reason: describe_io_error(&e),
                };
                Some(TcpListener::bind(p.listen).await.map_err(peer_error)?)
            }
        };
        Ok(Shell {
            config,
            listener,
            local_addr,
            peer_listener,
        })
    }

    /// The address the peer listener actually bound, for a node with peers.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Takes the settings the shell enforces on the broker's behalf (see
    /// [`ShellConfig::with_broker`]), for a broker config built after binding.
    pub fn with_broker(mut self, broker: &BrokerConfig) -> Shell {
        self.config = self.config.with_broker(broker);
        self
    }

    /// The address actually bound (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts the engine, accepts clients once it is ready, and returns when it has stopped:
    /// `Ok` after `Output::Stopped` (a graceful stop begins when `shutdown` completes), an
    /// error on `Output::Fatal` or when the stop takes longer than the configured bound.
    pub async fn run<E, S>(self, engine: E, shutdown: S) -> Result<(), ShellError>
    where
        E: Driven,
        S: Future<Output = ()> + Send,
    {
        let listeners = driver::Listeners {
            clients: self.listener,
            local_addr: self.local_addr,
            peers: self.peer_listener,
        };
        driver::drive(self.config, listeners, engine, shutdown).await
    }
}

/// [`Shell::bind`] then [`Shell::run`].
pub async fn run<E, S>(config: ShellConfig, engine: E, shutdown: S) -> Result<(), ShellError>
where
    E: Driven,
    S: Future<Output = ()> + Send,
{
    Shell::bind(config).await?.run(engine, shutdown).await
}
