//! Real `gregor` processes forming a 3-node cluster on 127.0.0.1: the cluster flags as an
//! operator meets them, metadata convergence, acks=all produce across leader SIGKILLs, a
//! full restart, a data directory given to the wrong node, a restarted replica that must
//! not act as leader, and SIGTERM of a node still waiting for its quorum.
//!
//! The Kafka client is hand-written (`support/kafka.rs`: Metadata v4, CreateTopics v2,
//! Produce v3, Fetch v4) because gregor-node has no client crate among its
//! dev-dependencies. Its producer is not idempotent (Gregor has no InitProducerId), so a
//! retried record may be stored twice; the tests allow that and report how often.
//!
//! Tests that start a cluster run one at a time (`support::cluster::serial`). Run with
//! `--nocapture` to see the timings (`failover_ms=…`); with `GREGOR_DEBUG_TAILS=1` a read
//! that meets a high watermark below the acknowledged end also prints the nodes' logs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gregor_engine::batch::{build_batch, decode_records, scan, RecordSpec};
use support::cluster::{free_ports, gregor, serial, Cluster, REQUEST_TIMEOUT};
use support::kafka::{code, Conn};

/// How long a converging cluster may take to agree (brokers, topics, leaders).
const CONVERGE: Duration = Duration::from_secs(20);
/// How long one record may take to be acknowledged, failovers included.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a process that must exit by itself may take.
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// Pause between two retries of a failed produce or fetch.
const RETRY: Duration = Duration::from_millis(50);

/// Runs `command` (a gregor) until it exits by itself; kills it and panics after EXIT_WAIT.
fn run_to_exit(mut command: std::process::Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("gregor {command:?} did not exit within {EXIT_WAIT:?}");
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
    let deadline = Instant::now() + EXIT_WAIT;
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

/// Checks that gregor refused to start: exit status 1 and one `gregor: …` line on stderr
/// containing `expected`.
fn assert_refused(out: &Output, expected: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("gregor: "), "{err}");
    assert!(err.contains(expected), "'{expected}' not in: {err}");
}

#[test]
fn help_lists_the_cluster_flags() {
    let mut c = gregor();
    c.arg("--help");
    let out = run_to_exit(c);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--peers <ID@HOST:PORT,...>", "--peer-listen <HOST:PORT>"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// Every mistake in the cluster flags stops gregor before it touches a port or the data
/// directory, with one line naming the problem.
#[test]
fn cluster_flag_mistakes_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let three = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";
    let file = dir.path().join("gregor.toml");
    std::fs::write(&file, format!("\"controller.quorum.voters\" = \"{three}\"\n")).unwrap();
    let file = file.to_str().unwrap();
    let cases: [(&[&str], String); 7] = [
        (
            &["--peer-listen", "127.0.0.1:0"],
            "--peer-listen needs the metadata-quorum voters: give --peers".into(),
        ),
        (
            &["--node-id", "4", "--peers", three],
            "gregor: --peers: this node's id 4 is not among the voters (1, 2, 3); set --node-id to one of them"
                .into(),
        ),
        (
            &["--node-id", "4", "--config", file],
            format!("gregor: controller.quorum.voters in {file}: this node's id 4 is not among the voters"),
        ),
        (
            &["--peers", "1@127.0.0.1:9192,1@127.0.0.1:9193"],
            "gregor: --peers: invalid value '1@127.0.0.1:9192,1@127.0.0.1:9193' for \
             'controller.quorum.voters': node 1 is listed twice"
                .into(),
        ),
        (
            &["--peers", "1@127.0.0.1"],
            "'127.0.0.1' in '1@127.0.0.1' is not host:port".into(),
        ),
        (&["--peers", ""], "gregor: --peers: no voters given".into()),
        (
            &["--peers", three, "--peer-listen", "nonsense"],
            "gregor: --peer-listen: 'nonsense' is not HOST:PORT".into(),
        ),
    ];
    for (flags, expected) in cases {
        let mut c = gregor();
        c.args(["--listen", "127.0.0.1:0", "--data-dir", data])
            .args(flags);
        let out = run_to_exit(c);
        assert_refused(&out, &expected);
    }
    assert!(
        !Path::new(data).exists(),
        "nothing touched before the flags are valid"
    );
}

#[test]
fn a_busy_peer_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().to_string();
    let mut c = gregor();
    c.args(["--listen", "127.0.0.1:0", "--peers", &format!("1@{busy}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let out = run_to_exit(c);
    assert_refused(
        &out,
        &format!("gregor: cannot listen on {busy}: address already in use"),
    );
}

/// `--peer-listen` with port 0 binds a free port, and the startup log names it.
#[test]
fn the_peer_listener_is_bound_and_logged() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let own = free_ports(1)[0];
    let log_path = dir.path().join("gregor.log");
    let mut child = gregor()
        .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .args(["--peers", &format!("1@127.0.0.1:{own}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let deadline = Instant::now() + EXIT_WAIT;
    let port: u16 = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let port = log
            .lines()
            .find(|l| l.contains("listening for peers"))
            .and_then(|l| l.split("peer_listen=127.0.0.1:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        if let Some(port) = port {
            assert!(log.contains(&format!("voters=1@127.0.0.1:{own}")), "{log}");
            break port;
        }
        assert!(guard.0.try_wait().unwrap().is_none(), "gregor exited:\n{log}");
        assert!(Instant::now() < deadline, "no 'listening for peers' line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(port, 0);
    assert_ne!(port, own, "--peer-listen overrides the node's own voter entry");
    TcpStream::connect(("127.0.0.1", port)).expect("the peer listener accepts connections");
}

/// d. A node started on another node's data directory stops with an error naming the
/// directory and both node ids.
#[test]
fn a_data_dir_of_another_node_is_refused() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    for (id, status) in cluster.stop_all() {
        assert!(status.success(), "node {id}: {status}");
    }
    let n1 = cluster.node(1).data_dir.clone();
    let out = run_to_exit(cluster.command(2, &n1));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("gregor: "), "{err}");
    for expected in [n1.display().to_string(), "node 1".into(), "node 2".into()] {
        assert!(last.contains(&expected), "'{expected}' not in: {last}");
    }
}

/// a. Three nodes agree on the brokers and the cluster id, and on a new topic's replicas and
/// leaders.
#[test]
fn cluster_forms_and_metadata_converges() {
    let _serial = serial();
    let t0 = Instant::now();
    let cluster = Cluster::start(3);
    let started = t0.elapsed();
    let addrs = cluster.kafka_addrs();
    let cluster_id = cluster.wait_for(
        "every node lists all 3 brokers and one cluster id",
        CONVERGE,
        || {
            let mut seen = BTreeSet::new();
            for id in cluster.ids() {
                let m = cluster.metadata(id, Some(&[]))?;
                if m.broker_ids() != [1, 2, 3] {
                    return Err(format!("node {id} lists brokers {:?}", m.broker_ids()));
                }
                for b in &m.brokers {
                    let addr = format!("{}:{}", b.host, b.port);
                    if addr != addrs[&b.node_id] {
                        return Err(format!("node {id} lists broker {} at {addr}", b.node_id));
                    }
                }
                if !(1..=3).contains(&m.controller_id) {
                    return Err(format!("node {id} names controller {}", m.controller_id));
                }
                match m.cluster_id.filter(|c| !c.is_empty()) {
                    Some(c) => seen.insert((c, m.controller_id)),
                    None => return Err(format!("node {id} has no cluster id")),
                };
            }
            match seen.len() {
                1 => Ok(seen.pop_first().unwrap().0),
                _ => Err(format!("nodes disagree on (cluster id, controller): {seen:?}")),
            }
        },
    );
    let formed = t0.elapsed();

    cluster.create_topic("converge", 3, 3);
    let created = t0.elapsed();
    let leaders = cluster.wait_for(
        "every node shows the topic's replicas and leaders",
        CONVERGE,
        || {
            let mut views = BTreeSet::new();
            for id in cluster.ids() {
                let m = cluster.metadata(id, Some(&["converge"]))?;
                if m.cluster_id.as_deref() != Some(cluster_id.as_str()) {
                    return Err(format!("node {id} now has cluster id {:?}", m.cluster_id));
                }
                let t = m.topic("converge").ok_or(format!("node {id} has no topic"))?;
                if t.error_code != code::NONE || t.partitions.len() != 3 {
                    return Err(format!("node {id}: {t:?}"));
                }
                let mut leaders = Vec::new();
                for (i, p) in t.partitions.iter().enumerate() {
                    let mut replicas = p.replicas.clone();
                    replicas.sort_unstable();
                    let ok = p.index == i as i32
                        && p.error_code == code::NONE
                        && replicas == [1, 2, 3]
                        && p.replicas.contains(&p.leader);
                    if !ok {
                        return Err(format!("node {id}: partition {p:?}"));
                    }
                    leaders.push(p.leader);
                }
                views.insert(leaders);
            }
            match views.len() {
                1 => Ok(views.pop_first().unwrap()),
                _ => Err(format!("nodes disagree on the leaders: {views:?}")),
            }
        },
    );
    eprintln!(
        "cluster_id={cluster_id} leaders={leaders:?} ready_ms={} formed_ms={} created_ms={} converged_ms={}",
        started.as_millis(),
        formed.as_millis(),
        created.as_millis(),
        t0.elapsed().as_millis()
    );
}

/// A synchronous, non-idempotent acks=all producer to partition 0 of one topic: one record
/// per request, retried (after a metadata refresh) until acknowledged.
struct Producer {
    topic: String,
    addrs: BTreeMap<i32, String>,
    conns: BTreeMap<i32, Conn>,
    /// The node that acknowledged the last record, while it keeps doing so.
    leader: Option<i32>,
    /// Which node to ask for metadata next (rotates, so a stale node is not asked twice).
    ask_next: usize,
    /// (value, offset) of every acknowledged record, in order.
    acked: Vec<(u64, i64)>,
    /// Attempts that failed (error code or connection), over the whole run.
    failed_attempts: u64,
}

impl Producer {
    fn new(cluster: &Cluster, topic: &str) -> Producer {
        Producer {
            topic: topic.to_string(),
            addrs: cluster.kafka_addrs(),
            conns: BTreeMap::new(),
            leader: None,
            ask_next: 0,
            acked: Vec::new(),
            failed_attempts: 0,
        }
    }

    fn conn(&mut self, id: i32) -> std::io::Result<&mut Conn> {
        if !self.conns.contains_key(&id) {
            let conn = Conn::connect(&self.addrs[&id], REQUEST_TIMEOUT)?;
            self.conns.insert(id, conn);
        }
        Ok(self.conns.get_mut(&id).expect("inserted above"))
    }

    /// Partition 0's leader as the next node asked sees it.
    fn find_leader(&mut self) -> Result<i32, String> {
        let ids: Vec<i32> = self.addrs.keys().copied().collect();
        let id = ids[self.ask_next % ids.len()];
        self.ask_next += 1;
        let topic = self.topic.clone();
        let m = self
            .conn(id)
            .and_then(|c| c.metadata(Some(&[&topic])))
            .map_err(|e| {
                self.conns.remove(&id);
                format!("metadata from node {id}: {e}")
            })?;
        let p = m
            .topic(&topic)
            .and_then(|t| t.partitions.first())
            .ok_or(format!("node {id} does not know the topic"))?;
        if p.leader < 0 {
            return Err(format!("node {id} knows no leader"));
        }
        Ok(p.leader)
    }

    /// Sends `value` until it is acknowledged; panics after ACK_WAIT.
    fn send(&mut self, value: u64) {
        let deadline = Instant::now() + ACK_WAIT;
        let timestamp_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let batch = build_batch(&[RecordSpec {
            key: None,
            value: Some(value.to_string().into_bytes().into()),
            headers: vec![],
            timestamp_ms,
        }]);
        let mut last = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "record {value} not acknowledged within {ACK_WAIT:?}; last: {last}"
            );
            let leader = match self.leader.map_or_else(|| self.find_leader(), Ok) {
                Ok(leader) => leader,
                Err(e) => {
                    last = e;
                    std::thread::sleep(RETRY);
                    continue;
                }
            };
            let topic = self.topic.clone();
            match self
                .conn(leader)
                .and_then(|c| c.produce(&topic, 0, -1, 10_000, &batch))
            {
                Ok((code::NONE, offset)) => {
                    self.leader = Some(leader);
                    self.acked.push((value, offset));
                    return;
                }
                Ok((c, _)) if code::is_retriable(c) => last = format!("node {leader} answered error {c}"),
                Ok((c, _)) => panic!("produce of {value} to node {leader}: error {c}"),
                Err(e) => {
                    self.conns.remove(&leader);
                    last = format!("produce to node {leader}: {e}");
                }
            }
            self.failed_attempts += 1;
            self.leader = None;
            std::thread::sleep(RETRY);
        }
    }

    /// The node that acknowledged the last record.
    fn current_leader(&self) -> i32 {
        self.leader.expect("a record was just acknowledged")
    }
}

/// Every record of partition 0 as (offset, value), read from the leader from offset 0 up to
/// its high watermark, which must have reached `end` (one past the last acknowledged
/// offset); control batches (the Raft no-ops) are skipped. A high watermark seen below
/// `end` (a leader that has not yet learnt the commit point) is retried and reported.
fn read_partition(cluster: &Cluster, topic: &str, end: i64) -> Vec<(i64, u64)> {
    cluster.wait_for(&format!("read {topic}-0 up to offset {end}"), CONVERGE, || {
        let m = cluster.metadata(1, Some(&[topic]))?;
        let leader = m
            .topic(topic)
            .and_then(|t| t.partitions.first())
            .map(|p| p.leader)
            .filter(|&l| l > 0)
            .ok_or("no leader")?;
        let mut conn = Conn::connect(&cluster.node(leader).kafka_addr, REQUEST_TIMEOUT)
            .map_err(|e| format!("connect to node {leader}: {e}"))?;
        let mut out = Vec::new();
        let mut offset = 0i64;
        loop {
            let f = conn
                .fetch(topic, 0, offset, 1 << 20)
                .map_err(|e| format!("fetch from node {leader}: {e}"))?;
            if f.error_code != code::NONE {
                return Err(format!(
                    "fetch from node {leader} at {offset}: error {}",
                    f.error_code
                ));
            }
            if f.high_watermark < end {
                eprintln!(
                    "read_partition: node {leader} (leader per node 1) answers high watermark {} < {end}",
                    f.high_watermark
                );
                if std::env::var_os("GREGOR_DEBUG_TAILS").is_some() {
                    eprintln!("{}", cluster.tails());
                }
                return Err(format!(
                    "node {leader}: high watermark {} < {end}",
                    f.high_watermark
                ));
            }
            if offset >= f.high_watermark {
                return Ok(out);
            }
            let start = offset;
            for (_, batch) in scan(&f.records) {
                if !batch.is_control() {
                    for r in decode_records(&batch)
                        .map_err(|e| format!("batch at {}: {e}", batch.base_offset()))?
                    {
                        let value = r.value.as_deref().unwrap_or_default();
                        let value = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                        let value = value.ok_or(format!("record at {} is not a number", r.offset))?;
                        out.push((r.offset, value));
                    }
                }
                offset = batch.last_offset() + 1;
            }
            if offset == start {
                return Err(format!(
                    "no batch at offset {start} below high watermark {}",
                    f.high_watermark
                ));
            }
        }
    })
}

/// b. acks=all records survive SIGKILLs of the partition leader: three rounds of kill,
/// produce on through the failover (timed), restart; then every acknowledged record is
/// read back at the offset it was acknowledged with, in order.
#[test]
fn acks_all_survives_leader_sigkill() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    cluster.wait_formed(CONVERGE);
    cluster.create_topic("failover", 1, 3);
    let mut producer = Producer::new(&cluster, "failover");
    let mut next = 0u64;
    let mut send = |producer: &mut Producer, n: u64| {
        for _ in 0..n {
            producer.send(next);
            next += 1;
        }
    };
    send(&mut producer, 20);
    let mut failovers_ms = Vec::new();
    for round in 1..=3 {
        let leader = producer.current_leader();
        let killed_at = Instant::now();
        cluster.kill(leader);
        send(&mut producer, 1);
        let failover = killed_at.elapsed();
        let new_leader = producer.current_leader();
        assert_ne!(new_leader, leader, "the killed node acknowledged a record");
        eprintln!(
            "failover_ms={} round={round} killed=node{leader} new_leader=node{new_leader}",
            failover.as_millis()
        );
        failovers_ms.push(failover.as_millis());
        send(&mut producer, 20);
        cluster.restart(leader);
        // Back in the cluster once its metadata names a live leader for the partition.
        cluster.wait_for(&format!("node {leader} rejoins"), CONVERGE, || {
            let m = cluster.metadata(leader, Some(&["failover"]))?;
            let p = m
                .topic("failover")
                .and_then(|t| t.partitions.first())
                .ok_or("no topic")?;
            match p.leader {
                l if l > 0 => Ok(()),
                l => Err(format!("leader {l}")),
            }
        });
        send(&mut producer, 20);
    }
    let end = producer
        .acked
        .iter()
        .map(|&(_, offset)| offset + 1)
        .max()
        .unwrap_or(0);
    let records = read_partition(&cluster, "failover", end);
    let by_offset: BTreeMap<i64, u64> = records.iter().copied().collect();
    for &(value, offset) in &producer.acked {
        assert_eq!(
            by_offset.get(&offset),
            Some(&value),
            "acknowledged record {value} is not at its offset {offset}"
        );
    }
    let values: Vec<u64> = records.iter().map(|&(_, v)| v).collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {values:?}"
    );
    assert!(
        values.iter().all(|&v| v < next),
        "a record never sent: {values:?}"
    );
    let distinct: BTreeSet<u64> = values.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        next,
        "every record was acknowledged, so every one is there"
    );
    eprintln!(
        "acks_all_survives_leader_sigkill: records={next} stored={} duplicates={} (producer not idempotent) \
         failed_attempts={} failovers_ms={failovers_ms:?} total_ms={}",
        values.len(),
        values.len() - distinct.len(),
        producer.failed_attempts,
        t0.elapsed().as_millis()
    );
}

/// A replica that restarts is a follower until Raft says otherwise: in the first moments
/// after its restart it must not name itself leader, acknowledge a produce, or serve a fetch
/// (with a high watermark it has not learnt yet). Watched for one second after the restart.
#[test]
fn a_restarted_replica_does_not_act_as_leader() {
    const WATCH: Duration = Duration::from_secs(1);
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    cluster.wait_formed(CONVERGE);
    cluster.create_topic("restarted", 1, 3);
    let mut producer = Producer::new(&cluster, "restarted");
    for value in 0..10 {
        producer.send(value);
    }
    let leader = producer.current_leader();
    let end = producer.acked.last().map_or(0, |&(_, offset)| offset + 1);
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.kill(follower);
    cluster.restart(follower);
    let restarted = Instant::now();
    let addr = cluster.node(follower).kafka_addr.clone();
    let mut conn = Conn::connect(&addr, REQUEST_TIMEOUT).unwrap();
    let mut violations = Vec::new();
    while restarted.elapsed() < WATCH {
        let at_ms = restarted.elapsed().as_millis();
        let m = conn.metadata(Some(&["restarted"])).unwrap();
        let named = m
            .topic("restarted")
            .and_then(|t| t.partitions.first())
            .map(|p| p.leader);
        if named == Some(follower) {
            violations.push(format!("{at_ms} ms: Metadata names node {follower} the leader"));
        }
        let f = conn.fetch("restarted", 0, 0, 1 << 20).unwrap();
        if f.error_code == code::NONE && f.high_watermark < end {
            violations.push(format!(
                "{at_ms} ms: Fetch answered with high watermark {} < {end} acknowledged",
                f.high_watermark
            ));
        }
        let value = format!("restart-{at_ms}");
        let batch = build_batch(&[RecordSpec {
            key: None,
            value: Some(value.clone().into_bytes().into()),
            headers: vec![],
            timestamp_ms: 0,
        }]);
        let (error_code, offset) = conn.produce("restarted", 0, 1, 5_000, &batch).unwrap();
        if error_code == code::NONE {
            violations.push(format!(
                "{at_ms} ms: an acks=1 produce ({value}) acknowledged at offset {offset}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        violations.is_empty(),
        "node {follower} (restarted; node {leader} leads):\n{}",
        violations.join("\n")
    );
}

/// A node that is still waiting for the others (no quorum yet, so no listening line) stops
/// promptly and cleanly on SIGTERM, as a ready node does.
#[test]
fn sigterm_stops_a_node_that_has_not_joined() {
    const STOP_WITHIN: Duration = Duration::from_secs(5);
    let _serial = serial();
    let mut cluster = Cluster::new(3);
    cluster.spawn(1);
    // The engine has recovered its metadata log and now waits for a quorum (the signal
    // handler is installed by then).
    cluster.wait_for("node 1 recovers its metadata log", EXIT_WAIT, || {
        let log = cluster.log(1);
        log.contains("metadata image caught up")
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    let stopping = Instant::now();
    let status = cluster.stop_all()[&1];
    let took = stopping.elapsed();
    assert!(
        status.success() && took < STOP_WITHIN,
        "node 1 stopped with {status} after {} ms (wanted success within {STOP_WITHIN:?})",
        took.as_millis()
    );
}

/// c. Topics and their partition counts survive stopping and starting every node.
#[test]
fn restart_keeps_metadata() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    cluster.wait_formed(CONVERGE);
    let topics: [(&str, i32, i16); 3] = [("keep-a", 1, 3), ("keep-b", 4, 3), ("keep-c", 2, 1)];
    for (name, partitions, rf) in topics {
        cluster.create_topic(name, partitions, rf);
    }
    let names: Vec<&str> = topics.iter().map(|t| t.0).collect();
    let converged = |cluster: &Cluster, what: &str| {
        cluster.wait_for(what, CONVERGE, || {
            let mut ids = BTreeSet::new();
            for id in cluster.ids() {
                let m = cluster.metadata(id, Some(&names))?;
                for (name, partitions, rf) in topics {
                    let t = m.topic(name).ok_or(format!("node {id} has no {name}"))?;
                    let ok = t.error_code == code::NONE
                        && t.partitions.len() == partitions as usize
                        && t.partitions
                            .iter()
                            .all(|p| p.replicas.len() == rf as usize && p.replicas.contains(&p.leader));
                    if !ok {
                        return Err(format!("node {id}: {t:?}"));
                    }
                }
                ids.insert(
                    m.cluster_id
                        .clone()
                        .ok_or(format!("node {id} has no cluster id"))?,
                );
            }
            match ids.len() {
                1 => Ok(ids.pop_first().unwrap()),
                _ => Err(format!("cluster ids differ: {ids:?}")),
            }
        })
    };
    let before = converged(&cluster, "every node shows the topics");
    let created = t0.elapsed();
    for (id, status) in cluster.stop_all() {
        assert!(status.success(), "node {id} stopped with {status}");
    }
    let stopped = t0.elapsed();
    for id in cluster.ids() {
        cluster.spawn(id);
    }
    for id in cluster.ids() {
        cluster.wait_ready(id);
    }
    let after = converged(&cluster, "every node shows the topics after the restart");
    assert_eq!(before, after, "the cluster id survives a restart");
    eprintln!(
        "restart_keeps_metadata: created_ms={} stopped_ms={} converged_again_ms={}",
        created.as_millis(),
        stopped.as_millis(),
        t0.elapsed().as_millis()
    );
}
