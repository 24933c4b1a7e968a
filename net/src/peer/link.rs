//! One outbound link: the connection that carries this node's messages to one peer, and the
//! task that keeps it up. The task dials, handshakes, then writes whatever the destination's
//! queue holds in batched frames (a keepalive when idle) while watching the return path for
//! the peer's keepalives. Any failure ends the connection; the task redials after a jittered,
//! growing delay. Queued messages wait (bounded by the queue) and go out after the redial;
//! messages of a frame whose write did not finish are lost and counted as dropped.
//!
//! The return path is what detects a dead or partitioned peer: a connection on which nothing
//! has been heard for `idle_timeout` is abandoned even if writes still succeed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::{debug, warn};

use super::backoff::Backoff;
use super::queue::OutQueue;
use super::stream::{check_hello, read_frame, read_hello, write_hello, ConnError};
use super::transport::PeerTransport;
use super::wire::{self, FrameDecoder, Hello};
use super::{LinkStats, NodeId, Shared, Stop};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// A frame buffer that grew past this many batches' worth is freed after use rather than
/// kept for the next frame.
const FRAME_BUFFER_KEEP_BATCHES: usize = 4;

/// State of one link shared between `send` callers, `stats` and the link's task.
pub(crate) struct LinkShared {
    pub(crate) to: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) queue: OutQueue,
    /// Signalled after every push; a permit is kept when the writer is not waiting, so no
    /// wake-up is lost between the writer finding the queue empty and starting to wait.
    pub(crate) wake: Notify,
    connected: AtomicBool,
    connections: AtomicU64,
    reconnects: AtomicU64,
    frames_sent: AtomicU64,
    messages_sent: AtomicU64,
}

impl LinkShared {
    pub(crate) fn new(to: NodeId, addr: SocketAddr, queue_bytes_max: usize) -> LinkShared {
        LinkShared {
            to,
            addr,
            queue: OutQueue::new(queue_bytes_max),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats {
            queued_bytes: self.queue.bytes(),
            queued_messages: self.queue.len(),
            connected: self.connected.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            dropped: self.queue.dropped(),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
        }
    }
}

/// Keeps the link to `link.to` up until `stop`; then discards what is still queued.
pub(crate) async fn run<T: PeerTransport>(
    shared: Arc<Shared>,
    link: Arc<LinkShared>,
    transport: T,
    mut stop: Stop,
) {
    let config = &shared.config;
    let (me, to) = (config.me, link.to);
    // Distinct per (node, destination) so that links do not redial in lockstep.
    let seed = config.jitter_seed ^ (u64::from(me as u32) << 32) ^ u64::from(to as u32);
    let mut backoff = Backoff::new(config.reconnect_backoff_min, config.reconnect_backoff_max, seed);
    for attempt in 0u64.. {
        if attempt > 0 {
            link.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut established = None;
        let end = tokio::select! {
            _ = stop.wait() => break,
            end = connect_and_serve(&shared, &link, &transport, &mut established) => end,
        };
        link.connected.store(false, Ordering::Relaxed);
        log_end(me, to, link.addr, established.is_some(), &end);
        // A connection that stayed up as long as the longest delay proves the peer healthy.
        if established.is_some_and(|at: Instant| at.elapsed() >= config.reconnect_backoff_max) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.wait() => break,
            _ = sleep(delay) => {}
        }
    }
    link.connected.store(false, Ordering::Relaxed);
    let discarded = link.queue.clear();
    debug!(me, to, discarded, "peer link stopped");
}

fn log_end(me: NodeId, to: NodeId, addr: SocketAddr, established: bool, end: &ConnError) {
    match end {
        ConnError::Wire(_) | ConnError::Refused(_) | ConnError::UnexpectedData => {
            warn!(me, to, %addr, error = %end, "peer connection failed")
        }
        _ if established => debug!(me, to, %addr, error = %end, "peer connection lost"),
        _ => debug!(me, to, %addr, error = %end, "peer connect failed"),
    }
}

/// Dials, handshakes and serves one connection until it fails; returns why. Sets
/// `established` to the time the handshake completed.
async fn connect_and_serve<T: PeerTransport>(
    shared: &Shared,
    link: &LinkShared,
    transport: &T,
    established: &mut Option<Instant>,
) -> ConnError {
    let config = &shared.config;
    let stream = match timeout(config.connect_timeout, transport.connect(link.addr)).await {
        Err(_) => return ConnError::Timeout(config.connect_timeout),
        Ok(Err(e)) => return e.into(),
        Ok(Ok(stream)) => stream,
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::new();
    if let Err(e) = handshake(shared, link, &mut reader, &mut writer, &mut buf).await {
        return e;
    }
    *established = Some(Instant::now());
    link.connections.fetch_add(1, Ordering::Relaxed);
    link.connected.store(true, Ordering::Relaxed);
    debug!(me = config.me, to = link.to, addr = %link.addr, "peer connected");
    tokio::select! {
        end = write_loop(shared, link, &mut writer) => end,
        end = watch_return_path(shared, &mut reader, &mut buf) => end,
    }
}

/// Sends our hello and checks the peer's answer: it must be the node we meant to reach, and
/// in a compatible cluster. A peer that refuses us closes the connection instead.
async fn handshake<R, W>(
    shared: &Shared,
    link: &LinkShared,
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = &shared.config;
    let (me, to) = (config.me, link.to);
    let cluster_id = shared.cluster_id();
    let ours = Hello::new(me, to, &cluster_id);
    timeout(config.connect_timeout, write_hello(writer, &ours))
        .await
        .map_err(|_| ConnError::Timeout(config.connect_timeout))??;
    let theirs = match read_hello(reader, buf, config.connect_timeout).await {
        Err(ConnError::Closed) => {
            return Err(ConnError::Refused(format!(
                "node {to} at {} closed the connection during the handshake (see its log)",
                link.addr
            )))
        }
        other => other?,
    };
    if theirs.sender != to {
        return Err(ConnError::Refused(format!(
            "the node at {} is node {}, not node {to}",
            link.addr, theirs.sender
        )));
    }
    check_hello(&theirs, me, |id| id == to, &cluster_id).map_err(ConnError::Refused)
}

/// Writes the queue's messages in batched frames, and a keepalive after `keepalive_interval`
/// without a write. Returns only when a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(shared: &Shared, link: &LinkShared, writer: &mut W) -> ConnError {
    let config = &shared.config;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut frame = BytesMut::new();
    let mut last_write = Instant::now();
    loop {
        let in_flight = link.queue.take_batch(config.batch_bytes_max, &mut batch);
        if in_flight.count() == 0 {
            in_flight.written();
            tokio::select! {
                _ = link.wake.notified() => continue,
                _ = sleep_until(last_write + config.keepalive_interval) => {}
            }
            if let Err(e) = writer.write_all(&wire::KEEPALIVE).await {
                return e.into();
            }
            last_write = Instant::now();
            continue;
        }
        // Batches are capped below the frame limit, and a lone message was checked by `send`.
        assert!(in_flight.bytes() <= config.frame_bytes_max);
        frame.clear();
        wire::encode_data_frame(&batch, &mut frame);
        batch.clear(); // the frame holds the bytes now
                       // Dropped unwritten (error or cancellation), the batch counts as lost.
        if let Err(e) = writer.write_all(&frame).await {
            return e.into();
        }
        link.frames_sent.fetch_add(1, Ordering::Relaxed);
        link.messages_sent
            .fetch_add(in_flight.count() as u64, Ordering::Relaxed);
        in_flight.written();
        last_write = Instant::now();
        if frame.capacity() > FRAME_BUFFER_KEEP_BATCHES * config.batch_bytes_max {
            frame = BytesMut::new();
        }
    }
}

/// Reads the peer's keepalives. The peer sends nothing else on this path, so any data is a
/// protocol error; silence for `idle_timeout` means the peer or the path is gone.
async fn watch_return_path<R: AsyncRead + Unpin>(
    shared: &Shared,
    reader: &mut R,
    buf: &mut BytesMut,
) -> ConnError {
    let keepalives_only = FrameDecoder::new(0);
    loop {
        match read_frame(reader, buf, &keepalives_only, shared.config.idle_timeout).await {
            Ok(payload) if payload.is_empty() => {}
            Ok(_) => return ConnError::UnexpectedData,
            Err(e) => return e,
        }
    }
}
