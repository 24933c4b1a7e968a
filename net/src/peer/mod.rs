//! The inter-broker transport: moves the engine's opaque peer messages (`SendPeer{to, msg}`
//! out, `PeerMessage{from, msg}` in) between nodes, over one outbound connection per
//! destination, with handshakes, batching, checksums, keepalives and reconnects.
//!
//! Guarantees, per (sender, receiver) pair: messages arrive in the order `send` accepted
//! them, each at most once, intact (crc32c per frame). Not guaranteed: delivery. A message is
//! lost when its destination's queue is full (`send` says so), or when the connection fails
//! while or after its frame is written (counted in [`LinkStats::dropped`] when the write did not
//! finish, unseen otherwise). Raft retries from its own state, so it tolerates both.
//!
//! Memory per destination is bounded by `queue_bytes_max` whatever the peer does; a slow or
//! dead peer never blocks `send` or other destinations. Generic over [`PeerTransport`], so the
//! same code runs on tokio TCP and on turmoil's simulated network. Wire format: [`wire`].

mod backoff;
mod link;
mod listener;
pub mod queue;
mod stream;
pub mod transport;
pub mod wire;

#[cfg(all(test, not(feature = "loom")))]
mod tcp_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, Instrument};

use crate::describe_io_error;
use link::LinkShared;
pub use listener::HANDSHAKES_PENDING_MAX;
pub use queue::QueueFull;
pub use transport::{PeerTransport, TokioTcp};

/// A broker's node id (Kafka's `node.id`).
pub type NodeId = i32;

/// Where received messages go: `(sender, message)`, in order per sender. Bounded: when it is
/// full, reading from the sender's connection pauses, which pushes back to the sender's queue.
pub type Inbox = mpsc::Sender<(NodeId, Bytes)>;

/// How the peer transport runs. [`PeerConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This node's id.
    pub me: NodeId,
    /// The cluster this node belongs to; empty while unknown (see [`PeerNet::set_cluster_id`]).
    pub cluster_id: String,
    /// Where to listen for other nodes' connections (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Every other node and where it listens. An entry for `me` is allowed and ignored, so
    /// the same `--peers` list can be given to every node.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Bytes of messages (encoded, 4-byte header included) held per destination, queued or
    /// being written. A message that would go past it is refused with `QueueFull`.
    pub queue_bytes_max: usize,
    /// Largest frame payload sent or accepted; a larger one closes its connection. Also bounds
    /// one message (plus its 4-byte header).
    pub frame_bytes_max: usize,
    /// Messages waiting for one destination go out together in frames of about this size (a
    /// larger message goes alone). At most `frame_bytes_max`.
    pub batch_bytes_max: usize,
    /// First reconnect delay; it doubles after each failure, up to the max, with jitter.
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// Bound on dialing plus the handshake, and on an inbound handshake.
    pub connect_timeout: Duration,
    /// A connection that wrote nothing for this long sends a keepalive frame.
    pub keepalive_interval: Duration,
    /// A connection on which nothing (not even a keepalive) arrived for this long is closed.
    pub idle_timeout: Duration,
    /// Seeds the reconnect jitter (mixed with both node ids), so simulations replay exactly.
    pub jitter_seed: u64,
}

impl PeerConfig {
    /// The defaults for everything but who and where.
    pub fn new(me: NodeId, listen: SocketAddr, peers: BTreeMap<NodeId, SocketAddr>) -> PeerConfig {
        PeerConfig {
            me,
            cluster_id: String::new(),
            listen,
            peers,
            queue_bytes_max: 64 * 1024 * 1024,
            frame_bytes_max: 64 * 1024 * 1024,
            batch_bytes_max: 1024 * 1024,
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(3),
            jitter_seed: 0,
        }
    }

    /// Checks the settings against each other; the error names the first bad one.
    pub fn validate(&self) -> Result<(), PeerError> {
        let bad = |reason: String| Err(PeerError::Config(reason));
        if self.frame_bytes_max < wire::HELLO_BYTES_MAX || u32::try_from(self.frame_bytes_max).is_err() {
            return bad(format!(
                "frame_bytes_max ({}) must be between {} and {}",
                self.frame_bytes_max,
                wire::HELLO_BYTES_MAX,
                u32::MAX
            ));
        }
        if self.batch_bytes_max == 0 || self.batch_bytes_max > self.frame_bytes_max {
            return bad(format!(
                "batch_bytes_max ({}) must be between 1 and frame_bytes_max ({})",
                self.batch_bytes_max, self.frame_bytes_max
            ));
        }
        if self.queue_bytes_max == 0 {
            return bad("queue_bytes_max must be positive".into());
        }
        if self.reconnect_backoff_min.is_zero() || self.reconnect_backoff_min > self.reconnect_backoff_max {
            return bad("reconnect backoff must satisfy 0 < min <= max".into());
        }
        if self.connect_timeout.is_zero() || self.keepalive_interval.is_zero() {
            return bad("connect_timeout and keepalive_interval must be positive".into());
        }
        if self.idle_timeout <= self.keepalive_interval {
            return bad(format!(
                "idle_timeout ({:?}) must exceed keepalive_interval ({:?})",
                self.idle_timeout, self.keepalive_interval
            ));
        }
        check_cluster_id(&self.cluster_id)
    }
}

fn check_cluster_id(cluster_id: &str) -> Result<(), PeerError> {
    if cluster_id.len() > wire::CLUSTER_ID_BYTES_MAX {
        return Err(PeerError::Config(format!(
            "cluster id of {} bytes is longer than {}",
            cluster_id.len(),
            wire::CLUSTER_ID_BYTES_MAX
        )));
    }
    Ok(())
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot listen for peers on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("invalid peer configuration: {0}")]
    Config(String),
}

/// Why `send` refused a message. The message is dropped; nothing will be retried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("node {0} is not a configured peer")]
    UnknownPeer(NodeId),
    #[error("a node does not send peer messages to itself")]
    ToSelf,
    #[error("queue to node {to} is full ({queued_bytes} of {queue_bytes_max} bytes held)")]
    QueueFull {
        to: NodeId,
        queued_bytes: usize,
        queue_bytes_max: usize,
    },
    #[error("message of {bytes} bytes exceeds the frame limit of {frame_bytes_max}")]
    TooLarge { bytes: usize, frame_bytes_max: usize },
    #[error("the peer transport is shut down")]
    Stopped,
}

/// A snapshot of one outbound link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes held for this destination, queued or being written (<= `queue_bytes_max`).
    pub queued_bytes: usize,
    /// Messages waiting for the writer.
    pub queued_messages: usize,
    /// Whether a connection is up (handshake completed).
    pub connected: bool,
    /// Connections established (handshakes completed) since start.
    pub connections: u64,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    /// Messages refused with `QueueFull`, or lost because their frame's write did not finish.
    pub dropped: u64,
    /// Data frames written.
    pub frames_sent: u64,
    /// Messages written, in those frames.
    pub messages_sent: u64,
}

/// What every task of one transport shares.
pub(crate) struct Shared {
    pub(crate) config: PeerConfig,
    cluster_id: std::sync::Mutex<String>,
}

impl Shared {
    pub(crate) fn cluster_id(&self) -> String {
        self.cluster_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `id` may connect to this node.
    pub(crate) fn is_peer(&self, id: NodeId) -> bool {
        id != self.config.me && self.config.peers.contains_key(&id)
    }
}

/// Tells the tasks to stop: set by [`PeerNet::shutdown`], or when the last handle drops.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Returns once stop is requested.
    pub(crate) async fn wait(&mut self) {
        // An error means every handle is gone, which is a stop too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A running peer transport. Cheap to clone; the tasks stop when [`PeerNet::shutdown`] is
/// called or the last clone is dropped.
#[derive(Clone)]
pub struct PeerNet {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    links: BTreeMap<NodeId, Arc<LinkShared>>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for PeerNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerNet")
            .field("me", &self.inner.shared.config.me)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl PeerNet {
    /// Checks `config`, binds `config.listen`, and starts the listener and one link per
    /// peer. Must run inside a tokio runtime (or a turmoil host).
    pub async fn start<T: PeerTransport>(
        config: PeerConfig,
        transport: T,
        inbox: Inbox,
    ) -> Result<PeerNet, PeerError> {
        config.validate()?;
        let addr = config.listen;
        let listener = transport.bind(addr).await.map_err(|e| PeerError::Bind {
            addr,
            reason: describe_io_error(&e),
        })?;
        PeerNet::start_on(config, transport, listener, inbox)
    }

    /// [`PeerNet::start`] on a listener the caller bound (`config.listen` is then unused), so
    /// that addresses are known before any node starts. Must run inside a tokio runtime.
    pub fn start_on<T: PeerTransport>(
        config: PeerConfig,
        transport: T,
        listener: T::Listener,
        inbox: Inbox,
    ) -> Result<PeerNet, PeerError> {
        config.validate()?;
        let local_addr = transport.local_addr(&listener).map_err(|e| PeerError::Bind {
            addr: config.listen,
            reason: describe_io_error(&e),
        })?;
        let me = config.me;
        let links: BTreeMap<NodeId, Arc<LinkShared>> = config
            .peers
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| (*id, Arc::new(LinkShared::new(*id, *addr, config.queue_bytes_max))))
            .collect();
        let shared = Arc::new(Shared {
            cluster_id: std::sync::Mutex::new(config.cluster_id.clone()),
            config,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::with_capacity(links.len() + 1);
        let span = tracing::debug_span!("peer_listener", me, %local_addr);
        let accept = listener::run(
            shared.clone(),
            transport.clone(),
            listener,
            inbox,
            Stop(stop_rx.clone()),
        );
        tasks.push(tokio::spawn(accept.instrument(span)));
        for link in links.values() {
            let span = tracing::debug_span!("peer_link", me, to = link.to);
            let run = link::run(
                shared.clone(),
                link.clone(),
                transport.clone(),
                Stop(stop_rx.clone()),
            );
            tasks.push(tokio::spawn(run.instrument(span)));
        }
        debug!(me, %local_addr, peers = links.len(), "peer transport started");
        Ok(PeerNet {
            inner: Arc::new(Inner {
                shared,
                links,
                local_addr,
                stop: stop_tx,
                tasks: std::sync::Mutex::new(tasks),
            }),
        })
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.inner.shared.config.me
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Queues `msg` for `to` and returns at once; it goes out with the next frame to `to`.
    /// Never blocks, whatever state the link to `to` is in.
    pub fn send(&self, to: NodeId, msg: Bytes) -> Result<(), SendError> {
        let config = &self.inner.shared.config;
        if to == config.me {
            return Err(SendError::ToSelf);
        }
        let link = self.inner.links.get(&to).ok_or(SendError::UnknownPeer(to))?;
        let bytes = wire::message_cost_bytes(&msg);
        if bytes > config.frame_bytes_max {
            return Err(SendError::TooLarge {
                bytes,
                frame_bytes_max: config.frame_bytes_max,
            });
        }
        if *self.inner.stop.borrow() {
            return Err(SendError::Stopped);
        }
        link.queue.push(msg).map_err(|full| SendError::QueueFull {
            to,
            queued_bytes: full.queued_bytes,
            queue_bytes_max: full.bytes_max,
        })?;
        link.wake.notify_one();
        Ok(())
    }

    /// The state of the link to `to`, or `None` if `to` is not a peer.
    pub fn stats(&self, to: NodeId) -> Option<LinkStats> {
        self.inner.links.get(&to).map(|link| link.stats())
    }

    /// The cluster id sent in, and checked against, handshakes.
    pub fn cluster_id(&self) -> String {
        self.inner.shared.cluster_id()
    }

    /// Sets the cluster id once this node learns it. New handshakes use it; established
    /// connections stay (they were accepted as compatible).
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), PeerError> {
        check_cluster_id(cluster_id)?;
        let mut ours = self
            .inner
            .shared
            .cluster_id
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *ours = cluster_id.to_string();
        Ok(())
    }

    /// Stops every task and waits for them; queued messages are discarded. Later sends fail
    /// with [`SendError::Stopped`].
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            // A task that panicked has nothing left to clean up; the panic was reported.
            let _ = task.await;
        }
    }
}
