//! One client connection: cuts request frames into `ClientRequest`s (`seq` from 0), writes
//! responses strictly in `seq` order whatever order the engine answers in, bounds requests
//! in flight (at the bound it stops reading the socket), and closes when idle. However it
//! ends, it reports `ConnectionClosed` to the driver exactly once.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gregor_engine::{ConnId, Input};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn};

use crate::driver::Event;
use crate::framing::{response_prefix, FrameDecoder, FrameError};
use crate::IN_FLIGHT_PER_CONNECTION_MAX as IN_FLIGHT_MAX;

/// Read buffer growth step; a frame larger than this gets room for exactly itself.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the driver tells a connection.
#[derive(Debug)]
pub(crate) enum ToConn {
    Response { seq: u64, frame: Option<Vec<Bytes>> },
    Close,
}

/// Settings every connection shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnParams {
    pub(crate) decoder: FrameDecoder,
    pub(crate) idle: Duration,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    Frame(FrameError),
    Io(io::Error),
    EngineClosed,
    DriverGone,
    BadResponse(String),
}

/// Serves one accepted connection until it ends. `_slot` is this connection's share of the
/// shell's connection bound, released when this returns.
pub(crate) async fn serve(
    conn: ConnId,
    stream: TcpStream,
    params: ConnParams,
    to_driver: mpsc::Sender<Event>,
    _slot: OwnedSemaphorePermit,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Sent before any request on the same channel, so the driver knows where answers go.
    if to_driver.send(Event::Opened { conn, tx }).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let in_flight = Semaphore::new(IN_FLIGHT_MAX);
    let end = tokio::select! {
        end = read_loop(conn, &mut rd, params, &in_flight, &to_driver) => end,
        end = write_loop(&mut wr, &mut rx, &in_flight) => end,
    };
    match &end {
        End::Frame(e) => warn!("closing connection: {e}"),
        End::BadResponse(e) => error!("closing connection: engine answered wrongly: {e}"),
        End::Io(e) => debug!("connection failed: {e}"),
        other => debug!("connection closed: {other:?}"),
    }
    let _ = to_driver
        .send(Event::Input(Input::ConnectionClosed { conn }))
        .await;
}

/// Reads frames and hands them to the driver, one in-flight permit each.
async fn read_loop(
    conn: ConnId,
    rd: &mut OwnedReadHalf,
    params: ConnParams,
    in_flight: &Semaphore,
    to_driver: &mpsc::Sender<Event>,
) -> End {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut seq: u64 = 0;
    loop {
        loop {
            let frame = match params.decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return End::Frame(e),
            };
            if let Some(end) = wait_below_bound(rd, in_flight).await {
                return end;
            }
            match in_flight.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return End::DriverGone,
            }
            let request = Input::ClientRequest { conn, seq, frame };
            if to_driver.send(Event::Input(request)).await.is_err() {
                return End::DriverGone;
            }
            seq += 1;
        }
        if let Some(end) = wait_below_bound(rd, in_flight).await {
            return end;
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        match tokio::time::timeout(params.idle, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return End::PeerClosed,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return End::Io(e),
            Err(_) if in_flight.available_permits() == IN_FLIGHT_MAX => return End::Idle,
            Err(_) => {}
        }
    }
}

/// Backpressure: at the in-flight bound, reads nothing more until an answer is written. It
/// still notices a peer that closed (a 1-byte peek sees end of stream), unless unread request
/// bytes stand before the close; then the close is seen once the engine answers.
async fn wait_below_bound(rd: &mut OwnedReadHalf, in_flight: &Semaphore) -> Option<End> {
    if in_flight.available_permits() > 0 {
        return None;
    }
    let mut probe = [0u8; 1];
    let peeked = tokio::select! {
        permit = in_flight.acquire() => return permit.is_err().then_some(End::DriverGone),
        peeked = rd.peek(&mut probe) => peeked,
    };
    match peeked {
        Ok(0) => Some(End::PeerClosed),
        Ok(_) => in_flight.acquire().await.is_err().then_some(End::DriverGone),
        Err(e) => Some(End::Io(e)),
    }
}

/// Puts answers in `seq` order and writes every contiguous run of them in one vectored write.
async fn write_loop(
    wr: &mut OwnedWriteHalf,
    rx: &mut mpsc::UnboundedReceiver<ToConn>,
    in_flight: &Semaphore,
) -> End {
    let mut order = Reorder::default();
    let mut ready: Vec<Vec<Bytes>> = Vec::with_capacity(IN_FLIGHT_MAX);
    let mut prefixes: Vec<[u8; 4]> = Vec::with_capacity(IN_FLIGHT_MAX);
    loop {
        let Some(first) = rx.recv().await else {
            return End::DriverGone;
        };
        let mut close = false;
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                ToConn::Response { seq, frame } => {
                    if let Err(e) = order.insert(seq, frame) {
                        return End::BadResponse(e);
                    }
                }
                ToConn::Close => {
                    close = true;
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        let answered = order.pop_ready(&mut ready);
        if !ready.is_empty() {
            let written = write_responses(wr, &ready, &mut prefixes).await;
            ready.clear();
            if let Err(e) = written {
                return End::Io(e);
            }
        }
        in_flight.add_permits(answered);
        if close {
            return End::EngineClosed;
        }
    }
}

/// Answers that arrived ahead of their turn. Slot `i` holds `seq = next_seq + i`.
#[derive(Default)]
struct Reorder {
    next_seq: u64,
    slots: VecDeque<Option<Option<Vec<Bytes>>>>,
}

impl Reorder {
    fn insert(&mut self, seq: u64, frame: Option<Vec<Bytes>>) -> Result<(), String> {
        let index = seq
            .checked_sub(self.next_seq)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < IN_FLIGHT_MAX)
            .ok_or_else(|| format!("seq {seq} is not in flight (next is {})", self.next_seq))?;
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        if self.slots[index].is_some() {
            return Err(format!("seq {seq} answered twice"));
        }
        self.slots[index] = Some(frame);
        Ok(())
    }

    /// Moves the answers now due into `ready` (skipping `None` frames); returns how many
    /// `seq`s that completed.
    fn pop_ready(&mut self, ready: &mut Vec<Vec<Bytes>>) -> usize {
        let mut done = 0;
        while let Some(Some(_)) = self.slots.front() {
            if let Some(Some(Some(parts))) = self.slots.pop_front() {
                ready.push(parts);
            }
            done += 1;
        }
        self.next_seq += done as u64;
        done
    }
}

/// Writes each response as its size prefix followed by its parts, all in vectored writes.
async fn write_responses(
    wr: &mut OwnedWriteHalf,
    responses: &[Vec<Bytes>],
    prefixes: &mut Vec<[u8; 4]>,
) -> io::Result<()> {
    prefixes.clear();
    for parts in responses {
        let prefix = response_prefix(parts)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "response larger than 2 GiB"))?;
        prefixes.push(prefix);
    }
    let slice_count = responses.iter().map(|p| p.len() + 1).sum();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(slice_count);
    for (prefix, parts) in prefixes.iter().zip(responses) {
        slices.push(IoSlice::new(prefix));
        slices.extend(parts.iter().filter(|p| !p.is_empty()).map(|p| IoSlice::new(p)));
    }
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let n = wr.write_vectored(remaining).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(())
}

/// Bounds open connections: each holds one permit of this semaphore.
pub(crate) fn connection_slots(connections_max: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(connections_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(s: &'static str) -> Option<Vec<Bytes>> {
        Some(vec![Bytes::from_static(s.as_bytes())])
    }

    #[test]
    fn reorder_releases_in_seq_order() {
        let mut r = Reorder::default();
        let mut ready = Vec::new();
        r.insert(2, part("c")).unwrap();
        r.insert(1, None).unwrap();
        assert_eq!(r.pop_ready(&mut ready), 0);
        r.insert(0, part("a")).unwrap();
        assert_eq!(r.pop_ready(&mut ready), 3);
        assert_eq!(
            ready,
            vec![vec![Bytes::from_static(b"a")], vec![Bytes::from_static(b"c")]]
        );
        assert_eq!(r.next_seq, 3);
    }

    #[test]
    fn reorder_refuses_duplicates_and_strays() {
        let mut r = Reorder::default();
        r.insert(0, None).unwrap();
        assert!(r.insert(0, None).is_err());
        r.pop_ready(&mut Vec::new());
        assert!(r.insert(0, None).is_err(), "already written");
        assert!(
            r.insert(1 + IN_FLIGHT_MAX as u64, None).is_err(),
            "never in flight"
        );
    }
}
