//! The disk executor on a temp dir: each op's meaning (engine/src/io.rs), errors as values,
//! and per-key ordering under concurrency.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gregor_engine::{DirEntry, IoError, IoOp, IoResult, Token};
use gregor_net::disk::{Completion, DiskConfig, DiskExecutor};

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    dir: tempfile::TempDir,
    exec: DiskExecutor,
    done: mpsc::Receiver<(Token, IoResult)>,
    next_token: Token,
}

impl Harness {
    fn new(writer_threads: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (tx, done) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let completion: Completion = Arc::new(move |done: Vec<(Token, IoResult)>| {
            let tx = tx.lock().unwrap();
            for completion in done {
                tx.send(completion).unwrap();
            }
        });
        let config = DiskConfig {
            root: dir.path().to_path_buf(),
            writer_threads,
            reader_threads: 2,
        };
        let exec = DiskExecutor::start(config, completion).unwrap();
        Harness {
            dir,
            exec,
            done,
            next_token: 1,
        }
    }

    /// Runs one op and waits for its completion.
    fn run(&mut self, op: IoOp) -> IoResult {
        let token = self.next_token;
        self.next_token += 1;
        self.exec.submit(token, op).unwrap();
        let (got, result) = self.done.recv_timeout(WAIT).expect("op did not complete");
        assert_eq!(got, token);
        result
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

fn append(file: &str, position: u64, data: &'static [u8]) -> IoOp {
    IoOp::Append {
        file: file.into(),
        position,
        data: vec![Bytes::from_static(data)],
    }
}

fn read(file: &str, position: u64, len: u32) -> IoOp {
    IoOp::Read {
        file: file.into(),
        position,
        len,
    }
}

fn bytes(b: &'static [u8]) -> IoResult {
    IoResult::Read(Bytes::from_static(b))
}

#[test]
fn file_lifecycle() {
    let mut h = Harness::new(4);
    assert_eq!(
        h.run(IoOp::CreateDir {
            dir: "t-0/sub".into()
        }),
        IoResult::Done
    );
    assert_eq!(
        h.run(IoOp::CreateDir { dir: "t-0".into() }),
        IoResult::Done,
        "exists is fine"
    );
    assert_eq!(
        h.run(IoOp::CreateFile {
            file: "t-0/a.log".into()
        }),
        IoResult::Done
    );
    assert_eq!(h.run(append("t-0/a.log", 0, b"hello ")), IoResult::Done);
    assert_eq!(h.run(append("t-0/a.log", 6, b"world")), IoResult::Done);
    let pieces = IoOp::Append {
        file: "t-0/a.log".into(),
        position: 11,
        data: vec![Bytes::from_static(b", two"), Bytes::from_static(b" pieces")],
    };
    assert_eq!(h.run(pieces), IoResult::Done, "pieces are written back to back");
    assert_eq!(
        h.run(IoOp::Sync {
            file: "t-0/a.log".into()
        }),
        IoResult::Done
    );
    assert_eq!(
        h.run(read("t-0/a.log", 0, 100)),
        bytes(b"hello world, two pieces"),
        "short at EOF"
    );
    assert_eq!(h.run(read("t-0/a.log", 6, 3)), bytes(b"wor"));
    assert_eq!(
        h.run(read("t-0/a.log", 50, 3)),
        bytes(b""),
        "past EOF reads nothing"
    );
    assert_eq!(
        h.run(IoOp::Truncate {
            file: "t-0/a.log".into(),
            len: 5
        }),
        IoResult::Done
    );
    assert_eq!(h.run(read("t-0/a.log", 0, 100)), bytes(b"hello"));
    assert_eq!(
        h.run(IoOp::CreateFile {
            file: "t-0/a.log".into()
        }),
        IoResult::Done,
        "create truncates"
    );
    assert_eq!(h.run(read("t-0/a.log", 0, 100)), bytes(b""));
    assert_eq!(std::fs::metadata(h.path("t-0/a.log")).unwrap().len(), 0);
}

#[test]
fn missing_things() {
    let mut h = Harness::new(2);
    assert_eq!(h.run(read("nope/x", 0, 10)), IoResult::Err(IoError::NotFound));
    assert_eq!(h.run(append("nope/x", 0, b"x")), IoResult::Err(IoError::NotFound));
    assert_eq!(
        h.run(IoOp::Sync { file: "nope".into() }),
        IoResult::Err(IoError::NotFound)
    );
    assert_eq!(
        h.run(IoOp::List { dir: "nope".into() }),
        IoResult::Err(IoError::NotFound)
    );
    assert_eq!(h.run(IoOp::Delete { path: "nope".into() }), IoResult::Done);
    assert_eq!(
        h.run(IoOp::Delete {
            path: "nope/deeper".into()
        }),
        IoResult::Done
    );
    assert!(matches!(
        h.run(IoOp::CreateFile {
            file: "../escape".into()
        }),
        IoResult::Err(IoError::Other(_))
    ));
    assert!(!h.dir.path().parent().unwrap().join("escape").exists());
    // The data directory itself: listed and "created", never deleted, not a file.
    assert_eq!(h.run(IoOp::CreateDir { dir: "".into() }), IoResult::Done);
    assert_eq!(h.run(IoOp::List { dir: "".into() }), IoResult::List(vec![]));
    assert!(matches!(
        h.run(IoOp::Delete { path: "".into() }),
        IoResult::Err(IoError::Other(_))
    ));
    assert!(matches!(
        h.run(IoOp::Delete { path: "/.".into() }),
        IoResult::Err(IoError::Other(_))
    ));
    assert!(h.dir.path().is_dir());
    assert_eq!(h.run(read("", 0, 1)), IoResult::Err(IoError::NotFound));
    assert_eq!(
        h.run(IoOp::CreateFile { file: "".into() }),
        IoResult::Err(IoError::NotFound)
    );
    assert_eq!(
        h.run(IoOp::CreateFile {
            file: "no-dir/x".into()
        }),
        IoResult::Err(IoError::NotFound),
        "files are created only in existing directories"
    );
}

#[test]
fn list_is_sorted_with_sizes() {
    let mut h = Harness::new(2);
    h.run(IoOp::CreateDir {
        dir: "p/z-dir".into(),
    });
    for (name, data) in [("p/b", &b"12345"[..]), ("p/a", b""), ("p/c", b"1")] {
        h.run(IoOp::CreateFile { file: name.into() });
        h.run(IoOp::Append {
            file: name.into(),
            position: 0,
            data: vec![Bytes::copy_from_slice(data)],
        });
    }
    let entry = |name: &str, size_bytes, is_dir| DirEntry {
        name: name.into(),
        size_bytes,
        is_dir,
    };
    match h.run(IoOp::List { dir: "p".into() }) {
        IoResult::List(entries) => {
            let z = entries[3].size_bytes;
            assert_eq!(
                entries,
                vec![
                    entry("a", 0, false),
                    entry("b", 5, false),
                    entry("c", 1, false),
                    entry("z-dir", z, true)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rename_delete_and_state_replace_what_paths_name() {
    let mut h = Harness::new(2);
    h.run(IoOp::CreateDir { dir: "p".into() });
    h.run(IoOp::CreateFile { file: "p/old".into() });
    h.run(append("p/old", 0, b"old bytes"));
    h.run(IoOp::CreateFile { file: "p/new".into() });
    h.run(append("p/new", 0, b"new bytes"));
    assert_eq!(
        h.run(read("p/old", 0, 100)),
        bytes(b"old bytes"),
        "caches a handle"
    );
    let rename = IoOp::Rename {
        from: "p/new".into(),
        to: "p/old".into(),
    };
    assert_eq!(h.run(rename), IoResult::Done);
    assert_eq!(
        h.run(read("p/old", 0, 100)),
        bytes(b"new bytes"),
        "no stale handle"
    );
    assert_eq!(h.run(read("p/new", 0, 100)), IoResult::Err(IoError::NotFound));

    let state = |data: &'static [u8]| IoOp::WriteState {
        file: "meta.state".into(),
        data: Bytes::from_static(data),
    };
    assert_eq!(h.run(state(b"v1")), IoResult::Done);
    assert_eq!(h.run(read("meta.state", 0, 100)), bytes(b"v1"));
    assert_eq!(h.run(state(b"version 2")), IoResult::Done);
    assert_eq!(h.run(read("meta.state", 0, 100)), bytes(b"version 2"));
    assert!(!h.path("meta.state.tmp").exists());

    assert_eq!(
        h.run(IoOp::Delete { path: "p".into() }),
        IoResult::Done,
        "a whole dir"
    );
    assert!(!h.path("p").exists());
    assert_eq!(h.run(read("p/old", 0, 100)), IoResult::Err(IoError::NotFound));
    assert_eq!(
        h.run(IoOp::Delete {
            path: "meta.state".into()
        }),
        IoResult::Done
    );
    assert!(!h.path("meta.state").exists());
}

/// Many keys at once: within a key, ops complete in emission order and their effects land in
/// that order (the last write to a position wins); across keys anything goes.
#[test]
fn ops_of_one_key_run_in_emission_order() {
    const KEYS: usize = 8;
    const WRITES: u64 = 200;
    let mut h = Harness::new(4);
    for k in 0..KEYS {
        h.run(IoOp::CreateDir { dir: format!("k{k}") });
        h.run(IoOp::CreateFile {
            file: format!("k{k}/f"),
        });
    }
    let mut token_key = std::collections::HashMap::new();
    let mut token: Token = 1_000;
    for i in 0..WRITES {
        for k in 0..KEYS {
            // Every write hits position 0 (order decides the final value) and its own slot.
            for position in [0, 8 * (i + 1)] {
                token += 1;
                token_key.insert(token, k);
                let op = IoOp::Append {
                    file: format!("k{k}/f"),
                    position,
                    data: vec![Bytes::copy_from_slice(&i.to_be_bytes())],
                };
                h.exec.submit(token, op).unwrap();
            }
        }
    }
    let mut last_per_key = [0; KEYS];
    for _ in 0..token_key.len() {
        let (t, result) = h.done.recv_timeout(WAIT).unwrap();
        assert_eq!(result, IoResult::Done);
        let k = token_key[&t];
        assert!(
            t > last_per_key[k],
            "key {k}: token {t} completed after {}",
            last_per_key[k]
        );
        last_per_key[k] = t;
    }
    for k in 0..KEYS {
        let content = std::fs::read(h.path(&format!("k{k}/f"))).unwrap();
        assert_eq!(content.len() as u64, 8 * (WRITES + 1));
        assert_eq!(
            &content[..8],
            &(WRITES - 1).to_be_bytes(),
            "key {k}: last write wins"
        );
        for i in 0..WRITES {
            let at = (8 * (i + 1)) as usize;
            assert_eq!(&content[at..at + 8], &i.to_be_bytes());
        }
    }
}

/// Syncs and reads drop the cached pages of all but a file's last few MiB (the disk
/// executor's page-cache recycling): every byte still reads back as written, from the
/// dropped part, the boundary and the cached tail, before and after more appends.
#[test]
fn recycled_pages_read_back_as_written() {
    let mut h = Harness::new(2);
    assert_eq!(h.run(IoOp::CreateDir { dir: "t-0".into() }), IoResult::Done);
    let file = "t-0/0.log";
    assert_eq!(h.run(IoOp::CreateFile { file: file.into() }), IoResult::Done);
    let piece = |i: u64| -> Bytes {
        Bytes::from(
            (0..(4u64 << 20))
                .map(|j| ((i * 131 + j * 7) % 251) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let expected = |at: u64, len: u64| -> Vec<u8> {
        (at..at + len)
            .map(|p| (((p >> 22) * 131 + (p & ((4 << 20) - 1)) * 7) % 251) as u8)
            .collect()
    };
    // 24 MiB in six 4 MiB appends, a sync after each pair.
    for i in 0..6u64 {
        let op = IoOp::Append {
            file: file.into(),
            position: i << 22,
            data: vec![piece(i)],
        };
        assert_eq!(h.run(op), IoResult::Done);
        if i % 2 == 1 {
            assert_eq!(h.run(IoOp::Sync { file: file.into() }), IoResult::Done);
        }
    }
    let size = 24u64 << 20;
    // Whole and odd ranges before the cached tail (read with O_DIRECT where the file system
    // takes it), across its start, and inside it.
    let before = [
        (0, 1 << 20),
        (5 << 20, 3 << 20),
        (4097, 12_345),
        (size - (8 << 20) - 5000, 4000),
    ];
    let after = [
        (size - (9 << 20), 2 << 20),
        (size - 4096, 4096),
        (size - 100, 100),
    ];
    for (at, len) in before.into_iter().chain(after) {
        let IoResult::Read(got) = h.run(read(file, at, len as u32)) else {
            panic!("read at {at}")
        };
        assert!(got[..] == expected(at, len)[..], "bytes at {at}..+{len}");
        // A second read of a range the first dropped reads the disk again.
        let IoResult::Read(again) = h.run(read(file, at, len as u32)) else {
            panic!("read at {at}")
        };
        assert!(again == got, "second read at {at}");
    }
}
