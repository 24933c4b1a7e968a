//! gregor-engine: the whole broker as a pure, deterministic state machine.
//!
//! Drivers (the tokio shell in `gregor-net`, the simulator in `gregor-sim`) feed
//! [`Input`]s to [`Engine::step`] together with the current [`Time`], and carry out the
//! [`Output`]s it appends. The engine performs no IO, reads no clock, starts no thread and
//! draws randomness only from an RNG seeded at construction, so the same inputs in the
//! same order give the same outputs, byte for byte.

pub mod batch;
pub mod cluster;
pub mod config;
mod engine;
pub mod group;
pub mod io;
pub mod kafka;
pub mod log;
mod meta;
pub mod planted;
pub mod raft;
pub mod replica;

use bytes::Bytes;

pub use config::BrokerConfig;
pub use engine::Engine;
pub use io::{DirEntry, IoError, IoOp, IoResult, Token};
pub use planted::PlantedBugs;

/// A connection as the driver numbers it; never reused within one engine's life.
pub type ConnId = u64;

/// Time as the driver sees it. `mono_ms` never goes backwards and drives timers;
/// `wall_ms` (milliseconds since the Unix epoch) stamps records and may jump or skew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time {
    pub mono_ms: u64,
    pub wall_ms: i64,
}

/// Everything that can happen to the engine.
#[derive(Clone, Debug)]
pub enum Input {
    /// The driver is up; the engine starts recovering from the data directory. No other
    /// input but `IoDone`, `Tick` and `PeerMessage` is expected before the engine emits
    /// [`Output::Ready`] (a cluster node is ready once its metadata image has caught up).
    Start,
    /// One Kafka request frame (without its 4-byte size prefix). `seq` numbers the frames of
    /// one connection from 0 upward; the driver answers in `seq` order.
    ClientRequest { conn: ConnId, seq: u64, frame: Bytes },
    /// The peer closed the connection or the driver dropped it.
    ConnectionClosed { conn: ConnId },
    /// A timer set with [`Output::SetTimer`] fired (or the driver just wants to poke time).
    Tick,
    /// An [`IoOp`] finished.
    IoDone { token: Token, result: IoResult },
    /// A message from peer broker `from` (sent by its engine as [`Output::SendPeer`]); the
    /// driver delivers it as it came or not at all (loss, delay and reordering are fine).
    PeerMessage { from: i32, msg: Bytes },
    /// Stop gracefully: refuse new requests, finish and fsync in-flight writes, then emit
    /// [`Output::Stopped`].
    Shutdown,
}

/// Everything the engine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The answer to request `seq` on `conn`. `frame` is `None` for requests Kafka does not
    /// answer (Produce with acks=0): the driver frees the slot and sends nothing. The parts,
    /// written in order behind one 4-byte size prefix, form the response frame.
    ClientResponse {
        conn: ConnId,
        seq: u64,
        frame: Option<Vec<Bytes>>,
    },
    /// Close this connection (malformed frame, protocol violation).
    CloseConnection { conn: ConnId },
    /// Carry out a file operation and report its completion as [`Input::IoDone`].
    Io { token: Token, op: IoOp },
    /// Send `msg` to peer broker `to`, to arrive there as an [`Input::PeerMessage`]. Best
    /// effort: Raft tolerates loss, delay, duplication and reordering.
    SendPeer { to: i32, msg: Bytes },
    /// Deliver an [`Input::Tick`] once `mono_ms` reaches `at_mono_ms` (earlier is harmless).
    SetTimer { at_mono_ms: u64 },
    /// Recovery is complete; the driver may accept client connections.
    Ready,
    /// The id of the cluster this node belongs to, once known (from the data directory or
    /// from the metadata log). The driver checks peers' handshakes against it.
    ClusterId { id: String },
    /// After [`Input::Shutdown`]: every acknowledged write is durable; the driver may exit.
    Stopped,
    /// The engine hit an unrecoverable storage error (e.g. fsync failed) and stopped
    /// serving; the driver should log `reason` and exit non-zero.
    Fatal { reason: String },
}
