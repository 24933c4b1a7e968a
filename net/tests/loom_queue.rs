//! Loom models of the peer transport's per-destination queue (`gregor_net::peer::queue`), the
//! structure shared between any number of `PeerNet::send` callers and one link's writer task.
//! Every interleaving of the threads below is explored; each must keep the byte bound, lose
//! and duplicate nothing, and keep each sender's order.
//!
//! The wake-up protocol is modelled with loom's `Notify`, which has the single-permit
//! semantics of the `tokio::sync::Notify::notify_one` the link uses: a sender pushes then
//! notifies; the writer takes a batch and waits only when it found the queue empty.
//!
//! Run (the feature is gregor-net's own, so only gregor-net builds again; see net/src/sync.rs):
//!
//! ```text
//! cargo test --workspace --features gregor-net/loom --test loom_queue
//! ```
//!
//! Without the `loom` feature this file compiles to nothing.
#![cfg(feature = "loom")]

use bytes::Bytes;
use gregor_net::peer::queue::{OutQueue, QueueFull};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Notify};
use loom::thread;

const SENDERS: usize = 2;
const PER_SENDER: u8 = 2;
/// Each message is 2 bytes plus its 4-byte header: the bound holds three, so a lagging writer
/// makes some sends fail.
const MESSAGE_COST: usize = 6;
const BOUND_BYTES: usize = 3 * MESSAGE_COST;
/// Two messages per batch, so draining takes several batches.
const BATCH_BYTES: usize = 2 * MESSAGE_COST;
const PREEMPTIONS_DEFAULT: usize = 3;

struct Shared {
    queue: OutQueue,
    wake: Notify,
    senders_done: AtomicUsize,
}

/// Starts the sender threads; each returns the seqs its queue accepted, in order.
fn spawn_senders(shared: &Arc<Shared>) -> Vec<thread::JoinHandle<Vec<u8>>> {
    (0..SENDERS as u8)
        .map(|sender| {
            let shared = shared.clone();
            thread::spawn(move || {
                let mut accepted = Vec::new();
                for seq in 0..PER_SENDER {
                    match shared.queue.push(Bytes::from(vec![sender, seq])) {
                        Ok(()) => accepted.push(seq),
                        Err(QueueFull {
                            queued_bytes,
                            bytes_max,
                        }) => {
                            assert!(queued_bytes + MESSAGE_COST > bytes_max);
                        }
                    }
                    shared.wake.notify();
                }
                shared.senders_done.fetch_add(1, Ordering::Release);
                shared.wake.notify();
                accepted
            })
        })
        .collect()
}

/// The writer: drains batches until every sender is done and the queue is empty. The first
/// non-empty batch is abandoned unwritten when `lose_first_batch` (a connection failing
/// mid-write). Returns per sender the seqs written, and the messages lost.
fn writer(shared: &Shared, lose_first_batch: bool) -> (Vec<Vec<u8>>, usize) {
    let mut written = vec![Vec::new(); SENDERS];
    let mut lost = 0;
    let mut batch = Vec::new();
    loop {
        let finished = shared.senders_done.load(Ordering::Acquire) == SENDERS;
        // `OutQueue` itself asserts the byte bound after every operation.
        let in_flight = shared.queue.take_batch(BATCH_BYTES, &mut batch);
        assert!(in_flight.bytes() <= BATCH_BYTES);
        if in_flight.count() == 0 {
            in_flight.written();
            if finished {
                return (written, lost);
            }
            shared.wake.wait();
            continue;
        }
        if lose_first_batch && lost == 0 && written.iter().all(Vec::is_empty) {
            lost = in_flight.count();
            drop(in_flight);
            continue;
        }
        for message in &batch {
            written[usize::from(message[0])].push(message[1]);
        }
        in_flight.written();
    }
}

fn model(lose_first_batch: bool) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions (loom's advice: 2-3 find nearly every bug) keep the run to seconds;
    // LOOM_MAX_PREEMPTIONS overrides it, e.g. for an exhaustive run.
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS_DEFAULT);
    }
    builder.check(move || {
        let shared = Arc::new(Shared {
            queue: OutQueue::new(BOUND_BYTES),
            wake: Notify::new(),
            senders_done: AtomicUsize::new(0),
        });
        let senders = spawn_senders(&shared);
        let (written, lost) = writer(&shared, lose_first_batch);
        let accepted: Vec<Vec<u8>> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        let refused: usize = accepted.iter().map(|a| usize::from(PER_SENDER) - a.len()).sum();
        assert_eq!(shared.queue.dropped(), (refused + lost) as u64);
        assert_eq!(shared.queue.bytes(), 0, "every byte released");
        assert!(shared.queue.is_empty());
        let mut written_total = 0;
        for (sender, (accepted, written)) in accepted.iter().zip(&written).enumerate() {
            // In order, each once: `written` is `accepted` minus (only when a batch was lost)
            // a prefix of the messages that were in it.
            assert!(
                accepted.ends_with(written),
                "sender {sender}: accepted {accepted:?}, written {written:?}"
            );
            written_total += written.len();
        }
        let accepted_total: usize = accepted.iter().map(Vec::len).sum();
        assert_eq!(
            written_total + lost,
            accepted_total,
            "nothing lost but the abandoned batch"
        );
    });
}

#[test]
fn senders_and_writer_lose_nothing_duplicate_nothing_keep_order_and_stay_bounded() {
    model(false);
}

#[test]
fn a_batch_abandoned_in_flight_releases_its_bytes_and_is_counted_dropped() {
    model(true);
}
