//! The real cluster in network namespaces: partitions drop broker packets (and only those),
//! kill/start, pause/resume, leftovers of a crashed run, and the nemesis end to end.
//! Needs root, iproute2 and nftables; each test prints why it is skipped when the machine
//! cannot make namespaces or there is no release `gregor` (`cargo build --release --bin
//! gregor`, or set GREGOR_BIN). Each test has its own prefix and subnet; tests that run a
//! cluster take the same lock as node/tests, one 3-node cluster at a time.
#![cfg(feature = "harness")]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gregor_jepsen::cluster::{cleanup_leftovers, netns_available, Cluster, ClusterOptions, Grudge, Reach};
use gregor_jepsen::nemesis::{parse_kinds, LeaderTarget, Nemesis, NemesisEvent, Phase, Schedule};

const SHORT: Duration = Duration::from_millis(1500);

fn skip(test: &str, why: &str) {
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

fn gregor_bin() -> Result<PathBuf, String> {
    let path = match std::env::var_os("GREGOR_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("release/gregor"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no gregor binary at {} (cargo build --release --bin gregor, or set GREGOR_BIN)",
            path.display()
        ))
    }
}

/// One 3-node cluster at a time on this machine (shared with node/tests).
fn serial() -> File {
    let path = std::env::temp_dir().join("gregor-node-cluster-tests.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

/// Root, namespaces and a gregor binary, or the reason to skip.
fn setup(test: &str) -> Option<PathBuf> {
    if let Err(why) = netns_available() {
        skip(test, &why);
        return None;
    }
    match gregor_bin() {
        Ok(bin) => Some(bin),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

fn options(bin: PathBuf, prefix: &str, subnet: &str) -> (ClusterOptions, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .unwrap();
    let mut o = ClusterOptions::new(3, bin, dir.path());
    o.prefix = prefix.to_string();
    o.subnet = subnet.parse().unwrap();
    (o, dir)
}

fn namespaces() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Retries `f` until it returns true or `within` passes.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn partitions_drop_broker_packets_only_and_nodes_die_and_return() {
    let Some(bin) = setup("partitions_drop_broker_packets_only...") else {
        return;
    };
    let _lock = serial();
    let (opts, dir) = options(bin.clone(), "gjta", "10.77.101.0/24");
    let cluster = Cluster::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cluster.bootstrap(),
        "10.77.101.11:9092,10.77.101.12:9092,10.77.101.13:9092"
    );

    // Every node is reachable from the harness, runs gregor itself, in its own namespace.
    for n in 1..=3 {
        assert_eq!(
            cluster.probe(None, cluster.client_addr(n), SHORT).unwrap(),
            Reach::Connected
        );
        let view = cluster.metadata(n).unwrap();
        assert_eq!(view.brokers.len(), 3, "{view:?}");
        assert!(view.controller_id >= 1);
        let pid = cluster.pid(n).unwrap();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, bin.canonicalize().unwrap(), "the pid is gregor, not `ip`");
    }
    assert_eq!(
        cluster.probe(Some(2), cluster.peer_addr(1), SHORT).unwrap(),
        Reach::Connected
    );

    // n1 cut off from n2 and n3: peer packets time out both ways, n2↔n3 still work, and
    // the harness still reaches n1's Kafka port. The kernel's counters saw the drops.
    cluster.partition(&Grudge::isolate(1, 3)).unwrap();
    assert_eq!(
        cluster.probe(Some(2), cluster.peer_addr(1), SHORT).unwrap(),
        Reach::TimedOut
    );
    assert_eq!(
        cluster.probe(Some(3), cluster.peer_addr(1), SHORT).unwrap(),
        Reach::TimedOut
    );
    assert_eq!(
        cluster.probe(Some(1), cluster.peer_addr(2), SHORT).unwrap(),
        Reach::TimedOut
    );
    assert_eq!(
        cluster.probe(Some(2), cluster.peer_addr(3), SHORT).unwrap(),
        Reach::Connected
    );
    assert_eq!(
        cluster.probe(None, cluster.client_addr(1), SHORT).unwrap(),
        Reach::Connected
    );
    assert!(
        cluster.metadata(1).is_ok(),
        "clients still talk to the isolated node"
    );
    assert!(cluster.dropped_packets(1).unwrap() > 0);
    assert!(cluster.dropped_packets(2).unwrap() > 0);
    cluster.partition(&Grudge::isolate(1, 3)).unwrap(); // idempotent

    cluster.heal().unwrap();
    cluster.heal().unwrap();
    assert_eq!(cluster.dropped_packets(1).unwrap(), 0, "the rule is gone");
    assert_eq!(
        cluster.probe(Some(2), cluster.peer_addr(1), SHORT).unwrap(),
        Reach::Connected
    );
    assert_eq!(
        cluster.probe(Some(1), cluster.peer_addr(2), SHORT).unwrap(),
        Reach::Connected
    );

    // One way: n1 drops n2's packets; n2 has no rule at all.
    let mut one_way = Grudge::new();
    one_way.drop_from(1, 2);
    cluster.partition(&one_way).unwrap();
    assert_eq!(
        cluster.probe(Some(2), cluster.peer_addr(1), SHORT).unwrap(),
        Reach::TimedOut
    );
    assert!(cluster.dropped_packets(1).unwrap() > 0);
    assert_eq!(cluster.dropped_packets(2).unwrap(), 0);
    assert_eq!(
        cluster.probe(Some(3), cluster.peer_addr(1), SHORT).unwrap(),
        Reach::Connected
    );
    cluster.heal().unwrap();

    // Kill and restart n2 on its data.
    let old_pid = cluster.pid(2).unwrap();
    cluster.kill(2).unwrap();
    cluster.kill(2).unwrap();
    assert!(!cluster.is_alive(2) && cluster.pid(2).is_none());
    assert!(
        !std::path::Path::new(&format!("/proc/{old_pid}/stat")).exists(),
        "reaped"
    );
    assert_eq!(
        cluster.probe(None, cluster.client_addr(2), SHORT).unwrap(),
        Reach::Refused
    );
    cluster.start_node(2).unwrap_or_else(|e| panic!("{e}"));
    cluster.start_node(2).unwrap();
    assert!(cluster.is_alive(2));
    assert!(cluster.metadata(2).unwrap().controller_id >= 1);
    let log = std::fs::read_to_string(dir.path().join("n2.log")).unwrap();
    assert_eq!(log.matches("===== gregor-jepsen: start #").count(), 2, "{log}");

    // Pause n3: it stops answering; resume: it answers again.
    cluster.pause(3).unwrap();
    cluster.pause(3).unwrap();
    assert!(cluster.is_paused(3) && cluster.is_alive(3));
    assert!(cluster.metadata(3).is_err(), "a stopped broker cannot answer");
    cluster.resume(3).unwrap();
    cluster.resume(3).unwrap();
    assert!(eventually(Duration::from_secs(10), || cluster
        .metadata(3)
        .is_ok()));

    // Kill while paused works too, and stop leaves nothing behind.
    cluster.pause(1).unwrap();
    cluster.kill(1).unwrap();
    assert!(!cluster.is_alive(1));
    cluster.stop().unwrap();
    cluster.stop().unwrap();
    assert!(!namespaces().contains("gjta-n"), "{}", namespaces());
    assert!(!link_exists("gjta-br"));
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_and_nothing_else() {
    let test = "leftovers_of_a_crashed_run_are_removed_and_nothing_else";
    if let Err(why) = netns_available() {
        return skip(test, &why);
    }
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // What a harness killed with -9 leaves: namespaces with processes in them, the bridge,
    // a veth. Plus a neighbour with another prefix, and a process in the root namespace.
    cleanup_leftovers("gjtb").unwrap();
    cleanup_leftovers("gjtbx").unwrap();
    ip(&["netns", "add", "gjtb-n1"]);
    ip(&["netns", "add", "gjtb-n2"]);
    ip(&["netns", "add", "gjtbx-n1"]);
    ip(&["link", "add", "gjtb-br", "type", "bridge"]);
    ip(&[
        "link", "add", "gjtb-n1", "type", "veth", "peer", "name", "eth0", "netns", "gjtb-n1",
    ]);
    let mut inside = Command::new("ip")
        .args(["netns", "exec", "gjtb-n1", "sleep", "600"])
        .spawn()
        .unwrap();
    let mut neighbour = Command::new("ip")
        .args(["netns", "exec", "gjtbx-n1", "sleep", "600"])
        .spawn()
        .unwrap();
    let mut outside = Command::new("sleep").arg("600").spawn().unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        let pids = Command::new("ip")
            .args(["netns", "pids", "gjtb-n1"])
            .output()
            .unwrap()
            .stdout;
        !pids.is_empty()
    }));

    cleanup_leftovers("gjtb").unwrap();
    let status = inside.wait().unwrap();
    assert!(!status.success(), "the process inside was killed: {status}");
    assert!(
        neighbour.try_wait().unwrap().is_none(),
        "another prefix's process survives"
    );
    assert!(
        outside.try_wait().unwrap().is_none(),
        "a root-namespace process survives"
    );
    let list = namespaces();
    assert!(!list.contains("gjtb-n1") && !list.contains("gjtb-n2"), "{list}");
    assert!(list.contains("gjtbx-n1"), "{list}");
    assert!(!link_exists("gjtb-br") && !link_exists("gjtb-n1"));
    cleanup_leftovers("gjtb").unwrap(); // nothing left: still fine

    cleanup_leftovers("gjtbx").unwrap();
    assert!(!neighbour.wait().unwrap().success());
    outside.kill().unwrap();
    outside.wait().unwrap();
}

#[test]
fn a_cluster_start_removes_a_previous_runs_leftovers() {
    let Some(bin) = setup("a_cluster_start_removes_a_previous_runs_leftovers") else {
        return;
    };
    let _lock = serial();
    let (opts, _dir) = options(bin, "gjtc", "10.77.103.0/24");
    let first = Cluster::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let old_pid = first.pid(1).unwrap();
    // A crashed harness never runs its destructor.
    std::mem::forget(first);
    let (opts2, _dir2) = options(opts.gregor_bin.clone(), "gjtc", "10.77.103.0/24");
    let second = Cluster::start(&opts2).unwrap_or_else(|e| panic!("{e}"));
    // The old gregor was killed (it is our child, so it lingers as a zombie until reaped).
    let state = std::fs::read_to_string(format!("/proc/{old_pid}/stat")).unwrap_or_default();
    assert!(state.is_empty() || state.contains(") Z"), "{state}");
    assert_ne!(second.pid(1), Some(old_pid));
    for n in 1..=3 {
        assert!(second.metadata(n).is_ok());
    }
}

#[test]
fn the_nemesis_breaks_a_real_cluster_and_heals_it() {
    let Some(bin) = setup("the_nemesis_breaks_a_real_cluster_and_heals_it") else {
        return;
    };
    let _lock = serial();
    let (opts, _dir) = options(bin, "gjtd", "10.77.104.0/24");
    let cluster = Cluster::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let kinds = parse_kinds("kill,pause,partition,kill-leader,isolate-leader").unwrap();
    let schedule = Schedule::new(&kinds, 3, 7, 25.0, 3.0).unwrap();
    let mut events: Vec<NemesisEvent> = Vec::new();
    let mut leader = |_: LeaderTarget| {
        (1..=3)
            .find_map(|n| cluster.metadata(n).ok())
            .and_then(|v| usize::try_from(v.controller_id).ok())
    };
    let report = Nemesis::run(
        &cluster,
        &schedule,
        &AtomicBool::new(false),
        &mut leader,
        &mut |e| {
            eprintln!("{:?} {} {} {:?}", e.phase, e.f, e.value, e.error);
            events.push(e);
        },
    );
    eprintln!("{report:?}");
    let done: Vec<&NemesisEvent> = events.iter().filter(|e| e.phase == Phase::Done).collect();
    assert!(done.iter().any(|e| e.f == "kill") && done.iter().any(|e| e.f == "partition"));
    // After the final heal every node runs, none is paused, the network is whole.
    for n in 1..=3 {
        assert!(cluster.is_alive(n) && !cluster.is_paused(n));
        assert_eq!(cluster.dropped_packets(n).unwrap(), 0);
    }
    assert!(cluster.grudge().is_empty());
    assert!(
        eventually(Duration::from_secs(30), || (1..=3).all(|n| cluster
            .metadata(n)
            .is_ok_and(|v| v.controller_id >= 1 && v.brokers.len() == 3))),
        "cluster did not come back:\n{}\n{}\n{}",
        cluster.log_tail(1, 20),
        cluster.log_tail(2, 20),
        cluster.log_tail(3, 20)
    );
}
