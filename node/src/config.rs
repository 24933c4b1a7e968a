//! Building the [`BrokerConfig`]: defaults, then the `--config` TOML file, then flags.
//! File keys are Kafka's names; TOML reads an unquoted dotted key (`num.partitions = 3`) as
//! nested tables, so nested tables are flattened back into dotted names.
//!
//! A node with metadata-quorum voters (`--peers` or `controller.quorum.voters`) also gets
//! its peer transport's settings here: it must be one of the voters, and every voter's
//! address resolves before anything is bound.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::Path;

use gregor_engine::config::parse_host_port;
use gregor_engine::BrokerConfig;
use gregor_net::peer::PeerConfig;

use crate::cli::Args;
use crate::NodeError;

/// The settings from the file and flags, before the listen address is bound.
#[derive(Debug)]
pub struct Settings {
    broker: BrokerConfig,
    advertised_set: bool,
    /// The inter-broker transport, for a node with voters; `None` for a single node.
    peers: Option<PeerConfig>,
}

/// The key `--peers` sets.
const VOTERS_KEY: &str = "controller.quorum.voters";

/// Reads the config file `args` names and applies the flags over it.
pub fn load(args: &Args) -> Result<Settings, NodeError> {
    load_with(args, resolve)
}

/// [`load`] with the host name resolver given, so tests need no DNS.
fn load_with(
    args: &Args,
    resolve: impl Fn(&str, u16) -> Result<SocketAddr, String>,
) -> Result<Settings, NodeError> {
    let mut broker = BrokerConfig::default();
    let mut advertised_set = false;
    // Where the voters came from, for error messages.
    let mut voters_source = String::new();
    if let Some(path) = &args.config {
        for (key, value) in read_file(path)? {
            broker.set(&key, &value).map_err(|e| NodeError::Config {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            advertised_set |= key == "advertised.listeners";
            if key == VOTERS_KEY {
                voters_source = format!("{VOTERS_KEY} in {}", path.display());
            }
        }
    }
    if let Some(path) = &args.config {
        broker.check().map_err(|e| NodeError::Config {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
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
    if let Some(peers) = &args.peers {
        broker
            .set(VOTERS_KEY, peers)
            .map_err(|e| NodeError::Flag(format!("--peers: {e}")))?;
        if broker.quorum_voters.is_empty() {
            return Err(NodeError::Flag(
                "--peers: no voters given (expected ID@HOST:PORT,...)".into(),
            ));
        }
        voters_source = "--peers".into();
    }
    let peers = peer_config(&broker, args.peer_listen.as_deref(), &voters_source, resolve)?;
    crate::planted::apply(&args.planted, &mut broker.planted).map_err(NodeError::Flag)?;
    Ok(Settings {
        broker,
        advertised_set,
        peers,
    })
}

/// The peer transport's settings: none without voters; otherwise this node's listen address
/// (`--peer-listen`, or its own voter entry) and every other voter's address, resolved.
fn peer_config(
    broker: &BrokerConfig,
    peer_listen: Option<&str>,
    voters_source: &str,
    resolve: impl Fn(&str, u16) -> Result<SocketAddr, String>,
) -> Result<Option<PeerConfig>, NodeError> {
    let voters = &broker.quorum_voters;
    if voters.is_empty() {
        return match peer_listen {
            Some(_) => Err(NodeError::Flag(format!(
                "--peer-listen needs the metadata-quorum voters: give --peers (or {VOTERS_KEY} in the config file)"
            ))),
            None => Ok(None),
        };
    }
    let me = broker.node_id;
    if !voters.iter().any(|v| v.id == me) {
        let ids: Vec<String> = voters.iter().map(|v| v.id.to_string()).collect();
        return Err(NodeError::Flag(format!(
            "{voters_source}: this node's id {me} is not among the voters ({}); set --node-id to one of them",
            ids.join(", ")
        )));
    }
    let mut addrs: BTreeMap<i32, SocketAddr> = BTreeMap::new();
    for voter in voters {
        let addr = resolve(&voter.host, voter.port).map_err(|reason| {
            NodeError::Flag(format!(
                "{voters_source}: cannot resolve node {}'s address {}:{}: {reason}",
                voter.id, voter.host, voter.port
            ))
        })?;
        if let Some((other, _)) = addrs.iter().find(|(_, a)| **a == addr) {
            return Err(NodeError::Flag(format!(
                "{voters_source}: nodes {other} and {} have the same peer address {addr}",
                voter.id
            )));
        }
        // parse_voters refuses a repeated id, so every insert is new.
        let previous = addrs.insert(voter.id, addr);
        assert!(previous.is_none(), "voter ids are distinct");
    }
    // Checked above that `me` is a voter.
    let own = addrs.remove(&me).expect("this node is a voter");
    let listen = match peer_listen {
        None => own,
        Some(text) => {
            let (host, port) = split_host_port(text)
                .ok_or_else(|| NodeError::Flag(format!("--peer-listen: '{text}' is not HOST:PORT")))?;
            resolve(host, port).map_err(|reason| {
                NodeError::Flag(format!("--peer-listen: cannot resolve '{text}': {reason}"))
            })?
        }
    };
    let config = PeerConfig::new(me, listen, addrs);
    config
        .validate()
        .map_err(|e| NodeError::Flag(format!("peer transport: {e}")))?;
    assert!(!config.peers.contains_key(&me), "only the other voters are peers");
    Ok(Some(config))
}

/// `host:port` or `[v6]:port` (port 0 allowed), without resolving the host.
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// The first address `host` resolves to (an IP literal resolves to itself), with `port`.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| gregor_net::describe_io_error(&e))?;
    addrs.next().ok_or_else(|| "no address found".to_string())
}

impl Settings {
    /// The peer transport's settings; `None` for a single node.
    pub fn peers(&self) -> Option<&PeerConfig> {
        self.peers.as_ref()
    }

    /// `num.network.threads`: how many threads the runtime gets.
    pub fn network_threads(&self) -> usize {
        usize::try_from(self.broker.num_network_threads).map_or(1, |n| n.max(1))
    }

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

    /// Resolves IP literals and `node-N.test` (to 10.0.0.N); everything else is unknown.
    fn fake_resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let n: u8 = host
            .strip_prefix("node-")
            .and_then(|rest| rest.strip_suffix(".test"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| "name or service not known".to_string())?;
        Ok(SocketAddr::from(([10, 0, 0, n], port)))
    }

    fn load_flags(flags: &[&str]) -> Result<Settings, NodeError> {
        let args = Args::parse_from(std::iter::once("gregor").chain(flags.iter().copied()));
        load_with(&args, fake_resolve)
    }

    fn error_of(flags: &[&str]) -> String {
        let e = load_flags(flags).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    const THREE: &str = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_voters_there_are_no_peers() {
        let s = load_flags(&["--node-id", "4"]).unwrap();
        assert!(s.peers().is_none());
        assert!(s.broker.quorum_voters.is_empty());
    }

    #[test]
    fn peers_set_the_voters_and_the_peer_listener_defaults_to_our_entry() {
        let s = load_flags(&["--node-id", "2", "--peers", THREE]).unwrap();
        assert_eq!(s.broker.voter_ids(), vec![1, 2, 3]);
        let p = s.peers().unwrap();
        assert_eq!(p.me, 2);
        assert_eq!(p.listen, addr("127.0.0.1:9193"));
        assert_eq!(
            p.peers,
            BTreeMap::from([(1, addr("127.0.0.1:9192")), (3, addr("127.0.0.1:9194"))])
        );
        let c = s.finish("127.0.0.1:9093", 0).unwrap();
        assert_eq!(c.get(VOTERS_KEY).as_deref(), Some(THREE));
    }

    #[test]
    fn peer_listen_overrides_our_entry_and_may_use_port_0() {
        for (flag, want) in [
            ("0.0.0.0:9192", "0.0.0.0:9192"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("[::1]:7000", "[::1]:7000"),
            ("node-5.test:7001", "10.0.0.5:7001"),
        ] {
            let s = load_flags(&["--peer-listen", flag, "--peers", THREE]).unwrap();
            let p = s.peers().unwrap();
            assert_eq!((p.me, p.listen), (1, addr(want)), "{flag}");
            assert_eq!(p.peers.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        }
    }

    #[test]
    fn host_names_resolve() {
        let s = load_flags(&[
            "--node-id",
            "1",
            "--peers",
            "1@node-1.test:9192,2@node-2.test:9192",
        ])
        .unwrap();
        let p = s.peers().unwrap();
        assert_eq!(p.listen, addr("10.0.0.1:9192"));
        assert_eq!(p.peers, BTreeMap::from([(2, addr("10.0.0.2:9192"))]));
    }

    #[test]
    fn the_config_file_sets_the_voters_and_the_flag_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, format!("node.id = 3\n\"{VOTERS_KEY}\" = \"{THREE}\"\n")).unwrap();
        let file = file.to_str().unwrap();
        let s = load_flags(&["--config", file]).unwrap();
        assert_eq!(s.peers().unwrap().listen, addr("127.0.0.1:9194"));
        let s = load_flags(&["--config", file, "--peers", "3@127.0.0.1:7003,4@127.0.0.1:7004"]).unwrap();
        assert_eq!(s.broker.voter_ids(), vec![3, 4]);
        assert_eq!(s.peers().unwrap().listen, addr("127.0.0.1:7003"));
        // A mistake in the file's voters names the file and the key.
        let e = error_of(&["--config", file, "--node-id", "9"]);
        assert!(
            e.contains(&format!("{VOTERS_KEY} in {file}")) && e.contains("id 9"),
            "{e}"
        );
    }

    #[test]
    fn every_mistake_is_one_line_naming_it() {
        let cases: [(&[&str], &str); 11] = [
            (
                &["--peer-listen", "127.0.0.1:9192"],
                "--peer-listen needs the metadata-quorum voters: give --peers",
            ),
            (
                &["--node-id", "4", "--peers", THREE],
                "--peers: this node's id 4 is not among the voters (1, 2, 3); set --node-id",
            ),
            (
                &["--peers", "1@127.0.0.1:9192,1@127.0.0.1:9193"],
                "node 1 is listed twice",
            ),
            (&["--peers", ""], "--peers: no voters given"),
            (&["--peers", " , "], "--peers: no voters given"),
            (
                &["--peers", "1@127.0.0.1"],
                "--peers: invalid value '1@127.0.0.1'",
            ),
            (
                &["--peers", "one@127.0.0.1:9192"],
                "'one' in 'one@127.0.0.1:9192' is not a node id",
            ),
            (
                &["--peers", "1@127.0.0.1:0"],
                "'0' in '1@127.0.0.1:0' is not a port",
            ),
            (
                &["--peers", "1@127.0.0.1:9192,2@nowhere.example:9192"],
                "--peers: cannot resolve node 2's address nowhere.example:9192: name or service not known",
            ),
            (
                &["--peers", "1@127.0.0.1:9192,2@127.0.0.1:9192"],
                "--peers: nodes 1 and 2 have the same peer address 127.0.0.1:9192",
            ),
            (
                &["--peers", THREE, "--peer-listen", "9192"],
                "--peer-listen: '9192' is not HOST:PORT",
            ),
        ];
        for (flags, want) in cases {
            let e = error_of(flags);
            assert!(e.contains(want), "{flags:?}: {e}");
        }
        let e = error_of(&["--peers", THREE, "--peer-listen", "nowhere.example:1"]);
        assert_eq!(
            e,
            "--peer-listen: cannot resolve 'nowhere.example:1': name or service not known"
        );
    }
}
