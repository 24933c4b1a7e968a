//! The IO half of the engine contract: every file operation the engine wants done leaves
//! as an [`IoOp`] with a [`Token`], and its completion comes back as an [`IoResult`].
//!
//! Ordering rule (drivers must honour it, the simulator does): ops whose paths share the
//! same first component (one partition directory, or one top-level file) run in the
//! order they were emitted, and a `Sync` covers every `Append` emitted before it on that
//! file. Ops on different first components may run and complete in any order.
//! Paths are relative to the data directory and use `/` as separator.

use bytes::Bytes;

/// Identifies one outstanding IO op; the engine hands out each token once.
pub type Token = u64;

/// A file operation requested by the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Write the pieces of `data`, back to back, at `position` (the engine's idea of the
    /// file's end). Not durable until a later `Sync` on the same file completes.
    Append {
        file: String,
        position: u64,
        data: Vec<Bytes>,
    },
    /// fdatasync `file`: every `Append` emitted before this one on the file is durable once
    /// this completes with `Ok`.
    Sync { file: String },
    /// Read up to `len` bytes at `position`; the result may be shorter at end of file.
    Read { file: String, position: u64, len: u32 },
    /// Cut `file` to `len` bytes and make the new length durable.
    Truncate { file: String, len: u64 },
    /// Create an empty file (truncating any existing one) and make its directory entry durable.
    CreateFile { file: String },
    /// Create a directory (and parents) and make it durable; succeeds if it exists.
    CreateDir { dir: String },
    /// Atomically rename `from` to `to`, durable on completion.
    Rename { from: String, to: String },
    /// Remove a file, or a directory with everything under it; durable on completion.
    /// Removing something that does not exist succeeds.
    Delete { path: String },
    /// Replace `file` atomically with `data`: write a temp file, fsync, rename, fsync dir.
    WriteState { file: String, data: Bytes },
    /// List a directory (one level): names and sizes, sorted by name. `dir: ""` lists the
    /// data directory itself.
    List { dir: String },
}

impl IoOp {
    /// The ordering key of this op: the first component of its path.
    pub fn order_key(&self) -> &str {
        let path = match self {
            IoOp::Append { file, .. }
            | IoOp::Sync { file }
            | IoOp::Read { file, .. }
            | IoOp::Truncate { file, .. }
            | IoOp::CreateFile { file }
            | IoOp::WriteState { file, .. } => file,
            IoOp::CreateDir { dir } | IoOp::List { dir } => dir,
            IoOp::Rename { from, .. } => from,
            IoOp::Delete { path } => path,
        };
        path.split('/').next().unwrap_or("")
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    pub name: String,
    pub size_bytes: u64,
    pub is_dir: bool,
}

/// The completion of an [`IoOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoResult {
    /// Done, nothing to return (Append, Sync, Truncate, Create*, Rename, Delete, WriteState).
    Done,
    /// Bytes read (shorter than asked at end of file).
    Read(Bytes),
    /// Directory listing, sorted by name.
    List(Vec<DirEntry>),
    /// The op failed; the engine handles every kind, it never unwraps.
    Err(IoError),
}

/// Why an IO op failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    #[error("not found")]
    NotFound,
    #[error("no space left on device")]
    NoSpace,
    #[error("io error: {0}")]
    Other(String),
}
