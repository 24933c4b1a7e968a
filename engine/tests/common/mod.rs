//! A small synchronous driver for engine scenario tests: an in-memory disk that keeps a
//! durable and a volatile image of each file, a manual clock, and helpers that send Kafka
//! requests and decode the answers.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use gregor_engine::{BrokerConfig, DirEntry, Engine, Input, IoError, IoOp, IoResult, Output, Time};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, RequestHeader, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

#[derive(Default, Clone)]
pub struct MemDisk {
    pub volatile: BTreeMap<String, Vec<u8>>,
    pub durable: BTreeMap<String, Vec<u8>>,
    pub dirs: BTreeMap<String, ()>,
    /// When set, appends fail as on a full disk.
    pub full: bool,
}

impl MemDisk {
    pub fn run(&mut self, op: &IoOp) -> IoResult {
        match op {
            IoOp::Append { file, position, data } => {
                if self.full {
                    return IoResult::Err(IoError::NoSpace);
                }
                let f = self.volatile.entry(file.clone()).or_default();
                let mut at = *position as usize;
                for piece in data {
                    let end = at + piece.len();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[at..end].copy_from_slice(piece);
                    at = end;
                }
                IoResult::Done
            }
            IoOp::Sync { file } => {
                let v = self.volatile.get(file).cloned().unwrap_or_default();
                self.durable.insert(file.clone(), v);
                IoResult::Done
            }
            IoOp::Read { file, position, len } => match self.volatile.get(file) {
                None => IoResult::Err(IoError::NotFound),
                Some(f) => {
                    let start = (*position as usize).min(f.len());
                    let end = (start + *len as usize).min(f.len());
                    IoResult::Read(Bytes::copy_from_slice(&f[start..end]))
                }
            },
            IoOp::Truncate { file, len } => {
                for img in [&mut self.volatile, &mut self.durable] {
                    if let Some(f) = img.get_mut(file) {
                        f.truncate(*len as usize);
                    }
                }
                IoResult::Done
            }
            IoOp::CreateFile { file } => {
                self.volatile.insert(file.clone(), Vec::new());
                self.durable.insert(file.clone(), Vec::new());
                IoResult::Done
            }
            IoOp::CreateDir { dir } => {
                self.dirs.insert(dir.clone(), ());
                IoResult::Done
            }
            IoOp::Rename { from, to } => {
                for img in [&mut self.volatile, &mut self.durable] {
                    if let Some(f) = img.remove(from) {
                        img.insert(to.clone(), f);
                    }
                }
                IoResult::Done
            }
            IoOp::Delete { path } => {
                let prefix = format!("{path}/");
                for img in [&mut self.volatile, &mut self.durable] {
                    img.retain(|k, _| k != path && !k.starts_with(&prefix));
                }
                self.dirs.remove(path);
                IoResult::Done
            }
            IoOp::WriteState { file, data } => {
                self.volatile.insert(file.clone(), data.to_vec());
                self.durable.insert(file.clone(), data.to_vec());
                IoResult::Done
            }
            IoOp::List { dir } => {
                if !dir.is_empty() && !self.dirs.contains_key(dir) {
                    return IoResult::Err(IoError::NotFound);
                }
                let mut out: BTreeMap<String, DirEntry> = BTreeMap::new();
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                for (k, v) in &self.volatile {
                    if let Some(rest) = k.strip_prefix(&prefix) {
                        if !rest.contains('/') {
                            out.insert(
                                rest.to_string(),
                                DirEntry {
                                    name: rest.to_string(),
                                    size_bytes: v.len() as u64,
                                    is_dir: false,
                                },
                            );
                        }
                    }
                }
                for d in self.dirs.keys() {
                    if let Some(rest) = d.strip_prefix(&prefix) {
                        if !rest.contains('/') && !rest.is_empty() {
                            out.insert(
                                rest.to_string(),
                                DirEntry {
                                    name: rest.to_string(),
                                    size_bytes: 0,
                                    is_dir: true,
                                },
                            );
                        }
                    }
                }
                IoResult::List(out.into_values().collect())
            }
        }
    }

    /// A crash: everything not fsynced is gone.
    pub fn crash(&mut self) {
        self.volatile = self.durable.clone();
    }
}

pub struct Harness {
    pub engine: Engine,
    pub config: BrokerConfig,
    pub disk: MemDisk,
    pub now: Time,
    pub pending_io: VecDeque<(u64, IoOp)>,
    pub responses: BTreeMap<(u64, u64), Option<Vec<Bytes>>>,
    pub closed: Vec<u64>,
    pub seq: BTreeMap<u64, u64>,
    pub ready: bool,
    pub stopped: bool,
    pub fatal: Option<String>,
    pub timer: Option<u64>,
    /// Peer messages sent (a cluster harness delivers them; a single node sends none).
    pub sent: Vec<(i32, Bytes)>,
}

impl Harness {
    pub fn new(config: BrokerConfig) -> Harness {
        Self::with_disk(config, MemDisk::default())
    }

    pub fn with_disk(config: BrokerConfig, disk: MemDisk) -> Harness {
        let h = Self::start_on(config, disk);
        assert!(h.ready, "engine became ready (fatal: {:?})", h.fatal);
        h
    }

    /// Starts on `disk` and runs IO until it settles, ready or not.
    pub fn start_on(config: BrokerConfig, disk: MemDisk) -> Harness {
        let engine = Engine::new(config.clone());
        let mut h = Harness {
            engine,
            config,
            disk,
            now: Time {
                mono_ms: 1,
                wall_ms: 1_700_000_000_000,
            },
            pending_io: VecDeque::new(),
            responses: BTreeMap::new(),
            closed: Vec::new(),
            seq: BTreeMap::new(),
            ready: false,
            stopped: false,
            fatal: None,
            timer: None,
            sent: Vec::new(),
        };
        h.input(Input::Start);
        h.settle();
        h
    }

    pub fn input(&mut self, input: Input) {
        let mut out = Vec::new();
        self.engine.step(self.now, input, &mut out);
        for o in out {
            match o {
                Output::Io { token, op } => self.pending_io.push_back((token, op)),
                Output::ClientResponse { conn, seq, frame } => {
                    self.responses.insert((conn, seq), frame);
                }
                Output::CloseConnection { conn } => self.closed.push(conn),
                Output::SetTimer { at_mono_ms } => self.timer = Some(at_mono_ms),
                Output::Ready => self.ready = true,
                Output::ClusterId { .. } => {}
                Output::Stopped => self.stopped = true,
                Output::Fatal { reason } => self.fatal = Some(reason),
                Output::SendPeer { to, msg } => {
                    assert!(
                        !self.config.quorum_voters.is_empty(),
                        "a single node has no peer {to} to send to"
                    );
                    self.sent.push((to, msg));
                }
            }
        }
    }

    /// Runs IO until nothing is pending.
    pub fn settle(&mut self) {
        let mut steps = 0;
        while let Some((token, op)) = self.pending_io.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "IO never settles");
            let result = self.disk.run(&op);
            self.input(Input::IoDone { token, result });
        }
    }

    pub fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.wall_ms += ms as i64;
        self.input(Input::Tick);
        self.settle();
    }

    /// Sends a request on `conn`; returns its seq.
    pub fn send<T: Encodable>(&mut self, conn: u64, api: ApiKey, version: i16, body: &T) -> u64 {
        let mut b = BytesMut::new();
        let h = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str("test")));
        h.encode(&mut b, api.request_header_version(version)).unwrap();
        body.encode(&mut b, version).unwrap();
        let seq = self.seq.entry(conn).or_insert(0);
        let s = *seq;
        *seq += 1;
        self.input(Input::ClientRequest {
            conn,
            seq: s,
            frame: b.freeze(),
        });
        s
    }

    /// Takes the decoded response to (conn, seq), if it was answered.
    pub fn take(&mut self, conn: u64, seq: u64, api: ApiKey, version: i16) -> Option<ResponseKind> {
        let frame = self.responses.remove(&(conn, seq))?;
        let frame = frame.expect("a response frame");
        let mut buf = BytesMut::new();
        for p in frame {
            buf.extend_from_slice(&p);
        }
        let mut buf = buf.freeze();
        let hv = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let h = ResponseHeader::decode(&mut buf, hv).unwrap();
        assert_eq!(h.correlation_id, 42);
        Some(ResponseKind::decode(api, &mut buf, version).unwrap())
    }

    /// Sends, settles IO, and returns the answer.
    pub fn call<T: Encodable>(&mut self, api: ApiKey, version: i16, body: &T) -> ResponseKind {
        let seq = self.send(1, api, version, body);
        self.settle();
        self.take(1, seq, api, version).expect("an answer")
    }

    /// Crash and restart from the durable image.
    pub fn crash_restart(self) -> Harness {
        let mut disk = self.disk;
        disk.crash();
        Harness::with_disk(self.config, disk)
    }
}

/// A topic name as kafka-protocol spells it.
pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One topic of a CreateTopics request (`rf` -1: the broker's default replication).
pub fn creatable_topic(topic: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )
}

/// CreateTopics v5 of one topic with default replication; returns its error code.
pub fn create_topic(h: &mut Harness, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let t = creatable_topic(topic, partitions, -1, configs);
    let r = h.call(
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(1000),
    );
    let ResponseKind::CreateTopics(r) = r else {
        panic!()
    };
    r.topics[0].error_code
}
