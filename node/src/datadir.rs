//! The data directory: created if missing, checked writable, and locked for the life of the
//! process with an exclusive `flock` on `<dir>/.lock`, so two brokers never share it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use crate::NodeError;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = ".lock";

/// A locked data directory; the lock is released when this is dropped (or the process dies).
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

impl DataDir {
    pub fn open(path: &Path) -> Result<DataDir, NodeError> {
        let unusable = |e: io::Error| NodeError::DataDir {
            dir: path.display().to_string(),
            reason: gregor_net::describe_io_error(&e),
        };
        std::fs::create_dir_all(path).map_err(unusable)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))
            .map_err(unusable)?;
        // SAFETY: flock only reads the descriptor, which `lock` keeps open for this call.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(NodeError::Locked(path.display().to_string()));
            }
            return Err(unusable(e));
        }
        // The lock file proves we can create files; prove we can write one too.
        lock.set_len(0).map_err(unusable)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let first = DataDir::open(&path).unwrap();
        let e = DataDir::open(&path).unwrap_err();
        assert!(matches!(e, NodeError::Locked(_)), "{e}");
        drop(first);
        DataDir::open(&path).unwrap();
    }

    #[test]
    fn a_path_under_a_file_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = DataDir::open(&file.join("data")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
