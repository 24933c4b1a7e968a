//! The accepting side: takes inbound connections, checks each one's hello, then delivers the
//! messages of its frames to the inbox in order while sending keepalives back.
//!
//! Invariants:
//! * At most one connection per sender delivers at a time, the newest: a sender only dials
//!   again after giving up on its previous connection, so a new handshake from a node cancels
//!   that node's older connection, and the new one delivers only once the old one has stopped.
//!   Messages of one sender therefore reach the inbox in the order it sent them.
//! * A frame is delivered whole or not at all (a connection cut mid-frame delivers nothing of
//!   that frame), so nothing is delivered twice.
//! * Connections still in the handshake are bounded ([`HANDSHAKES_PENDING_MAX`]) and each one
//!   by `connect_timeout`; afterwards there is at most one connection per configured peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tracing::{debug, warn, Instrument};

use super::stream::{check_hello, read_frame, read_hello, write_hello, ConnError};
use super::transport::PeerTransport;
use super::wire::{self, decode_messages, FrameDecoder, Hello};
use super::{NodeId, Shared, Stop};
use crate::describe_io_error;

/// Inbound connections that may be in their handshake at once; more are closed on accept.
pub const HANDSHAKES_PENDING_MAX: usize = 64;

/// Pause after a failed `accept` (e.g. out of descriptors) before trying again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Accepts peer connections on `listener` until `stop`, then ends every inbound connection.
pub(crate) async fn run<T: PeerTransport>(
    shared: Arc<Shared>,
    transport: T,
    listener: T::Listener,
    inbox: mpsc::Sender<(NodeId, Bytes)>,
    mut stop: Stop,
) {
    let me = shared.config.me;
    let slots = Arc::new(Slots::default());
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_PENDING_MAX));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait() => break,
            accepted = transport.accept(&listener) => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(me, error = %describe_io_error(&e), "accepting a peer connection failed");
                tokio::select! {
                    _ = stop.wait() => break,
                    _ = sleep(ACCEPT_RETRY_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            warn!(me, %remote, "too many peer handshakes in progress; closing the connection");
            continue;
        };
        let span = tracing::debug_span!("peer_in", me, %remote);
        let inbound = Inbound {
            shared: shared.clone(),
            slots: slots.clone(),
            inbox: inbox.clone(),
            remote,
        };
        connections.spawn(inbound.serve(stream, permit, stop.clone()).instrument(span));
    }
    connections.shutdown().await;
    debug!(me, "peer listener stopped");
}

/// One accepted connection and what it needs.
struct Inbound {
    shared: Arc<Shared>,
    slots: Arc<Slots>,
    inbox: mpsc::Sender<(NodeId, Bytes)>,
    remote: SocketAddr,
}

impl Inbound {
    async fn serve<S>(self, stream: S, permit: OwnedSemaphorePermit, mut stop: Stop)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let me = self.shared.config.me;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = BytesMut::new();
        let from = tokio::select! {
            _ = stop.wait() => return,
            from = self.handshake(&mut reader, &mut writer, &mut buf) => from,
        };
        drop(permit);
        let from = match from {
            Ok(from) => from,
            Err(e @ ConnError::Refused(_)) | Err(e @ ConnError::Wire(_)) => {
                warn!(me, remote = %self.remote, error = %e, "refused a peer connection");
                return;
            }
            Err(e) => {
                debug!(me, remote = %self.remote, error = %e, "peer handshake failed");
                return;
            }
        };
        let (turn, mut replaced) = self.slots.claim(from);
        let _turn = tokio::select! {
            _ = stop.wait() => return,
            turn = turn.lock_owned() => turn,
        };
        if replaced.is_set() {
            return; // a newer connection from `from` arrived while this one waited
        }
        debug!(me, from, "peer connection accepted");
        let keepalive_interval = self.shared.config.keepalive_interval;
        let end = tokio::select! {
            _ = stop.wait() => ConnError::Stopped,
            _ = replaced.wait() => ConnError::Replaced,
            end = self.deliver(from, &mut reader, &mut buf) => end,
            end = send_keepalives(&mut writer, keepalive_interval) => end,
        };
        match end {
            ConnError::Wire(_) | ConnError::UnexpectedData => {
                warn!(me, from, error = %end, "peer connection closed")
            }
            _ => debug!(me, from, error = %end, "peer connection closed"),
        }
    }

    /// Reads and checks the dialer's hello and answers with ours; returns the dialer's id.
    async fn handshake<R, W>(
        &self,
        reader: &mut R,
        writer: &mut W,
        buf: &mut BytesMut,
    ) -> Result<NodeId, ConnError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let config = &self.shared.config;
        let theirs = read_hello(reader, buf, config.connect_timeout).await?;
        let cluster_id = self.shared.cluster_id();
        check_hello(&theirs, config.me, |id| self.shared.is_peer(id), &cluster_id)
            .map_err(ConnError::Refused)?;
        let ours = Hello::new(config.me, theirs.sender, &cluster_id);
        timeout(config.connect_timeout, write_hello(writer, &ours))
            .await
            .map_err(|_| ConnError::Timeout(config.connect_timeout))??;
        Ok(theirs.sender)
    }

    /// Delivers each frame's messages to the inbox, in order, until the connection fails, is
    /// silent for `idle_timeout`, or the inbox is closed.
    async fn deliver<R: AsyncRead + Unpin>(
        &self,
        from: NodeId,
        reader: &mut R,
        buf: &mut BytesMut,
    ) -> ConnError {
        let config = &self.shared.config;
        let decoder = FrameDecoder::new(config.frame_bytes_max);
        loop {
            let payload = match read_frame(reader, buf, &decoder, config.idle_timeout).await {
                Ok(payload) => payload,
                Err(e) => return e,
            };
            let messages = match decode_messages(payload) {
                Ok(messages) => messages,
                Err(e) => return e.into(),
            };
            for message in messages {
                if self.inbox.send((from, message)).await.is_err() {
                    return ConnError::Stopped;
                }
            }
        }
    }
}

/// Writes a keepalive every `interval` until a write fails.
async fn send_keepalives<W: AsyncWrite + Unpin>(writer: &mut W, interval: Duration) -> ConnError {
    loop {
        sleep(interval).await;
        if let Err(e) = writer.write_all(&wire::KEEPALIVE).await {
            return e.into();
        }
    }
}

/// Per sender: whose turn it is to deliver, and how to cancel the current holder.
#[derive(Default)]
struct Slots {
    by_sender: std::sync::Mutex<BTreeMap<NodeId, Slot>>,
}

struct Slot {
    /// Held by the delivering connection for its whole life.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Set to cancel the newest claimant when a newer one arrives.
    cancel_newest: watch::Sender<bool>,
}

impl Slots {
    /// Registers a new connection from `from`: cancels the previous one and returns the turn
    /// to wait for and this connection's own cancel signal.
    fn claim(&self, from: NodeId) -> (Arc<tokio::sync::Mutex<()>>, Replaced) {
        let (cancel, cancelled) = watch::channel(false);
        let mut by_sender = self.by_sender.lock().unwrap_or_else(|p| p.into_inner());
        let slot = by_sender.entry(from).or_insert_with(|| Slot {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            cancel_newest: watch::channel(false).0,
        });
        slot.cancel_newest.send_replace(true);
        slot.cancel_newest = cancel;
        (slot.turn.clone(), Replaced(cancelled))
    }
}

/// The cancel signal of one inbound connection.
struct Replaced(watch::Receiver<bool>);

impl Replaced {
    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        // An error means the sender is gone: the slots are dropped, so the listener stopped.
        let _ = self.0.wait_for(|set| *set).await;
    }
}
