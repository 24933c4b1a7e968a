//! Carries out a `Schedule` against a `FaultTarget` in real time, reporting each step
//! (Start, then Done with an error if it failed) to the caller's sink. A failed step never
//! panics or stops the schedule; the final heal-all always runs.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Action, FaultOp, FaultTarget, LeaderTarget, NemesisEvent, Phase, Schedule};
use crate::cluster::{node_name, Grudge};

/// How often a sleeping nemesis looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What a nemesis run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NemesisReport {
    /// Steps carried out (each reported as a Start/Done pair).
    pub steps: usize,
    /// The error of every failed step, in order.
    pub errors: Vec<String>,
    /// The stop flag ended the schedule before the time limit.
    pub stopped_early: bool,
}

/// The nemesis runner; see the module doc.
pub struct Nemesis;

impl Nemesis {
    /// Runs `schedule` on the calling thread, from now, until its heal-all (at the time
    /// limit, or at once when `stop` is raised); then everything is healed. `leader` names
    /// the node a leader-targeted fault hits, at the moment it starts.
    pub fn run(
        target: &dyn FaultTarget,
        schedule: &Schedule,
        stop: &AtomicBool,
        leader: &mut dyn FnMut(LeaderTarget) -> Option<usize>,
        sink: &mut dyn FnMut(NemesisEvent),
    ) -> NemesisReport {
        assert_eq!(
            target.node_count(),
            schedule.nodes,
            "schedule made for another cluster size"
        );
        let mut ex = Executor {
            target,
            leader,
            sink,
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
            report: NemesisReport::default(),
        };
        let t0 = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| ex.run_schedule(schedule, stop, t0)));
        ex.heal_all();
        if let Err(payload) = outcome {
            panic::resume_unwind(payload);
        }
        ex.report
    }

    /// `run` on its own thread ("nemesis"); join it for the report. An `Arc<Cluster>`
    /// coerces to the `target` argument.
    pub fn spawn(
        target: Arc<dyn FaultTarget>,
        schedule: Schedule,
        stop: Arc<AtomicBool>,
        mut leader: impl FnMut(LeaderTarget) -> Option<usize> + Send + 'static,
        mut sink: impl FnMut(NemesisEvent) + Send + 'static,
    ) -> std::io::Result<JoinHandle<NemesisReport>> {
        thread::Builder::new()
            .name("nemesis".into())
            .spawn(move || Nemesis::run(&*target, &schedule, &stop, &mut leader, &mut sink))
    }
}

struct Executor<'a> {
    target: &'a dyn FaultTarget,
    leader: &'a mut dyn FnMut(LeaderTarget) -> Option<usize>,
    sink: &'a mut dyn FnMut(NemesisEvent),
    /// Nodes the active kill fault took down (restarted by its undo).
    killed: BTreeSet<usize>,
    /// Nodes the active pause fault stopped.
    paused: BTreeSet<usize>,
    report: NemesisReport,
}

/// Sleeps until `deadline`; false when `stop` was raised first.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(STOP_POLL));
    }
}

fn names(nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|&n| node_name(n)).collect()
}

/// "n2: error; n3: error" for the nodes whose operation failed.
fn each<E: std::fmt::Display>(nodes: &[usize], mut op: impl FnMut(usize) -> Result<(), E>) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|&n| op(n).err().map(|e| format!("{}: {e}", node_name(n))))
        .collect()
}

impl Executor<'_> {
    fn run_schedule(&mut self, schedule: &Schedule, stop: &AtomicBool, t0: Instant) {
        for Action { at_s, op } in schedule.actions() {
            let at = t0 + Duration::from_secs_f64(*at_s);
            if !sleep_until(at, stop) {
                self.report.stopped_early = true;
                return;
            }
            if *op == FaultOp::HealAll {
                return; // run() does it, whatever happened
            }
            self.execute(op);
        }
    }

    fn emit(&mut self, phase: Phase, f: &'static str, value: &Value, error: Option<String>) {
        (self.sink)(NemesisEvent {
            time: Instant::now(),
            phase,
            f,
            value: value.clone(),
            error,
        });
    }

    /// Reports Start, runs `act` (which returns the failures), reports Done.
    fn step(&mut self, f: &'static str, value: Value, act: impl FnOnce() -> Vec<String>) {
        self.emit(Phase::Start, f, &value, None);
        let failures = act();
        let error = if failures.is_empty() {
            None
        } else {
            Some(failures.join("; "))
        };
        if let Some(e) = &error {
            self.report.errors.push(format!("{f} {value}: {e}"));
        }
        self.report.steps += 1;
        self.emit(Phase::Done, f, &value, error);
    }

    /// The node `which` names now, or a failed step explaining why there is none.
    fn resolve(&mut self, f: &'static str, which: LeaderTarget) -> Option<usize> {
        let nodes = self.target.node_count();
        let error = match (self.leader)(which) {
            Some(n) if (1..=nodes).contains(&n) => return Some(n),
            Some(n) => format!(
                "leader lookup for {} named node {n}, not 1..={nodes}",
                which.name()
            ),
            None => format!("no {} known", which.name()),
        };
        self.step(f, json!({ "leader": which.name() }), || vec![error]);
        None
    }

    fn execute(&mut self, op: &FaultOp) {
        let t = self.target;
        match op {
            FaultOp::Kill { nodes } => self.kill(nodes, None),
            FaultOp::KillLeader { leader } => {
                if let Some(n) = self.resolve("kill", *leader) {
                    self.kill(&[n], Some(*leader));
                }
            }
            FaultOp::RestartKilled => {
                let nodes: Vec<usize> = std::mem::take(&mut self.killed).into_iter().collect();
                if !nodes.is_empty() {
                    self.step("start", json!({ "nodes": names(&nodes) }), || {
                        t.start_nodes(&nodes)
                            .err()
                            .map(|e| e.to_string())
                            .into_iter()
                            .collect()
                    });
                }
            }
            FaultOp::Pause { nodes } => self.pause(nodes, None),
            FaultOp::PauseLeader { leader } => {
                if let Some(n) = self.resolve("pause", *leader) {
                    self.pause(&[n], Some(*leader));
                }
            }
            FaultOp::ResumePaused => {
                let nodes: Vec<usize> = std::mem::take(&mut self.paused).into_iter().collect();
                if !nodes.is_empty() {
                    self.step("resume", json!({ "nodes": names(&nodes) }), || {
                        each(&nodes, |n| t.resume(n))
                    });
                }
            }
            FaultOp::Partition { shape, grudge } => {
                let value = json!({ "grudge": grudge, "shape": shape });
                self.step("partition", value, || {
                    t.partition(grudge)
                        .err()
                        .map(|e| e.to_string())
                        .into_iter()
                        .collect()
                });
            }
            FaultOp::IsolateLeader { leader } => {
                if let Some(n) = self.resolve("partition", *leader) {
                    let grudge = Grudge::isolate(n, t.node_count());
                    let value = json!({ "grudge": grudge, "shape": "isolate", "leader": leader.name(), "nodes": names(&[n]) });
                    self.step("partition", value, || {
                        t.partition(&grudge)
                            .err()
                            .map(|e| e.to_string())
                            .into_iter()
                            .collect()
                    });
                }
            }
            FaultOp::Heal => {
                self.step("heal", json!({}), || {
                    t.heal().err().map(|e| e.to_string()).into_iter().collect()
                });
            }
            FaultOp::HealAll => unreachable!("run_schedule stops at heal-all"),
        }
    }

    fn kill(&mut self, nodes: &[usize], leader: Option<LeaderTarget>) {
        let t = self.target;
        let mut value = json!({ "nodes": names(nodes) });
        if let Some(l) = leader {
            value["leader"] = json!(l.name());
        }
        self.step("kill", value, || each(nodes, |n| t.kill(n)));
        // Even a failed kill is restarted by the undo (start is a no-op on a live node).
        self.killed.extend(nodes);
    }

    fn pause(&mut self, nodes: &[usize], leader: Option<LeaderTarget>) {
        let t = self.target;
        let mut value = json!({ "nodes": names(nodes) });
        if let Some(l) = leader {
            value["leader"] = json!(l.name());
        }
        self.step("pause", value, || each(nodes, |n| t.pause(n)));
        self.paused.extend(nodes);
    }

    /// Heals partitions, resumes every node, restarts every dead one (all together, so a
    /// killed majority can form a quorum again).
    fn heal_all(&mut self) {
        let t = self.target;
        let all: Vec<usize> = (1..=t.node_count()).collect();
        self.step("heal", json!({ "all": true }), || {
            t.heal().err().map(|e| e.to_string()).into_iter().collect()
        });
        self.step("resume", json!({ "nodes": names(&all), "all": true }), || {
            each(&all, |n| t.resume(n))
        });
        let dead: Vec<usize> = all.iter().copied().filter(|&n| !t.is_alive(n)).collect();
        if !dead.is_empty() {
            self.step("start", json!({ "nodes": names(&dead), "all": true }), || {
                t.start_nodes(&dead)
                    .err()
                    .map(|e| e.to_string())
                    .into_iter()
                    .collect()
            });
        }
        self.killed.clear();
        self.paused.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterError;
    use crate::nemesis::{parse_kinds, NemesisKind};
    use std::sync::Mutex;

    /// Nodes as flags, every call logged; restarts fail while `fail_starts` is set.
    #[derive(Default)]
    struct Fake {
        nodes: usize,
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        dead: BTreeSet<usize>,
        paused: BTreeSet<usize>,
        grudge: Grudge,
        calls: Vec<String>,
        fail_starts: bool,
    }

    impl Fake {
        fn new(nodes: usize) -> Fake {
            Fake {
                nodes,
                ..Fake::default()
            }
        }
        fn healthy(&self) -> bool {
            let s = self.state.lock().unwrap();
            s.dead.is_empty() && s.paused.is_empty() && s.grudge.is_empty()
        }
    }

    impl FaultTarget for Fake {
        fn node_count(&self) -> usize {
            self.nodes
        }
        fn kill(&self, node: usize) -> Result<(), ClusterError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(format!("kill {node}"));
            s.dead.insert(node);
            s.paused.remove(&node);
            Ok(())
        }
        fn start_nodes(&self, nodes: &[usize]) -> Result<(), ClusterError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(format!("start {nodes:?}"));
            if s.fail_starts {
                return Err(ClusterError::Io("disk on fire".into()));
            }
            for n in nodes {
                s.dead.remove(n);
            }
            Ok(())
        }
        fn pause(&self, node: usize) -> Result<(), ClusterError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(format!("pause {node}"));
            if !s.dead.contains(&node) {
                s.paused.insert(node);
            }
            Ok(())
        }
        fn resume(&self, node: usize) -> Result<(), ClusterError> {
            let mut s = self.state.lock().unwrap();
            s.paused.remove(&node);
            Ok(())
        }
        fn partition(&self, grudge: &Grudge) -> Result<(), ClusterError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push("partition".into());
            s.grudge = grudge.clone();
            Ok(())
        }
        fn heal(&self) -> Result<(), ClusterError> {
            self.state.lock().unwrap().grudge = Grudge::new();
            Ok(())
        }
        fn is_alive(&self, node: usize) -> bool {
            !self.state.lock().unwrap().dead.contains(&node)
        }
    }

    fn run(fake: &Fake, schedule: &Schedule, stop: &AtomicBool) -> (NemesisReport, Vec<NemesisEvent>) {
        let mut events = Vec::new();
        let mut leader = |w: LeaderTarget| Some(if w == LeaderTarget::Controller { 1 } else { 2 });
        let report = Nemesis::run(fake, schedule, stop, &mut leader, &mut |e| events.push(e));
        (report, events)
    }

    #[test]
    fn a_whole_schedule_runs_and_ends_healed() {
        let fake = Fake::new(3);
        let schedule = Schedule::new(&parse_kinds("all").unwrap(), 3, 5, 1.5, 0.1).unwrap();
        let (report, events) = run(&fake, &schedule, &AtomicBool::new(false));
        assert!(report.errors.is_empty() && !report.stopped_early, "{report:?}");
        assert!(fake.healthy());
        assert_eq!(events.len(), 2 * report.steps);
        for pair in events.chunks(2) {
            assert_eq!((pair[0].phase, pair[1].phase), (Phase::Start, Phase::Done));
            assert_eq!((pair[0].f, &pair[0].value), (pair[1].f, &pair[1].value));
            assert!(pair[0].time <= pair[1].time);
        }
        let fs: BTreeSet<&str> = events.iter().map(|e| e.f).collect();
        assert!(
            fs.is_superset(&BTreeSet::from([
                "kill",
                "start",
                "pause",
                "resume",
                "partition",
                "heal"
            ])),
            "{fs:?}"
        );
        // The last steps are the heal-all: heal, resume everyone (and restart the dead).
        let heal_all = events
            .iter()
            .position(|e| e.value == json!({ "all": true }))
            .unwrap();
        assert_eq!(events[heal_all].f, "heal");
        let everyone = json!({ "nodes": ["n1", "n2", "n3"], "all": true });
        assert_eq!(events[heal_all + 2].value, everyone);
        assert!(events.len() - heal_all <= 6);
    }

    #[test]
    fn the_stop_flag_skips_to_the_final_heal() {
        let fake = Fake::new(3);
        let kill_all = Schedule::new(&[NemesisKind::Kill], 3, 3, 600.0, 0.2).unwrap();
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (report, events) = thread::scope(|s| {
            let h = s.spawn(|| run(&fake, &kill_all, &stop));
            while !fake
                .state
                .lock()
                .unwrap()
                .calls
                .iter()
                .any(|c| c.starts_with("kill"))
            {
                thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::SeqCst);
            h.join().unwrap()
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(report.stopped_early);
        assert!(fake.healthy(), "heal-all restarted the killed nodes");
        assert_eq!(events.last().unwrap().f, "start");
    }

    #[test]
    fn a_failed_restart_is_an_error_event_not_a_panic() {
        let fake = Fake::new(3);
        fake.state.lock().unwrap().fail_starts = true;
        let schedule = Schedule::new(&[NemesisKind::Kill], 3, 1, 0.5, 0.1).unwrap();
        let (report, events) = run(&fake, &schedule, &AtomicBool::new(false));
        assert!(!report.errors.is_empty());
        let failed = events
            .iter()
            .find(|e| e.f == "start" && e.phase == Phase::Done)
            .unwrap();
        assert!(failed.error.as_deref().unwrap().contains("disk on fire"));
        // heal-all tried again at the end
        assert!(fake
            .state
            .lock()
            .unwrap()
            .calls
            .last()
            .unwrap()
            .starts_with("start"));
    }

    #[test]
    fn leader_faults_ask_the_callback_at_fault_time() {
        let fake = Fake::new(3);
        let schedule = Schedule::new(
            &parse_kinds("kill-leader,isolate-leader").unwrap(),
            3,
            2,
            1.0,
            0.1,
        )
        .unwrap();
        let mut asked = Vec::new();
        let mut events = Vec::new();
        let report = Nemesis::run(
            &fake,
            &schedule,
            &AtomicBool::new(false),
            &mut |w| {
                asked.push(w);
                None
            },
            &mut |e| events.push(e),
        );
        assert!(!asked.is_empty());
        assert_eq!(
            report.errors.len(),
            asked.len(),
            "each unresolved leader is one failed step"
        );
        assert!(events
            .iter()
            .any(|e| e.error.as_deref().is_some_and(|m| m.starts_with("no "))));
        assert!(fake
            .state
            .lock()
            .unwrap()
            .calls
            .iter()
            .all(|c| !c.starts_with("kill")));

        let fake = Fake::new(3);
        let (report, events) = run(&fake, &schedule, &AtomicBool::new(false));
        assert!(report.errors.is_empty());
        let isolated = events.iter().find(|e| e.f == "partition").unwrap();
        assert_eq!(isolated.value["shape"], "isolate");
        assert!(fake.healthy());
    }

    #[test]
    fn spawn_runs_on_a_named_thread() {
        let fake = Arc::new(Fake::new(3));
        let schedule = Schedule::new(&[NemesisKind::Pause], 3, 4, 0.3, 0.1).unwrap();
        let h = Nemesis::spawn(
            fake.clone(),
            schedule,
            Arc::new(AtomicBool::new(false)),
            |_| None,
            |e| {
                assert_eq!(thread::current().name(), Some("nemesis"), "{e:?}");
            },
        )
        .unwrap();
        assert!(h.join().unwrap().errors.is_empty());
        assert!(fake.healthy());
    }
}
