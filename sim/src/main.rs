//! `gregor-sim`: runs seeds of the deterministic simulator and reports one JSON line per run.
//!
//! `--seed S` runs one seed; `--seeds A..B` runs A up to B exclusive, `--seeds A..=B`
//! inclusive; `--nodes 3` (or 5) runs a Raft cluster instead of one broker. Each run prints
//! the options its seed chose; a failing run prints its violations and the command that
//! replays it. The exit status is 1 if any seed failed.
//! Release builds abort on panic, so a range runs in a child process: if the engine panics
//! on a seed, the parent reports that seed as failed and carries on with the next.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};

use clap::Parser;
use gregor_sim::swarm::NODE_COUNTS;
use gregor_sim::{run_seed, Planted, RunResult, RunSettings, SwarmOptions};

#[derive(Parser, Debug)]
#[command(name = "gregor-sim", about = "Gregor's deterministic simulator")]
struct Cli {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a range of seeds: `A..B` (B excluded) or `A..=B` (B included).
    #[arg(long)]
    seeds: Option<String>,
    /// Brokers in the cluster: 1 (no replication), 3 or 5 (Raft over a simulated network).
    #[arg(long, default_value_t = 1, value_parser = parse_nodes)]
    nodes: usize,
    /// End the safety phase (faults on) after this many engine steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Length of the safety phase in simulated milliseconds (default: the seed chooses).
    #[arg(long)]
    time_limit_ms: Option<u64>,
    /// Switch on a planted engine bug (needs `--features planted-bugs`); repeatable.
    #[arg(long, value_parser = parse_planted)]
    planted: Vec<Planted>,
    /// Turn every fault off.
    #[arg(long)]
    no_faults: bool,
    /// Run group consumers in every seed (by default about a third of the seeds draw them).
    #[arg(long)]
    groups: bool,
    /// Write the history of each run as JSON lines to DIR/seed-S.jsonl.
    #[arg(long, value_name = "DIR")]
    history_dir: Option<std::path::PathBuf>,
    /// Print every engine step, IO op and fault to stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Print only the JSON lines (and failures).
    #[arg(long, short)]
    quiet: bool,
    /// Run the range in this process (no child; a panic ends the whole range).
    #[arg(long)]
    in_process: bool,
    /// Set by the supervisor on its child (implies --in-process, no summary line).
    #[arg(long, hide = true)]
    supervised: bool,
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| NODE_COUNTS.contains(n))
        .ok_or_else(|| format!("--nodes must be one of {NODE_COUNTS:?}, not '{s}'"))
}

fn parse_planted(s: &str) -> Result<Planted, String> {
    let p = Planted::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Planted::ALL.iter().map(|p| p.name()).collect();
        format!("unknown planted bug '{s}'; one of {}", names.join(", "))
    })?;
    if cfg!(feature = "planted-bugs") {
        Ok(p)
    } else {
        Err("planted bugs need a build with `--features planted-bugs`".to_string())
    }
}

/// Parses `A..B` (exclusive) or `A..=B` (inclusive) into an inclusive range.
fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("bad seed range '{s}': expected A..B or A..=B");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let last = if inclusive {
        b
    } else {
        b.checked_sub(1).ok_or_else(bad)?
    };
    if last < a {
        return Err(format!("empty seed range '{s}'"));
    }
    Ok((a, last))
}

fn report(r: &RunResult, cli: &Cli) {
    let mut out = std::io::stdout().lock();
    if !r.ok() {
        let _ = out.write_all(r.failure_report(20).as_bytes());
    }
    if let Some(dir) = &cli.history_dir {
        let path = dir.join(format!("seed-{}.jsonl", r.seed));
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, r.history.to_json_lines()))
        {
            let _ = writeln!(out, "cannot write {}: {e}", path.display());
        }
    }
    let _ = writeln!(out, "{}", r.json_line());
    let _ = out.flush();
}

fn settings_of(cli: &Cli) -> RunSettings {
    RunSettings {
        nodes: cli.nodes,
        safety_ms: cli.time_limit_ms,
        steps_max: cli.steps,
        planted: cli.planted.clone(),
        no_faults: cli.no_faults,
        verbose: cli.verbose,
        groups: cli.groups,
    }
}

/// Runs `first..=last` here; returns the seeds that failed.
fn run_range(cli: &Cli, first: u64, last: u64) -> Vec<u64> {
    let settings = settings_of(cli);
    let mut failed = Vec::new();
    for seed in first..=last {
        if !cli.quiet {
            println!("seed {seed} options: {}", SwarmOptions::choose(seed, &settings));
        }
        let r = run_seed(seed, &settings);
        report(&r, cli);
        if !r.ok() {
            failed.push(seed);
        }
    }
    failed
}

/// Runs `first..=last` in child processes, restarting after a seed that kills its child.
fn supervise(cli: &Cli, first: u64, last: u64) -> Result<Vec<u64>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut passthrough: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" | "--seed" => {
                args.next();
            }
            _ if a.starts_with("--seeds=") || a.starts_with("--seed=") => {}
            _ => passthrough.push(a),
        }
    }
    let settings = settings_of(cli);
    let mut failed = Vec::new();
    let mut next = first;
    while next <= last {
        let mut child = Command::new(&exe)
            .args(&passthrough)
            .args(["--supervised", "--seeds", &format!("{next}..={last}")])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let mut last_done: Option<u64> = None;
        let mut panic_message = None;
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(m) = line.strip_prefix(PANIC_MARKER) {
                    panic_message = Some(m.to_string());
                    continue;
                }
                println!("{line}");
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(seed) = v.get("seed").and_then(|s| s.as_u64()) {
                        last_done = Some(seed);
                        if v.get("ok").and_then(|o| o.as_bool()) == Some(false) {
                            failed.push(seed);
                        }
                    }
                }
            }
        }
        let status = child.wait().map_err(|e| format!("waiting for the child: {e}"))?;
        let resume = last_done.map_or(next, |s| s + 1);
        if status.code().is_some() || resume > last {
            break;
        }
        // The child died on seed `resume` (a panic aborts in release builds).
        let why = panic_message.unwrap_or_else(|| format!("the run died ({status}); see stderr"));
        let r = RunResult::panicked(resume, &settings, why);
        report(&r, cli);
        failed.push(resume);
        next = resume + 1;
    }
    Ok(failed)
}

/// A supervised child prints this before aborting on a panic, followed by the message.
const PANIC_MARKER: &str = "gregor-sim-panic: ";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.supervised {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            let message = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            println!("{PANIC_MARKER}{}{at}", message.replace('\n', " "));
            let _ = std::io::stdout().flush();
        }));
    }
    let (first, last) = match (&cli.seed, &cli.seeds) {
        (Some(s), _) => (*s, *s),
        (None, Some(range)) => match parse_range(range) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("gregor-sim: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => (1, 1),
    };
    let started = std::time::Instant::now();
    let failed = if cli.in_process || cli.supervised || first == last {
        run_range(&cli, first, last)
    } else {
        match supervise(&cli, first, last) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("gregor-sim: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let runs = last - first + 1;
    let secs = started.elapsed().as_secs_f64();
    if !cli.supervised && (!cli.quiet || !failed.is_empty()) {
        eprintln!(
            "gregor-sim: {runs} seed(s), {} failed {:?}, {secs:.1}s ({:.1} seeds/s)",
            failed.len(),
            failed,
            runs as f64 / secs.max(1e-9)
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("1..200"), Ok((1, 199)));
        assert_eq!(parse_range("1..=200"), Ok((1, 200)));
        assert_eq!(parse_range("5..=5"), Ok((5, 5)));
        assert!(parse_range("5..5").is_err());
        assert!(parse_range("x").is_err());
    }
}
