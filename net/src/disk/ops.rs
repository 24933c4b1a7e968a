//! What each [`IoOp`] means on a real file system (engine/src/io.rs, and the simulator's
//! disk in sim/src/disk.rs for the corners), and how an OS error maps to an [`IoError`].
//! Paths are normalized first (`""` is the data directory). Every op that must be durable
//! on completion fsyncs the file and the directory entries it changed before returning.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write as _};
use std::os::unix::fs::FileExt as _;

use bytes::{Bytes, BytesMut};
use gregor_engine::{DirEntry, IoError, IoOp, IoResult};

use super::handles::{normalize, parent, HandleCache};
use super::readahead::{after_whole_batches, Prefetch, Taken};

/// `ENOSPC` and `EDQUOT` on Linux: the disk (or quota) is full.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// Runs one op to completion on the calling thread.
pub(crate) fn execute(handles: &HandleCache, op: IoOp) -> IoResult {
    let (what, raw) = describe(&op);
    let raw = raw.to_string();
    execute_normalized(handles, op).unwrap_or_else(|e| IoResult::Err(map_error(&e, what, &raw)))
}

fn execute_normalized(handles: &HandleCache, op: IoOp) -> io::Result<IoResult> {
    match op {
        IoOp::Append { file, position, data } => append(handles, &file_path(&file)?, position, &data),
        IoOp::Sync { file } => {
            let f = handles.get(&file_path(&file)?)?;
            f.sync_data()?;
            // The sync is done: recycling is advice, so a failed fstat only skips it.
            if let Ok(meta) = f.metadata() {
                let end = cached_tail_start(meta.len());
                drop_cached(&f, end.saturating_sub(RECYCLE_SPAN_BYTES), end);
            }
            Ok(IoResult::Done)
        }
        IoOp::Read { file, position, len } => read(handles, &file_path(&file)?, position, len),
        IoOp::Truncate { file, len } => truncate(handles, &file_path(&file)?, len),
        IoOp::CreateFile { file } => create_file(handles, &file_path(&file)?),
        IoOp::CreateDir { dir } => create_dir(handles, &normalize(&dir)?),
        IoOp::Rename { from, to } => rename(handles, &file_path(&from)?, &file_path(&to)?),
        IoOp::Delete { path } => delete(handles, &normalize(&path)?),
        IoOp::WriteState { file, data } => write_state(handles, &file_path(&file)?, &data),
        IoOp::List { dir } => list(handles, &normalize(&dir)?),
    }
}

/// A normalized path that must name something inside the data directory, not the directory
/// itself (which no file op can touch: `NotFound`, as in the simulator).
fn file_path(rel: &str) -> io::Result<String> {
    let path = normalize(rel)?;
    if path.is_empty() {
        return Err(ErrorKind::NotFound.into());
    }
    Ok(path)
}

fn describe(op: &IoOp) -> (&'static str, &str) {
    match op {
        IoOp::Append { file, .. } => ("append", file),
        IoOp::Sync { file } => ("sync", file),
        IoOp::Read { file, .. } => ("read", file),
        IoOp::Truncate { file, .. } => ("truncate", file),
        IoOp::CreateFile { file } => ("create", file),
        IoOp::CreateDir { dir } => ("create dir", dir),
        IoOp::Rename { from, .. } => ("rename", from),
        IoOp::Delete { path } => ("delete", path),
        IoOp::WriteState { file, .. } => ("write state", file),
        IoOp::List { dir } => ("list", dir),
    }
}

/// ENOENT → `NotFound`, ENOSPC/EDQUOT → `NoSpace`, anything else → `Other` naming op and path.
pub(crate) fn map_error(e: &io::Error, what: &str, path: &str) -> IoError {
    if e.kind() == ErrorKind::NotFound {
        return IoError::NotFound;
    }
    if e.kind() == ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT)) {
        return IoError::NoSpace;
    }
    IoError::Other(format!("{what} '{path}': {}", crate::describe_io_error(e)))
}

/// Writes the pieces back to back, with as few `pwritev` calls as the kernel allows. A crash
/// part way leaves a torn tail, which the engine's recovery handles like any short write.
fn append(handles: &HandleCache, file: &str, position: u64, data: &[Bytes]) -> io::Result<IoResult> {
    let f = handles.get(file)?;
    write_all_vectored_at(&f, data, position)?;
    Ok(IoResult::Done)
}

/// Pieces passed to one `pwritev` at most (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// `pwritev` until every byte of `pieces` is written at `position` onwards; a short write
/// continues where it stopped, `EINTR` retries, a write of 0 bytes is `WriteZero`.
fn write_all_vectored_at(f: &File, pieces: &[Bytes], position: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut at = position;
    // The first unwritten piece, and how much of it is already written.
    let (mut index, mut skip) = (0usize, 0usize);
    while index < pieces.len() {
        let iov: Vec<libc::iovec> = pieces[index..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, piece)| {
                let piece = if i == 0 { &piece[skip..] } else { &piece[..] };
                libc::iovec {
                    iov_base: piece.as_ptr() as *mut libc::c_void,
                    iov_len: piece.len(),
                }
            })
            .collect();
        let offset = libc::off_t::try_from(at).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        // `iov.len()` is at most IOV_MAX, which fits a c_int.
        let count = iov.len() as libc::c_int;
        // SAFETY: every iovec points into a live `Bytes` of `pieces` (borrowed for this call)
        // with its exact remaining length; pwritev only reads them.
        let written = unsafe { libc::pwritev(f.as_raw_fd(), iov.as_ptr(), count, offset) };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Non-negative, so the cast is lossless.
        let mut written = written as usize;
        if written == 0 && iov.iter().any(|v| v.iov_len > 0) {
            return Err(ErrorKind::WriteZero.into());
        }
        at += written as u64;
        // Step over the pieces this call finished.
        while index < pieces.len() && written >= pieces[index].len() - skip {
            written -= pieces[index].len() - skip;
            index += 1;
            skip = 0;
        }
        skip += written;
    }
    Ok(())
}

/// Reads up to `len` bytes at `position`: fewer at end of file, none past it.
fn read(handles: &HandleCache, file: &str, position: u64, len: u32) -> io::Result<IoResult> {
    let f = handles.get(file)?;
    let size = f.metadata()?.len();
    let available = size.saturating_sub(position).min(u64::from(len));
    let tail = cached_tail_start(size);
    // Bytes before the cached tail are on disk only (recycled): a consumer catching up may
    // find them prefetched (readahead.rs); otherwise read them straight from the device
    // into our buffer, with no page cache pages to take. Then prefetch what comes next.
    if available > 0 && position + available <= tail {
        let (bytes, prefetched) = match handles.readahead.take(file, position, available) {
            Some(Taken { bytes, prefetched }) if bytes.len() as u64 == available => (Some(bytes), prefetched),
            Some(Taken {
                bytes: head,
                prefetched,
            }) => {
                // The prefetch ended inside the range (this read asks more than the last
                // one did): read only the rest from the device.
                let at = position + head.len() as u64;
                let rest = read_direct(&handles.path(file), at, (available - head.len() as u64) as usize)?;
                let joined = rest.map(|rest| {
                    let mut joined = BytesMut::with_capacity(head.len() + rest.len());
                    joined.extend_from_slice(&head);
                    joined.extend_from_slice(&rest);
                    joined.freeze()
                });
                (joined, prefetched)
            }
            None => (read_direct(&handles.path(file), position, available as usize)?, 0),
        };
        if let Some(bytes) = bytes {
            if let Some(next) = after_whole_batches(position, &bytes) {
                // As much as the consumer of this file asked for lately: a fetch whose byte
                // budget ran out part way asks less than the next one will.
                let ahead = u64::from(len).max(prefetched).min(tail.saturating_sub(next));
                handles.readahead.schedule(file, next, ahead);
            }
            return Ok(IoResult::Read(bytes));
        }
    }
    // `available` is at most `len`, a u32, so it fits a usize on every supported target.
    let mut buf = vec![0u8; available as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(&mut buf[filled..], position + filled as u64) {
            Ok(0) => break, // the file shrank under us
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    let end = position + filled as u64;
    if end <= tail {
        drop_cached(&f, position, end);
    }
    Ok(IoResult::Read(Bytes::from(buf)))
}

/// Runs a prefetch job of the read-ahead (readahead.rs), unless a read took it over or the
/// file changed since it was queued.
pub(crate) fn prefetch(handles: &HandleCache, job: &Prefetch) {
    if !handles.readahead.start(job) {
        return;
    }
    let bytes = usize::try_from(job.len)
        .ok()
        .and_then(|len| {
            read_direct(&handles.path(&job.file), job.start, len)
                .ok()
                .flatten()
        })
        .filter(|bytes| !bytes.is_empty());
    handles.readahead.finish(job, bytes);
}

/// Bytes at the end of each file that stay in the page cache (consumers tailing a log read
/// them, or the engine's tail cache has them); pages before that are dropped once synced
/// (or once read), so the page cache recycles a few hot pages instead of growing.
///
/// Why: a page cache that grows takes never-used pages from the kernel, and where memory
/// is lazily backed (virtual machines with free-page reporting, as on the bench machine)
/// the first touch of each 4 KiB page costs microseconds: producing 1 KiB records cost
/// 3-4 us of broker CPU per record once the first few GiB were written, 0.8 us with the
/// pages recycled (`ci/bench.sh`, README "Benchmarks"). A catch-up read reads the disk
/// rather than a cached copy: with `O_DIRECT` ([`read_direct`]) where the file system takes
/// it, else buffered with its pages dropped after it.
const CACHED_TAIL_BYTES: u64 = 8 << 20;

/// Where the cached tail of a file of `size` bytes starts.
fn cached_tail_start(size: u64) -> u64 {
    size.saturating_sub(CACHED_TAIL_BYTES)
}

/// How far behind the cached tail a sync looks for pages to drop (a sync covering more
/// than this leaves the rest cached, which is harmless).
const RECYCLE_SPAN_BYTES: u64 = 64 << 20;

/// `O_DIRECT` reads go in blocks of this size, at offsets that are multiples of it.
const DIRECT_BLOCK: usize = 4096;

/// Reads `len` bytes at `position` with `O_DIRECT`, or `None` where the file system does not
/// take it (tmpfs, say), and the caller reads through the page cache instead. The read
/// covers whole blocks around the range, into a block-aligned buffer; the answer is the
/// range's slice of it. Short reads continue; fewer bytes than asked means the file ended.
pub(crate) fn read_direct(path: &std::path::Path, position: u64, len: usize) -> io::Result<Option<Bytes>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let start = position - position % DIRECT_BLOCK as u64;
    let lead = (position - start) as usize; // below DIRECT_BLOCK
    let span = (lead + len).div_ceil(DIRECT_BLOCK) * DIRECT_BLOCK;
    // A Vec with room to start an aligned span anywhere in its first block.
    let mut buf = vec![0u8; span + DIRECT_BLOCK];
    let skew = buf.as_ptr().align_offset(DIRECT_BLOCK);
    let mut filled = 0usize;
    while filled < span {
        let chunk = &mut buf[skew + filled..skew + span];
        match f.read_at(chunk, start + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && filled == 0 => return Ok(None),
            Err(e) => return Err(e),
        }
        if !filled.is_multiple_of(DIRECT_BLOCK) {
            break; // a short read ends at end of file
        }
    }
    let got = filled.saturating_sub(lead).min(len);
    Ok(Some(Bytes::from(buf).slice(skew + lead..skew + lead + got)))
}

/// Asks the kernel to drop the clean cached pages of `[start, end)`; advice only, so a
/// failure changes nothing but memory use and is ignored.
fn drop_cached(f: &File, start: u64, end: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(start),
        libc::off_t::try_from(end.saturating_sub(start)),
    ) else {
        return;
    };
    if len > 0 {
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is open.
        let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    }
}

fn truncate(handles: &HandleCache, file: &str, len: u64) -> io::Result<IoResult> {
    let f = handles.get(file)?;
    handles.readahead.invalidate(file);
    f.set_len(len)?;
    f.sync_all()?;
    Ok(IoResult::Done)
}

fn create_file(handles: &HandleCache, file: &str) -> io::Result<IoResult> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(handles.path(file))?;
    f.sync_all()?;
    sync_dir(handles, parent(file))?;
    handles.put(file, f);
    Ok(IoResult::Done)
}

/// Creates `dir` and its missing parents, then fsyncs every directory from its parent up to
/// the data directory, so each new entry is durable. `""` (the data directory) exists.
fn create_dir(handles: &HandleCache, dir: &str) -> io::Result<IoResult> {
    if dir.is_empty() {
        return Ok(IoResult::Done);
    }
    fs::create_dir_all(handles.path(dir))?;
    let mut current = dir;
    loop {
        current = parent(current);
        sync_dir(handles, current)?;
        if current.is_empty() {
            return Ok(IoResult::Done);
        }
    }
}

/// Renames a file or a directory (replacing the target as rename(2) does).
fn rename(handles: &HandleCache, from: &str, to: &str) -> io::Result<IoResult> {
    fs::rename(handles.path(from), handles.path(to))?;
    handles.forget(from);
    handles.forget(to);
    sync_dir(handles, parent(to))?;
    if parent(from) != parent(to) {
        sync_dir(handles, parent(from))?;
    }
    Ok(IoResult::Done)
}

/// Removes a file or a whole directory; a missing one is already deleted. The data
/// directory itself is never deleted.
fn delete(handles: &HandleCache, rel: &str) -> io::Result<IoResult> {
    if rel.is_empty() {
        return Err(io::Error::other("refusing to delete the data directory"));
    }
    let path = handles.path(rel);
    let removed = match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
        Ok(_) => fs::remove_file(&path),
        Err(e) => Err(e),
    };
    handles.forget(rel);
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(IoResult::Done),
        Err(e) => return Err(e),
    }
    sync_dir(handles, parent(rel))?;
    Ok(IoResult::Done)
}

/// Replaces `file` atomically: write `file.tmp`, fsync it, rename it over `file`, fsync dir.
fn write_state(handles: &HandleCache, file: &str, data: &[u8]) -> io::Result<IoResult> {
    let tmp_rel = format!("{file}.tmp");
    let tmp = handles.path(&tmp_rel);
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, handles.path(file))?;
    handles.forget(file);
    handles.forget(&tmp_rel);
    sync_dir(handles, parent(file))?;
    Ok(IoResult::Done)
}

/// One level of `dir`, sorted by name; directories have size 0 (as in the simulator).
/// Entries that vanish while listing are left out.
fn list(handles: &HandleCache, dir: &str) -> io::Result<IoResult> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(handles.path(dir))? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            size_bytes: if meta.is_dir() { 0 } else { meta.len() },
            is_dir: meta.is_dir(),
        });
    }
    entries.sort();
    Ok(IoResult::List(entries))
}

fn sync_dir(handles: &HandleCache, dir: &str) -> io::Result<()> {
    File::open(handles.path(dir))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_io_errors() {
        let e = io::Error::from_raw_os_error(ENOSPC);
        assert_eq!(map_error(&e, "append", "p/f"), IoError::NoSpace);
        let e = io::Error::from_raw_os_error(EDQUOT);
        assert_eq!(map_error(&e, "append", "p/f"), IoError::NoSpace);
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(map_error(&e, "read", "p/f"), IoError::NotFound);
        let e = io::Error::from_raw_os_error(5);
        assert_eq!(
            map_error(&e, "sync", "p/f"),
            IoError::Other("sync 'p/f': input/output error".into())
        );
    }

    #[test]
    fn vectored_writes_land_every_piece_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        // More pieces than one pwritev takes, empty ones among them, written at an offset.
        let pieces: Vec<Bytes> = (0..2500u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i % 7) as usize]))
            .collect();
        let expected: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        write_all_vectored_at(&f, &pieces, 10).unwrap();
        let written = fs::read(dir.path().join("f")).unwrap();
        assert_eq!(written.len(), 10 + expected.len());
        assert_eq!(&written[..10], &[0u8; 10]);
        assert_eq!(&written[10..], &expected[..]);
        // Nothing to write is no write at all.
        write_all_vectored_at(&f, &[Bytes::new()], 0).unwrap();
        write_all_vectored_at(&f, &[], 0).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), written);
    }
}
