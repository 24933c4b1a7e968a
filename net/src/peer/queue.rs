//! The outbound queue of one destination: filled by any number of `send` callers, drained in
//! batches by that destination's writer task.
//!
//! Invariants, asserted after every operation:
//! * `queued_bytes + in_flight_bytes <= bytes_max`: a message costs its encoded size
//!   ([`message_cost_bytes`]) from the moment it is accepted until its frame has been written
//!   (or given up), so a slow or dead peer can never hold more than `bytes_max` of messages.
//! * Messages leave in the order they were accepted, each exactly once.
//!
//! Policy when full: the new message is refused ([`QueueFull`]) and counted as dropped; what
//! is queued stays. Raft tolerates the loss and retries from its own state.

use std::collections::VecDeque;

use bytes::Bytes;

use super::wire::message_cost_bytes;
use crate::sync::{lock, Mutex};

/// A message refused because the destination's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull {
    /// Bytes held (queued and in flight) when the message was refused.
    pub queued_bytes: usize,
    pub bytes_max: usize,
}

/// The bounded queue of one destination. See the module docs for its invariants.
pub struct OutQueue {
    bytes_max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    messages: VecDeque<Bytes>,
    /// Cost of `messages`.
    queued_bytes: usize,
    /// Cost of the messages taken by the writer and not yet written or given up.
    in_flight_bytes: usize,
    /// Messages refused when full, or lost with a batch whose write did not finish.
    dropped: u64,
}

impl State {
    fn check(&self, bytes_max: usize) {
        assert!(self.queued_bytes + self.in_flight_bytes <= bytes_max);
        assert_eq!(self.messages.is_empty(), self.queued_bytes == 0);
        // Summing the queue is linear in its length: debug builds only.
        debug_assert_eq!(
            self.messages.iter().map(message_cost_bytes).sum::<usize>(),
            self.queued_bytes
        );
    }
}

impl OutQueue {
    /// An empty queue holding at most `bytes_max` bytes of messages.
    pub fn new(bytes_max: usize) -> OutQueue {
        OutQueue {
            bytes_max,
            state: Mutex::new(State::default()),
        }
    }

    /// Appends `message`, or refuses it (and counts it dropped) when its cost would take the
    /// bytes held past the bound.
    pub fn push(&self, message: Bytes) -> Result<(), QueueFull> {
        let cost = message_cost_bytes(&message);
        let mut state = lock(&self.state);
        let held = state.queued_bytes + state.in_flight_bytes;
        if held + cost > self.bytes_max {
            state.dropped += 1;
            return Err(QueueFull {
                queued_bytes: held,
                bytes_max: self.bytes_max,
            });
        }
        state.messages.push_back(message);
        state.queued_bytes += cost;
        state.check(self.bytes_max);
        Ok(())
    }

    /// Moves the oldest messages into `out` (cleared first), as many as fit in
    /// `batch_bytes_max` but at least one if any is queued. They stay counted against the
    /// bound until the returned [`InFlight`] is marked written or dropped.
    pub fn take_batch(&self, batch_bytes_max: usize, out: &mut Vec<Bytes>) -> InFlight<'_> {
        out.clear();
        let mut state = lock(&self.state);
        let mut bytes = 0;
        while let Some(front) = state.messages.front() {
            let cost = message_cost_bytes(front);
            if !out.is_empty() && bytes + cost > batch_bytes_max {
                break;
            }
            bytes += cost;
            // `front` exists: checked by the loop condition.
            out.extend(state.messages.pop_front());
        }
        state.queued_bytes -= bytes;
        state.in_flight_bytes += bytes;
        state.check(self.bytes_max);
        InFlight {
            queue: self,
            bytes,
            count: out.len(),
            written: false,
        }
    }

    /// Bytes held: queued plus in flight.
    pub fn bytes(&self) -> usize {
        let state = lock(&self.state);
        state.queued_bytes + state.in_flight_bytes
    }

    /// Messages waiting for the writer (not counting those in flight).
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// Whether no message is waiting for the writer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages refused when full or lost in flight, since the start.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }

    /// Discards every queued message (counted as dropped); returns how many there were.
    pub fn clear(&self) -> usize {
        let mut state = lock(&self.state);
        let count = state.messages.len();
        state.messages.clear();
        state.queued_bytes = 0;
        state.dropped += count as u64;
        state.check(self.bytes_max);
        count
    }

    fn finish(&self, bytes: usize, lost: usize) {
        let mut state = lock(&self.state);
        assert!(state.in_flight_bytes >= bytes, "a batch finishes once");
        state.in_flight_bytes -= bytes;
        state.dropped += lost as u64;
        state.check(self.bytes_max);
    }
}

/// A batch taken by the writer. Its bytes count against the bound until it is marked
/// [`written`](InFlight::written) or dropped; dropped unwritten, its messages count as lost.
#[must_use = "an in-flight batch holds queue bytes until it is written or dropped"]
pub struct InFlight<'a> {
    queue: &'a OutQueue,
    bytes: usize,
    count: usize,
    written: bool,
}

impl InFlight<'_> {
    /// Messages in the batch.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Cost of the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The batch reached the socket: release its bytes.
    pub fn written(mut self) {
        self.written = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let lost = if self.written { 0 } else { self.count };
        self.queue.finish(self.bytes, lost);
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    fn msg(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    #[test]
    fn refuses_past_the_bound_and_counts_it() {
        let q = OutQueue::new(30);
        q.push(msg(1, 10)).unwrap();
        q.push(msg(2, 10)).unwrap();
        assert_eq!(q.bytes(), 28);
        assert_eq!(
            q.push(msg(3, 0)),
            Err(QueueFull {
                queued_bytes: 28,
                bytes_max: 30
            })
        );
        assert_eq!(q.dropped(), 1);
        assert!(q.push(msg(4, 100)).is_err(), "larger than the whole bound");
    }

    #[test]
    fn batches_are_capped_but_never_empty_and_keep_order() {
        let q = OutQueue::new(1000);
        for n in 0..5 {
            q.push(msg(n, 6)).unwrap();
        }
        q.push(msg(9, 500)).unwrap();
        let mut out = Vec::new();
        let b = q.take_batch(25, &mut out);
        assert_eq!(out.iter().map(|m| m[0]).collect::<Vec<_>>(), [0, 1]);
        assert_eq!((b.count(), b.bytes()), (2, 20));
        b.written();
        let b = q.take_batch(25, &mut out);
        assert_eq!(out.iter().map(|m| m[0]).collect::<Vec<_>>(), [2, 3]);
        b.written();
        let b = q.take_batch(25, &mut out);
        assert_eq!(out.len(), 1);
        b.written();
        let b = q.take_batch(25, &mut out);
        assert_eq!((out.len(), out[0].len()), (1, 500), "a big message goes alone");
        b.written();
        assert_eq!((q.bytes(), q.dropped()), (0, 0));
        assert_eq!(q.take_batch(25, &mut out).count(), 0);
    }

    #[test]
    fn in_flight_bytes_count_until_written_and_unwritten_batches_are_dropped() {
        let q = OutQueue::new(30);
        q.push(msg(1, 10)).unwrap();
        q.push(msg(2, 10)).unwrap();
        let mut out = Vec::new();
        let batch = q.take_batch(100, &mut out);
        assert_eq!(q.bytes(), 28, "still held while in flight");
        assert!(q.push(msg(3, 10)).is_err());
        drop(batch);
        assert_eq!((q.bytes(), q.dropped()), (0, 3));
        q.push(msg(4, 10)).unwrap();
        assert_eq!(q.clear(), 1);
        assert_eq!((q.bytes(), q.dropped(), q.len()), (0, 4, 0));
    }
}
