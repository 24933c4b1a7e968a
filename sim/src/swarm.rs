//! Per-seed options (swarm testing): from the run seed alone, each run decides the cluster
//! shape, the workload, which fault kinds are on and how often they strike. Every concern
//! draws from its own RNG derived from the seed ([`rng_for`]), so adding a fault kind or a
//! client does not reshuffle the choices of the others.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::CrashModel;
use crate::net::NetFaults;
use crate::trace::derive_seed;

/// The RNG for one concern of one run.
pub fn rng_for(seed: u64, concern: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(seed, concern))
}

/// A planted engine bug the run switches on (only effective with the `planted-bugs` feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Planted {
    AckBeforeFsync,
    SkipRecoveryCrc,
    IndexOffByOne,
    /// Raft (cluster runs): votes and term changes leave before they are persisted.
    VoteWithoutPersist,
    /// Raft: a follower acknowledges entries written but not fsynced.
    FollowerAckBeforeFsync,
    /// Raft: the leader commits what it alone holds.
    CommitOnMinority,
    /// Raft: a follower appends over a divergent suffix without cutting it.
    SkipTruncation,
}

impl Planted {
    pub const ALL: [Planted; 7] = [
        Planted::AckBeforeFsync,
        Planted::SkipRecoveryCrc,
        Planted::IndexOffByOne,
        Planted::VoteWithoutPersist,
        Planted::FollowerAckBeforeFsync,
        Planted::CommitOnMinority,
        Planted::SkipTruncation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Planted::AckBeforeFsync => "ack-before-fsync",
            Planted::SkipRecoveryCrc => "skip-recovery-crc",
            Planted::IndexOffByOne => "index-off-by-one",
            Planted::VoteWithoutPersist => "vote-without-persist",
            Planted::FollowerAckBeforeFsync => "follower-ack-before-fsync",
            Planted::CommitOnMinority => "commit-on-minority",
            Planted::SkipTruncation => "skip-truncation",
        }
    }

    pub fn parse(s: &str) -> Option<Planted> {
        Planted::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Cluster sizes the simulator runs: one node (no peers), or a Raft cluster of 3 or 5.
pub const NODE_COUNTS: [usize; 3] = [1, 3, 5];

/// What the command line fixes for every seed of an invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    /// Brokers in the cluster (one of [`NODE_COUNTS`]); every one is a metadata voter.
    pub nodes: usize,
    /// Length of the safety phase (faults on) in simulated ms; `None` = the seed chooses.
    pub safety_ms: Option<u64>,
    /// Engine steps after which the safety phase ends early.
    pub steps_max: Option<u64>,
    /// Planted bugs to switch on.
    pub planted: Vec<Planted>,
    /// Turn every fault kind off (for a healthy baseline).
    pub no_faults: bool,
    /// Print every engine step and fault to stderr (does not change the run).
    pub verbose: bool,
    /// Run group consumers whatever the seed draws (with the options it draws).
    pub groups: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            nodes: 1,
            safety_ms: None,
            steps_max: None,
            planted: Vec::new(),
            no_faults: false,
            verbose: false,
            groups: false,
        }
    }
}

impl RunSettings {
    /// The command-line flags that reproduce these settings (seed excluded).
    pub fn to_flags(&self) -> String {
        let mut f = String::new();
        if self.nodes != 1 {
            f.push_str(&format!(" --nodes {}", self.nodes));
        }
        if let Some(ms) = self.safety_ms {
            f.push_str(&format!(" --time-limit-ms {ms}"));
        }
        if let Some(n) = self.steps_max {
            f.push_str(&format!(" --steps {n}"));
        }
        for p in &self.planted {
            f.push_str(&format!(" --planted {}", p.name()));
        }
        if self.no_faults {
            f.push_str(" --no-faults");
        }
        if self.groups {
            f.push_str(" --groups");
        }
        f
    }
}

/// Crashes (power loss) and restarts of the node.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashFault {
    /// Mean time between crashes (exponentially distributed gaps).
    pub interval_ms_mean: u64,
    /// The node comes back after a uniform delay up to this.
    pub restart_ms_max: u64,
    /// Probability that a "crash" is a graceful Shutdown (then power loss after Stopped).
    pub graceful_p: f64,
    /// What survives of unsynced writes.
    pub model: CrashModel,
}

/// Windows during which appends fail with NoSpace.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskFullFault {
    pub interval_ms_mean: u64,
    pub duration_ms_max: u64,
}

/// Jumps of the node's wall clock.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockSkewFault {
    pub interval_ms_mean: u64,
    pub jump_ms_max: i64,
}

/// Occasional very slow IO ops.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowIoFault {
    pub p: f64,
    pub extra_ms_max: u64,
}

/// Pauses of one node (as SIGSTOP then SIGCONT): meanwhile it processes nothing (timers, IO
/// completions, peer messages and requests wait), then sees all that at once.
#[derive(Clone, Debug, PartialEq)]
pub struct PauseFault {
    pub interval_ms_mean: u64,
    pub duration_ms_max: u64,
}

/// Group consumers ([`crate::group_client`]): how many, their timeouts and how often they
/// churn (leave, crash, pause past the session timeout).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupOptions {
    pub members: usize,
    /// `session.timeout.ms`; members heartbeat every third of it.
    pub session_timeout_ms: u64,
    /// `max.poll.interval.ms`: how long a rebalance waits for members to rejoin.
    pub rebalance_timeout_ms: u64,
    /// Broker `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: u64,
    /// A member commits its positions after a uniform gap up to this.
    pub commit_interval_ms_max: u64,
    /// Mean gap between a member's leaves, crashes and pauses (fault phase); `None`: none.
    pub churn_interval_ms_mean: Option<u64>,
    /// Cluster: the isolate-leader nemesis aims at the group coordinator's
    /// `__consumer_offsets` partition leader instead of the topic's partition 0 leader.
    pub target_coordinator: bool,
}

/// Share of seeds that run group consumers.
const GROUPS_P: f64 = 0.25;

fn choose_groups(seed: u64, settings: &RunSettings) -> Option<GroupOptions> {
    let mut r = rng_for(seed, "swarm/groups");
    let on = r.gen_bool(GROUPS_P);
    let g = GroupOptions {
        members: r.gen_range(1..=3),
        session_timeout_ms: [600u64, 1_000, 3_000][r.gen_range(0..3)],
        rebalance_timeout_ms: [1_000u64, 3_000][r.gen_range(0..2)],
        initial_rebalance_delay_ms: [0u64, 50, 300][r.gen_range(0..3)],
        commit_interval_ms_max: [100u64, 300, 1_000][r.gen_range(0..3)],
        churn_interval_ms_mean: r
            .gen_bool(0.7)
            .then(|| [1_000u64, 2_000, 4_000][r.gen_range(0..3)]),
        target_coordinator: r.gen_bool(0.5),
    };
    let churn = g.churn_interval_ms_mean.filter(|_| !settings.no_faults);
    (on || settings.groups).then_some(GroupOptions {
        churn_interval_ms_mean: churn,
        ..g
    })
}

/// What a seed chooses for a cluster (more than one node).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// Replicas of the clients' topic: every node, but 3 of 5 (so some brokers host no
    /// replica of a partition and must send clients elsewhere).
    pub replication_factor: i16,
    /// The peer network and its faults (healed with the rest).
    pub net: NetFaults,
    pub pause: Option<PauseFault>,
    /// Node indexes whose crashes may flip a bit in kept unsynced bytes: at most a minority
    /// of any partition's replicas, so a majority keeps an intact copy.
    pub corrupt_nodes: Vec<usize>,
}

/// Which fault kinds are on, and how often they strike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    pub crash: Option<CrashFault>,
    /// Probability that one Sync fails (the engine must then stop with Fatal).
    pub fsync_error_p: Option<f64>,
    pub disk_full: Option<DiskFullFault>,
    pub clock_skew: Option<ClockSkewFault>,
    pub slow_io: Option<SlowIoFault>,
    /// Probability per client request that the client drops its connection right after
    /// sending (the engine sees ConnectionClosed with the request in flight).
    pub client_disconnect_p: Option<f64>,
}

/// Everything a seed chose.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmOptions {
    pub seed: u64,
    pub partitions: i32,
    /// Topic config `segment.bytes` (small, so segments roll often).
    pub segment_bytes: u64,
    /// Topic config `index.interval.bytes` (small, so indexes have many entries).
    pub index_interval_bytes: u32,
    pub producers: usize,
    pub consumers: usize,
    /// Relative weights of acks 0, 1 and -1 for each produce.
    pub acks_weights: [u32; 3],
    pub records_per_batch_max: usize,
    pub value_bytes_max: usize,
    /// Probability that a produced batch is compressed (codec chosen uniformly).
    pub compression_p: f64,
    /// Client think time between operations, uniform in `0..=think_ms_max`.
    pub think_ms_max: u64,
    /// IO latency, uniform in this range.
    pub io_latency_ms: (u64, u64),
    /// One-way client <-> node latency, uniform in this range.
    pub net_latency_ms: (u64, u64),
    /// Length of the safety phase (faults on).
    pub safety_ms: u64,
    /// Crash and restart once more after healing, before the final read.
    pub final_crash: bool,
    pub faults: Faults,
    /// `None` on a single node.
    pub cluster: Option<ClusterOptions>,
    /// `None`: no group consumers.
    pub groups: Option<GroupOptions>,
}

impl SwarmOptions {
    /// The options `seed` chooses, with command-line overrides applied.
    pub fn choose(seed: u64, settings: &RunSettings) -> SwarmOptions {
        let mut rng = rng_for(seed, "swarm/shape");
        let partitions = rng.gen_range(1..=3);
        let segment_bytes = [1024u64, 2048, 4096, 16384][rng.gen_range(0..4)];
        let index_interval_bytes = [1u32, 100, 100, 300][rng.gen_range(0..4)];
        let producers = rng.gen_range(1..=4);
        let consumers = rng.gen_range(1..=3);
        let acks_weights = [rng.gen_range(0..=2), rng.gen_range(1..=4), rng.gen_range(1..=4)];
        let records_per_batch_max = [1usize, 3, 8][rng.gen_range(0..3)];
        let value_bytes_max = [16usize, 64, 200][rng.gen_range(0..3)];
        let compression_p = [0.0, 0.0, 0.3][rng_for(seed, "swarm/compression").gen_range(0..3)];
        let think_ms_max = [0u64, 5, 20, 50][rng.gen_range(0..4)];
        let io_hi = [1u64, 3, 10][rng.gen_range(0..3)];
        let net_hi = [1u64, 2, 5][rng.gen_range(0..3)];
        // Drawn even when overridden, so an override does not shift the draws after it.
        let safety_ms_drawn = rng.gen_range(2_000..=5_000);
        let final_crash = rng.gen_bool(0.5);
        let faults = if settings.no_faults {
            Faults::default()
        } else {
            choose_faults(seed)
        };
        let cluster = (settings.nodes > 1).then(|| choose_cluster(seed, settings, &faults));
        let mut faults = faults;
        if let (Some(c), Some(crash)) = (&cluster, faults.crash.as_mut()) {
            // The nemesis strikes one node at a time: each node crashes as often as the one
            // node of the same seed would (a cluster-wide crash every 200 ms keeps it electing).
            crash.interval_ms_mean *= c.nodes as u64;
        }
        // A cluster spends its first second or two electing leaders: give it longer.
        let safety_ms_drawn = match cluster {
            Some(_) => rng_for(seed, "swarm/cluster-time").gen_range(CLUSTER_SAFETY_MS),
            None => safety_ms_drawn,
        };
        let safety_ms = settings.safety_ms.unwrap_or(safety_ms_drawn);
        SwarmOptions {
            seed,
            partitions,
            segment_bytes,
            index_interval_bytes,
            producers,
            consumers,
            acks_weights,
            records_per_batch_max,
            value_bytes_max,
            compression_p,
            think_ms_max,
            io_latency_ms: (0, io_hi),
            net_latency_ms: (0, net_hi),
            safety_ms,
            final_crash: final_crash && !settings.no_faults,
            faults,
            cluster,
            groups: choose_groups(seed, settings),
        }
    }

    /// Brokers in the run.
    pub fn nodes(&self) -> usize {
        self.cluster.as_ref().map_or(1, |c| c.nodes)
    }
}

/// Length of a cluster run's safety phase (simulated ms).
const CLUSTER_SAFETY_MS: std::ops::RangeInclusive<u64> = 4_000..=10_000;

fn choose_cluster(seed: u64, settings: &RunSettings, faults: &Faults) -> ClusterOptions {
    let nodes = settings.nodes;
    let replication_factor = nodes.min(3) as i16;
    let net = NetFaults::choose(&mut rng_for(seed, "swarm/net"));
    let mut r = rng_for(seed, "swarm/pause");
    let pause_on = r.gen_bool(0.4);
    let pause = PauseFault {
        interval_ms_mean: [300u64, 1_000, 3_000][r.gen_range(0..3)],
        duration_ms_max: [50u64, 500, 2_000][r.gen_range(0..3)],
    };
    // A bit flip lands only in unsynced bytes the CRC catches; still, keep it to a minority
    // of any partition's replicas (DESIGN.md's corruption budget).
    let corrupt_max = (replication_factor as usize - 1) / 2;
    let mut r = rng_for(seed, "swarm/corrupt");
    let flips = faults.crash.as_ref().is_some_and(|c| c.model.bit_flip_p > 0.0);
    let mut corrupt_nodes: Vec<usize> = Vec::new();
    while flips && corrupt_nodes.len() < corrupt_max {
        let n = r.gen_range(0..nodes);
        if !corrupt_nodes.contains(&n) {
            corrupt_nodes.push(n);
        }
    }
    corrupt_nodes.sort_unstable();
    let faults_on = !settings.no_faults;
    ClusterOptions {
        nodes,
        replication_factor,
        net: if faults_on { net } else { net.healed() },
        pause: pause_on.then_some(pause).filter(|_| faults_on),
        corrupt_nodes,
    }
}

fn choose_faults(seed: u64) -> Faults {
    // One RNG per fault kind: whether it is on, then its rates.
    let mut f = Faults::default();
    let mut r = rng_for(seed, "swarm/crash");
    if r.gen_bool(0.7) {
        f.crash = Some(CrashFault {
            interval_ms_mean: [200u64, 500, 1500][r.gen_range(0..3)],
            restart_ms_max: [1u64, 50, 300][r.gen_range(0..3)],
            graceful_p: [0.0, 0.1, 0.3][r.gen_range(0..3)],
            model: CrashModel {
                lose_all_p: [0.0, 0.3, 0.7][r.gen_range(0..3)],
                tear_p: [0.0, 0.5, 1.0][r.gen_range(0..3)],
                bit_flip_p: if r.gen_bool(0.5) {
                    [0.2, 1.0][r.gen_range(0..2)]
                } else {
                    0.0
                },
            },
        });
    }
    let mut r = rng_for(seed, "swarm/fsync");
    if r.gen_bool(0.3) {
        f.fsync_error_p = Some([0.001, 0.01, 0.05][r.gen_range(0..3)]);
    }
    let mut r = rng_for(seed, "swarm/full");
    if r.gen_bool(0.3) {
        f.disk_full = Some(DiskFullFault {
            interval_ms_mean: [300u64, 1000][r.gen_range(0..2)],
            duration_ms_max: [20u64, 200, 1000][r.gen_range(0..3)],
        });
    }
    let mut r = rng_for(seed, "swarm/clock");
    if r.gen_bool(0.4) {
        f.clock_skew = Some(ClockSkewFault {
            interval_ms_mean: [100u64, 1000][r.gen_range(0..2)],
            jump_ms_max: [1_000i64, 60_000, 86_400_000][r.gen_range(0..3)],
        });
    }
    let mut r = rng_for(seed, "swarm/slow-io");
    if r.gen_bool(0.3) {
        f.slow_io = Some(SlowIoFault {
            p: [0.01, 0.1][r.gen_range(0..2)],
            extra_ms_max: [50u64, 500][r.gen_range(0..2)],
        });
    }
    let mut r = rng_for(seed, "swarm/client-disconnect");
    if r.gen_bool(0.3) {
        f.client_disconnect_p = Some([0.01, 0.05][r.gen_range(0..2)]);
    }
    f
}

impl fmt::Display for SwarmOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} partitions={} segment.bytes={} index.interval.bytes={} producers={} consumers={} \
             acks[0,1,all]={:?} records/batch<={} value_bytes<={} compression_p={} think_ms<={} io_ms={}..={} net_ms={}..={} \
             safety_ms={} final_crash={} faults: {}",
            self.seed,
            self.partitions,
            self.segment_bytes,
            self.index_interval_bytes,
            self.producers,
            self.consumers,
            self.acks_weights,
            self.records_per_batch_max,
            self.value_bytes_max,
            self.compression_p,
            self.think_ms_max,
            self.io_latency_ms.0,
            self.io_latency_ms.1,
            self.net_latency_ms.0,
            self.net_latency_ms.1,
            self.safety_ms,
            self.final_crash,
            self.faults
        )?;
        if let Some(c) = &self.cluster {
            write!(
                f,
                " cluster: nodes={} replication.factor={} net: {} pause: {} bit_flip_nodes={:?}",
                c.nodes,
                c.replication_factor,
                c.net,
                c.pause.as_ref().map_or("none".to_string(), |p| format!(
                    "every~{}ms for<={}ms",
                    p.interval_ms_mean, p.duration_ms_max
                )),
                c.corrupt_nodes
            )?;
        }
        if let Some(g) = &self.groups {
            write!(
                f,
                " groups: members={} session_ms={} rebalance_ms={} initial_delay_ms={} commit_ms<={} churn={} target_coordinator={}",
                g.members,
                g.session_timeout_ms,
                g.rebalance_timeout_ms,
                g.initial_rebalance_delay_ms,
                g.commit_interval_ms_max,
                g.churn_interval_ms_mean
                    .map_or("none".to_string(), |m| format!("every~{m}ms")),
                g.target_coordinator
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(c) = &self.crash {
            parts.push(format!(
                "crash(every~{}ms restart<={}ms graceful={} lose_all={} tear={} bit_flip={})",
                c.interval_ms_mean,
                c.restart_ms_max,
                c.graceful_p,
                c.model.lose_all_p,
                c.model.tear_p,
                c.model.bit_flip_p
            ));
        }
        if let Some(p) = self.fsync_error_p {
            parts.push(format!("fsync_error(p={p})"));
        }
        if let Some(d) = &self.disk_full {
            parts.push(format!(
                "disk_full(every~{}ms for<={}ms)",
                d.interval_ms_mean, d.duration_ms_max
            ));
        }
        if let Some(c) = &self.clock_skew {
            parts.push(format!(
                "clock_skew(every~{}ms jump<=±{}ms)",
                c.interval_ms_mean, c.jump_ms_max
            ));
        }
        if let Some(s) = &self.slow_io {
            parts.push(format!("slow_io(p={} extra<={}ms)", s.p, s.extra_ms_max));
        }
        if let Some(p) = self.client_disconnect_p {
            parts.push(format!("client_disconnect(p={p})"));
        }
        if parts.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", parts.join(" "))
        }
    }
}

/// An exponentially distributed gap with the given mean, at least 1 ms.
pub fn exp_gap_ms(rng: &mut ChaCha8Rng, mean_ms: u64) -> u64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    ((-u.ln()) * mean_ms as f64).max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_a_function_of_the_seed() {
        let s = RunSettings::default();
        assert_eq!(SwarmOptions::choose(5, &s), SwarmOptions::choose(5, &s));
        let distinct: std::collections::BTreeSet<String> = (0..20)
            .map(|seed| SwarmOptions::choose(seed, &s).faults.to_string())
            .collect();
        assert!(distinct.len() > 5, "seeds should choose different fault mixes");
    }

    #[test]
    fn overriding_the_time_limit_changes_nothing_else() {
        let default = SwarmOptions::choose(11, &RunSettings::default());
        let limited = SwarmOptions::choose(
            11,
            &RunSettings {
                safety_ms: Some(123),
                ..RunSettings::default()
            },
        );
        assert_eq!(limited.safety_ms, 123);
        assert_eq!(
            SwarmOptions {
                safety_ms: default.safety_ms,
                ..limited
            },
            default
        );
    }

    #[test]
    fn no_faults_turns_everything_off() {
        let s = RunSettings {
            no_faults: true,
            ..RunSettings::default()
        };
        let o = SwarmOptions::choose(9, &s);
        assert_eq!(o.faults, Faults::default());
        assert!(!o.final_crash);
    }

    #[test]
    fn cluster_options_respect_the_corruption_budget_and_leave_one_node_alone() {
        let one = RunSettings::default();
        for nodes in [3usize, 5] {
            let s = RunSettings {
                nodes,
                ..RunSettings::default()
            };
            let mut flipping_seeds = 0;
            for seed in 0..100 {
                let o = SwarmOptions::choose(seed, &s);
                let c = o.cluster.clone().expect("a cluster");
                assert_eq!((c.nodes, o.nodes()), (nodes, nodes));
                assert_eq!(c.replication_factor, 3);
                assert!(c.corrupt_nodes.len() <= 1, "a minority of 3 replicas: {c:?}");
                assert!(c.corrupt_nodes.iter().all(|&n| n < nodes));
                let flips = o.faults.crash.as_ref().is_some_and(|f| f.model.bit_flip_p > 0.0);
                assert_eq!(flips, !c.corrupt_nodes.is_empty());
                flipping_seeds += usize::from(flips);
                // The single-node choices are the same whatever the cluster size (but the
                // crash nemesis, which strikes one of N nodes, comes N times as often).
                let single = SwarmOptions::choose(seed, &one);
                assert_eq!(single.cluster, None);
                let mut faults = o.faults.clone();
                if let (Some(c), Some(s)) = (faults.crash.as_mut(), single.faults.crash.as_ref()) {
                    assert_eq!(c.interval_ms_mean, s.interval_ms_mean * nodes as u64);
                    c.interval_ms_mean = s.interval_ms_mean;
                }
                assert_eq!(
                    SwarmOptions {
                        cluster: None,
                        safety_ms: single.safety_ms,
                        faults,
                        ..o.clone()
                    },
                    single
                );
                assert!(CLUSTER_SAFETY_MS.contains(&o.safety_ms));
                assert!(o
                    .to_string()
                    .contains(&format!("cluster: nodes={nodes} replication.factor=3")));
            }
            assert!(flipping_seeds > 5);
        }
        let quiet = SwarmOptions::choose(
            3,
            &RunSettings {
                nodes: 3,
                no_faults: true,
                ..RunSettings::default()
            },
        );
        let c = quiet.cluster.expect("a cluster");
        assert_eq!(c.net, c.net.healed());
        assert_eq!((c.pause, c.corrupt_nodes), (None, vec![]));
    }

    #[test]
    fn the_node_count_is_part_of_the_replay_flags() {
        assert_eq!(RunSettings::default().to_flags(), "");
        let s = RunSettings {
            nodes: 3,
            no_faults: true,
            ..RunSettings::default()
        };
        assert_eq!(s.to_flags(), " --nodes 3 --no-faults");
    }

    #[test]
    fn planted_names_round_trip() {
        for p in Planted::ALL {
            assert_eq!(Planted::parse(p.name()), Some(p));
        }
    }
}
