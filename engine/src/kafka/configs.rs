//! DescribeConfigs for topics (overrides over broker defaults, with their sources and
//! synonyms) and for this broker.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind};

use super::{code, str_bytes};
use crate::config::{BrokerConfig, BROKER_KEYS, TOPIC_KEYS};
use crate::engine::Engine;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
pub(crate) mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's ConfigType values (DescribeConfigs v3+).
fn config_type(key: &str) -> i8 {
    const BOOLEAN: i8 = 1;
    const STRING: i8 = 2;
    const INT: i8 = 3;
    const SHORT: i8 = 4;
    const LONG: i8 = 5;
    const LIST: i8 = 7;
    match key {
        "auto.create.topics.enable" => BOOLEAN,
        "default.replication.factor" => SHORT,
        "segment.ms"
        | "retention.ms"
        | "retention.bytes"
        | "log.roll.ms"
        | "log.retention.ms"
        | "log.retention.bytes" => LONG,
        "cleanup.policy" | "log.cleanup.policy" | "advertised.listeners" => LIST,
        "message.timestamp.type" | "log.message.timestamp.type" => STRING,
        _ => INT,
    }
}

/// One config as reported: its value, where the value comes from, and its synonyms
/// (most specific first).
pub(crate) struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub synonyms: Vec<(&'static str, String, i8)>,
}

fn broker_source(broker: &BrokerConfig, key: &str) -> i8 {
    if broker.get(key) == BrokerConfig::default().get(key) {
        source::DEFAULT_CONFIG
    } else {
        source::STATIC_BROKER_CONFIG
    }
}

/// Every topic config with its effective value, given the topic's overrides.
pub(crate) fn topic_config_entries(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let broker_value = broker.get(k.broker_key).unwrap_or_default();
            let broker_src = broker_source(broker, k.broker_key);
            let mut synonyms = Vec::new();
            let (value, source) = match overrides.get(k.name) {
                Some(v) => {
                    synonyms.push((k.name, v.clone(), source::DYNAMIC_TOPIC_CONFIG));
                    (v.clone(), source::DYNAMIC_TOPIC_CONFIG)
                }
                None => (broker_value.clone(), broker_src),
            };
            synonyms.push((k.broker_key, broker_value, broker_src));
            ConfigEntry {
                name: k.name,
                value,
                source,
                synonyms,
            }
        })
        .collect()
}

fn to_result(
    e: ConfigEntry,
    synonyms: bool,
    doc: Option<&str>,
    with_doc: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(e.name))
        .with_value(Some(str_bytes(&e.value)))
        .with_read_only(false)
        .with_config_source(e.source)
        .with_is_sensitive(false)
        .with_config_type(config_type(e.name))
        .with_documentation(if with_doc { doc.map(str_bytes) } else { None })
        .with_synonyms(if synonyms {
            e.synonyms
                .into_iter()
                .map(|(n, v, s)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(n))
                        .with_value(Some(str_bytes(&v)))
                        .with_source(s)
                })
                .collect()
        } else {
            Vec::new()
        })
}

impl Engine {
    pub(crate) fn handle_describe_configs(&self, req: DescribeConfigsRequest) -> ResponseKind {
        let mut results = Vec::new();
        for r in req.resources {
            let name = r.resource_name.as_str().to_string();
            let wanted = |key: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|ks| ks.iter().any(|k| k.as_str() == key))
            };
            let mut res = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => match self.image.topics.get(&name) {
                    Some(t) => {
                        res.configs = topic_config_entries(&self.config, &t.configs)
                            .into_iter()
                            .filter(|e| wanted(e.name))
                            .map(|e| to_result(e, req.include_synonyms, None, req.include_documentation))
                            .collect();
                    }
                    None => {
                        res.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                        res.error_message = Some(str_bytes(&format!("Topic '{name}' does not exist.")));
                    }
                },
                RESOURCE_BROKER if name.is_empty() || name == self.config.node_id.to_string() => {
                    res.configs = BROKER_KEYS
                        .iter()
                        .filter(|k| wanted(k.name))
                        .map(|k| {
                            let value = self.config.get(k.name).unwrap_or_default();
                            let source = broker_source(&self.config, k.name);
                            let e = ConfigEntry {
                                name: k.name,
                                value: value.clone(),
                                source,
                                synonyms: vec![(k.name, value, source)],
                            };
                            to_result(e, req.include_synonyms, Some(k.doc), req.include_documentation)
                        })
                        .collect();
                }
                RESOURCE_BROKER => {
                    res.error_code = code::INVALID_REQUEST;
                    res.error_message = Some(str_bytes(&format!(
                        "this is broker {}, not '{name}'",
                        self.config.node_id
                    )));
                }
                other => {
                    res.error_code = code::INVALID_REQUEST;
                    res.error_message = Some(str_bytes(&format!("resource type {other} is not supported")));
                }
            }
            results.push(res);
        }
        ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
    }
}
