//! Building the [`BrokerConfig`]: defaults, then the `--config` TOML file, then flags.
//! File keys are Kafka's names; TOML reads an unquoted dotted key (`num.partitions = 3`) as
//! nested tables, so nested tables are flattened back into dotted names.

use std::path::Path;

use gregor_engine::config::parse_host_port;
use gregor_engine::BrokerConfig;

use crate::cli::Args;
use crate::NodeError;

/// The settings from the file and flags, before the listen address is bound.
#[derive(Debug)]
pub struct Settings {
    broker: BrokerConfig,
    advertised_set: bool,
}

/// Reads the config file `args` names and applies the flags over it.
pub fn load(args: &Args) -> Result<Settings, NodeError> {
    let mut broker = BrokerConfig::default();
    let mut advertised_set = false;
    if let Some(path) = &args.config {
        for (key, value) in read_file(path)? {
            broker.set(&key, &value).map_err(|e| NodeError::Config {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            advertised_set |= key == "advertised.listeners";
        }
    }
    if let Some(node_id) = args.node_id {
        broker
            .set("node.id", &node_id.to_string())
            .map_err(|e| NodeError::Flag(format!("--node-id: {e}")))?;
    }
    if let Some(advertised) = &args.advertised_listener {
        broker
            .set("advertised.listeners", advertised)
            .map_err(|e| NodeError::Flag(format!("--advertised-listener: {e}")))?;
        advertised_set = true;
    }
    Ok(Settings {
        broker,
        advertised_set,
    })
}

impl Settings {
    /// The final config: `listen_addr` (the address actually bound) is advertised unless the
    /// file or a flag named another; `rng_seed` comes from the OS.
    pub fn finish(mut self, listen_addr: &str, rng_seed: u64) -> Result<BrokerConfig, NodeError> {
        if !self.advertised_set {
            let (host, port) = parse_host_port(listen_addr)
                .ok_or_else(|| NodeError::Flag(format!("--listen: '{listen_addr}' is not HOST:PORT")))?;
            self.broker.advertised_host = host;
            self.broker.advertised_port = port;
        }
        self.broker.rng_seed = rng_seed;
        Ok(self.broker)
    }
}

/// The file's settings as `(dotted key, value as text)`, in key order.
fn read_file(path: &Path) -> Result<Vec<(String, String)>, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| NodeError::Config {
        file: path.display().to_string(),
        reason: format!("cannot read it: {}", gregor_net::describe_io_error(&e)),
    })?;
    parse(&text).map_err(|reason| NodeError::Config {
        file: path.display().to_string(),
        reason,
    })
}

/// Parses config text into flat `(key, value)` pairs; the error is one line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        }
    })?;
    let mut out = Vec::new();
    flatten("", &table, &mut out)?;
    Ok(out)
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) -> Result<(), String> {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            toml::Value::Table(nested) => {
                flatten(&key, nested, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(_) | toml::Value::Datetime(_) => {
                return Err(format!("'{key}': expected a number, true/false or a string"));
            }
        };
        out.push((key, text));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn dotted_quoted_and_nested_keys_flatten_alike() {
        let text = r#"
            "num.partitions" = 3
            auto.create.topics.enable = false
            [log]
            "segment.bytes" = "4096"
            retention.ms = 1000
        "#;
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[
                ("auto.create.topics.enable", "false"),
                ("log.retention.ms", "1000"),
                ("log.segment.bytes", "4096"),
                ("num.partitions", "3"),
            ])
        );
    }

    #[test]
    fn bad_files_give_one_line() {
        let e = parse("num.partitions = \n").unwrap_err();
        assert!(e.starts_with("line 1: "), "{e}");
        assert!(!e.contains('\n'));
        let e = parse("x = [1, 2]").unwrap_err();
        assert!(e.contains("'x'"), "{e}");
    }

    #[test]
    fn flags_override_the_file_and_advertised_defaults_to_listen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "node.id = 7\nnum.partitions = 4\n").unwrap();
        let args = Args::parse_from(["gregor", "--config", file.to_str().unwrap(), "--node-id", "3"]);
        let c = load(&args).unwrap().finish("127.0.0.1:4000", 99).unwrap();
        assert_eq!((c.node_id, c.num_partitions, c.rng_seed), (3, 4, 99));
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 4000)
        );

        std::fs::write(&file, "\"advertised.listeners\" = \"PLAINTEXT://kafka-1:9093\"\n").unwrap();
        let args = Args::parse_from(["gregor", "--config", file.to_str().unwrap()]);
        let c = load(&args).unwrap().finish("127.0.0.1:4000", 0).unwrap();
        assert_eq!((c.advertised_host.as_str(), c.advertised_port), ("kafka-1", 9093));
        let args = Args::parse_from([
            "gregor",
            "--config",
            file.to_str().unwrap(),
            "--advertised-listener",
            "h:1",
        ]);
        let c = load(&args).unwrap().finish("127.0.0.1:4000", 0).unwrap();
        assert_eq!((c.advertised_host.as_str(), c.advertised_port), ("h", 1));
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "num.partitions = 0\n").unwrap();
        let args = Args::parse_from(["gregor", "--config", file.to_str().unwrap()]);
        let e = load(&args).unwrap_err().to_string();
        assert!(e.contains("num.partitions") && e.contains("g.toml"), "{e}");
    }
}
