//! The peer transport on turmoil's simulated network: the production link and listener code,
//! with turmoil's TCP plugged in through `PeerTransport`. Deterministic: a seed replays a run.
//!
//! Each test starts hosts n1, n2, n3 (node ids 1, 2, 3), each running a `PeerNet` that logs
//! what its inbox receives. The test body sends between `sim.step()`s and breaks the network
//! with turmoil's partition / hold / crash. Every message carries (from, seq); every check of
//! a receiver's log also asserts that each sender's seqs arrive strictly increasing, i.e. in
//! order and never twice.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gregor_net::peer::wire::{self, FrameDecoder, Hello};
use gregor_net::peer::{NodeId, PeerConfig, PeerNet, PeerTransport, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const PORT: u16 = 7000;
const HOSTS: [&str; 3] = ["n1", "n2", "n3"];
const QUEUE_BYTES_MAX: usize = 64 * 1024;
const TICK: Duration = Duration::from_millis(1);

/// turmoil's simulated TCP, which mirrors tokio's API.
#[derive(Clone, Copy)]
struct Turmoil;

impl PeerTransport for Turmoil {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept<'a>(&'a self, listener: &'a Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}

type Tune = dyn Fn(NodeId, &mut PeerConfig) + Send + Sync;

/// Per node, the (sender, seq) of every message its inbox received, in arrival order.
type Logs = BTreeMap<NodeId, Vec<(NodeId, u64)>>;

/// What the test body shares with the hosts.
struct World {
    nets: Mutex<BTreeMap<NodeId, PeerNet>>,
    logs: Mutex<Logs>,
    /// Hosts that never read their inbox.
    deaf: Vec<NodeId>,
    tune: Box<Tune>,
}

impl World {
    fn net(&self, id: NodeId) -> PeerNet {
        self.nets.lock().unwrap().get(&id).cloned().expect("host started")
    }

    fn send(&self, from: NodeId, to: NodeId, seq: u64, len: usize) -> Result<(), SendError> {
        self.net(from).send(to, message(from, to, seq, len))
    }

    /// Seqs `to` received from `from`, checked to be strictly increasing.
    fn received(&self, to: NodeId, from: NodeId) -> Vec<u64> {
        let logs = self.logs.lock().unwrap();
        let seqs: Vec<u64> = logs
            .get(&to)
            .map(|log| log.iter().filter(|(f, _)| *f == from).map(|(_, s)| *s).collect())
            .unwrap_or_default();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "node {to} got node {from}'s messages out of order or twice: {seqs:?}"
        );
        seqs
    }
}

/// A message from `from` to `to`: header (from, to, seq), then `len` bytes derived from them.
fn message(from: NodeId, to: NodeId, seq: u64, len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + len);
    out.put_i32(from);
    out.put_i32(to);
    out.put_u64(seq);
    out.extend((0..len).map(|i| (i as u64 ^ seq) as u8));
    out.freeze()
}

/// Checks a received message against what `message` built, returns its seq.
fn verify(me: NodeId, from: NodeId, mut msg: Bytes) -> u64 {
    assert!(msg.len() >= 16, "short message");
    assert_eq!((msg.get_i32(), msg.get_i32()), (from, me), "misrouted");
    let seq = msg.get_u64();
    assert!(
        msg.iter().enumerate().all(|(i, b)| *b == (i as u64 ^ seq) as u8),
        "corrupt"
    );
    seq
}

fn addr_of(host: &str) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(host), PORT)
}

/// The host program of node `id`: start a `PeerNet`, publish it, log the inbox.
async fn node(world: Arc<World>, id: NodeId) -> turmoil::Result {
    let peers = (1..=3).map(|n| (n, addr_of(HOSTS[n as usize - 1]))).collect();
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
    let mut config = PeerConfig::new(id, listen, peers);
    config.cluster_id = "test-cluster".into();
    config.queue_bytes_max = QUEUE_BYTES_MAX;
    config.batch_bytes_max = 16 * 1024;
    config.reconnect_backoff_min = Duration::from_millis(50);
    config.reconnect_backoff_max = Duration::from_secs(1);
    config.connect_timeout = Duration::from_millis(500);
    config.keepalive_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(500);
    config.jitter_seed = 42;
    (world.tune)(id, &mut config);
    let (tx, mut rx) = mpsc::channel(4);
    let net = PeerNet::start(config, Turmoil, tx).await?;
    world.nets.lock().unwrap().insert(id, net.clone());
    if world.deaf.contains(&id) {
        std::future::pending::<()>().await;
    }
    while let Some((from, msg)) = rx.recv().await {
        let seq = verify(id, from, msg);
        world
            .logs
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push((from, seq));
    }
    Ok(())
}

fn sim_with(
    seed: u64,
    deaf: Vec<NodeId>,
    tune: impl Fn(NodeId, &mut PeerConfig) + Send + Sync + 'static,
) -> (turmoil::Sim<'static>, Arc<World>) {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(TICK)
        .max_message_latency(Duration::from_millis(5))
        .rng_seed(seed)
        .build();
    let world = Arc::new(World {
        nets: Mutex::new(BTreeMap::new()),
        logs: Mutex::new(BTreeMap::new()),
        deaf,
        tune: Box::new(tune),
    });
    for (i, host) in HOSTS.iter().enumerate() {
        let world = world.clone();
        sim.host(*host, move || node(world.clone(), i as NodeId + 1));
    }
    (sim, world)
}

fn sim(seed: u64) -> (turmoil::Sim<'static>, Arc<World>) {
    sim_with(seed, Vec::new(), |_, _| {})
}

/// Steps until `done` holds, for at most `limit`; returns whether it held.
fn step_until(sim: &mut turmoil::Sim<'_>, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let steps = limit.as_millis() / TICK.as_millis();
    for _ in 0..steps {
        if done() {
            return true;
        }
        sim.step().unwrap();
    }
    done()
}

fn run_for(sim: &mut turmoil::Sim<'_>, duration: Duration) {
    step_until(sim, duration, || false);
}

fn connected(world: &World, from: NodeId, to: NodeId) -> bool {
    world
        .nets
        .lock()
        .unwrap()
        .get(&from)
        .is_some_and(|n| n.stats(to).unwrap().connected)
}

fn all_connected(sim: &mut turmoil::Sim<'_>, world: &World) {
    let pairs = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)];
    let ok = step_until(sim, Duration::from_secs(2), || {
        pairs.iter().all(|(a, b)| connected(world, *a, *b))
    });
    assert!(ok, "links did not come up");
}

/// Every node sends `count` messages of mixed sizes to each other node, then all must arrive.
/// Returns every node's log, for determinism checks.
fn all_ways(seed: u64, count: u64) -> (Logs, Duration) {
    let (mut sim, world) = sim(seed);
    sim.step().unwrap();
    // Sent before any link is up: they wait in the queues, then go out batched.
    for seq in 0..count {
        for (from, to) in [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)] {
            world.send(from, to, seq, (seq as usize * 13) % 300).unwrap();
        }
    }
    let all = || {
        (1..=3).all(|to| {
            (1..=3)
                .filter(|f| *f != to)
                .all(|from| world.received(to, from).len() as u64 == count)
        })
    };
    assert!(
        step_until(&mut sim, Duration::from_secs(10), all),
        "not everything arrived"
    );
    for to in 1..=3 {
        for from in (1..=3).filter(|f| *f != to) {
            assert_eq!(world.received(to, from), (0..count).collect::<Vec<_>>());
        }
    }
    let stats = world.net(1).stats(2).unwrap();
    assert_eq!(
        (stats.messages_sent, stats.dropped, stats.queued_bytes),
        (count, 0, 0)
    );
    assert!(
        stats.frames_sent < count / 4,
        "messages queued together share frames: {stats:?}"
    );
    let logs = world.logs.lock().unwrap().clone();
    (logs, sim.elapsed())
}

#[test]
fn messages_flow_all_ways_in_order_and_runs_replay() {
    let first = all_ways(7, 300);
    assert_eq!(first, all_ways(7, 300), "the same seed must give the same run");
}

#[test]
fn partition_queues_boundedly_then_repair_delivers_in_order_without_duplicates() {
    let (mut sim, world) = sim(11);
    all_connected(&mut sim, &world);
    for seq in 0..10 {
        world.send(1, 2, seq, 100).unwrap();
    }
    assert!(step_until(&mut sim, Duration::from_secs(1), || world
        .received(2, 1)
        .len()
        == 10));

    sim.partition("n1", "n2");
    // Written into the now-dead connection: these may be lost, never duplicated or reordered.
    for seq in 10..20 {
        world.send(1, 2, seq, 100).unwrap();
    }
    let down = step_until(&mut sim, Duration::from_secs(2), || !connected(&world, 1, 2));
    assert!(down, "the silent connection must be abandoned after idle_timeout");

    // Disconnected: sends queue up to the bound, then are refused; the queue keeps them.
    let mut accepted = Vec::new();
    let mut seq = 100;
    loop {
        match world.send(1, 2, seq, 1000) {
            Ok(()) => accepted.push(seq),
            Err(SendError::QueueFull {
                queued_bytes,
                queue_bytes_max,
                ..
            }) => {
                assert!(queued_bytes <= queue_bytes_max);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        seq += 1;
        sim.step().unwrap();
    }
    assert!(accepted.len() > 30, "queued {} messages", accepted.len());
    let stats = world.net(1).stats(2).unwrap();
    assert!(
        stats.queued_bytes <= QUEUE_BYTES_MAX && stats.dropped >= 1,
        "{stats:?}"
    );

    // Other links are unaffected.
    world.send(1, 3, 0, 10).unwrap();
    assert!(step_until(&mut sim, Duration::from_secs(1), || world
        .received(3, 1)
        == [0]));
    let reconnects = world.net(1).stats(2).unwrap().reconnects;
    run_for(&mut sim, Duration::from_secs(2));
    let stats = world.net(1).stats(2).unwrap();
    assert!(
        !stats.connected && stats.reconnects > reconnects,
        "keeps redialing: {stats:?}"
    );
    assert_eq!(
        stats.queued_messages,
        accepted.len(),
        "nothing leaves while partitioned"
    );

    sim.repair("n1", "n2");
    let delivered = step_until(&mut sim, Duration::from_secs(3), || {
        world.received(2, 1).last() == accepted.last()
    });
    assert!(delivered, "queued messages must arrive after repair");
    let got = world.received(2, 1);
    assert!(got.starts_with(&(0..10).collect::<Vec<_>>()));
    assert!(
        got.ends_with(&accepted),
        "every message queued while disconnected arrives: {got:?}"
    );
    assert_eq!(world.net(1).stats(2).unwrap().queued_bytes, 0);

    // And the other direction works again.
    world.send(2, 1, 0, 10).unwrap();
    assert!(step_until(&mut sim, Duration::from_secs(3), || world
        .received(1, 2)
        == [0]));
}

#[test]
fn hold_delays_delivery_and_keeps_order() {
    let (mut sim, world) = sim(12);
    all_connected(&mut sim, &world);
    let connections = world.net(1).stats(2).unwrap().connections;
    sim.hold("n1", "n2");
    for seq in 0..20 {
        world.send(1, 2, seq, 200).unwrap();
    }
    run_for(&mut sim, Duration::from_millis(300));
    assert!(world.received(2, 1).is_empty(), "held messages must not arrive");
    sim.release("n1", "n2");
    assert!(step_until(&mut sim, Duration::from_secs(1), || world
        .received(2, 1)
        .len()
        == 20));
    assert_eq!(world.received(2, 1), (0..20).collect::<Vec<_>>());
    assert_eq!(
        world.net(1).stats(2).unwrap().connections,
        connections,
        "a short hold is not a failure"
    );
}

#[test]
fn a_restarted_node_is_redialed_with_backoff_and_traffic_resumes() {
    let (mut sim, world) = sim(13);
    all_connected(&mut sim, &world);
    sim.crash("n2");
    world.nets.lock().unwrap().remove(&2);
    assert!(step_until(&mut sim, Duration::from_secs(2), || !connected(
        &world, 1, 2
    )));
    let before = world.net(1).stats(2).unwrap();
    for seq in 0..5 {
        world.send(1, 2, seq, 100).unwrap();
    }
    run_for(&mut sim, Duration::from_secs(5));
    let after = world.net(1).stats(2).unwrap();
    let attempts = after.reconnects - before.reconnects;
    // 50 ms doubling to 1 s, with jitter in the upper half: about 8 dials in 5 s, not thousands.
    assert!((3..=20).contains(&attempts), "{attempts} dials in 5 s");
    assert_eq!(after.queued_messages, 5);

    sim.bounce("n2");
    assert!(step_until(&mut sim, Duration::from_secs(3), || world
        .received(2, 1)
        .len()
        == 5));
    assert_eq!(world.received(2, 1), (0..5).collect::<Vec<_>>());
    world.send(2, 1, 0, 10).unwrap();
    world.send(2, 3, 0, 10).unwrap();
    world.send(3, 2, 0, 10).unwrap();
    let resumed = step_until(&mut sim, Duration::from_secs(3), || {
        world.received(1, 2) == [0] && world.received(3, 2) == [0] && world.received(2, 3) == [0]
    });
    assert!(resumed, "traffic to and from the restarted node resumes");
    assert!(world.net(3).stats(2).unwrap().connections >= 2);
}

#[test]
fn a_peer_that_never_reads_stays_bounded_and_blocks_no_one() {
    let (mut sim, world) = sim_with(14, vec![3], |_, _| {});
    all_connected(&mut sim, &world);
    let mut refused = 0;
    let mut to_n2 = 0;
    for seq in 0..600 {
        match world.send(1, 3, seq, 2000) {
            Ok(()) => {}
            Err(SendError::QueueFull { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        world.send(1, 2, seq, 100).unwrap();
        to_n2 += 1;
        let stats = world.net(1).stats(3).unwrap();
        assert!(stats.queued_bytes <= QUEUE_BYTES_MAX, "{stats:?}");
        sim.step().unwrap();
    }
    assert!(refused > 0, "the queue to the deaf peer must fill");
    assert!(step_until(&mut sim, Duration::from_secs(2), || world
        .received(2, 1)
        .len()
        == to_n2));
    run_for(&mut sim, Duration::from_secs(2));
    let stats = world.net(1).stats(3).unwrap();
    assert!(
        stats.queued_bytes <= QUEUE_BYTES_MAX && stats.dropped >= refused,
        "{stats:?}"
    );
    assert!(
        stats.connected && stats.connections == 1,
        "slow is not dead: {stats:?}"
    );
    assert!(world.received(3, 1).is_empty());
}

#[test]
fn a_wrong_cluster_id_is_refused_until_it_is_set_right() {
    let (mut sim, world) = sim_with(15, Vec::new(), |id, config| {
        config.cluster_id = match id {
            1 => "alpha".into(),
            2 => "beta".into(),
            _ => String::new(), // not known yet: compatible with anyone
        }
    });
    run_for(&mut sim, Duration::from_secs(2));
    for (a, b) in [(1, 2), (2, 1)] {
        let stats = world.net(a).stats(b).unwrap();
        assert!(
            !stats.connected && stats.connections == 0 && stats.reconnects > 0,
            "{a}->{b}: {stats:?}"
        );
    }
    for (a, b) in [(1, 3), (3, 1), (2, 3), (3, 2)] {
        assert!(connected(&world, a, b), "{a}->{b}");
    }
    world.send(1, 2, 0, 10).unwrap();
    run_for(&mut sim, Duration::from_millis(500));
    assert!(world.received(2, 1).is_empty());
    world.net(2).set_cluster_id("alpha").unwrap();
    assert!(step_until(&mut sim, Duration::from_secs(3), || world
        .received(2, 1)
        == [0]));
}

#[test]
fn a_wrong_node_id_is_refused() {
    // n1 believes node 2 lives at n3's address.
    let (mut sim, world) = sim_with(16, Vec::new(), |id, config| {
        if id == 1 {
            config.peers.insert(2, addr_of("n3"));
        }
    });
    run_for(&mut sim, Duration::from_secs(2));
    let stats = world.net(1).stats(2).unwrap();
    assert!(
        !stats.connected && stats.connections == 0 && stats.reconnects > 0,
        "{stats:?}"
    );
    assert!(connected(&world, 1, 3));
}

/// What a raw client sees after sending `first` to n1: the reply hello, or `None` when n1
/// closed the connection without one.
fn probe(seed: u64, first: Vec<u8>) -> Option<Hello> {
    let (mut sim, _world) = sim(seed);
    let reply = Arc::new(Mutex::new(None));
    let out = reply.clone();
    sim.client("probe", async move {
        let mut stream = turmoil::net::TcpStream::connect(addr_of("n1")).await?;
        stream.write_all(&first).await?;
        let mut buf = BytesMut::new();
        let decoder = FrameDecoder::new(wire::HELLO_BYTES_MAX);
        let hello = loop {
            if let Some(payload) = decoder.decode(&mut buf)? {
                break Some(Hello::decode(&payload)?);
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                break None;
            }
        };
        *out.lock().unwrap() = Some(hello);
        Ok(())
    });
    assert!(step_until(&mut sim, Duration::from_secs(2), || reply
        .lock()
        .unwrap()
        .is_some()));
    let got = reply.lock().unwrap().take();
    got.expect("probe finished")
}

fn hello_frame(hello: &Hello) -> Vec<u8> {
    let mut out = BytesMut::new();
    wire::encode_hello_frame(hello, &mut out);
    out.to_vec()
}

#[test]
fn bad_handshakes_are_closed_and_a_good_one_is_answered() {
    let good = Hello::new(2, 1, "test-cluster");
    assert_eq!(
        probe(20, hello_frame(&good)),
        Some(Hello::new(1, 2, "test-cluster"))
    );

    let mut bad_magic = hello_frame(&good);
    bad_magic[8] = b'K';
    let crc = crc32c::crc32c(&bad_magic[8..]);
    bad_magic[4..8].copy_from_slice(&crc.to_be_bytes());
    let mut bad_crc = hello_frame(&good);
    bad_crc[9] ^= 0xff;
    let mut newer = Hello::new(2, 1, "");
    newer.version = 2;
    let cases = [
        ("wrong magic", bad_magic),
        ("bad crc", bad_crc),
        ("oversize first frame", vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ("unsupported version", hello_frame(&newer)),
        ("unknown sender", hello_frame(&Hello::new(9, 1, ""))),
        ("wrong receiver", hello_frame(&Hello::new(2, 3, ""))),
        ("from itself", hello_frame(&Hello::new(1, 1, ""))),
        ("wrong cluster", hello_frame(&Hello::new(2, 1, "other"))),
        ("silence", Vec::new()),
    ];
    for (i, (case, first)) in cases.into_iter().enumerate() {
        assert_eq!(probe(21 + i as u64, first), None, "{case} must be refused");
    }
}
