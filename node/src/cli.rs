//! The `gregor` command line. Flags override the config file; a flag left out keeps the
//! file's value, and then the default shown in `--help`.

use std::path::PathBuf;

use clap::Parser;

/// A Kafka-compatible broker.
#[derive(Debug, Parser)]
#[command(name = "gregor", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on for Kafka clients (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub listen: String,

    /// Address clients are told to connect to [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,

    /// Directory holding this broker's logs and state.
    #[arg(long, value_name = "PATH", default_value = "./gregor-data")]
    pub data_dir: PathBuf,

    /// This broker's id [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,

    /// TOML file of broker settings under Kafka's key names, e.g. `"num.partitions" = 3`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Every metadata-quorum voter with its peer address, this node included, e.g.
    /// `1@10.0.0.1:9192,2@10.0.0.2:9192,3@10.0.0.3:9192` (sets `controller.quorum.voters`)
    /// [default: none, a single-node broker].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub peers: Option<String>,

    /// Address to listen on for other brokers (port 0 picks a free port) [default: this
    /// node's address in --peers]. Needs --peers or `controller.quorum.voters`.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_listen: Option<String>,

    /// Test only: switch on a planted bug, e.g. `commit-on-minority` (repeatable; needs a
    /// build with `--features planted-bugs`, any other build refuses it).
    #[arg(long, value_name = "NAME", hide = true)]
    pub planted: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let a = Args::parse_from(["gregor"]);
        assert_eq!(a.listen, "127.0.0.1:9092");
        assert_eq!(a.data_dir, PathBuf::from("./gregor-data"));
        assert_eq!(a.node_id, None);
        assert_eq!((a.peers, a.peer_listen), (None, None));
    }

    #[test]
    fn cluster_flags_parse() {
        let a = Args::parse_from([
            "gregor",
            "--node-id",
            "2",
            "--peer-listen",
            "127.0.0.1:9193",
            "--peers",
            "1@127.0.0.1:9192,2@127.0.0.1:9193",
        ]);
        assert_eq!(a.node_id, Some(2));
        assert_eq!(a.peer_listen.as_deref(), Some("127.0.0.1:9193"));
        assert_eq!(a.peers.as_deref(), Some("1@127.0.0.1:9192,2@127.0.0.1:9193"));
    }
}
