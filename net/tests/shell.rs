//! The shell against fake engines: framing, ordering, backpressure, closes, timers, startup
//! and shutdown. Every wait is bounded so a broken shell fails instead of hanging.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gregor_engine::{ConnId, Input, IoOp, IoResult, Output, Time};
use gregor_net::{Driven, Shell, ShellConfig, ShellError, IN_FLIGHT_PER_CONNECTION_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A fake engine made of one closure.
struct Fake<F>(F);

impl<F: FnMut(Time, Input, &mut Vec<Output>) + Send + 'static> Driven for Fake<F> {
    fn step(&mut self, now: Time, input: Input, out: &mut Vec<Output>) {
        (self.0)(now, input, out)
    }
}

/// A running shell: its address, its stop switch and its result.
struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ShellError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(&mut self) -> Result<(), ShellError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(WAIT, &mut self.task)
            .await
            .expect("shell did not stop")
            .expect("shell task panicked")
    }

    async fn connect(&self) -> TcpStream {
        timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .unwrap()
            .unwrap()
    }
}

fn config(dir: &tempfile::TempDir) -> ShellConfig {
    let mut c = ShellConfig::new("127.0.0.1:0", dir.path());
    c.announce = false;
    c.disk_writer_threads = 2;
    c.disk_reader_threads = 1;
    c
}

async fn start<E: Driven>(engine: E, tweak: impl FnOnce(&mut ShellConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    tweak(&mut c);
    let shell = Shell::bind(c).await.unwrap();
    let addr = shell.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shell.run(engine, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

/// Start → Ready, each request echoed back, Shutdown → Stopped.
fn echo() -> impl Driven {
    Fake(|_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::Ready),
        Input::ClientRequest { conn, seq, frame } => out.push(Output::ClientResponse {
            conn,
            seq,
            frame: Some(vec![frame]),
        }),
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    })
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

async fn send(s: &mut TcpStream, body: &[u8]) {
    s.write_all(&framed(body)).await.unwrap();
}

/// The next response frame, or `None` at end of stream.
async fn recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    match timeout(WAIT, s.read_exact(&mut size))
        .await
        .expect("no response in time")
    {
        Ok(_) => {}
        Err(_) => return None,
    }
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    timeout(WAIT, s.read_exact(&mut body)).await.unwrap().ok()?;
    Some(body)
}

/// True once the peer has closed the connection (EOF or reset).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(timeout(WAIT, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn echo_with_frames_split_and_coalesced() {
    let mut shell = start(echo(), |_| {}).await;
    let mut s = shell.connect().await;
    let wire = framed(b"request-one");
    for piece in [&wire[..2], &wire[2..7], &wire[7..]] {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recv(&mut s).await.unwrap(), b"request-one");
    let mut two = framed(b"second--");
    two.extend(framed(b"third---"));
    s.write_all(&two).await.unwrap();
    assert_eq!(recv(&mut s).await.unwrap(), b"second--");
    assert_eq!(recv(&mut s).await.unwrap(), b"third---");
    drop(s);
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn bad_frame_sizes_close_only_their_connection() {
    let mut shell = start(echo(), |c| c.socket_request_max_bytes = 1024).await;
    let mut good = shell.connect().await;
    let mut oversize = shell.connect().await;
    let mut undersize = shell.connect().await;
    oversize.write_all(&2000u32.to_be_bytes()).await.unwrap();
    undersize.write_all(&framed(b"tiny")).await.unwrap();
    assert!(closed(&mut oversize).await);
    assert!(closed(&mut undersize).await);
    send(&mut good, &[b'x'; 1024]).await;
    assert_eq!(recv(&mut good).await.unwrap(), vec![b'x'; 1024]);
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn answers_leave_in_seq_order_whatever_order_the_engine_uses() {
    const N: u64 = 10;
    let mut held: Vec<(ConnId, u64, Bytes)> = Vec::new();
    let engine = Fake(move |_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::Ready),
        Input::ClientRequest { conn, seq, frame } => {
            held.push((conn, seq, frame));
            if held.len() as u64 == N {
                // Answer backwards, split into parts; seq 5 gets no answer (acks=0 style).
                for (conn, seq, frame) in held.drain(..).rev() {
                    let frame = (seq != 5).then(|| vec![frame.slice(..4), Bytes::new(), frame.slice(4..)]);
                    out.push(Output::ClientResponse { conn, seq, frame });
                }
            }
        }
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    let mut s = shell.connect().await;
    for i in 0..N {
        send(&mut s, format!("req-{i:04}").as_bytes()).await;
    }
    for i in (0..N).filter(|i| *i != 5) {
        assert_eq!(recv(&mut s).await.unwrap(), format!("req-{i:04}").as_bytes());
    }
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn reading_stops_at_the_in_flight_bound() {
    let seen = Arc::new(AtomicUsize::new(0));
    let closed_conns = Arc::new(AtomicUsize::new(0));
    let (seen2, closed2) = (seen.clone(), closed_conns.clone());
    let engine = Fake(move |_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::Ready),
        Input::ClientRequest { .. } => drop(seen2.fetch_add(1, Ordering::SeqCst)),
        Input::ConnectionClosed { .. } => drop(closed2.fetch_add(1, Ordering::SeqCst)),
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    let mut s = shell.connect().await;
    let mut wire = Vec::new();
    for i in 0..(IN_FLIGHT_PER_CONNECTION_MAX + 36) {
        wire.extend(framed(format!("req-{i:04}").as_bytes()));
    }
    s.write_all(&wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.load(Ordering::SeqCst), IN_FLIGHT_PER_CONNECTION_MAX);
    drop(s);
    for _ in 0..100 {
        if closed_conns.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        closed_conns.load(Ordering::SeqCst),
        1,
        "ConnectionClosed reaches the engine"
    );
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn engine_can_close_a_connection() {
    let closed_conns = Arc::new(Mutex::new(Vec::new()));
    let closed2 = closed_conns.clone();
    let engine = Fake(move |_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::Ready),
        Input::ClientRequest { conn, seq, frame } if frame.as_ref() == b"goodbye!" => {
            out.push(Output::ClientResponse {
                conn,
                seq,
                frame: Some(vec![frame]),
            });
            out.push(Output::CloseConnection { conn });
        }
        Input::ClientRequest { conn, seq, frame } => out.push(Output::ClientResponse {
            conn,
            seq,
            frame: Some(vec![frame]),
        }),
        Input::ConnectionClosed { conn } => closed2.lock().unwrap().push(conn),
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    let mut a = shell.connect().await;
    let mut b = shell.connect().await;
    send(&mut a, b"hello!!!").await;
    assert_eq!(recv(&mut a).await.unwrap(), b"hello!!!");
    send(&mut a, b"goodbye!").await;
    assert_eq!(
        recv(&mut a).await.unwrap(),
        b"goodbye!",
        "answers before the close are written"
    );
    assert!(closed(&mut a).await);
    send(&mut b, b"still-up").await;
    assert_eq!(recv(&mut b).await.unwrap(), b"still-up");
    assert_eq!(closed_conns.lock().unwrap().len(), 1);
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mut shell = start(echo(), |c| c.connections_max_idle_ms = 200).await;
    let mut s = shell.connect().await;
    send(&mut s, b"request!").await;
    assert_eq!(recv(&mut s).await.unwrap(), b"request!");
    let started = std::time::Instant::now();
    assert!(closed(&mut s).await);
    assert!(started.elapsed() >= Duration::from_millis(150));
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn timers_and_the_safety_tick_deliver_ticks() {
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let ticks2 = ticks.clone();
    let engine = Fake(move |now: Time, input, out: &mut Vec<Output>| match input {
        Input::Start => {
            out.push(Output::SetTimer { at_mono_ms: 500 });
            out.push(Output::SetTimer { at_mono_ms: 30 });
            out.push(Output::Ready);
        }
        Input::Tick => ticks2.lock().unwrap().push(now.mono_ms),
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    shell.stop().await.unwrap();
    let ticks = ticks.lock().unwrap().clone();
    assert!(ticks.len() >= 3, "ticks: {ticks:?}");
    assert!(ticks[0] >= 30, "no Tick before the timer is due: {ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[0] <= w[1]),
        "mono time never goes back: {ticks:?}"
    );
}

#[tokio::test]
async fn recovery_io_runs_before_ready_and_shutdown_waits_for_stopped() {
    let engine = Fake(move |_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::Io {
            token: 1,
            op: IoOp::CreateDir { dir: "p-0".into() },
        }),
        Input::IoDone { token: 1, result } => {
            assert_eq!(result, IoResult::Done);
            out.push(Output::Ready);
        }
        Input::ClientRequest { conn, seq, frame } => out.push(Output::ClientResponse {
            conn,
            seq,
            frame: Some(vec![frame]),
        }),
        Input::Shutdown => out.push(Output::Io {
            token: 2,
            op: IoOp::WriteState {
                file: "p-0/state".into(),
                data: Bytes::from_static(b"clean"),
            },
        }),
        Input::IoDone { token: 2, result } => {
            assert_eq!(result, IoResult::Done);
            out.push(Output::Stopped);
        }
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    let dir = shell._dir.path().to_path_buf();
    // Accepting starts only after Ready, which needs the CreateDir done.
    let mut s = shell.connect().await;
    send(&mut s, b"anything").await;
    assert_eq!(recv(&mut s).await.unwrap(), b"anything");
    assert!(dir.join("p-0").is_dir());
    shell.stop().await.unwrap();
    assert_eq!(std::fs::read(dir.join("p-0/state")).unwrap(), b"clean");
}

#[tokio::test]
async fn fatal_ends_the_run_with_an_error() {
    let engine = Fake(|_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::Ready),
        Input::ClientRequest { .. } => out.push(Output::Fatal {
            reason: "fsync failed".into(),
        }),
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    let mut s = shell.connect().await;
    send(&mut s, b"request!").await;
    let result = timeout(WAIT, &mut shell.task).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(ShellError::Fatal(ref r)) if r == "fsync failed"),
        "{result:?}"
    );
}

#[tokio::test]
async fn shutdown_wait_is_bounded() {
    let engine = Fake(|_now, input, out: &mut Vec<Output>| {
        if let Input::Start = input {
            out.push(Output::Ready)
        }
    });
    let mut shell = start(engine, |c| c.shutdown_timeout_ms = 200).await;
    let result = shell.stop().await;
    assert!(
        matches!(result, Err(ShellError::ShutdownTimeout(200))),
        "{result:?}"
    );
}

#[tokio::test]
async fn shutdown_before_ready_waits_for_ready_then_stops() {
    let engine = Fake(|_now, input, out: &mut Vec<Output>| match input {
        Input::Start => out.push(Output::SetTimer { at_mono_ms: 150 }),
        Input::Tick => out.push(Output::Ready),
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    });
    let mut shell = start(engine, |_| {}).await;
    shell.stop().await.unwrap();
}

#[tokio::test]
async fn a_busy_port_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let first = Shell::bind(config(&dir)).await.unwrap();
    let busy = first.local_addr().to_string();
    let mut c = config(&dir);
    c.listen = busy.clone();
    let err = Shell::bind(c).await.err().expect("second bind must fail");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {busy}: address already in use")
    );
}

/// Two free loopback ports (bound and released; a test race with another process taking one
/// in between only fails the test).
fn free_ports() -> (std::net::SocketAddr, std::net::SocketAddr) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

/// A fake node: Ready at start, says hello to `to`, answers every peer message with "ack",
/// and records what it received.
fn peer_node(me: i32, to: i32, seen: Arc<Mutex<Vec<(i32, Bytes)>>>) -> impl Driven {
    Fake(move |_now, input, out: &mut Vec<Output>| match input {
        Input::Start => {
            out.push(Output::Ready);
            out.push(Output::SendPeer {
                to,
                msg: Bytes::from(format!("hello from {me}")),
            });
        }
        Input::PeerMessage { from, msg } => {
            if msg.starts_with(b"hello") {
                out.push(Output::SendPeer {
                    to: from,
                    msg: Bytes::from_static(b"ack"),
                });
            }
            seen.lock().unwrap().push((from, msg));
        }
        Input::Shutdown => out.push(Output::Stopped),
        _ => {}
    })
}

#[tokio::test]
async fn engines_talk_to_their_peers_through_the_peer_transport() {
    let (pa, pb) = free_ports();
    let peers: std::collections::BTreeMap<i32, std::net::SocketAddr> = [(1, pa), (2, pb)].into();
    let (seen_a, seen_b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let with_peers = |me: i32, listen| {
        let peers = peers.clone();
        move |c: &mut ShellConfig| c.peers = Some(gregor_net::peer::PeerConfig::new(me, listen, peers))
    };
    let mut a = start(peer_node(1, 2, seen_a.clone()), with_peers(1, pa)).await;
    let mut b = start(peer_node(2, 1, seen_b.clone()), with_peers(2, pb)).await;
    let got_all = async {
        loop {
            let (na, nb) = (seen_a.lock().unwrap().len(), seen_b.lock().unwrap().len());
            if na >= 2 && nb >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, got_all)
        .await
        .expect("hellos and acks cross both ways");
    for (seen, other) in [(&seen_a, 2), (&seen_b, 1)] {
        let mut got: Vec<(i32, Bytes)> = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                (other, Bytes::from_static(b"ack")),
                (other, Bytes::from(format!("hello from {other}")))
            ]
        );
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_busy_peer_port_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let mut c = config(&dir);
    c.peers = Some(gregor_net::peer::PeerConfig::new(1, busy, [(1, busy)].into()));
    let err = Shell::bind(c).await.err().expect("the peer port is taken");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {busy}: address already in use")
    );
}
