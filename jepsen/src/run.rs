//! One harness run, start to verdict: the cluster in network namespaces, the queue workload
//! and the nemesis running together for the time limit, every fault healed, the final
//! reads, then the checker and the plots. Everything lands in the results folder:
//!
//! | file | what |
//! |---|---|
//! | `test.json` | the run's options (seed, nemeses, workload settings) |
//! | `nemesis.json` | the fault schedule the seed chose |
//! | `history.jsonl` | every invocation and completion, nemesis steps as process -1 |
//! | `verdict.json` | the checker's verdict: valid, or the anomalies with their ops |
//! | `throughput.svg`, `latency.svg` | plots with the fault windows shaded |
//! | `n1.log` … | each node's log (stdout and stderr, across restarts) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checker::{self, CheckOptions, Verdict};
use crate::cluster::{self, Cluster, ClusterOptions, Subnet};
use crate::history::{History, OpType, OpValue, NEMESIS};
use crate::kafka::{LeaderLookup, ProducerSettings};
use crate::nemesis::{LeaderTarget, Nemesis, NemesisKind, Phase, Schedule};
use crate::plot::{self, FaultWindow, OpSample, Outcome, PlotSpec};
use crate::recorder::{event, Recorder};
use crate::workload::{SubVia, Workload, WorkloadOptions};

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub nodes: usize,
    pub nemesis: Vec<NemesisKind>,
    /// The nemesis list as given, for the record.
    pub nemesis_names: String,
    pub nemesis_interval: f64,
    pub time_limit: Duration,
    pub seed: u64,
    pub results: PathBuf,
    pub gregor: PathBuf,
    pub prefix: String,
    /// First three octets of the cluster's /24.
    pub subnet: String,
    /// Planted bugs every gregor gets (`--planted NAME`).
    pub planted: Vec<String>,
    pub keep_data: bool,
    pub final_wait: Duration,
    pub final_time_limit: Duration,
    pub concurrency: usize,
    pub rate: f64,
    pub key_count: usize,
    pub max_writes_per_key: u64,
    pub sub_via: SubVia,
    pub producer: ProducerSettings,
    pub replication: i32,
}

/// How a run ended.
pub struct RunOutcome {
    pub valid: bool,
    /// One line: the verdict and the counts.
    pub summary: String,
    pub verdict: Verdict,
    pub results: PathBuf,
}

/// What the checker is told for this run's settings. Without idempotence a producer's
/// retry can store a value twice; Kafka promises nothing better then, so `duplicate` is
/// allowed only when retries are on and idempotence is off.
pub fn check_options(o: &RunOptions) -> CheckOptions {
    CheckOptions {
        subscribe_allowed: o.sub_via.subscribes(),
        ..CheckOptions::default()
    }
}

/// Whether a producer retry may legitimately store a value twice (retries on, idempotence
/// off): then `duplicate` is expected Kafka behaviour, not an anomaly of the broker.
pub fn duplicates_allowed(o: &RunOptions) -> bool {
    !o.producer.idempotence && o.producer.retries > 0
}

fn parse_subnet(s: &str) -> Result<Subnet, String> {
    let octets: Vec<u8> = s
        .split('.')
        .map(|o| o.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--subnet {s}: expected three octets like 10.77.0"))?;
    if octets.len() != 3 {
        return Err(format!("--subnet {s}: expected three octets like 10.77.0"));
    }
    Ok(Subnet {
        base: std::net::Ipv4Addr::new(octets[0], octets[1], octets[2], 0),
        prefix_len: 24,
    })
}

fn say(start: Instant, msg: impl AsRef<str>) {
    eprintln!("[{:>7.1}s] {}", start.elapsed().as_secs_f64(), msg.as_ref());
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

pub fn run(o: &RunOptions) -> Result<RunOutcome, String> {
    let t0 = Instant::now();
    cluster::netns_available().map_err(|e| format!("network namespaces unavailable: {e}"))?;
    if !o.gregor.is_file() {
        return Err(format!("gregor binary {} does not exist", o.gregor.display()));
    }
    std::fs::create_dir_all(&o.results).map_err(|e| format!("creating {}: {e}", o.results.display()))?;
    let results = o
        .results
        .canonicalize()
        .map_err(|e| format!("{}: {e}", o.results.display()))?;
    let checks = check_options(o);
    write_json(
        &results.join("test.json"),
        &json!({
            "workload": "queue",
            "nodes": o.nodes,
            "nemesis": o.nemesis_names,
            "nemesis_interval_s": o.nemesis_interval,
            "time_limit_s": o.time_limit.as_secs_f64(),
            "seed": o.seed,
            "concurrency": o.concurrency,
            "rate": o.rate,
            "key_count": o.key_count,
            "max_writes_per_key": o.max_writes_per_key,
            "sub_via": o.sub_via.name(),
            "acks": "all",
            "idempotence": o.producer.idempotence,
            "retries": o.producer.retries,
            "replication": o.replication,
            "isolation_level": "read_committed",
            "key_to_topic": "key k is partition k % 2 of topic jq{k / 2}",
            "planted": o.planted,
            "final_wait_s": o.final_wait.as_secs_f64(),
            "final_time_limit_s": o.final_time_limit.as_secs_f64(),
            "check_options": checks,
            "duplicates_allowed": duplicates_allowed(o),
            "gregor": o.gregor.display().to_string(),
        }),
    )?;
    let schedule = Schedule::new(
        &o.nemesis,
        o.nodes,
        o.seed,
        o.time_limit.as_secs_f64(),
        o.nemesis_interval,
    )?;
    write_json(&results.join("nemesis.json"), &schedule)?;

    cluster::cleanup_leftovers(&o.prefix).map_err(|e| format!("cleaning up leftovers: {e}"))?;
    let mut copts = ClusterOptions::new(o.nodes, &o.gregor, &results);
    copts.prefix = o.prefix.clone();
    copts.subnet = parse_subnet(&o.subnet)?;
    copts.extra_args = o
        .planted
        .iter()
        .flat_map(|p| ["--planted".to_string(), p.clone()])
        .collect();
    say(
        t0,
        format!(
            "starting {} gregor nodes in network namespaces {}-n*",
            o.nodes, o.prefix
        ),
    );
    let cluster = Arc::new(Cluster::start(&copts).map_err(|e| format!("starting the cluster: {e}"))?);
    let bootstrap = cluster.bootstrap();
    say(t0, format!("cluster up: {bootstrap}"));

    let outcome = drive(o, &results, &cluster, &bootstrap, schedule, checks, t0);
    if let Err(e) = cluster.stop() {
        say(t0, format!("stopping the cluster: {e}"));
    }
    if !o.keep_data {
        for n in 1..=o.nodes {
            let _ = std::fs::remove_dir_all(cluster.data_dir(n));
        }
    }
    outcome
}

fn drive(
    o: &RunOptions,
    results: &Path,
    cluster: &Arc<Cluster>,
    bootstrap: &str,
    schedule: Schedule,
    checks: CheckOptions,
    t0: Instant,
) -> Result<RunOutcome, String> {
    let start = Instant::now();
    let rec = Arc::new(
        Recorder::create(&results.join("history.jsonl"), start)
            .map_err(|e| format!("creating history.jsonl: {e}"))?,
    );
    let workload = Workload::new(
        WorkloadOptions {
            bootstrap: bootstrap.to_string(),
            concurrency: o.concurrency,
            rate: o.rate,
            key_count: o.key_count,
            max_writes_per_key: o.max_writes_per_key,
            sub_via: o.sub_via,
            producer: o.producer.clone(),
            replication: o.replication,
            seed: o.seed,
            send_timeout: Duration::from_secs(10),
            final_time_limit: o.final_time_limit,
            group: "jepsen".into(),
        },
        rec.clone(),
        Instant::now() + Duration::from_secs(60),
    )?;
    say(
        t0,
        format!(
            "topics created; main phase: {} s, nemesis {}",
            o.time_limit.as_secs(),
            o.nemesis_names
        ),
    );

    let stop_main = Arc::new(AtomicBool::new(false));
    let stop_creator = Arc::new(AtomicBool::new(false));
    let creator = {
        let (w, stop) = (workload.clone(), stop_creator.clone());
        thread::spawn(move || w.run_topic_creator(&stop))
    };
    let workers: Vec<_> = (0..o.concurrency)
        .map(|i| {
            let (w, stop) = (workload.clone(), stop_main.clone());
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || w.run_worker(i, &stop))
                .expect("spawn worker")
        })
        .collect();
    let lookup = LeaderLookup::new(bootstrap)?;
    let leader_of = {
        let w = workload.clone();
        move |t: LeaderTarget| -> Option<usize> {
            let id = match t {
                LeaderTarget::PartitionLeader => lookup.partition_leader(w.hot_key()?),
                LeaderTarget::Controller => lookup.controller(),
            }?;
            usize::try_from(id).ok().filter(|&n| n >= 1)
        }
    };
    let sink = {
        let rec = rec.clone();
        move |e: crate::nemesis::NemesisEvent| {
            let mut value = e.value;
            if let (Some(err), Some(map)) = (&e.error, value.as_object_mut()) {
                map.insert("error".into(), json!(err));
            }
            let mut op = event(NEMESIS, OpType::Info, e.f, OpValue::Other(value));
            if e.phase == Phase::Start {
                op.kind = OpType::Invoke;
            }
            rec.record(op);
        }
    };
    let stop_nemesis = Arc::new(AtomicBool::new(false));
    let nemesis = Nemesis::spawn(cluster.clone(), schedule, stop_nemesis.clone(), leader_of, sink)
        .map_err(|e| format!("starting the nemesis: {e}"))?;

    let main_end = start + o.time_limit;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while Instant::now() < main_end {
        thread::sleep(Duration::from_millis(200).min(main_end.saturating_duration_since(Instant::now())));
        if Instant::now() >= next_report {
            rec.flush();
            say(t0, format!("{} history events", rec.len()));
            next_report += Duration::from_secs(10);
        }
    }
    stop_main.store(true, Ordering::SeqCst);
    let mut states: Vec<_> = workers
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    let report = nemesis
        .join()
        .map_err(|_| "the nemesis thread panicked".to_string())?;
    say(
        t0,
        format!(
            "main phase over; nemesis: {} steps, {} failed; everything healed",
            report.steps,
            report.errors.len()
        ),
    );
    for e in &report.errors {
        say(t0, format!("  nemesis step failed: {e}"));
    }
    thread::sleep(o.final_wait);
    let targets = workload.targets();
    say(
        t0,
        format!(
            "final reads of {} keys (cap {} s)",
            targets.len(),
            o.final_time_limit.as_secs()
        ),
    );
    let deadline = Instant::now() + o.final_time_limit;
    let finals: Vec<bool> = thread::scope(|s| {
        let handles: Vec<_> = states
            .iter_mut()
            .map(|st| {
                let (w, targets) = (&workload, &targets);
                s.spawn(move || w.final_read(st, targets, Duration::from_secs(10), deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("final reader panicked"))
            .collect()
    });
    let reached = finals.iter().filter(|&&r| r).count();
    say(
        t0,
        format!(
            "final reads: {reached}/{} workers reached every key's end",
            finals.len()
        ),
    );
    stop_creator.store(true, Ordering::SeqCst);
    let _ = creator.join();
    let end_s = start.elapsed().as_secs_f64();
    drop(workload);
    let rec = Arc::try_unwrap(rec).map_err(|_| "history still shared at the end".to_string())?;
    let history = rec.finish().map_err(|e| format!("writing history.jsonl: {e}"))?;

    let verdict = judge(&history, &checks, duplicates_allowed(o));
    write_json(&results.join("verdict.json"), &verdict)?;
    let samples = op_samples(&history);
    let faults = fault_windows(&history, end_s);
    let title = format!(
        "gregor-jepsen seed {}: {}, {} nodes{}",
        o.seed,
        o.nemesis_names,
        o.nodes,
        if o.planted.is_empty() {
            String::new()
        } else {
            format!(", planted {}", o.planted.join(","))
        }
    );
    let plots = plot::plot_run(
        results,
        &PlotSpec {
            title: &title,
            ops: &samples,
            faults: &faults,
            end_s,
        },
    )
    .map_err(|e| format!("plots: {e}"))?;
    say(t0, format!("results in {}", results.display()));
    for p in &plots {
        say(t0, format!("  plot {}", p.display()));
    }
    if !verdict.valid {
        for (kind, list) in &verdict.anomalies {
            if let Some(a) = list.first() {
                say(
                    t0,
                    format!("  {kind}: e.g. key {:?} {} (ops {:?})", a.key, a.detail, a.ops),
                );
            }
        }
    }
    Ok(RunOutcome {
        valid: verdict.valid,
        summary: checker::summary_line(&verdict),
        verdict,
        results: results.to_path_buf(),
    })
}

/// The checker's verdict plus the harness's two rules: `duplicate` allowed when a retry
/// without idempotence may store a value twice, and a run in which nothing was acknowledged
/// or nothing read tested nothing, so it is not a pass.
pub fn judge(history: &History, checks: &CheckOptions, duplicates_allowed: bool) -> Verdict {
    let mut verdict = checker::check(history, checks);
    if duplicates_allowed {
        verdict.bad_error_types.retain(|k| k != "duplicate");
        verdict.valid = verdict.bad_error_types.is_empty();
    }
    if verdict.stats.sends_acked == 0 || verdict.stats.values_read == 0 {
        let kind = "nothing-acknowledged-or-read".to_string();
        verdict.error_types.push(kind.clone());
        verdict.anomaly_counts.insert(kind.clone(), 1);
        verdict.bad_error_types.push(kind);
        verdict.valid = false;
    }
    verdict
}

/// Checks the history of an earlier run again (`--check`): `path` is a results folder or
/// its `history.jsonl`; the checker options come from the folder's `test.json`. Given a
/// folder, the verdict is also written to its `verdict-recheck.json` and the plots are
/// drawn again.
pub fn recheck(path: &Path) -> Result<RunOutcome, String> {
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join("history.jsonl"))
    } else {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path.to_path_buf(),
        )
    };
    let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let history =
        History::read_jsonl(std::io::BufReader::new(f)).map_err(|e| format!("{}: {e}", file.display()))?;
    let test: serde_json::Value = match std::fs::read_to_string(dir.join("test.json")) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.join("test.json").display()))?
        }
        Err(_) => serde_json::Value::Null,
    };
    let checks = test
        .get("check_options")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let dups = test
        .get("duplicates_allowed")
        .and_then(|d| d.as_bool())
        .unwrap_or(false);
    let verdict = judge(&history, &checks, dups);
    // Next to the run's own verdict.json, which stays as the run wrote it; the plots are
    // drawn again (with this version's plotting).
    if path.is_dir() {
        write_json(&dir.join("verdict-recheck.json"), &verdict)?;
        let end_s = history.ops.last().map_or(0.0, |o| o.time as f64 / 1e9);
        let title = format!(
            "gregor-jepsen seed {}: {}, {} nodes",
            test.get("seed").unwrap_or(&json!("?")),
            test.get("nemesis").and_then(|n| n.as_str()).unwrap_or("?"),
            test.get("nodes").unwrap_or(&json!("?")),
        );
        plot::plot_run(
            &dir,
            &PlotSpec {
                title: &title,
                ops: &op_samples(&history),
                faults: &fault_windows(&history, end_s),
                end_s,
            },
        )
        .map_err(|e| format!("plots: {e}"))?;
    }
    Ok(RunOutcome {
        valid: verdict.valid,
        summary: checker::summary_line(&verdict),
        verdict,
        results: dir,
    })
}

fn outcome(kind: OpType) -> Outcome {
    match kind {
        OpType::Ok => Outcome::Ok,
        OpType::Fail => Outcome::Fail,
        _ => Outcome::Info,
    }
}

/// Every worker op's invocation and completion, for the plots.
pub fn op_samples(h: &History) -> Vec<OpSample> {
    let mut open: BTreeMap<i64, (f64, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for op in &h.ops {
        if op.process == NEMESIS {
            continue;
        }
        let t = op.time as f64 / 1e9;
        if op.kind == OpType::Invoke {
            open.insert(op.process, (t, op.f.clone()));
        } else if let Some((invoke_s, f)) = open.remove(&op.process) {
            out.push(OpSample {
                f,
                outcome: outcome(op.kind),
                invoke_s,
                complete_s: t,
            });
        }
    }
    out
}

fn node_list(v: &OpValue) -> String {
    match v {
        OpValue::Other(j) => match j.get("nodes").and_then(|n| n.as_array()) {
            Some(nodes) => nodes
                .iter()
                .filter_map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(","),
            None => j.get("shape").and_then(|s| s.as_str()).unwrap_or("").to_string(),
        },
        _ => String::new(),
    }
}

/// The spans during which a fault held, from the nemesis's completed steps: kill … start,
/// pause … resume, partition … heal.
pub fn fault_windows(h: &History, end_s: f64) -> Vec<FaultWindow> {
    let mut open: BTreeMap<&'static str, (f64, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for op in h
        .ops
        .iter()
        .filter(|o| o.process == NEMESIS && o.kind != OpType::Invoke)
    {
        let t = op.time as f64 / 1e9;
        let (slot, opens) = match op.f.as_str() {
            "kill" => ("kill", true),
            "start" => ("kill", false),
            "pause" => ("pause", true),
            "resume" => ("pause", false),
            "partition" => ("partition", true),
            "heal" => ("partition", false),
            _ => continue,
        };
        if opens {
            let label = format!("{} {}", op.f, node_list(&op.value));
            if let Some((s, l)) = open.insert(slot, (t, label)) {
                out.push(FaultWindow {
                    start_s: s,
                    end_s: t,
                    label: l,
                });
            }
        } else if let Some((s, label)) = open.remove(slot) {
            out.push(FaultWindow {
                start_s: s,
                end_s: t,
                label,
            });
        }
    }
    for (_, (s, label)) in open {
        out.push(FaultWindow {
            start_s: s,
            end_s,
            label,
        });
    }
    out.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Mop, Op};

    fn op(index: u64, secs: f64, process: i64, kind: OpType, f: &str, value: OpValue) -> Op {
        Op::new(index, (secs * 1e9) as u64, process, kind, f, value)
    }

    fn nodes(n: &[&str]) -> OpValue {
        OpValue::Other(json!({ "nodes": n }))
    }

    #[test]
    fn fault_windows_pair_each_fault_with_its_undo() {
        use OpType::*;
        let h = History {
            ops: vec![
                op(0, 1.0, NEMESIS, Invoke, "kill", nodes(&["n2"])),
                op(1, 1.5, NEMESIS, Info, "kill", nodes(&["n2"])),
                op(
                    2,
                    2.0,
                    NEMESIS,
                    Info,
                    "partition",
                    OpValue::Other(json!({"shape": "halves"})),
                ),
                op(3, 4.0, NEMESIS, Info, "start", nodes(&["n2"])),
                op(4, 5.0, NEMESIS, Info, "pause", nodes(&["n1", "n3"])),
            ],
        };
        let w = fault_windows(&h, 9.0);
        let got: Vec<(f64, f64, &str)> = w.iter().map(|w| (w.start_s, w.end_s, w.label.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1.5, 4.0, "kill n2"),
                (2.0, 9.0, "partition halves"),
                (5.0, 9.0, "pause n1,n3"),
            ]
        );
    }

    #[test]
    fn op_samples_pair_invocations_with_completions_per_process() {
        use OpType::*;
        let send = |o| {
            OpValue::Mops(vec![Mop::Send {
                key: 1,
                value: 2,
                offset: o,
            }])
        };
        let poll = OpValue::Mops(vec![Mop::Poll(vec![])]);
        let h = History {
            ops: vec![
                op(0, 1.0, 0, Invoke, "send", send(None)),
                op(1, 1.1, 1, Invoke, "poll", poll.clone()),
                op(2, 1.2, NEMESIS, Info, "kill", nodes(&["n1"])),
                op(3, 1.3, 1, Ok, "poll", poll),
                op(4, 3.0, 0, Info, "send", send(None)),
                op(5, 3.5, 2, Invoke, "send", send(None)),
            ],
        };
        let s = op_samples(&h);
        assert_eq!(s.len(), 2, "the nemesis and the open op are no samples");
        assert_eq!((s[0].f.as_str(), s[0].outcome), ("poll", Outcome::Ok));
        assert_eq!((s[1].f.as_str(), s[1].outcome), ("send", Outcome::Info));
        assert!((s[1].complete_s - s[1].invoke_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn subnets_are_three_octets() {
        assert_eq!(
            parse_subnet("10.79.0").unwrap().base,
            std::net::Ipv4Addr::new(10, 79, 0, 0)
        );
        assert!(parse_subnet("10.79").is_err());
        assert!(parse_subnet("10.79.0.0").is_err());
        assert!(parse_subnet("10.300.0").is_err());
    }

    #[test]
    fn recheck_reads_a_results_folder_and_applies_its_rules() {
        use OpType::*;
        let send = |k, v, o| {
            OpValue::Mops(vec![Mop::Send {
                key: k,
                value: v,
                offset: o,
            }])
        };
        let poll = |r: Vec<(u64, u64, i64)>| OpValue::Mops(vec![Mop::Poll(r)]);
        // Value 0 of key 1 is acknowledged twice at two offsets (a producer retry) and read
        // by two consumers: a duplicate, fine without idempotence, an anomaly with it.
        let ops = vec![
            op(0, 0.1, 0, Invoke, "send", send(1, 0, None)),
            op(1, 0.2, 0, Ok, "send", send(1, 0, Some(0))),
            op(2, 0.3, 1, Invoke, "poll", poll(vec![])),
            op(3, 0.4, 1, Ok, "poll", poll(vec![(1, 0, 0)])),
            op(4, 0.5, 2, Invoke, "poll", poll(vec![])),
            op(5, 0.6, 2, Ok, "poll", poll(vec![(1, 0, 1)])),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("history.jsonl")).unwrap();
        History { ops }.write_jsonl(&mut f).unwrap();
        let test = |dups: bool| {
            let t = json!({"check_options": CheckOptions::default(), "duplicates_allowed": dups});
            std::fs::write(dir.path().join("test.json"), t.to_string()).unwrap();
            recheck(dir.path()).unwrap()
        };
        let strict = test(false);
        assert!(
            !strict.valid && strict.summary.contains("duplicate"),
            "{}",
            strict.summary
        );
        let lenient = test(true);
        assert!(lenient.valid, "{}", lenient.summary);
        assert!(dir.path().join("verdict-recheck.json").is_file());
        assert!(dir.path().join("throughput.svg").is_file());
        assert!(recheck(&dir.path().join("missing.jsonl")).is_err());
    }

    #[test]
    fn a_run_that_acknowledged_nothing_is_no_pass() {
        use OpType::*;
        let send = |o| {
            OpValue::Mops(vec![Mop::Send {
                key: 1,
                value: 0,
                offset: o,
            }])
        };
        let h = History {
            ops: vec![
                op(0, 0.1, 0, Invoke, "send", send(None)),
                op(1, 0.2, 0, Fail, "send", send(None)),
                op(2, 0.3, 1, Invoke, "poll", OpValue::Mops(vec![Mop::Poll(vec![])])),
                op(3, 0.4, 1, Ok, "poll", OpValue::Mops(vec![Mop::Poll(vec![])])),
            ],
        };
        let v = judge(&h, &CheckOptions::default(), false);
        assert!(!v.valid);
        assert_eq!(
            v.bad_error_types,
            vec!["nothing-acknowledged-or-read".to_string()]
        );
    }
}
