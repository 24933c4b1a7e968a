//! Broker and topic configuration, under Kafka's own key names.
//!
//! [`BrokerConfig`] holds what the broker was started with; topic configs are a sparse map
//! of overrides whose defaults come from the broker (`log.segment.bytes` → `segment.bytes`,
//! …), as in Kafka. [`BROKER_KEYS`] and [`TOPIC_KEYS`] list every key we honour, which is
//! what DescribeConfigs reports and what CreateTopics accepts.

use std::collections::BTreeMap;

use crate::PlantedBugs;

/// How the leader stamps record timestamps (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The broker's settings. Field names follow the Kafka key with dots as underscores.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// host and port clients are told to connect to (Metadata, DescribeCluster).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// `num.partitions`: partitions of an auto-created topic or a CreateTopics with -1.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `log.segment.bytes`.
    pub log_segment_bytes: u64,
    /// `log.roll.ms`.
    pub log_roll_ms: i64,
    /// `message.max.bytes`: the largest record batch accepted.
    pub message_max_bytes: i32,
    /// `log.index.interval.bytes`: bytes between two offset index entries.
    pub log_index_interval_bytes: u32,
    /// `log.message.timestamp.type`.
    pub log_message_timestamp_type: TimestampType,
    /// `log.retention.ms` (reported; retention itself comes with its own issue).
    pub log_retention_ms: i64,
    /// `log.retention.bytes` (reported; see above).
    pub log_retention_bytes: i64,
    /// `min.insync.replicas`: replicas that must be reachable (and, with acks=all, hold a
    /// batch durably) for an acks=all produce; a quorum rule on top of Raft's majority.
    pub min_insync_replicas: i32,
    /// `socket.request.max.bytes`: enforced by the shell's framing.
    pub socket_request_max_bytes: i32,
    /// `fetch.max.bytes` (KIP-541): the most bytes one Fetch response carries, whatever the
    /// request asks (still at least one batch, as with the request's own limit).
    ///
    /// 8 MiB by default, not Kafka's 55 MiB. Gregor serves a fetch from bytes it holds in
    /// memory until the response is written (no sendfile, log/read.rs), so this bounds the
    /// memory of every response. And librdkafka (glibc's malloc) maps fresh memory for
    /// each response above 32 MiB and takes a page fault per 4 KiB of it: consuming 8
    /// partitions of 1 KiB records with 50 MiB responses cost the client 2.0-2.4 µs per
    /// record, against 0.9-1.3 with responses of 16 MiB or less. Against 16 MiB, 8 MiB
    /// consumed 8 partitions faster (1 KiB and 100 B records) with less broker CPU per
    /// record, and one partition about as fast (README, Benchmarks).
    pub fetch_max_bytes: i32,
    /// `num.network.threads`: the shell's runtime threads, which read requests, write
    /// responses and run the engine's driver. 1 (the default, unlike Kafka's 3) is one
    /// thread for all of it, which spends the least CPU per request: nothing is handed
    /// between threads but disk work.
    pub num_network_threads: i32,
    /// Bytes of recent batches each partition keeps in memory for tailing consumers
    /// (an engine setting, not a Kafka key; the simulator turns it down to exercise disk reads).
    pub tail_cache_bytes: usize,
    /// Seed of the engine's RNG (cluster id, topic ids). The shell draws it from the OS,
    /// the simulator from its seed.
    pub rng_seed: u64,
    /// Test-only switch for planted bugs; inert unless built with `planted-bugs`.
    pub planted: PlantedBugs,
    /// `controller.quorum.voters`: the nodes that hold the `__cluster_metadata` log and
    /// elect the controller, with their peer addresses. Empty: this node alone (a
    /// single-node cluster). A node must be one of the voters.
    pub quorum_voters: Vec<Voter>,
    /// Applied metadata offsets between two snapshots of the metadata image (an engine
    /// setting: a restart replays at most this many records).
    pub metadata_snapshot_records: u64,
    /// The group coordinator's keys (`group.*`, `offsets.*`, `offset.metadata.max.bytes`).
    pub group: crate::group::GroupConfig,
    /// `offsets.topic.replication.factor`: replicas of each `__consumer_offsets` partition,
    /// at most the number of registered brokers (Kafka refuses to create the topic then).
    pub offsets_topic_replication_factor: i16,
}

/// One metadata quorum voter: `id@host:port`, the port of its peer listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// Parses `controller.quorum.voters`: `1@host:port,2@host:port,…` (ids distinct).
pub fn parse_voters(value: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("'{item}' is not id@host:port"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|&n: &i32| n >= 0)
            .ok_or_else(|| format!("'{id}' in '{item}' is not a node id"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("'{addr}' in '{item}' is not host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p: &u16| p > 0)
            .ok_or_else(|| format!("'{port}' in '{item}' is not a port"))?;
        if voters.iter().any(|v| v.id == id) {
            return Err(format!("node {id} is listed twice"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        voters.push(Voter { id, host, port });
    }
    Ok(voters)
}

impl BrokerConfig {
    /// The metadata quorum's voter ids: the configured voters, or this node alone.
    pub fn voter_ids(&self) -> Vec<i32> {
        if self.quorum_voters.is_empty() {
            vec![self.node_id]
        } else {
            self.quorum_voters.iter().map(|v| v.id).collect()
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            log_segment_bytes: 1024 * 1024 * 1024,
            log_roll_ms: 7 * 24 * 3600 * 1000,
            message_max_bytes: 1_048_588,
            log_index_interval_bytes: 4096,
            log_message_timestamp_type: TimestampType::CreateTime,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            min_insync_replicas: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            fetch_max_bytes: FETCH_MAX_BYTES_DEFAULT,
            num_network_threads: 1,
            tail_cache_bytes: 4 * 1024 * 1024,
            rng_seed: 0,
            planted: PlantedBugs::default(),
            quorum_voters: Vec::new(),
            metadata_snapshot_records: 1000,
            group: crate::group::GroupConfig::default(),
            offsets_topic_replication_factor: 3,
        }
    }
}

/// Why a config key or value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key '{0}'")]
    UnknownKey(String),
    #[error("invalid value '{value}' for '{key}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

/// `fetch.max.bytes` unless configured: 8 MiB (see [`BrokerConfig::fetch_max_bytes`]).
pub const FETCH_MAX_BYTES_DEFAULT: i32 = 8 * 1024 * 1024;

/// A broker key we honour, with its documentation for `--help`-style listings.
pub struct BrokerKey {
    pub name: &'static str,
    pub doc: &'static str,
}

/// Every broker key `--config` accepts and DescribeConfigs reports.
pub const BROKER_KEYS: &[BrokerKey] = &[
    BrokerKey {
        name: "node.id",
        doc: "this broker's id",
    },
    BrokerKey {
        name: "advertised.listeners",
        doc: "host:port given to clients",
    },
    BrokerKey {
        name: "controller.quorum.voters",
        doc: "metadata quorum voters as id@host:port,... (peer listeners)",
    },
    BrokerKey {
        name: "num.partitions",
        doc: "partitions of auto-created topics",
    },
    BrokerKey {
        name: "default.replication.factor",
        doc: "replication factor of new topics",
    },
    BrokerKey {
        name: "auto.create.topics.enable",
        doc: "create unknown topics on Metadata/Produce",
    },
    BrokerKey {
        name: "log.segment.bytes",
        doc: "segment size before a roll",
    },
    BrokerKey {
        name: "log.roll.ms",
        doc: "segment age before a roll",
    },
    BrokerKey {
        name: "message.max.bytes",
        doc: "largest record batch accepted",
    },
    BrokerKey {
        name: "log.index.interval.bytes",
        doc: "bytes between offset index entries",
    },
    BrokerKey {
        name: "log.message.timestamp.type",
        doc: "CreateTime or LogAppendTime",
    },
    BrokerKey {
        name: "log.retention.ms",
        doc: "retention time (reported, not yet enforced)",
    },
    BrokerKey {
        name: "log.retention.bytes",
        doc: "retention size (reported, not yet enforced)",
    },
    BrokerKey {
        name: "min.insync.replicas",
        doc: "replicas an acks=all produce needs (at least a majority is always needed)",
    },
    BrokerKey {
        name: "socket.request.max.bytes",
        doc: "largest request frame accepted",
    },
    BrokerKey {
        name: "num.network.threads",
        doc: "threads for client and peer connections and the engine's driver (read at start-up)",
    },
    BrokerKey {
        name: "fetch.max.bytes",
        doc: "most bytes one Fetch response carries (at least one batch); 8 MiB, not Kafka's 55 MiB",
    },
    BrokerKey {
        name: "offsets.topic.num.partitions",
        doc: "partitions of __consumer_offsets (fixed once the topic exists)",
    },
    BrokerKey {
        name: "offsets.topic.replication.factor",
        doc: "replicas of __consumer_offsets partitions (capped at the registered brokers)",
    },
    BrokerKey {
        name: "group.min.session.timeout.ms",
        doc: "smallest session.timeout.ms a group member may ask for",
    },
    BrokerKey {
        name: "group.max.session.timeout.ms",
        doc: "largest session.timeout.ms a group member may ask for",
    },
    BrokerKey {
        name: "group.initial.rebalance.delay.ms",
        doc: "wait for more members before an empty group's first rebalance",
    },
    BrokerKey {
        name: "group.max.size",
        doc: "most members of one group",
    },
    BrokerKey {
        name: "offsets.retention.minutes",
        doc: "committed offsets of an empty group expire after this",
    },
    BrokerKey {
        name: "offsets.retention.check.interval.ms",
        doc: "how often expired offsets are looked for",
    },
    BrokerKey {
        name: "offset.metadata.max.bytes",
        doc: "largest metadata string of a committed offset",
    },
];

/// A topic-level key: its name, and the broker key its default comes from.
pub struct TopicKey {
    pub name: &'static str,
    pub broker_key: &'static str,
}

/// Every topic key CreateTopics accepts and DescribeConfigs reports.
pub const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey {
        name: "segment.bytes",
        broker_key: "log.segment.bytes",
    },
    TopicKey {
        name: "segment.ms",
        broker_key: "log.roll.ms",
    },
    TopicKey {
        name: "max.message.bytes",
        broker_key: "message.max.bytes",
    },
    TopicKey {
        name: "index.interval.bytes",
        broker_key: "log.index.interval.bytes",
    },
    TopicKey {
        name: "message.timestamp.type",
        broker_key: "log.message.timestamp.type",
    },
    TopicKey {
        name: "retention.ms",
        broker_key: "log.retention.ms",
    },
    TopicKey {
        name: "retention.bytes",
        broker_key: "log.retention.bytes",
    },
    TopicKey {
        name: "min.insync.replicas",
        broker_key: "min.insync.replicas",
    },
    TopicKey {
        name: "cleanup.policy",
        broker_key: "log.cleanup.policy",
    },
];

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse::<T>().map_err(|_| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: "not a number in range".to_string(),
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: "expected true or false".to_string(),
        }),
    }
}

fn parse_timestamp_type(key: &str, value: &str) -> Result<TimestampType, ConfigError> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: "expected CreateTime or LogAppendTime".to_string(),
        }),
    }
}

fn at_least<T: PartialOrd + std::fmt::Display>(key: &str, value: T, min: T) -> Result<T, ConfigError> {
    if value < min {
        return Err(ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: format!("must be at least {min}"),
        });
    }
    Ok(value)
}

impl BrokerConfig {
    /// Sets one broker key from its string form, as found in a config file.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "node.id" | "broker.id" => self.node_id = at_least(key, parse_num(key, value)?, 0)?,
            "advertised.listeners" => {
                let (host, port) = parse_host_port(value).ok_or_else(|| ConfigError::InvalidValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    reason: "expected host:port".to_string(),
                })?;
                self.advertised_host = host;
                self.advertised_port = port;
            }
            "num.partitions" => self.num_partitions = at_least(key, parse_num(key, value)?, 1)?,
            "default.replication.factor" => {
                self.default_replication_factor = at_least(key, parse_num(key, value)?, 1)?
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse_bool(key, value)?,
            "log.segment.bytes" => self.log_segment_bytes = at_least(key, parse_num(key, value)?, 14)?,
            "log.roll.ms" => self.log_roll_ms = at_least(key, parse_num(key, value)?, 1)?,
            "message.max.bytes" => self.message_max_bytes = at_least(key, parse_num(key, value)?, 0)?,
            "log.index.interval.bytes" => {
                self.log_index_interval_bytes = at_least(key, parse_num(key, value)?, 0)?
            }
            "log.message.timestamp.type" => {
                self.log_message_timestamp_type = parse_timestamp_type(key, value)?
            }
            "log.retention.ms" => self.log_retention_ms = at_least(key, parse_num(key, value)?, -1)?,
            "log.retention.bytes" => self.log_retention_bytes = at_least(key, parse_num(key, value)?, -1)?,
            "min.insync.replicas" => self.min_insync_replicas = at_least(key, parse_num(key, value)?, 1)?,
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = at_least(key, parse_num(key, value)?, 1)?
            }
            "fetch.max.bytes" => self.fetch_max_bytes = at_least(key, parse_num(key, value)?, 1024)?,
            "num.network.threads" => self.num_network_threads = at_least(key, parse_num(key, value)?, 1)?,
            "offsets.topic.num.partitions" => {
                self.group.offsets_topic_partitions = at_least(key, parse_num(key, value)?, 1)?
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = at_least(key, parse_num(key, value)?, 1)?
            }
            "group.min.session.timeout.ms" => {
                self.group.session_timeout_ms_min = at_least(key, parse_num(key, value)?, 1)?
            }
            "group.max.session.timeout.ms" => {
                self.group.session_timeout_ms_max = at_least(key, parse_num(key, value)?, 1)?
            }
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = at_least(key, parse_num(key, value)?, 0)?
            }
            "group.max.size" => self.group.group_size_max = at_least(key, parse_num(key, value)?, 1)?,
            "offsets.retention.minutes" => {
                let minutes: u64 = at_least(key, parse_num(key, value)?, 1)?;
                self.group.offsets_retention_ms = minutes.saturating_mul(60_000);
            }
            "offsets.retention.check.interval.ms" => {
                self.group.offsets_retention_check_interval_ms = at_least(key, parse_num(key, value)?, 1)?
            }
            "offset.metadata.max.bytes" => {
                self.group.offset_metadata_bytes_max = at_least(key, parse_num(key, value)?, 0)?
            }
            "controller.quorum.voters" => {
                self.quorum_voters = parse_voters(value).map_err(|reason| ConfigError::InvalidValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    reason,
                })?
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Checks what no single key can: keys that bound each other.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.group.session_timeout_ms_min > self.group.session_timeout_ms_max {
            return Err(ConfigError::InvalidValue {
                key: "group.min.session.timeout.ms".to_string(),
                value: self.group.session_timeout_ms_min.to_string(),
                reason: format!(
                    "must not exceed group.max.session.timeout.ms ({})",
                    self.group.session_timeout_ms_max
                ),
            });
        }
        Ok(())
    }

    /// The current value of a broker key in its string form.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "node.id" => self.node_id.to_string(),
            "advertised.listeners" => {
                format!("PLAINTEXT://{}:{}", self.advertised_host, self.advertised_port)
            }
            "num.partitions" => self.num_partitions.to_string(),
            "default.replication.factor" => self.default_replication_factor.to_string(),
            "auto.create.topics.enable" => self.auto_create_topics_enable.to_string(),
            "log.segment.bytes" => self.log_segment_bytes.to_string(),
            "log.roll.ms" => self.log_roll_ms.to_string(),
            "message.max.bytes" => self.message_max_bytes.to_string(),
            "log.index.interval.bytes" => self.log_index_interval_bytes.to_string(),
            "log.message.timestamp.type" => timestamp_type_name(self.log_message_timestamp_type).to_string(),
            "log.retention.ms" => self.log_retention_ms.to_string(),
            "log.retention.bytes" => self.log_retention_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "log.cleanup.policy" => "delete".to_string(),
            "socket.request.max.bytes" => self.socket_request_max_bytes.to_string(),
            "fetch.max.bytes" => self.fetch_max_bytes.to_string(),
            "num.network.threads" => self.num_network_threads.to_string(),
            "offsets.topic.num.partitions" => self.group.offsets_topic_partitions.to_string(),
            "offsets.topic.replication.factor" => self.offsets_topic_replication_factor.to_string(),
            "group.min.session.timeout.ms" => self.group.session_timeout_ms_min.to_string(),
            "group.max.session.timeout.ms" => self.group.session_timeout_ms_max.to_string(),
            "group.initial.rebalance.delay.ms" => self.group.initial_rebalance_delay_ms.to_string(),
            "group.max.size" => self.group.group_size_max.to_string(),
            "offsets.retention.minutes" => (self.group.offsets_retention_ms / 60_000).to_string(),
            "offsets.retention.check.interval.ms" => {
                self.group.offsets_retention_check_interval_ms.to_string()
            }
            "offset.metadata.max.bytes" => self.group.offset_metadata_bytes_max.to_string(),
            "controller.quorum.voters" => self
                .quorum_voters
                .iter()
                .map(|v| format!("{}@{}:{}", v.id, v.host, v.port))
                .collect::<Vec<_>>()
                .join(","),
            _ => return None,
        })
    }
}

/// Kafka's name for a timestamp type.
pub fn timestamp_type_name(t: TimestampType) -> &'static str {
    match t {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

/// Parses `host:port`, also with a `PLAINTEXT://` style scheme in front.
pub fn parse_host_port(value: &str) -> Option<(String, i32)> {
    let v = value.trim();
    let v = v.split_once("://").map(|(_, rest)| rest).unwrap_or(v);
    let (host, port) = v.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}

/// The settings one partition log runs with: topic overrides over broker defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: i32,
    pub index_interval_bytes: u32,
    pub timestamp_type: TimestampType,
    pub min_insync_replicas: i32,
}

impl LogConfig {
    /// Resolves a topic's overrides against the broker's defaults. Overrides were validated
    /// by [`validate_topic_config`] when they were stored.
    pub fn resolve(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
        let mut c = LogConfig {
            segment_bytes: broker.log_segment_bytes,
            segment_ms: broker.log_roll_ms,
            max_message_bytes: broker.message_max_bytes,
            index_interval_bytes: broker.log_index_interval_bytes,
            timestamp_type: broker.log_message_timestamp_type,
            min_insync_replicas: broker.min_insync_replicas,
        };
        for (k, v) in overrides {
            match k.as_str() {
                "segment.bytes" => c.segment_bytes = v.parse().unwrap_or(c.segment_bytes),
                "segment.ms" => c.segment_ms = v.parse().unwrap_or(c.segment_ms),
                "max.message.bytes" => c.max_message_bytes = v.parse().unwrap_or(c.max_message_bytes),
                "index.interval.bytes" => {
                    c.index_interval_bytes = v.parse().unwrap_or(c.index_interval_bytes)
                }
                "message.timestamp.type" => {
                    c.timestamp_type = parse_timestamp_type(k, v).unwrap_or(c.timestamp_type)
                }
                "min.insync.replicas" => c.min_insync_replicas = v.parse().unwrap_or(c.min_insync_replicas),
                _ => {}
            }
        }
        c
    }
}

/// Checks one topic-level override, as CreateTopics must before storing it.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), ConfigError> {
    match key {
        "segment.bytes" => at_least(key, parse_num::<u64>(key, value)?, 14).map(drop),
        "segment.ms" => at_least(key, parse_num::<i64>(key, value)?, 1).map(drop),
        "max.message.bytes" => at_least(key, parse_num::<i32>(key, value)?, 0).map(drop),
        "index.interval.bytes" => at_least(key, parse_num::<u32>(key, value)?, 0).map(drop),
        "message.timestamp.type" => parse_timestamp_type(key, value).map(drop),
        "retention.ms" | "retention.bytes" => at_least(key, parse_num::<i64>(key, value)?, -1).map(drop),
        "min.insync.replicas" => at_least(key, parse_num::<i32>(key, value)?, 1).map(drop),
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            _ => Err(ConfigError::InvalidValue {
                key: key.to_string(),
                value: value.to_string(),
                reason: "only 'delete' is supported until compaction lands".to_string(),
            }),
        },
        _ => Err(ConfigError::UnknownKey(key.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_voters_parse_and_name_mistakes() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.voter_ids(), vec![1]);
        c.set(
            "controller.quorum.voters",
            "1@127.0.0.1:9192, 2@[::1]:9193,3@h:9194",
        )
        .unwrap();
        assert_eq!(c.voter_ids(), vec![1, 2, 3]);
        assert_eq!(c.quorum_voters[1].host, "::1");
        assert_eq!(
            c.get("controller.quorum.voters").as_deref(),
            Some("1@127.0.0.1:9192,2@::1:9193,3@h:9194")
        );
        for (bad, why) in [
            ("1@h:1,1@h:2", "listed twice"),
            ("x@h:1", "not a node id"),
            ("1h:1", "not id@host:port"),
            ("1@h", "not host:port"),
            ("1@h:0", "not a port"),
        ] {
            let err = c.set("controller.quorum.voters", bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn set_and_get_round_trip() {
        let mut c = BrokerConfig::default();
        c.set("num.partitions", "8").unwrap();
        c.set("log.message.timestamp.type", "LogAppendTime").unwrap();
        assert_eq!(c.get("num.partitions").as_deref(), Some("8"));
        assert_eq!(c.get("fetch.max.bytes").as_deref(), Some("8388608"));
        c.set("fetch.max.bytes", "1048576").unwrap();
        assert_eq!(c.fetch_max_bytes, 1 << 20);
        assert!(
            c.set("fetch.max.bytes", "1023").is_err(),
            "Kafka's minimum is 1024"
        );
        assert_eq!(c.get("num.network.threads").as_deref(), Some("1"));
        c.set("num.network.threads", "4").unwrap();
        assert_eq!(c.num_network_threads, 4);
        assert!(c.set("num.network.threads", "0").is_err());
        assert_eq!(
            c.get("log.message.timestamp.type").as_deref(),
            Some("LogAppendTime")
        );
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.set("nope", "1"), Err(ConfigError::UnknownKey("nope".into())));
        assert!(matches!(
            c.set("num.partitions", "0"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            c.set("auto.create.topics.enable", "yes"),
            Err(ConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn topic_overrides_resolve_over_broker_defaults() {
        let b = BrokerConfig::default();
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "1000".to_string());
        let c = LogConfig::resolve(&b, &o);
        assert_eq!(c.segment_bytes, 1000);
        assert_eq!(c.max_message_bytes, b.message_max_bytes);
        assert!(validate_topic_config("cleanup.policy", "compact").is_err());
        assert!(validate_topic_config("segment.bytes", "x").is_err());
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(parse_host_port("PLAINTEXT://h:9"), Some(("h".into(), 9)));
        assert_eq!(parse_host_port("h:x"), None);
        assert_eq!(parse_host_port(":9"), None);
    }
}
