//! The simulated disk of one node: a directory tree of files held as byte vectors, each with
//! a volatile image (what reads see, the page cache) and a durable image (what survives a
//! crash), plus [`IoQueue`], which decides when each [`IoOp`] completes.
//!
//! Invariants: every file's durable image is a prefix of its volatile image (appends go at
//! the end, `Truncate` and `Sync` make the whole file durable); the directory tree itself is
//! always durable, because every namespace op (`CreateFile`, `CreateDir`, `Rename`,
//! `Delete`, `WriteState`) is durable on completion. A crash ([`Disk::crash`]) keeps the
//! durable image of each file plus, per the [`CrashModel`], some whole unsynced writes, a
//! torn piece of the next one, and possibly a bit flip inside the kept unsynced bytes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use gregor_engine::{DirEntry, IoError, IoOp, IoResult, Token};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One simulated file.
#[derive(Clone, Debug, Default)]
struct SimFile {
    /// What reads see.
    volatile: Vec<u8>,
    /// What survives a crash; always a prefix of `volatile`.
    durable: Vec<u8>,
    /// `[start, end)` of every append since the last sync, in write order. Used to decide
    /// what a crash keeps; all extents lie at or beyond `durable.len()`.
    unsynced: Vec<(usize, usize)>,
    /// A sync failed since the file was last opened (fsyncgate: Linux marks the failed
    /// pages clean, so later syncs "succeed" without making them durable). Until the next
    /// crash, syncs of this file report success and make nothing durable.
    sync_poisoned: bool,
}

impl SimFile {
    fn sync(&mut self) {
        let durable_len = self.durable.len();
        debug_assert!(durable_len <= self.volatile.len());
        self.durable.extend_from_slice(&self.volatile[durable_len..]);
        self.unsynced.clear();
        debug_assert_eq!(
            self.durable, self.volatile,
            "durable image must equal volatile after sync"
        );
    }
}

/// Faults the runner switches on for one op (decided with the fault RNGs, not here).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpFaults {
    /// The device is full: `Append` fails with [`IoError::NoSpace`].
    pub no_space: bool,
    /// This `Sync` fails (EIO); nothing becomes durable.
    pub fail_sync: bool,
}

/// What a crash does with each file's unsynced writes (chosen per seed by the swarm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrashModel {
    /// Probability that a file loses every unsynced write.
    pub lose_all_p: f64,
    /// Probability that the first unsynced write not kept whole is torn (a random-length
    /// prefix of it survives) rather than lost whole.
    pub tear_p: f64,
    /// Probability, per `.log` file that kept unsynced bytes, of one bit flip inside a kept
    /// unsynced record batch, in the bytes its CRC covers (or its CRC / magic).
    pub bit_flip_p: f64,
}

impl CrashModel {
    /// A crash that keeps exactly the durable image.
    pub const LOSE_ALL: CrashModel = CrashModel {
        lose_all_p: 1.0,
        tear_p: 0.0,
        bit_flip_p: 0.0,
    };
}

/// What a crash did, for the history and the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced bytes dropped, over all files.
    pub bytes_lost: u64,
    /// Unsynced bytes that survived, over all files.
    pub bytes_kept: u64,
    /// Files whose last kept write was torn.
    pub torn_files: u32,
    /// `(file, byte position)` of every bit flipped.
    pub flips: Vec<(String, u64)>,
}

/// Something the engine asked of the disk that no correct engine asks (reported by the
/// runner as a violation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskMisuse(pub String);

/// The simulated file system of one node.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    files: BTreeMap<String, SimFile>,
    /// Every directory except the root (""), by full path.
    dirs: BTreeSet<String>,
    /// Misuses seen since the runner last drained them.
    misuses: Vec<DiskMisuse>,
}

fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn is_under(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

impl Disk {
    pub fn new() -> Disk {
        Disk::default()
    }

    fn dir_exists(&self, dir: &str) -> bool {
        dir.is_empty() || self.dirs.contains(dir)
    }

    /// Takes the misuses recorded since the last call.
    pub fn take_misuses(&mut self) -> Vec<DiskMisuse> {
        std::mem::take(&mut self.misuses)
    }

    /// Carries out `op` at its completion and returns what the engine is told.
    pub fn apply(&mut self, op: &IoOp, faults: OpFaults) -> IoResult {
        match op {
            IoOp::Append { file, position, data } => self.append(&normalize(file), *position, data, faults),
            IoOp::Sync { file } => self.sync(&normalize(file), faults),
            IoOp::Read { file, position, len } => self.read(&normalize(file), *position, *len),
            IoOp::Truncate { file, len } => self.truncate(&normalize(file), *len),
            IoOp::CreateFile { file } => self.create_file(&normalize(file)),
            IoOp::CreateDir { dir } => self.create_dir(&normalize(dir)),
            IoOp::Rename { from, to } => self.rename(&normalize(from), &normalize(to)),
            IoOp::Delete { path } => self.delete(&normalize(path)),
            IoOp::WriteState { file, data } => self.write_state(&normalize(file), data),
            IoOp::List { dir } => self.list(&normalize(dir)),
        }
    }

    /// Writes the pieces back to back (a crash tears the unsynced range anywhere, so the
    /// pieces need no separate model).
    fn append(&mut self, file: &str, position: u64, data: &[Bytes], faults: OpFaults) -> IoResult {
        if faults.no_space {
            return IoResult::Err(IoError::NoSpace);
        }
        let Some(f) = self.files.get_mut(file) else {
            return IoResult::Err(IoError::NotFound);
        };
        let pos = position as usize;
        if pos < f.durable.len() {
            // Past the end is legal (a hole; the engine pipelines appends and truncates after
            // a failed one), but rewriting bytes already fsynced is not something a log does.
            self.misuses.push(DiskMisuse(format!(
                "Append to {file} at position {position} overwrites fsynced bytes (durable length {})",
                f.durable.len()
            )));
        }
        // pwrite semantics: zero-fill a hole, overwrite what is there.
        if pos > f.volatile.len() {
            f.volatile.resize(pos, 0);
        }
        let end = pos + data.iter().map(Bytes::len).sum::<usize>();
        if end > f.volatile.len() {
            f.volatile.resize(end, 0);
        }
        let mut at = pos;
        for piece in data {
            f.volatile[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        if pos < f.durable.len() {
            // Overwriting durable bytes: keep the prefix invariant by making them volatile again
            // (a crash may then lose them, which is what the engine asked for).
            f.durable.truncate(pos);
            f.unsynced.retain(|&(s, _)| s < pos);
        }
        f.unsynced.push((pos.max(f.durable.len()), end));
        IoResult::Done
    }

    fn sync(&mut self, file: &str, faults: OpFaults) -> IoResult {
        let Some(f) = self.files.get_mut(file) else {
            return IoResult::Err(IoError::NotFound);
        };
        if faults.fail_sync {
            f.sync_poisoned = true;
            return IoResult::Err(IoError::Other(
                "fsync: input/output error (simulated)".to_string(),
            ));
        }
        if !f.sync_poisoned {
            f.sync();
        }
        IoResult::Done
    }

    fn read(&self, file: &str, position: u64, len: u32) -> IoResult {
        let Some(f) = self.files.get(file) else {
            return IoResult::Err(IoError::NotFound);
        };
        let start = (position as usize).min(f.volatile.len());
        let end = start.saturating_add(len as usize).min(f.volatile.len());
        IoResult::Read(Bytes::copy_from_slice(&f.volatile[start..end]))
    }

    fn truncate(&mut self, file: &str, len: u64) -> IoResult {
        let Some(f) = self.files.get_mut(file) else {
            return IoResult::Err(IoError::NotFound);
        };
        // ftruncate + fsync: the whole file (not only its length) is durable afterwards.
        f.volatile.resize(len as usize, 0);
        f.durable.truncate(len as usize);
        f.sync();
        IoResult::Done
    }

    fn create_file(&mut self, file: &str) -> IoResult {
        if file.is_empty() || self.dirs.contains(file) || !self.dir_exists(parent(file)) {
            return IoResult::Err(IoError::NotFound);
        }
        self.files.insert(file.to_string(), SimFile::default());
        IoResult::Done
    }

    fn create_dir(&mut self, dir: &str) -> IoResult {
        if dir.is_empty() {
            return IoResult::Done;
        }
        let mut path = String::new();
        for component in dir.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(component);
            if self.files.contains_key(&path) {
                return IoResult::Err(IoError::Other(format!("{path} is a file")));
            }
            self.dirs.insert(path.clone());
        }
        IoResult::Done
    }

    fn rename(&mut self, from: &str, to: &str) -> IoResult {
        if from.is_empty() || to.is_empty() || !self.dir_exists(parent(to)) {
            return IoResult::Err(IoError::NotFound);
        }
        if from == to {
            return IoResult::Done;
        }
        if let Some(f) = self.files.remove(from) {
            if self.dirs.contains(to) {
                self.files.insert(from.to_string(), f);
                return IoResult::Err(IoError::Other(format!("{to} is a directory")));
            }
            self.files.insert(to.to_string(), f);
            return IoResult::Done;
        }
        if !self.dirs.contains(from) {
            return IoResult::Err(IoError::NotFound);
        }
        if is_under(to, from) || self.files.contains_key(to) {
            return IoResult::Err(IoError::Other(format!("cannot rename {from} to {to}")));
        }
        // A directory rename replaces an existing target directory (as rename(2) does for an
        // empty one; we do not model "not empty").
        self.delete(to);
        let moved_files: Vec<String> = self.files.keys().filter(|p| is_under(p, from)).cloned().collect();
        for p in moved_files {
            if let Some(f) = self.files.remove(&p) {
                self.files.insert(format!("{to}{}", &p[from.len()..]), f);
            }
        }
        let moved_dirs: Vec<String> = self
            .dirs
            .iter()
            .filter(|p| *p == from || is_under(p, from))
            .cloned()
            .collect();
        for p in moved_dirs {
            self.dirs.remove(&p);
            self.dirs.insert(format!("{to}{}", &p[from.len()..]));
        }
        IoResult::Done
    }

    fn delete(&mut self, path: &str) -> IoResult {
        if path.is_empty() {
            return IoResult::Err(IoError::Other(
                "refusing to delete the data directory".to_string(),
            ));
        }
        self.files.remove(path);
        if self.dirs.remove(path) {
            self.files.retain(|p, _| !is_under(p, path));
            self.dirs.retain(|p| !is_under(p, path));
        }
        IoResult::Done
    }

    fn write_state(&mut self, file: &str, data: &Bytes) -> IoResult {
        if file.is_empty() || self.dirs.contains(file) || !self.dir_exists(parent(file)) {
            return IoResult::Err(IoError::NotFound);
        }
        let mut f = SimFile {
            volatile: data.to_vec(),
            ..SimFile::default()
        };
        f.sync();
        self.files.insert(file.to_string(), f);
        IoResult::Done
    }

    fn list(&self, dir: &str) -> IoResult {
        if !self.dir_exists(dir) {
            return IoResult::Err(IoError::NotFound);
        }
        let child_of = |p: &str| -> bool {
            if dir.is_empty() {
                !p.contains('/')
            } else {
                is_under(p, dir) && !p[dir.len() + 1..].contains('/')
            }
        };
        let name_of = |p: &str| -> String { p.rsplit('/').next().unwrap_or(p).to_string() };
        let mut entries: Vec<DirEntry> = Vec::new();
        for (p, f) in &self.files {
            if child_of(p) {
                entries.push(DirEntry {
                    name: name_of(p),
                    size_bytes: f.volatile.len() as u64,
                    is_dir: false,
                });
            }
        }
        for p in &self.dirs {
            if child_of(p) {
                entries.push(DirEntry {
                    name: name_of(p),
                    size_bytes: 0,
                    is_dir: true,
                });
            }
        }
        entries.sort();
        IoResult::List(entries)
    }

    /// Power loss: every file keeps its durable image plus what `model` lets survive of its
    /// unsynced writes. The namespace is already durable.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng, model: &CrashModel) -> CrashReport {
        let mut report = CrashReport::default();
        for (name, f) in self.files.iter_mut() {
            f.sync_poisoned = false;
            let durable_len = f.durable.len();
            let volatile_len = f.volatile.len();
            if volatile_len == durable_len {
                f.unsynced.clear();
                continue;
            }
            let keep_end = crash_keep_end(rng, model, f, &mut report);
            debug_assert!(keep_end >= durable_len && keep_end <= volatile_len);
            f.volatile.truncate(keep_end);
            f.volatile[..durable_len].copy_from_slice(&f.durable);
            report.bytes_kept += (keep_end - durable_len) as u64;
            report.bytes_lost += (volatile_len - keep_end) as u64;
            if name.ends_with(".log") && keep_end > durable_len && rng.gen_bool(model.bit_flip_p) {
                if let Some(pos) = flip_target(rng, f, keep_end) {
                    f.volatile[pos] ^= 1 << rng.gen_range(0..8);
                    report.flips.push((name.clone(), pos as u64));
                }
            }
            // What survived a power loss is on the platter now: it is the new durable image.
            f.unsynced.clear();
            f.durable.clone_from(&f.volatile);
        }
        report
    }

    /// Names and volatile sizes of every file (for tests and debugging dumps).
    pub fn file_sizes(&self) -> Vec<(String, usize, usize)> {
        self.files
            .iter()
            .map(|(n, f)| (n.clone(), f.volatile.len(), f.durable.len()))
            .collect()
    }

    /// A file's volatile bytes, if it exists.
    pub fn contents(&self, file: &str) -> Option<&[u8]> {
        self.files.get(&normalize(file)).map(|f| f.volatile.as_slice())
    }

    /// A file's durable bytes, if it exists.
    pub fn durable_contents(&self, file: &str) -> Option<&[u8]> {
        self.files.get(&normalize(file)).map(|f| f.durable.as_slice())
    }

    /// Total unsynced bytes over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|f| (f.volatile.len() - f.durable.len()) as u64)
            .sum()
    }
}

/// Where a crash cuts one file: whole unsynced writes kept, then maybe a torn piece.
fn crash_keep_end(rng: &mut ChaCha8Rng, model: &CrashModel, f: &SimFile, report: &mut CrashReport) -> usize {
    let durable_len = f.durable.len();
    if f.unsynced.is_empty() || rng.gen_bool(model.lose_all_p) {
        return durable_len;
    }
    let writes_kept = rng.gen_range(0..=f.unsynced.len());
    let mut keep_end = if writes_kept == 0 {
        durable_len
    } else {
        f.unsynced[writes_kept - 1].1
    };
    if writes_kept < f.unsynced.len() && rng.gen_bool(model.tear_p) {
        let (start, end) = f.unsynced[writes_kept];
        if end > start + 1 && start == keep_end {
            keep_end = rng.gen_range(start + 1..end);
            report.torn_files += 1;
        }
    }
    keep_end.clamp(durable_len, f.volatile.len())
}

/// A byte inside a whole kept unsynced record batch that its CRC check must catch: the
/// magic, the CRC itself, or the CRC-covered part (attributes to end). None if no kept
/// unsynced write starts with a parseable batch.
fn flip_target(rng: &mut ChaCha8Rng, f: &SimFile, keep_end: usize) -> Option<usize> {
    let candidates: Vec<(usize, usize)> = f
        .unsynced
        .iter()
        .filter(|&&(start, end)| end <= keep_end && end - start >= BATCH_HEADER_BYTES)
        .filter_map(|&(start, end)| {
            let len_field = &f.volatile[start + 8..start + 12];
            let batch_len = i32::from_be_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]);
            let batch_end = start + 12 + usize::try_from(batch_len).ok()?;
            (batch_end <= end && batch_len as usize >= BATCH_HEADER_BYTES - 12)
                .then_some((start + MAGIC_POSITION, batch_end))
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let (lo, hi) = candidates[rng.gen_range(0..candidates.len())];
    Some(rng.gen_range(lo..hi))
}

/// Size of a v2 record batch header.
const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the magic byte in a batch (after base offset, length, leader epoch).
const MAGIC_POSITION: usize = 16;

/// When each IO op completes: after a seeded latency, but never before an earlier-emitted
/// op with the same [`IoOp::order_key`] (the ordering rule of `engine/src/io.rs`). Ops of
/// different keys may complete in any order. Completions at equal times keep emission order
/// because the runner's event queue breaks ties by insertion order.
#[derive(Clone, Debug, Default)]
pub struct IoQueue {
    /// Completion time of the last op emitted per order key.
    last_done_ms: BTreeMap<String, u64>,
    /// Ops emitted and not yet completed, by token, with their emission number.
    pending: BTreeMap<Token, (u64, IoOp)>,
    /// Ops emitted so far (numbers them in emission order).
    emitted: u64,
}

impl IoQueue {
    /// Registers `op` emitted at `now_ms` that would take `latency_ms` on its own; returns
    /// its completion time, or `None` (op refused) if `token` is already in flight.
    pub fn submit(&mut self, token: Token, op: IoOp, now_ms: u64, latency_ms: u64) -> Option<u64> {
        if self.pending.contains_key(&token) {
            return None;
        }
        let key = op.order_key().to_string();
        let earliest = self.last_done_ms.get(&key).copied().unwrap_or(0);
        let done_ms = (now_ms + latency_ms).max(earliest);
        self.last_done_ms.insert(key, done_ms);
        self.emitted += 1;
        self.pending.insert(token, (self.emitted, op));
        Some(done_ms)
    }

    /// Removes and returns the op for a completion; `None` if it is not pending.
    pub fn complete(&mut self, token: Token) -> Option<IoOp> {
        self.pending.remove(&token).map(|(_, op)| op)
    }

    /// Number of ops in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The ops in flight, grouped by order key, each group in emission order (so a prefix
    /// of a group is what the device may have done before a crash).
    pub fn in_flight_by_key(&self) -> Vec<Vec<IoOp>> {
        let mut by_key: BTreeMap<&str, Vec<(u64, &IoOp)>> = BTreeMap::new();
        for (n, op) in self.pending.values() {
            by_key.entry(op.order_key()).or_default().push((*n, op));
        }
        by_key
            .into_values()
            .map(|mut ops| {
                ops.sort_by_key(|(n, _)| *n);
                ops.into_iter().map(|(_, op)| op.clone()).collect()
            })
            .collect()
    }

    /// Forgets everything (the node crashed: pending ops never complete).
    pub fn reset(&mut self) {
        self.last_done_ms.clear();
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn append(file: &str, position: u64, data: &[u8]) -> IoOp {
        IoOp::Append {
            file: file.to_string(),
            position,
            data: vec![Bytes::copy_from_slice(data)],
        }
    }

    fn sync(file: &str) -> IoOp {
        IoOp::Sync {
            file: file.to_string(),
        }
    }

    fn disk_with_file(file: &str) -> Disk {
        let mut d = Disk::new();
        assert_eq!(
            d.apply(
                &IoOp::CreateDir {
                    dir: parent(file).to_string()
                },
                OpFaults::default()
            ),
            IoResult::Done
        );
        assert_eq!(
            d.apply(
                &IoOp::CreateFile {
                    file: file.to_string()
                },
                OpFaults::default()
            ),
            IoResult::Done
        );
        d
    }

    fn ok(d: &mut Disk, op: IoOp) {
        assert_eq!(d.apply(&op, OpFaults::default()), IoResult::Done, "{op:?}");
    }

    #[test]
    fn crash_loses_unsynced_bytes() {
        let mut d = disk_with_file("t-0/0.log");
        ok(&mut d, append("t-0/0.log", 0, b"hello"));
        ok(&mut d, sync("t-0/0.log"));
        ok(&mut d, append("t-0/0.log", 5, b" world"));
        assert_eq!(d.contents("t-0/0.log"), Some(&b"hello world"[..]));
        assert_eq!(d.unsynced_bytes(), 6);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let report = d.crash(&mut rng, &CrashModel::LOSE_ALL);
        assert_eq!(d.contents("t-0/0.log"), Some(&b"hello"[..]));
        assert_eq!(report.bytes_lost, 6);
        assert_eq!(d.unsynced_bytes(), 0);
        assert!(d.take_misuses().is_empty());
    }

    #[test]
    fn torn_write_keeps_a_prefix_of_the_first_lost_write() {
        let model = CrashModel {
            lose_all_p: 0.0,
            tear_p: 1.0,
            bit_flip_p: 0.0,
        };
        let mut torn_seen = false;
        for seed in 0..64 {
            let mut d = disk_with_file("a/x");
            ok(&mut d, append("a/x", 0, b"AAAA"));
            ok(&mut d, sync("a/x"));
            ok(&mut d, append("a/x", 4, b"BBBB"));
            ok(&mut d, append("a/x", 8, b"CCCC"));
            let report = d.crash(&mut ChaCha8Rng::seed_from_u64(seed), &model);
            let after = d.contents("a/x").unwrap().to_vec();
            assert!(after.len() >= 4 && after.len() <= 12);
            assert_eq!(
                &after[..],
                &b"AAAABBBBCCCC"[..after.len()],
                "a crash keeps a prefix"
            );
            if report.torn_files == 1 {
                torn_seen = true;
                assert!(
                    !after.len().is_multiple_of(4),
                    "a torn write ends inside a write: {}",
                    after.len()
                );
            }
            // After the crash what survived is durable.
            assert_eq!(d.durable_contents("a/x"), Some(&after[..]));
        }
        assert!(torn_seen);
    }

    #[test]
    fn bit_flip_hits_only_unsynced_batch_bytes() {
        // A fake batch: 12-byte prefix with length, 61+ bytes in all.
        let mut batch = vec![0u8; 80];
        batch[8..12].copy_from_slice(&(80i32 - 12).to_be_bytes());
        batch[16] = 2;
        let model = CrashModel {
            lose_all_p: 0.0,
            tear_p: 0.0,
            bit_flip_p: 1.0,
        };
        let mut flipped = 0;
        for seed in 0..32 {
            let mut d = disk_with_file("p/0.log");
            ok(&mut d, append("p/0.log", 0, &batch));
            ok(&mut d, sync("p/0.log"));
            ok(&mut d, append("p/0.log", 80, &batch));
            let report = d.crash(&mut ChaCha8Rng::seed_from_u64(seed), &model);
            let after = d.contents("p/0.log").unwrap();
            assert_eq!(&after[..80], &batch[..], "durable bytes never flip");
            for (file, pos) in &report.flips {
                assert_eq!(file, "p/0.log");
                assert!((80 + 16..160).contains(pos), "flip at {pos}");
                flipped += 1;
            }
        }
        assert!(flipped > 0);
    }

    #[test]
    fn sync_error_and_full_disk() {
        let mut d = disk_with_file("a/x");
        let full = OpFaults {
            no_space: true,
            fail_sync: false,
        };
        assert_eq!(
            d.apply(&append("a/x", 0, b"zz"), full),
            IoResult::Err(IoError::NoSpace)
        );
        assert_eq!(d.contents("a/x"), Some(&b""[..]));
        ok(&mut d, append("a/x", 0, b"zz"));
        let eio = OpFaults {
            no_space: false,
            fail_sync: true,
        };
        assert!(matches!(
            d.apply(&sync("a/x"), eio),
            IoResult::Err(IoError::Other(_))
        ));
        assert_eq!(d.durable_contents("a/x"), Some(&b""[..]));
        // Retrying the fsync "works" but makes nothing durable (fsyncgate).
        ok(&mut d, sync("a/x"));
        assert_eq!(d.durable_contents("a/x"), Some(&b""[..]));
        d.crash(&mut ChaCha8Rng::seed_from_u64(0), &CrashModel::LOSE_ALL);
        assert_eq!(d.contents("a/x"), Some(&b""[..]));
        // After the crash (the file reopened) syncs work again.
        ok(&mut d, append("a/x", 0, b"zz"));
        ok(&mut d, sync("a/x"));
        assert_eq!(d.durable_contents("a/x"), Some(&b"zz"[..]));
    }

    #[test]
    fn namespace_ops_are_durable_and_listed_sorted() {
        let mut d = Disk::new();
        assert_eq!(
            d.apply(
                &IoOp::CreateFile {
                    file: "nodir/f".into()
                },
                OpFaults::default()
            ),
            IoResult::Err(IoError::NotFound)
        );
        ok(
            &mut d,
            IoOp::CreateDir {
                dir: "t-1/sub".into(),
            },
        );
        ok(
            &mut d,
            IoOp::CreateFile {
                file: "t-1/b.log".into(),
            },
        );
        ok(&mut d, append("t-1/b.log", 0, b"123"));
        ok(
            &mut d,
            IoOp::WriteState {
                file: "state".into(),
                data: Bytes::from_static(b"s1"),
            },
        );
        ok(
            &mut d,
            IoOp::Rename {
                from: "t-1/b.log".into(),
                to: "t-1/a.log".into(),
            },
        );
        d.crash(&mut ChaCha8Rng::seed_from_u64(0), &CrashModel::LOSE_ALL);
        let listing = d.apply(&IoOp::List { dir: "t-1".into() }, OpFaults::default());
        assert_eq!(
            listing,
            IoResult::List(vec![
                DirEntry {
                    name: "a.log".into(),
                    size_bytes: 0,
                    is_dir: false
                },
                DirEntry {
                    name: "sub".into(),
                    size_bytes: 0,
                    is_dir: true
                },
            ])
        );
        assert_eq!(d.contents("state"), Some(&b"s1"[..]));
        ok(&mut d, IoOp::Delete { path: "t-1".into() });
        ok(&mut d, IoOp::Delete { path: "t-1".into() });
        assert_eq!(
            d.apply(&IoOp::List { dir: "t-1".into() }, OpFaults::default()),
            IoResult::Err(IoError::NotFound)
        );
        assert_eq!(
            d.apply(&IoOp::List { dir: "".into() }, OpFaults::default()),
            IoResult::List(vec![DirEntry {
                name: "state".into(),
                size_bytes: 2,
                is_dir: false
            }])
        );
    }

    #[test]
    fn read_and_truncate() {
        let mut d = disk_with_file("a/x");
        ok(&mut d, append("a/x", 0, b"0123456789"));
        assert_eq!(
            d.apply(
                &IoOp::Read {
                    file: "a/x".into(),
                    position: 8,
                    len: 10
                },
                OpFaults::default()
            ),
            IoResult::Read(Bytes::from_static(b"89"))
        );
        ok(
            &mut d,
            IoOp::Truncate {
                file: "a/x".into(),
                len: 4,
            },
        );
        d.crash(&mut ChaCha8Rng::seed_from_u64(0), &CrashModel::LOSE_ALL);
        assert_eq!(d.contents("a/x"), Some(&b"0123"[..]));
    }

    #[test]
    fn append_past_the_end_leaves_a_hole_and_rewriting_synced_bytes_is_reported() {
        let mut d = disk_with_file("a/x");
        ok(&mut d, append("a/x", 3, b"z"));
        assert!(d.take_misuses().is_empty());
        assert_eq!(d.contents("a/x"), Some(&b"\0\0\0z"[..]));
        ok(&mut d, sync("a/x"));
        ok(&mut d, append("a/x", 2, b"yy"));
        assert_eq!(d.take_misuses().len(), 1);
        assert_eq!(d.contents("a/x"), Some(&b"\0\0yy"[..]));
        assert_eq!(d.durable_contents("a/x"), Some(&b"\0\0"[..]));
    }

    #[test]
    fn io_queue_keeps_order_per_key_and_reorders_across_keys() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut q = IoQueue::default();
        let mut done: Vec<(u64, u64, Token, String)> = Vec::new();
        for token in 0..200u64 {
            let key = ["a", "b", "c"][rng.gen_range(0..3)];
            let op = sync(&format!("{key}/f"));
            let now = token / 4;
            let at = q.submit(token, op, now, rng.gen_range(0..20)).unwrap();
            done.push((at, token, token, key.to_string()));
        }
        // The event queue orders by (time, insertion).
        done.sort();
        let mut last_per_key: BTreeMap<String, Token> = BTreeMap::new();
        let mut reordered = false;
        let mut last_token = None;
        for (_, _, token, key) in &done {
            if let Some(prev) = last_per_key.insert(key.clone(), *token) {
                assert!(prev < *token, "key {key}: {prev} completed after {token}");
            }
            if let Some(lt) = last_token {
                reordered |= lt > *token;
            }
            last_token = Some(*token);
            assert!(q.complete(*token).is_some());
        }
        assert!(
            reordered,
            "different keys should interleave out of emission order"
        );
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn in_flight_ops_group_by_key_in_emission_order() {
        let mut q = IoQueue::default();
        for (token, key) in [(9u64, "b"), (3, "a"), (5, "b"), (1, "a")] {
            q.submit(token, sync(&format!("{key}/f{token}")), 0, 1).unwrap();
        }
        assert_eq!(
            q.submit(5, sync("c/x"), 0, 1),
            None,
            "tokens are unique while in flight"
        );
        let groups = q.in_flight_by_key();
        assert_eq!(
            groups,
            vec![vec![sync("a/f3"), sync("a/f1")], vec![sync("b/f9"), sync("b/f5")]]
        );
    }
}
