//! The driver: the one task that owns the engine and calls its `step`. Inputs arrive on one
//! bounded channel and are stepped a batch at a time; the outputs of a batch are carried out
//! after the whole batch (so the engine can group-commit). It also owns the client listener
//! (accepting only between `Ready` and the shutdown request), the timer and the shutdown
//! deadline.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gregor_engine::{ConnId, Input, IoResult, Output, Time, Token};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::conn::{self, ConnParams, ToConn};
use crate::disk::{Completion, DiskConfig, DiskExecutor};
use crate::framing::FrameDecoder;
use crate::peer::{PeerNet, TokioTcp};
use crate::timer::Timer;
use crate::{Driven, ShellConfig, ShellError};

/// Events queued for the driver at most; senders wait beyond it (connections stop reading,
/// disk threads block), the driver itself never waits on anyone.
pub(crate) const EVENT_QUEUE_MAX: usize = 8192;
/// Events stepped before their outputs are carried out.
const EVENT_BATCH_MAX: usize = 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY_MS: u64 = 100;

/// What reaches the driver.
#[derive(Debug)]
pub(crate) enum Event {
    /// An engine input, from a connection or the disk executor.
    Input(Input),
    /// Disk completions, in the order their ops ran (one writer's back-to-back run).
    IoDone(Vec<(Token, IoResult)>),
    /// A connection is up; its answers go to `tx`. Precedes its first request.
    Opened {
        conn: ConnId,
        tx: mpsc::UnboundedSender<ToConn>,
    },
}

/// Where the broker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Recovering,
    Serving,
    Stopping,
}

struct Driver<E> {
    engine: E,
    config: ShellConfig,
    base: Instant,
    now: Time,
    out: Vec<Output>,
    conns: HashMap<ConnId, mpsc::UnboundedSender<ToConn>>,
    disk: DiskExecutor,
    timer: Timer,
    phase: Phase,
    shutdown_requested: bool,
    stop_deadline: Option<Instant>,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    events_tx: mpsc::Sender<Event>,
    peers: Option<PeerNet>,
    inbox_pump: Option<JoinHandle<()>>,
}

/// The shell's bound listeners.
pub(crate) struct Listeners {
    pub clients: TcpListener,
    pub local_addr: SocketAddr,
    pub peers: Option<TcpListener>,
}

/// Peer messages waiting for the driver, at most (the transport stops reading from peers
/// while the driver is behind, which pushes back on their queues).
const PEER_INBOX_MAX: usize = 1024;

pub(crate) async fn drive<E: Driven>(
    config: ShellConfig,
    listeners: Listeners,
    engine: E,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ShellError> {
    let Listeners {
        clients: listener,
        local_addr,
        peers: peer_listener,
    } = listeners;
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE_MAX);
    let disk = start_disk(&config, events_tx.clone())?;
    let (peers, inbox_pump) = match (config.peers.clone(), peer_listener) {
        (Some(peer_config), Some(peer_listener)) => {
            let (inbox_tx, mut inbox_rx) = mpsc::channel::<(i32, Bytes)>(PEER_INBOX_MAX);
            let net = PeerNet::start_on(peer_config, TokioTcp, peer_listener, inbox_tx)
                .map_err(|e| ShellError::Peers(e.to_string()))?;
            let tx = events_tx.clone();
            let pump = tokio::spawn(async move {
                while let Some((from, msg)) = inbox_rx.recv().await {
                    if tx
                        .send(Event::Input(Input::PeerMessage { from, msg }))
                        .await
                        .is_err()
                    {
                        return; // the driver is gone
                    }
                }
            });
            info!(peer_listen = %net.local_addr(), "peer transport up");
            (Some(net), Some(pump))
        }
        _ => (None, None),
    };
    let base = Instant::now();
    let mut driver = Driver {
        engine,
        config,
        base,
        now: Time::default(),
        out: Vec::new(),
        conns: HashMap::new(),
        disk,
        timer: Timer::default(),
        phase: Phase::Recovering,
        shutdown_requested: false,
        stop_deadline: None,
        listener: Some(listener),
        local_addr,
        acceptor: None,
        events_tx,
        peers,
        inbox_pump,
    };
    let result = driver.run(&mut events, shutdown).await;
    if let Some(acceptor) = driver.acceptor.take() {
        acceptor.abort();
    }
    if let Some(pump) = driver.inbox_pump.take() {
        pump.abort();
    }
    if let Some(peers) = driver.peers.take() {
        peers.shutdown().await;
    }
    result
}

fn start_disk(config: &ShellConfig, events_tx: mpsc::Sender<Event>) -> Result<DiskExecutor, ShellError> {
    let done: Completion = Arc::new(move |done: Vec<(Token, IoResult)>| {
        // Fails only once the driver is gone, when no one waits for the answer any more.
        let _ = events_tx.blocking_send(Event::IoDone(done));
    });
    let disk_config = DiskConfig {
        root: config.data_dir.clone(),
        writer_threads: config.disk_writer_threads,
        reader_threads: config.disk_reader_threads,
    };
    DiskExecutor::start(disk_config, done).map_err(|e| ShellError::Disk(crate::describe_io_error(&e)))
}

impl<E: Driven> Driver<E> {
    async fn run(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ShellError> {
        let mut shutdown = pin!(shutdown);
        let mut batch: Vec<Event> = Vec::with_capacity(EVENT_BATCH_MAX);
        self.clock();
        self.step(Input::Start);
        loop {
            if let Some(result) = self.carry_out() {
                return result;
            }
            let tick_at = self.base + Duration::from_millis(self.timer.deadline_ms());
            let far = self.base + Duration::from_secs(u32::MAX.into());
            tokio::select! {
                // The driver holds a sender itself, so the channel never closes.
                _ = events.recv_many(&mut batch, EVENT_BATCH_MAX) => {}
                () = &mut shutdown, if !self.shutdown_requested => self.request_shutdown(),
                () = tokio::time::sleep_until(tick_at) => {}
                () = tokio::time::sleep_until(self.stop_deadline.unwrap_or(far)),
                    if self.stop_deadline.is_some() => {
                    error!(
                        "engine did not stop within {} ms of the shutdown request; exiting without a clean stop",
                        self.config.shutdown_timeout_ms
                    );
                    return Err(ShellError::ShutdownTimeout(self.config.shutdown_timeout_ms));
                }
            }
            self.clock();
            for event in batch.drain(..) {
                self.handle(event);
            }
            if self.timer.take_due(self.now.mono_ms) {
                self.step(Input::Tick);
            }
        }
    }

    /// Reads the clocks once per batch: every input of a batch happens at the same `now`.
    fn clock(&mut self) {
        let mono_ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wall_ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        debug_assert!(mono_ms >= self.now.mono_ms);
        self.now = Time { mono_ms, wall_ms };
    }

    fn step(&mut self, input: Input) {
        self.engine.step(self.now, input, &mut self.out);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Opened { conn, tx } => {
                let previous = self.conns.insert(conn, tx);
                debug_assert!(previous.is_none(), "connection ids are never reused");
            }
            Event::IoDone(done) => {
                for (token, result) in done {
                    self.step(Input::IoDone { token, result });
                }
            }
            Event::Input(input) => {
                if let Input::ConnectionClosed { conn } = &input {
                    self.conns.remove(conn);
                }
                self.step(input);
            }
        }
    }

    /// Carries out every pending output (and those that carrying them out causes). Returns
    /// the end of the run once the engine has stopped or failed.
    fn carry_out(&mut self) -> Option<Result<(), ShellError>> {
        while !self.out.is_empty() {
            let mut outputs = std::mem::take(&mut self.out);
            for output in outputs.drain(..) {
                if let Some(end) = self.carry_out_one(output) {
                    return Some(end);
                }
            }
            if self.out.is_empty() {
                self.out = outputs; // keep the allocation for the next batch
            }
        }
        None
    }

    fn carry_out_one(&mut self, output: Output) -> Option<Result<(), ShellError>> {
        match output {
            Output::ClientResponse { conn, seq, frame } => {
                self.tell_conn(conn, ToConn::Response { seq, frame })
            }
            Output::CloseConnection { conn } => self.tell_conn(conn, ToConn::Close),
            Output::Io { token, op } => {
                if let Err(e) = self.disk.submit(token, op) {
                    let result = IoResult::Err(e);
                    self.step(Input::IoDone { token, result });
                }
            }
            Output::SetTimer { at_mono_ms } => self.timer.set(at_mono_ms),
            Output::Ready => self.on_ready(),
            Output::ClusterId { id } => {
                if let Some(peers) = &self.peers {
                    if let Err(e) = peers.set_cluster_id(&id) {
                        warn!(error = %e, "cluster id not usable in peer handshakes");
                    }
                }
            }
            Output::Stopped => {
                info!("engine stopped cleanly");
                return Some(Ok(()));
            }
            Output::Fatal { reason } => {
                error!("engine stopped on a fatal error: {reason}");
                return Some(Err(ShellError::Fatal(reason)));
            }
            Output::SendPeer { to, msg } => match &self.peers {
                // Raft tolerates a lost message: a full queue or a peer we do not know is
                // logged and the message dropped.
                Some(peers) => {
                    if let Err(e) = peers.send(to, msg) {
                        debug!(to, error = %e, "peer message dropped");
                    }
                }
                None => warn!(to, "this node has no peers configured: message dropped"),
            },
        }
        None
    }

    fn tell_conn(&self, conn: ConnId, msg: ToConn) {
        match self.conns.get(&conn) {
            // A send fails only when the connection just ended; its ConnectionClosed is queued.
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => debug!(conn, "dropping an answer for a closed connection"),
        }
    }

    fn on_ready(&mut self) {
        if self.phase != Phase::Recovering {
            warn!("engine reported Ready twice; ignored");
            return;
        }
        info!(elapsed_ms = self.now.mono_ms, "engine recovered");
        self.phase = Phase::Serving;
        if self.shutdown_requested {
            self.begin_stop();
            return;
        }
        if let Some(listener) = self.listener.take() {
            self.acceptor = Some(tokio::spawn(accept_loop(
                listener,
                self.conn_params(),
                conn::connection_slots(self.config.connections_max),
                self.events_tx.clone(),
            )));
        }
        if self.config.announce {
            announce(self.local_addr, &self.config);
        }
    }

    fn conn_params(&self) -> ConnParams {
        ConnParams {
            decoder: FrameDecoder::new(self.config.socket_request_max_bytes),
            idle: Duration::from_millis(self.config.connections_max_idle_ms),
        }
    }

    /// The shutdown signal: stop accepting now, and stop the engine.
    fn request_shutdown(&mut self) {
        info!(
            "shutdown requested; waiting up to {} ms for the engine to stop",
            self.config.shutdown_timeout_ms
        );
        self.shutdown_requested = true;
        self.stop_deadline = Some(Instant::now() + Duration::from_millis(self.config.shutdown_timeout_ms));
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.abort();
        }
        self.listener = None;
        // A recovering engine (e.g. a cluster node still waiting for its quorum) has
        // acknowledged nothing to clients: it stops at once.
        if matches!(self.phase, Phase::Serving | Phase::Recovering) {
            self.begin_stop();
        }
    }

    fn begin_stop(&mut self) {
        debug_assert!(matches!(self.phase, Phase::Serving | Phase::Recovering));
        self.phase = Phase::Stopping;
        self.step(Input::Shutdown);
    }
}

/// The one line on stdout that says the broker is up (tests and scripts wait for it).
fn announce(addr: SocketAddr, config: &ShellConfig) {
    let mut stdout = std::io::stdout().lock();
    let line = format!(
        "gregor listening on {addr} (data in {})",
        config.data_dir.display()
    );
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        warn!("cannot write the listening line to stdout: {e}");
    }
    info!("{line}");
}

async fn accept_loop(
    listener: TcpListener,
    params: ConnParams,
    slots: Arc<Semaphore>,
    events_tx: mpsc::Sender<Event>,
) {
    let mut next_conn: ConnId = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "connection refused: too many open connections");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let conn = next_conn;
        next_conn += 1;
        debug!(conn, %peer, "connection accepted");
        let span = tracing::debug_span!("conn", id = conn, %peer);
        tokio::spawn(conn::serve(conn, stream, params, events_tx.clone(), slot).instrument(span));
    }
}
