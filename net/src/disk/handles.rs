//! Open file handles, shared by every disk worker and keyed by the engine's relative path,
//! so appends, syncs and reads skip `open`. Bounded (least recently used closed first).
//! A path is forgotten after the op that changes what it names (delete, rename, replace);
//! a generation counter keeps a reader that raced such an op from caching a stale handle.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open handles kept at most (the process also needs descriptors for sockets).
pub(crate) const HANDLES_MAX: usize = 512;

pub(crate) struct HandleCache {
    root: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, Entry>,
    generation: u64,
    uses: u64,
}

struct Entry {
    file: Arc<File>,
    last_use: u64,
}

impl HandleCache {
    pub(crate) fn new(root: PathBuf) -> HandleCache {
        HandleCache {
            root,
            inner: Mutex::new(Inner::default()),
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

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A worker never panics while holding the lock; if one did, the map is still sound.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An open read-write handle on the existing file at normalized path `rel` (`NotFound`
    /// if there is none).
    pub(crate) fn get(&self, rel: &str) -> io::Result<Arc<File>> {
        let generation = {
            let mut inner = self.lock();
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
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(self.path(rel))?);
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.insert(rel, file.clone());
        }
        Ok(file)
    }

    /// Caches a handle just created for `rel`, replacing any older one.
    pub(crate) fn put(&self, rel: &str, file: File) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.insert(rel, Arc::new(file));
    }

    /// Drops the handles of `rel` and of everything under it. Call after the op that
    /// changed what `rel` names.
    pub(crate) fn forget(&self, rel: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.files.retain(|path, _| {
            !(path == rel || path.strip_prefix(rel).is_some_and(|rest| rest.starts_with('/')))
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().files.len()
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

impl Inner {
    fn insert(&mut self, rel: &str, file: Arc<File>) {
        self.uses += 1;
        let entry = Entry {
            file,
            last_use: self.uses,
        };
        self.files.insert(rel.to_string(), entry);
        if self.files.len() > HANDLES_MAX {
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.files.remove(&oldest);
            }
        }
        debug_assert!(self.files.len() <= HANDLES_MAX);
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
}
