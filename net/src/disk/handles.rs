//! Open file handles, shared by every disk worker and keyed by the engine's relative path,
//! so appends, syncs and reads skip `open`. Bounded (least recently used closed first).
//! A path is forgotten after the op that changes what it names (delete, rename, replace);
//! a generation counter keeps a reader that raced such an op from caching a stale handle.
//!
//! The bookkeeping ([`HandleMap`]) is generic over the handle and takes the `open` as a
//! closure, so the loom model tests (net/tests/loom_handles.rs) can drive it with a fake
//! file system; [`HandleCache`] is that map over real [`File`]s. Invariants, all under every
//! interleaving of workers:
//! * A path has at most one cached handle, and at most `capacity` handles are cached.
//! * Once [`HandleMap::forget`] (or [`HandleMap::put`]) of a path has returned, no `get`
//!   that starts later returns a handle opened before it: an `open` that raced the op is
//!   returned to its caller but not cached.
//! * A cached handle is one that `get` opened, or that `put` stored, for that very path.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::readahead::ReadAhead;
use crate::sync::{lock, Mutex};

/// Open handles kept at most (the process also needs descriptors for sockets).
pub(crate) const HANDLES_MAX: usize = 512;

/// The real files under the data directory, opened through a [`HandleMap`].
pub(crate) struct HandleCache {
    root: PathBuf,
    files: HandleMap<File>,
    /// Prefetched ranges of log files (net/src/disk/readahead.rs), dropped with the path.
    pub(crate) readahead: ReadAhead,
}

impl HandleCache {
    pub(crate) fn new(root: PathBuf) -> HandleCache {
        HandleCache {
            root,
            files: HandleMap::new(HANDLES_MAX),
            readahead: ReadAhead::default(),
        }
    }

    /// Where the normalized path `rel` (see [`normalize`]) lives; `""` is the root itself.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        debug_assert!(normalize(rel).is_ok_and(|n| n == rel), "{rel} is not normalized");
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// An open read-write handle on the existing file at normalized path `rel` (`NotFound`
    /// if there is none).
    pub(crate) fn get(&self, rel: &str) -> io::Result<Arc<File>> {
        self.files.get(rel, || {
            OpenOptions::new().read(true).write(true).open(self.path(rel))
        })
    }

    /// Caches a handle just created for `rel`, replacing any older one.
    pub(crate) fn put(&self, rel: &str, file: File) {
        self.readahead.invalidate(rel);
        self.files.put(rel, file);
    }

    /// Drops the handles of `rel` and of everything under it. Call after the op that
    /// changed what `rel` names.
    pub(crate) fn forget(&self, rel: &str) {
        self.readahead.invalidate(rel);
        self.files.forget(rel);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }
}

/// The bookkeeping of [`HandleCache`]: at most `capacity` handles of type `H` by normalized
/// path, least recently used evicted first. See the module docs for its invariants.
pub struct HandleMap<H> {
    capacity: usize,
    inner: Mutex<Inner<H>>,
}

struct Inner<H> {
    files: HashMap<String, Entry<H>>,
    /// Bumped by every `put` and `forget`: an `open` that started before one is not cached.
    generation: u64,
    /// Clock of the least-recently-used order.
    uses: u64,
}

struct Entry<H> {
    file: Arc<H>,
    last_use: u64,
}

impl<H> HandleMap<H> {
    /// An empty map holding at most `capacity` (at least 1) handles.
    pub fn new(capacity: usize) -> HandleMap<H> {
        assert!(capacity > 0, "a handle map holds at least one handle");
        HandleMap {
            capacity,
            inner: Mutex::new(Inner {
                files: HashMap::new(),
                generation: 0,
                uses: 0,
            }),
        }
    }

    /// The cached handle of normalized path `rel`, or a new one from `open` (run without the
    /// lock held), cached unless a `put` or `forget` ran meanwhile. `""` (the data directory)
    /// is never a file: `NotFound`.
    pub fn get(&self, rel: &str, open: impl FnOnce() -> io::Result<H>) -> io::Result<Arc<H>> {
        let generation = {
            // A worker never panics while holding the lock; if one did, the map is still sound.
            let mut inner = lock(&self.inner);
            inner.uses += 1;
            let uses = inner.uses;
            if let Some(entry) = inner.files.get_mut(rel) {
                entry.last_use = uses;
                return Ok(entry.file.clone());
            }
            inner.generation
        };
        if rel.is_empty() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let file = Arc::new(open()?);
        let mut inner = lock(&self.inner);
        if inner.generation == generation {
            inner.insert(rel, file.clone(), self.capacity);
        }
        Ok(file)
    }

    /// Caches a handle just created for `rel`, replacing any older one.
    pub fn put(&self, rel: &str, file: H) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        inner.insert(rel, Arc::new(file), self.capacity);
    }

    /// Drops the handles of `rel` and of everything under it. Call after the op that
    /// changed what `rel` names.
    pub fn forget(&self, rel: &str) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        inner.files.retain(|path, _| {
            !(path == rel || path.strip_prefix(rel).is_some_and(|rest| rest.starts_with('/')))
        });
    }

    /// Handles cached now.
    #[cfg(any(test, feature = "loom"))]
    pub fn len(&self) -> usize {
        lock(&self.inner).files.len()
    }

    /// Whether no handle is cached.
    #[cfg(feature = "loom")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The handle cached for `rel`, if any, without touching the use order.
    #[cfg(any(test, feature = "loom"))]
    pub fn cached(&self, rel: &str) -> Option<Arc<H>> {
        lock(&self.inner).files.get(rel).map(|e| e.file.clone())
    }
}

/// The engine's path in canonical form, as the simulator reads it: `/`-separated, empty and
/// `.` components dropped, `""` naming the data directory itself. `..` is refused, so no op
/// can reach outside the data directory.
pub(crate) fn normalize(rel: &str) -> io::Result<String> {
    let mut out = String::with_capacity(rel.len());
    for component in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path '{rel}' leaves the data directory"),
            ));
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(component);
    }
    Ok(out)
}

/// The directory holding normalized path `rel` (`""` for a top-level name).
pub(crate) fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

impl<H> Inner<H> {
    fn insert(&mut self, rel: &str, file: Arc<H>, capacity: usize) {
        self.uses += 1;
        let entry = Entry {
            file,
            last_use: self.uses,
        };
        self.files.insert(rel.to_string(), entry);
        if self.files.len() > capacity {
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.files.remove(&oldest);
            }
        }
        debug_assert!(self.files.len() <= capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_like_the_simulator_and_stay_under_the_root() {
        for (raw, norm) in [
            ("", ""),
            ("/", ""),
            (".", ""),
            ("a//b/./c/", "a/b/c"),
            ("/x", "x"),
        ] {
            assert_eq!(normalize(raw).unwrap(), norm, "{raw}");
        }
        for bad in ["..", "../x", "a/../../x"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        let c = HandleCache::new(PathBuf::from("/data"));
        assert_eq!(c.path("p-0/00.log"), PathBuf::from("/data/p-0/00.log"));
        assert_eq!(c.path(""), PathBuf::from("/data"));
        assert_eq!((parent("a/b/c"), parent("a")), ("a/b", ""));
        assert_eq!(c.get("").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn forget_drops_a_path_and_what_is_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = HandleCache::new(dir.path().to_path_buf());
        std::fs::create_dir(dir.path().join("a")).unwrap();
        for name in ["a/x", "a/y", "ab", "b"] {
            c.put(name, File::create(dir.path().join(name)).unwrap());
        }
        c.forget("a");
        assert_eq!(c.len(), 2, "ab and b stay");
        c.forget("ab");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let c = HandleCache::new(dir.path().to_path_buf());
        for i in 0..HANDLES_MAX + 10 {
            let name = format!("f{i}");
            std::fs::write(dir.path().join(&name), b"").unwrap();
            c.get(&name).unwrap();
        }
        assert_eq!(c.len(), HANDLES_MAX);
    }

    #[test]
    fn least_recently_used_is_evicted_and_a_raced_open_is_not_cached() {
        let m = HandleMap::new(2);
        let hit = |_: &str| -> io::Result<u32> { panic!("a cached path was opened again") };
        assert_eq!(*m.get("a", || Ok(1)).unwrap(), 1);
        assert_eq!(*m.get("b", || Ok(2)).unwrap(), 2);
        assert_eq!(
            *m.get("a", || hit("a")).unwrap(),
            1,
            "a is now more recent than b"
        );
        assert_eq!(*m.get("c", || Ok(3)).unwrap(), 3);
        assert_eq!(m.len(), 2);
        assert!(m.cached("b").is_none(), "b was least recently used");
        // An open overlapping a forget is handed back but not cached.
        let raced = m.get("d", || {
            m.forget("x");
            Ok(4)
        });
        assert_eq!(*raced.unwrap(), 4);
        assert!(m.cached("d").is_none());
        assert_eq!(m.get("", || Ok(9)).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
