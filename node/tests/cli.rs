//! The `gregor` binary as an operator meets it: flags, config errors, a busy port, the data
//! directory lock, and a clean stop on SIGTERM. Each broker runs on a free port on
//! 127.0.0.1 (`--listen 127.0.0.1:0`, port read from the listening line) and is killed when
//! its test ends. Tests marked "needs Ready" wait for the engine to finish recovery.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a broker may take to print its listening line or to exit.
const WAIT: Duration = Duration::from_secs(20);

fn gregor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gregor"));
    c.env_remove("RUST_LOG");
    c
}

/// Runs gregor to completion (it must exit by itself) and returns its output.
fn run_to_exit(args: &[&str]) -> Output {
    let mut child = gregor()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("gregor {args:?} did not exit within {WAIT:?}");
    });
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn wait_exit(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running broker, killed on drop.
struct Broker {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Broker {
    /// Starts gregor and waits for its listening line (needs Ready from the engine).
    fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        let mut child = gregor()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut broker = Broker {
            child,
            addr: String::new(),
            stderr,
        };
        match rx.recv_timeout(WAIT) {
            Ok(line) => {
                let rest = line
                    .strip_prefix("gregor listening on ")
                    .unwrap_or_else(|| panic!("{line}"));
                let addr = rest.split_whitespace().next().unwrap();
                assert!(
                    rest.contains(&format!("(data in {})", data_dir.display())),
                    "{line}"
                );
                broker.addr = addr.to_string();
            }
            Err(_) => panic!(
                "no listening line within {WAIT:?} (does the engine emit Ready after Start?); stderr:\n{}",
                broker.stderr.lock().unwrap()
            ),
        }
        broker
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("gregor.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn help_lists_every_flag() {
    let out = run_to_exit(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--advertised-listener",
        "--data-dir",
        "--node-id",
        "--config",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn version_is_printed() {
    let out = run_to_exit(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("gregor {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_flags_are_refused() {
    let out = run_to_exit(&["--bogus"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("--bogus"), "{}", stderr_of(&out));
    let out = run_to_exit(&["--node-id", "abc"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("--node-id"), "{}", stderr_of(&out));
}

#[test]
fn bad_config_files_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases = [
        ("no.such.key = 1\n", "unknown config key 'no.such.key'"),
        ("\"num.partitions\" = 0\n", "'num.partitions'"),
        ("num.partitions = \n", "line 1"),
    ];
    for (text, expected) in cases {
        let file = write_config(dir.path(), text);
        let out = run_to_exit(&["--listen", "127.0.0.1:0", "--data-dir", data, "--config", &file]);
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{text}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&format!("gregor: config file {file}: ")), "{err}");
        assert!(err.contains(expected), "{expected} not in {err}");
    }
    let out = run_to_exit(&["--config", "/nonexistent/gregor.toml"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        "gregor: config file /nonexistent/gregor.toml: cannot read it: no such file or directory"
    );
    assert!(
        !Path::new(data).exists(),
        "nothing touched before the config is valid"
    );
}

#[test]
fn a_busy_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let out = run_to_exit(&["--listen", &busy, "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        format!("gregor: cannot listen on {busy}: address already in use")
    );
}

#[test]
fn an_unusable_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let data = file.join("data");
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        format!(
            "gregor: cannot use data directory {}: not a directory",
            data.display()
        )
    );
}

#[test]
fn a_data_dir_locked_by_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let lock = std::fs::File::create(dir.path().join("data/.lock")).unwrap();
    // SAFETY: flock only reads the descriptor `lock` keeps open.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let data = dir.path().join("data");
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        format!(
            "gregor: data directory {} is locked by another gregor process",
            data.display()
        )
    );
}

/// Needs Ready.
#[test]
fn a_second_gregor_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _first = Broker::start(&data, &[]);
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains(&format!("data directory {} is locked", data.display())),
        "{}",
        stderr_of(&out)
    );
}

/// Needs Ready, and Stopped after Shutdown.
#[test]
fn sigterm_stops_cleanly_and_frees_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    broker.signal(libc::SIGTERM);
    let status = wait_exit(&mut broker.child).expect("gregor did not stop after SIGTERM");
    assert!(
        status.success(),
        "{status:?}; stderr:\n{}",
        broker.stderr.lock().unwrap()
    );
    drop(broker);
    let again = Broker::start(&data, &[]);
    again.signal(libc::SIGINT);
}

/// Needs the engine to answer ApiVersions: the frame goes through the shell and back.
#[test]
fn answers_an_api_versions_request() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let mut s = TcpStream::connect(&broker.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // ApiVersions (18) v0, correlation id 42, null client id, empty body.
    let frame: [u8; 10] = [0, 18, 0, 0, 0, 0, 0, 42, 0xff, 0xff];
    s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body[..4], &42i32.to_be_bytes(), "correlation id");
    assert_eq!(&body[4..6], &0i16.to_be_bytes(), "error code");
}
