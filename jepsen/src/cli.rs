//! `gregor-jepsen`: starts a real Gregor cluster in network namespaces, runs the queue
//! workload through librdkafka while a nemesis breaks the cluster, checks the history and
//! writes a results folder. The last line printed is the verdict; the exit status is 0 for a
//! valid history, 1 when anomalies were found, 2 when the run itself could not be done.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gregor_jepsen::kafka::ProducerSettings;
use gregor_jepsen::nemesis::parse_kinds;
use gregor_jepsen::run::{self, RunOptions};
use gregor_jepsen::workload::SubVia;

/// Breaks a real Gregor cluster and checks what real Kafka clients saw.
#[derive(Debug, Parser)]
#[command(name = "gregor-jepsen", version, about, long_about = None)]
struct Cli {
    /// Brokers in the cluster, each in its own network namespace.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Faults, comma-separated: none, kill, pause, partition (every shape), halves, isolate,
    /// ring, bridge, one-way, kill-leader, pause-leader, isolate-leader, kill-controller,
    /// isolate-controller, all.
    #[arg(long, default_value = "kill,pause,partition")]
    nemesis: String,
    /// The workload (only `queue` so far).
    #[arg(long, default_value = "queue")]
    workload: String,
    /// Seconds of the main phase (faults on).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seed of the fault schedule and the generator [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Mean seconds between fault starts.
    #[arg(long, default_value_t = 15.0)]
    nemesis_interval: f64,
    /// Worker processes running at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Target operations per second over all workers.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Active keys (partitions) at a time.
    #[arg(long, default_value_t = 10)]
    key_count: usize,
    /// Values per key before it retires and a fresh key replaces it.
    #[arg(long, default_value_t = 1024)]
    max_writes_per_key: u64,
    /// How consumers attach: assign, subscribe, or assign,subscribe.
    #[arg(long, default_value = "assign,subscribe")]
    sub_via: String,
    /// Idempotent producers (enable.idempotence): true or false.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// Producer retries (0: none; idempotence needs > 0).
    #[arg(long, default_value_t = 1000)]
    retries: u32,
    /// Replication factor of the workload's topics [default: min(3, nodes)].
    #[arg(long)]
    replication: Option<i32>,
    /// Seconds to wait after the final heal before the final reads.
    #[arg(long, default_value_t = 10)]
    final_wait: u64,
    /// Cap, in seconds, of the final read phase.
    #[arg(long, default_value_t = 200)]
    final_time_limit: u64,
    /// Results folder [default: jepsen-results/<time>-seed<seed>].
    #[arg(long)]
    results: Option<PathBuf>,
    /// The gregor binary [default: `gregor` next to this binary, else target/release/gregor].
    #[arg(long)]
    gregor: Option<PathBuf>,
    /// Name prefix of the namespaces, bridge and links (leftovers with it are removed).
    #[arg(long, default_value = "gj")]
    prefix: String,
    /// First three octets of the /24 the cluster uses (.1 is the harness, .11… the nodes).
    #[arg(long, default_value = "10.77.0")]
    subnet: String,
    /// Pass `--planted NAME` to every gregor (needs a gregor built with
    /// `--features planted-bugs`); repeatable.
    #[arg(long, value_name = "NAME")]
    planted: Vec<String>,
    /// Keep the nodes' data directories in the results folder (removed by default).
    #[arg(long)]
    keep_data: bool,
    /// Check an existing history instead of running: a results folder or its
    /// history.jsonl. The checker options come from the folder's test.json.
    #[arg(long, value_name = "PATH")]
    check: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check {
        return match run::recheck(path) {
            Err(e) => {
                eprintln!("gregor-jepsen: {e}");
                ExitCode::from(2)
            }
            Ok(outcome) => {
                println!("{}", outcome.summary);
                ExitCode::from(if outcome.valid { 0 } else { 1 })
            }
        };
    }
    match options(cli) {
        Err(e) => {
            eprintln!("gregor-jepsen: {e}");
            ExitCode::from(2)
        }
        Ok(opts) => match run::run(&opts) {
            Err(e) => {
                eprintln!("gregor-jepsen: {e}");
                ExitCode::from(2)
            }
            Ok(outcome) => {
                println!("{}", outcome.summary);
                if outcome.valid {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
        },
    }
}

fn options(cli: Cli) -> Result<RunOptions, String> {
    if cli.workload != "queue" {
        return Err(format!(
            "unknown --workload '{}'; only `queue` so far",
            cli.workload
        ));
    }
    if !(1..=9).contains(&cli.nodes) {
        return Err(format!("--nodes {}: between 1 and 9", cli.nodes));
    }
    if cli.concurrency == 0 || cli.key_count == 0 || cli.max_writes_per_key == 0 {
        return Err("--concurrency, --key-count and --max-writes-per-key must be positive".into());
    }
    if cli.rate <= 0.0 || cli.nemesis_interval <= 0.0 {
        return Err("--rate and --nemesis-interval must be positive".into());
    }
    if cli.idempotence && cli.retries == 0 {
        return Err("--idempotence true needs --retries > 0 (librdkafka refuses it)".into());
    }
    let nemesis = parse_kinds(&cli.nemesis)?;
    let sub_via = SubVia::parse(&cli.sub_via)?;
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 100_000)
            .unwrap_or(0)
    });
    let replication = cli.replication.unwrap_or(cli.nodes.min(3) as i32);
    if replication < 1 || replication as usize > cli.nodes {
        return Err(format!(
            "--replication {replication}: between 1 and --nodes ({})",
            cli.nodes
        ));
    }
    let results = cli.results.unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("jepsen-results/{stamp}-seed{seed}"))
    });
    let gregor = match cli.gregor {
        Some(p) => p,
        None => default_gregor()?,
    };
    Ok(RunOptions {
        nodes: cli.nodes,
        nemesis,
        nemesis_names: cli.nemesis,
        nemesis_interval: cli.nemesis_interval,
        time_limit: Duration::from_secs(cli.time_limit),
        seed,
        results,
        gregor,
        prefix: cli.prefix,
        subnet: cli.subnet,
        planted: cli.planted,
        keep_data: cli.keep_data,
        final_wait: Duration::from_secs(cli.final_wait),
        final_time_limit: Duration::from_secs(cli.final_time_limit),
        concurrency: cli.concurrency,
        rate: cli.rate,
        key_count: cli.key_count,
        max_writes_per_key: cli.max_writes_per_key,
        sub_via,
        producer: ProducerSettings {
            idempotence: cli.idempotence,
            retries: cli.retries,
        },
        replication,
    })
}

/// `gregor` next to this binary (cargo puts both in target/<profile>/), else
/// target/release/gregor under the current directory.
fn default_gregor() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("gregor");
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
            let p = dir.join("../release/gregor");
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    let p = PathBuf::from("target/release/gregor");
    if p.is_file() {
        return Ok(p);
    }
    tried.push(p);
    Err(format!(
        "no gregor binary found (tried {}); build it with `cargo build --release --bin gregor` or pass --gregor PATH",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<RunOptions, String> {
        let mut all = vec!["gregor-jepsen", "--gregor", "/bin/true"];
        all.extend_from_slice(args);
        options(Cli::try_parse_from(all).map_err(|e| e.to_string())?)
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_documented_example_parses() {
        let o = parse(&[
            "--nodes",
            "5",
            "--nemesis",
            "kill,partition",
            "--workload",
            "queue",
            "--time-limit",
            "300",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(
            (o.nodes, o.seed, o.time_limit.as_secs(), o.replication),
            (5, 7, 300, 3)
        );
        assert!(o.producer.idempotence);
        assert!(o.results.to_string_lossy().ends_with("-seed7"));
    }

    #[test]
    fn bad_input_is_named() {
        let bad = |args: &[&str], needle: &str| {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        };
        bad(&["--workload", "bank"], "'bank'");
        bad(&["--nodes", "0"], "--nodes 0");
        bad(&["--nemesis", "clock"], "clock");
        bad(&["--retries", "0"], "--retries > 0");
        bad(&["--nodes", "3", "--replication", "4"], "--replication 4");
        bad(&["--sub-via", "seek"], "'seek'");
        bad(&["--rate", "0"], "--rate");
        assert!(parse(&["--retries", "0", "--idempotence", "false"]).is_ok());
    }
}
