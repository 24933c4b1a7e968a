//! The synchronisation primitives of the shell's structures shared between threads (the peer
//! transport's queues and link state, the disk workers' handle cache): std's, or loom's when
//! built with the `loom` feature so that the model tests in `net/tests/loom_*.rs` can explore
//! every interleaving. (A feature of this crate alone, not `--cfg loom` in RUSTFLAGS: that
//! reaches every crate, tokio compiles its networking out under it, and the whole tree
//! would build again in a target dir of its own.)

#[cfg(feature = "loom")]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(feature = "loom")]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: every critical section guarded through this shim leaves
/// its state consistent before anything in it can panic (they only move values, add numbers
/// and update maps).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
