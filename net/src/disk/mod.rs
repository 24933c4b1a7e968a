//! The disk executor: carries out the engine's [`IoOp`]s on worker threads, off the async
//! runtime, and reports each completion through a [`Completion`] callback.
//!
//! Ordering (engine/src/io.rs): ops with the same `order_key` go to one writer thread, chosen
//! by hashing the key, so they run and complete in emission order. `Read`s go to a shared
//! reader pool: the engine only reads bytes whose writes already completed, so reads never
//! wait behind an fsync. Every failure becomes an `IoResult::Err`; nothing here panics on IO.

// Public only to the loom model tests (net/tests/loom_handles.rs), which drive its bookkeeping.
#[cfg(feature = "loom")]
pub mod handles;
#[cfg(not(feature = "loom"))]
mod handles;
mod ops;
mod readahead;

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use gregor_engine::{IoError, IoOp, IoResult, Token};
use tracing::error;

use handles::HandleCache;

/// Receives completions, on the worker thread that ran the ops: a writer hands over the
/// completions of every op it ran back to back (in the order they ran, which is their
/// submission order), a reader one at a time.
pub type Completion = Arc<dyn Fn(Vec<(Token, IoResult)>) + Send + Sync>;

/// Ops a writer runs back to back, at most, before it reports their completions.
const WRITER_BATCH_MAX: usize = 64;

/// Where and with how many threads the executor runs.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// Every op path is relative to this directory.
    pub root: PathBuf,
    pub writer_threads: usize,
    pub reader_threads: usize,
}

type Job = (Token, IoOp);

/// Prefetch threads (readahead.rs): they read for consumers catching up, apart from the
/// readers so that a reader never waits for a job queued behind it.
const PREFETCH_THREADS: usize = 8;

/// Handle to the worker threads. Dropping it lets them finish the queued ops and exit.
pub struct DiskExecutor {
    writers: Vec<mpsc::Sender<Job>>,
    readers: mpsc::Sender<Job>,
    handles: Arc<HandleCache>,
}

impl Drop for DiskExecutor {
    fn drop(&mut self) {
        // The prefetch threads exit once no one can send them jobs.
        self.handles.readahead.clear_jobs();
        tracing::debug!(
            hits = self.handles.readahead.hits(),
            partial_hits = self.handles.readahead.partial_hits(),
            "read-ahead"
        );
    }
}

impl DiskExecutor {
    /// Starts the threads. Fails only if the OS refuses a thread.
    pub fn start(config: DiskConfig, done: Completion) -> io::Result<DiskExecutor> {
        let handles = Arc::new(HandleCache::new(config.root.clone()));
        let mut writers = Vec::new();
        for i in 0..config.writer_threads.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let ctx = Worker {
                handles: handles.clone(),
                done: done.clone(),
            };
            thread::Builder::new()
                .name(format!("gregor-disk-w{i}"))
                .spawn(move || {
                    // Ops already queued behind the one just run (an Append and the Sync
                    // emitted with it, say) run before their completions are reported
                    // together: one wake of the driver rather than one per op. An Append's
                    // completion may thus wait for a Sync queued after it; the engine needs
                    // both before it answers anyway.
                    while let Ok(job) = rx.recv() {
                        let mut done = vec![ctx.execute(job)];
                        while done.len() < WRITER_BATCH_MAX {
                            match rx.try_recv() {
                                Ok(job) => done.push(ctx.execute(job)),
                                Err(_) => break,
                            }
                        }
                        (ctx.done)(done);
                    }
                })?;
            writers.push(tx);
        }
        let readers = {
            let (handles, done) = (handles.clone(), done.clone());
            spawn_pool("gregor-disk-r", config.reader_threads.max(1), move || {
                let ctx = Worker {
                    handles: handles.clone(),
                    done: done.clone(),
                };
                move |job: Job| (ctx.done)(vec![ctx.execute(job)])
            })?
        };
        let prefetches = {
            let handles = handles.clone();
            spawn_pool("gregor-disk-ra", PREFETCH_THREADS, move || {
                let handles = handles.clone();
                move |job: readahead::Prefetch| ops::prefetch(&handles, &job)
            })?
        };
        handles.readahead.set_jobs(prefetches);
        Ok(DiskExecutor {
            writers,
            readers,
            handles,
        })
    }

    /// Queues `op`; its completion arrives later through the callback. Fails (and no
    /// completion will come) only if the worker that should run it is gone; the caller then
    /// reports the returned error as the op's result.
    pub fn submit(&self, token: Token, op: IoOp) -> Result<(), IoError> {
        let sent = if matches!(op, IoOp::Read { .. }) {
            self.readers.send((token, op))
        } else {
            let index = writer_for(op.order_key(), self.writers.len());
            self.writers[index].send((token, op))
        };
        sent.map_err(|_| {
            error!(token, "disk worker thread is gone; failing the op");
            IoError::Other("disk worker thread is gone".into())
        })
    }
}

/// Starts `threads` threads named `name0`, `name1`, ... that share one queue, each running
/// what `worker()` made for it on every job; a thread exits once the returned sender (and
/// every clone of it) is dropped.
fn spawn_pool<J, F>(name: &str, threads: usize, worker: impl Fn() -> F) -> io::Result<mpsc::Sender<J>>
where
    J: Send + 'static,
    F: FnMut(J) + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<J>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads {
        let rx = rx.clone();
        let mut run = worker();
        thread::Builder::new()
            .name(format!("{name}{i}"))
            .spawn(move || loop {
                let job = {
                    let rx = rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    rx.recv()
                };
                match job {
                    Ok(job) => run(job),
                    Err(_) => return,
                }
            })?;
    }
    Ok(tx)
}

/// What a worker thread needs to run an op.
struct Worker {
    handles: Arc<HandleCache>,
    done: Completion,
}

impl Worker {
    fn execute(&self, (token, op): Job) -> (Token, IoResult) {
        (token, ops::execute(&self.handles, op))
    }
}

/// The writer thread that owns `key`: FNV-1a, stable across runs and builds.
fn writer_for(key: &str, writers: usize) -> usize {
    debug_assert!(writers > 0);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The remainder is below `writers`, which is a usize.
    (hash % writers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_and_stay_put() {
        let picks: Vec<usize> = (0..64).map(|p| writer_for(&format!("topic-{p}"), 4)).collect();
        for w in 0..4 {
            assert!(picks.contains(&w), "writer {w} never chosen");
        }
        assert_eq!(writer_for("topic-7", 4), picks[7]);
    }
}
