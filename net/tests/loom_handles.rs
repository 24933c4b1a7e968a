//! Loom models of the disk workers' handle cache (`gregor_net::disk::handles::HandleMap`, the
//! bookkeeping of the `HandleCache` every disk worker shares). Loom cannot model real files,
//! so the models drive the map with a fake file system (`Fs`: each name maps to an inode;
//! inodes are never reused) whose `open` the map calls exactly where the real cache calls
//! `OpenOptions::open`, without its lock held. The ops mirror net/src/disk/ops.rs: `delete`
//! removes then `forget`s, `create_file` creates then `put`s, a read or append `get`s.
//!
//! Invariants checked under every explored interleaving:
//! * Concurrent `get`s of one path each return the file that path names, and leave exactly
//!   one cached entry for it (opening it once or twice is fine).
//! * A `get` that starts after a `delete` (or a `forget` of an enclosing directory) returned
//!   never sees the deleted file: the path is `NotFound`, and nothing stale stays cached, even
//!   when a reader's `open` raced the delete and finished after it.
//! * A `get` that starts after a `create_file` (`put`) returned sees the new file, never the
//!   one it replaced.
//! * No more than `capacity` handles are ever cached, however inserts interleave, and every
//!   cached handle is the file its path named when it was opened.
//! * Nothing panics or deadlocks (loom reports both).
//!
//! Run (see net/src/sync.rs for why it is a feature of gregor-net):
//!
//! ```text
//! cargo test --workspace --features gregor-net/loom --test loom_handles
//! ```
//!
//! Without the `loom` feature this file compiles to nothing.
#![cfg(feature = "loom")]

use std::collections::HashMap;
use std::io;

use gregor_net::disk::handles::HandleMap;
use loom::sync::{Arc, Mutex};
use loom::thread;

const PREEMPTIONS_DEFAULT: usize = 3;

/// An inode number: which file a handle is open on.
type Inode = u64;

/// A fake file system: what each path names now. Every op takes its lock, so loom explores
/// the interleavings of file-system ops with the map's own critical sections.
struct Fs {
    state: Mutex<FsState>,
}

struct FsState {
    names: HashMap<String, Inode>,
    next_inode: Inode,
    opens: usize,
}

impl Fs {
    /// A file system holding `files`, with inodes 1, 2, … in order.
    fn with(files: &[&str]) -> Fs {
        let names: HashMap<String, Inode> = files.iter().zip(1..).map(|(f, i)| (f.to_string(), i)).collect();
        Fs {
            state: Mutex::new(FsState {
                next_inode: names.len() as Inode + 1,
                names,
                opens: 0,
            }),
        }
    }

    fn open(&self, path: &str) -> io::Result<Inode> {
        let mut fs = self.state.lock().unwrap();
        let inode = *fs.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        fs.opens += 1;
        Ok(inode)
    }

    /// Removes `path` and everything under it.
    fn remove(&self, path: &str) {
        let mut fs = self.state.lock().unwrap();
        fs.names
            .retain(|name, _| !(name == path || name.starts_with(&format!("{path}/"))));
    }

    /// Creates a new (empty) file at `path`.
    fn create(&self, path: &str) -> Inode {
        let mut fs = self.state.lock().unwrap();
        let inode = fs.next_inode;
        fs.next_inode += 1;
        fs.names.insert(path.to_string(), inode);
        inode
    }

    fn opens(&self) -> usize {
        self.state.lock().unwrap().opens
    }
}

struct Shared {
    fs: Fs,
    map: HandleMap<Inode>,
}

impl Shared {
    fn new(files: &[&str], capacity: usize) -> Arc<Shared> {
        Arc::new(Shared {
            fs: Fs::with(files),
            map: HandleMap::new(capacity),
        })
    }

    /// What a worker's read, append or sync does first.
    fn get(&self, path: &str) -> io::Result<Inode> {
        self.map.get(path, || self.fs.open(path)).map(|h| *h)
    }

    /// ops.rs `delete`: remove, then forget.
    fn delete(&self, path: &str) {
        self.fs.remove(path);
        self.map.forget(path);
    }

    /// ops.rs `create_file`: create, then put the new handle.
    fn create_file(&self, path: &str) -> Inode {
        let inode = self.fs.create(path);
        self.map.put(path, inode);
        inode
    }
}

fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions (loom's advice: 2-3 find nearly every bug) keep the run to seconds;
    // LOOM_MAX_PREEMPTIONS overrides it, e.g. for an exhaustive run.
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS_DEFAULT);
    }
    builder.check(model);
}

fn not_found(result: &io::Result<Inode>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::NotFound)
}

#[test]
fn concurrent_gets_of_one_path_return_its_file_and_cache_one_entry() {
    check(|| {
        let shared = Shared::new(&["p/00.log"], 4);
        let other = {
            let shared = shared.clone();
            thread::spawn(move || shared.get("p/00.log").unwrap())
        };
        let mine = shared.get("p/00.log").unwrap();
        let theirs = other.join().unwrap();
        assert_eq!((mine, theirs), (1, 1));
        assert_eq!(shared.map.len(), 1, "one entry for one path");
        assert_eq!(shared.map.cached("p/00.log").as_deref(), Some(&1));
        let opens = shared.fs.opens();
        assert!((1..=2).contains(&opens), "opened {opens} times");
        // Now cached: no further open.
        assert_eq!(shared.get("p/00.log").unwrap(), 1);
        assert_eq!(shared.fs.opens(), opens);
    });
}

#[test]
fn a_get_racing_a_delete_never_yields_the_deleted_file_after_it() {
    check(|| {
        // The delete names the directory, as a partition's deletion does; its file goes too.
        let shared = Shared::new(&["p/00.log"], 4);
        let reader = {
            let shared = shared.clone();
            thread::spawn(move || shared.get("p/00.log"))
        };
        shared.delete("p");
        assert!(
            not_found(&shared.get("p/00.log")),
            "a get after the delete returned must not find the file"
        );
        // Before (or racing) the delete the reader may still have opened it.
        let raced = reader.join().unwrap();
        assert!(
            matches!(raced, Ok(1)) || not_found(&raced),
            "reader got {raced:?}"
        );
        assert!(shared.map.is_empty(), "nothing of the deleted file stays cached");
        assert!(not_found(&shared.get("p/00.log")));
    });
}

#[test]
fn a_get_racing_a_delete_and_recreate_never_yields_the_old_file_after_it() {
    check(|| {
        let shared = Shared::new(&["s"], 4);
        let reader = {
            let shared = shared.clone();
            thread::spawn(move || shared.get("s"))
        };
        shared.delete("s");
        let new = shared.create_file("s");
        assert_eq!(new, 2);
        assert_eq!(
            shared.get("s").unwrap(),
            new,
            "a get after create_file returned sees the new file"
        );
        let raced = reader.join().unwrap();
        assert!(
            matches!(raced, Ok(1) | Ok(2)) || not_found(&raced),
            "reader got {raced:?}"
        );
        assert_eq!(shared.map.len(), 1);
        assert_eq!(shared.map.cached("s").as_deref(), Some(&new));
    });
}

#[test]
fn concurrent_inserts_never_exceed_the_capacity_and_cache_only_right_files() {
    const CAPACITY: usize = 2;
    // Inodes 1, 2, 3 in this order.
    const FILES: [&str; 3] = ["a", "b", "c"];
    let inode = |path: &str| FILES.iter().position(|f| *f == path).unwrap() as Inode + 1;
    check(move || {
        let shared = Shared::new(&FILES, CAPACITY);
        let worker = |paths: &'static [&'static str], shared: Arc<Shared>| {
            move || {
                for path in paths {
                    assert_eq!(shared.get(path).unwrap(), inode(path));
                    assert!(shared.map.len() <= CAPACITY);
                }
            }
        };
        let other = thread::spawn(worker(&["a", "b"], shared.clone()));
        worker(&["c", "a"], shared.clone())();
        other.join().unwrap();
        assert_eq!(shared.map.len(), CAPACITY);
        for path in FILES {
            if let Some(cached) = shared.map.cached(path) {
                assert_eq!(*cached, inode(path), "{path} caches another file");
            }
        }
    });
}
