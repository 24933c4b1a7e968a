//! The `queue` workload (JEPSEN.md §1): worker processes send unique values to keys and
//! poll them back with `assign` and with `subscribe`, through librdkafka, while the nemesis
//! breaks the cluster; then a final phase in which every worker reads every key from the
//! beginning to the highest offset the main phase saw.
//!
//! Each worker is one thread that runs one operation at a time as a Jepsen *process*: after
//! an operation whose outcome is unknown (`info`) the process retires, its clients are
//! dropped, and the worker continues as a new process with fresh clients. Sends are
//! single-value operations, so the checker's "one read proves the write" rule is sound.
//!
//! Keys come from a pool of `key_count` active keys with a skew towards the first few (hot
//! keys); a key that has had `max_writes_per_key` values retires and a fresh key (a fresh
//! partition) takes its place, so old partitions stop growing and new ones appear.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::history::{Key, Mop, Offset, OpError, OpType, OpValue, Value};
use crate::kafka::{self, Attach, Consumer, Producer, ProducerSettings};
use crate::recorder::{event, Recorder};

/// How consumers attach to partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubVia {
    Assign,
    Subscribe,
    Both,
}

impl SubVia {
    pub fn parse(s: &str) -> Result<SubVia, String> {
        match s {
            "assign" => Ok(SubVia::Assign),
            "subscribe" => Ok(SubVia::Subscribe),
            "assign,subscribe" | "subscribe,assign" | "both" => Ok(SubVia::Both),
            _ => Err(format!(
                "unknown --sub-via '{s}'; one of assign, subscribe, assign,subscribe"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SubVia::Assign => "assign",
            SubVia::Subscribe => "subscribe",
            SubVia::Both => "assign,subscribe",
        }
    }

    /// Whether any consumer uses a group subscription (then poll-skip and nonmonotonic-poll
    /// across operations are allowed: the group moves partitions).
    pub fn subscribes(self) -> bool {
        self != SubVia::Assign
    }
}

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub bootstrap: String,
    /// Worker processes running at once.
    pub concurrency: usize,
    /// Target operations per second over all workers (main phase).
    pub rate: f64,
    pub key_count: usize,
    pub max_writes_per_key: u64,
    pub sub_via: SubVia,
    pub producer: ProducerSettings,
    /// Replication factor of the workload's topics.
    pub replication: i32,
    pub seed: u64,
    /// How long a send waits for its acknowledgement before it is `info`.
    pub send_timeout: Duration,
    /// Cap of the final read phase.
    pub final_time_limit: Duration,
    pub group: String,
}

/// The generator's shared state.
struct Gen {
    /// Active keys, hottest first.
    active: Vec<Key>,
    /// Values sent so far per key (the next value to send).
    written: BTreeMap<Key, Value>,
    /// Every key ever activated.
    all: BTreeSet<Key>,
    next_key: Key,
    /// Keys below this have their topic.
    created_below: Key,
    /// Highest offset per key from `ok` sends and `ok` polls.
    seen: BTreeMap<Key, Offset>,
    /// Highest offset per key read by `ok` polls.
    read: BTreeMap<Key, Offset>,
}

impl Gen {
    fn top_up(&mut self, key_count: usize) {
        while self.active.len() < key_count && self.next_key < self.created_below {
            let k = self.next_key;
            self.next_key += 1;
            self.active.push(k);
            self.all.insert(k);
        }
    }

    /// A key for the next send and its value (None when no key is available).
    fn next_send(&mut self, rng: &mut ChaCha8Rng, opts: &WorkloadOptions) -> Option<(Key, Value)> {
        self.top_up(opts.key_count);
        if self.active.is_empty() {
            return None;
        }
        let i = skewed_index(rng, self.active.len());
        let k = self.active[i];
        let w = self.written.entry(k).or_insert(0);
        let v = *w;
        *w += 1;
        if *w >= opts.max_writes_per_key {
            self.active.remove(i);
            self.top_up(opts.key_count);
        }
        Some((k, v))
    }

    /// Keys for an assign or subscribe: a few active ones, and a third of the time also the
    /// keys with acknowledged offsets beyond anything read ("poll unseen").
    fn keys_to_attach(&mut self, rng: &mut ChaCha8Rng, opts: &WorkloadOptions) -> Vec<Key> {
        self.top_up(opts.key_count);
        let mut keys = BTreeSet::new();
        if !self.active.is_empty() {
            let n = rng.gen_range(1..=self.active.len().min(4));
            for _ in 0..n {
                keys.insert(self.active[skewed_index(rng, self.active.len())]);
            }
        }
        if rng.gen_ratio(1, 3) {
            for (&k, &o) in &self.seen {
                if self.read.get(&k).is_none_or(|&r| r < o) {
                    keys.insert(k);
                }
            }
        }
        keys.into_iter().collect()
    }

    fn saw(&mut self, key: Key, offset: Offset, by_poll: bool) {
        let e = self.seen.entry(key).or_insert(offset);
        *e = (*e).max(offset);
        if by_poll {
            let e = self.read.entry(key).or_insert(offset);
            *e = (*e).max(offset);
        }
    }
}

/// An index into a pool of `n`, skewed exponentially towards 0 (a few hot keys).
fn skewed_index(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let i = (-u.ln() * n as f64 / 3.0) as usize;
    i.min(n - 1)
}

/// The workload of one run, shared by its worker threads.
pub struct Workload {
    opts: WorkloadOptions,
    gen: Mutex<Gen>,
    rec: Arc<Recorder>,
}

/// One worker's current process and its clients.
struct Proc {
    id: i64,
    producer: Option<Producer>,
    consumer: Option<Consumer>,
}

/// Topics are created this many keys ahead of the pool.
const TOPICS_AHEAD: u64 = 6;

impl Workload {
    /// Creates the first topics (blocking, up to `deadline`) and the generator.
    pub fn new(
        opts: WorkloadOptions,
        rec: Arc<Recorder>,
        deadline: Instant,
    ) -> Result<Arc<Workload>, String> {
        let first = (opts.key_count as u64 + TOPICS_AHEAD).div_ceil(2) * 2;
        let topics: Vec<String> = (0..first / 2).map(|t| kafka::topic_of(t * 2)).collect();
        kafka::create_topics(&opts.bootstrap, &topics, opts.replication, deadline)?;
        Ok(Arc::new(Workload {
            gen: Mutex::new(Gen {
                active: Vec::new(),
                written: BTreeMap::new(),
                all: BTreeSet::new(),
                next_key: 0,
                created_below: first,
                seen: BTreeMap::new(),
                read: BTreeMap::new(),
            }),
            opts,
            rec,
        }))
    }

    /// Keeps topics created ahead of the key pool until `stop`.
    pub fn run_topic_creator(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let (next, below) = {
                let g = self.gen.lock().unwrap();
                (g.next_key, g.created_below)
            };
            if below < next + TOPICS_AHEAD {
                let t = below / 2;
                let deadline = Instant::now() + Duration::from_secs(10);
                let topic = kafka::topic_of(t * 2);
                if kafka::create_topics(&self.opts.bootstrap, &[topic], self.opts.replication, deadline)
                    .is_ok()
                {
                    self.gen.lock().unwrap().created_below = (t + 1) * 2;
                }
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn new_proc(&self, id: i64) -> Proc {
        Proc {
            id,
            producer: Producer::new(&self.opts.bootstrap, &self.opts.producer).ok(),
            consumer: Consumer::new(&self.opts.bootstrap, &self.opts.group).ok(),
        }
    }

    /// The main phase for worker `w`, until `stop`.
    pub fn run_worker(&self, w: usize, stop: &AtomicBool) -> WorkerState {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.opts.seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut next_id = w as i64;
        let mut proc = self.new_proc(next_id);
        let interval = self.opts.concurrency as f64 / self.opts.rate.max(0.001);
        let mut next_at = Instant::now() + Duration::from_secs_f64(rng.gen_range(0.0..interval));
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep((next_at - now).min(Duration::from_millis(200)));
                continue;
            }
            next_at += Duration::from_secs_f64(rng.gen_range(0.0..2.0 * interval));
            if next_at < Instant::now() {
                next_at = Instant::now();
            }
            let attached = proc.consumer.as_ref().is_some_and(|c| c.attach() != Attach::None);
            let retired = if !attached || rng.gen_ratio(1, 64) {
                let keys = self.gen.lock().unwrap().keys_to_attach(&mut rng, &self.opts);
                let subscribe = match self.opts.sub_via {
                    SubVia::Assign => false,
                    SubVia::Subscribe => true,
                    SubVia::Both => rng.gen_bool(0.5),
                };
                self.attach(&mut proc, &keys, subscribe, false)
            } else if rng.gen_bool(0.5) {
                let next = self.gen.lock().unwrap().next_send(&mut rng, &self.opts);
                match next {
                    Some((k, v)) => self.send(&mut proc, k, v),
                    None => self.poll(&mut proc, Duration::from_millis(100)),
                }
            } else {
                self.poll(&mut proc, Duration::from_millis(100))
            };
            if retired {
                next_id += self.opts.concurrency as i64;
                proc = self.new_proc(next_id);
            }
        }
        WorkerState { next_id }
    }

    /// An assign or subscribe op. Returns whether the process retired (outcome unknown).
    fn attach(&self, proc: &mut Proc, keys: &[Key], subscribe: bool, seek_to_beginning: bool) -> bool {
        let f = if subscribe { "subscribe" } else { "assign" };
        let mut inv = event(proc.id, OpType::Invoke, f, OpValue::Keys(keys.to_vec()));
        if !subscribe {
            inv.seek_to_beginning = Some(seek_to_beginning);
        }
        self.rec.record(inv.clone());
        let result = match proc.consumer.as_mut() {
            None => Err(OpError {
                kind: "client".into(),
                msg: "no consumer".into(),
            }),
            Some(c) if subscribe => c.subscribe(keys),
            Some(c) => c.assign(keys, seek_to_beginning),
        };
        let mut done = inv;
        match result {
            Ok(()) => {
                done.kind = OpType::Ok;
                self.rec.record(done);
                false
            }
            Err(e) => {
                done.kind = OpType::Info;
                done.error = Some(e);
                self.rec.record(done);
                true
            }
        }
    }

    fn send(&self, proc: &mut Proc, key: Key, value: Value) -> bool {
        let mop = |offset| OpValue::Mops(vec![Mop::Send { key, value, offset }]);
        self.rec.record(event(proc.id, OpType::Invoke, "send", mop(None)));
        let result = match &proc.producer {
            Some(p) => p.send(key, value, self.opts.send_timeout),
            None => Err(kafka::Failure {
                definite: true,
                error: OpError {
                    kind: "client".into(),
                    msg: "no producer".into(),
                },
            }),
        };
        match result {
            Ok(offset) => {
                self.gen.lock().unwrap().saw(key, offset, false);
                self.rec
                    .record(event(proc.id, OpType::Ok, "send", mop(Some(offset))));
                false
            }
            Err(f) => {
                let kind = if f.definite { OpType::Fail } else { OpType::Info };
                let mut done = event(proc.id, kind, "send", mop(None));
                done.error = Some(f.error);
                self.rec.record(done);
                !f.definite
            }
        }
    }

    fn poll(&self, proc: &mut Proc, wait: Duration) -> bool {
        let empty = OpValue::Mops(vec![Mop::Poll(Vec::new())]);
        let mut inv = event(proc.id, OpType::Invoke, "poll", empty);
        inv.poll_ms = Some(wait.as_millis() as u64);
        self.rec.record(inv.clone());
        let Some(c) = proc.consumer.as_mut() else {
            let mut done = inv;
            done.kind = OpType::Fail;
            done.error = Some(OpError {
                kind: "client".into(),
                msg: "no consumer".into(),
            });
            self.rec.record(done);
            return true;
        };
        let polled = c.poll(wait, 500);
        let mut error = polled.error;
        if c.attach() == Attach::Subscribe && !polled.records.is_empty() {
            // Jepsen: a failed commit after a poll leaves the op ok (the reads happened).
            if let Err(e) = c.commit(&polled.records) {
                error.get_or_insert(e);
            }
        }
        let rebalance = c.log.drain();
        {
            let mut g = self.gen.lock().unwrap();
            for &(k, _, o) in &polled.records {
                g.saw(k, o, true);
            }
        }
        let mut done = inv;
        done.kind = OpType::Ok;
        done.value = OpValue::Mops(vec![Mop::Poll(polled.records)]);
        done.rebalance = rebalance;
        done.error = error;
        self.rec.record(done);
        false
    }

    /// The hottest active key (the leader-targeted nemeses aim at its partition's leader).
    pub fn hot_key(&self) -> Option<Key> {
        self.gen.lock().unwrap().active.first().copied()
    }

    /// The final phase's targets: the highest offset the main phase saw per key.
    pub fn targets(&self) -> BTreeMap<Key, Offset> {
        self.gen.lock().unwrap().seen.clone()
    }

    /// Final phase for one worker: fresh clients, assign every key from the beginning, poll
    /// until this process's polls have reached every target; crash and start over every
    /// `restart_every` without getting there; give up at `deadline`. Returns whether it
    /// reached every target.
    pub fn final_read(
        &self,
        state: &mut WorkerState,
        targets: &BTreeMap<Key, Offset>,
        restart_every: Duration,
        deadline: Instant,
    ) -> bool {
        let keys: Vec<Key> = targets.keys().copied().collect();
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            let id = state.next_id;
            state.next_id += self.opts.concurrency as i64;
            let crash = event(id, OpType::Info, "crash", OpValue::Other(serde_json::Value::Null));
            let mut inv = crash.clone();
            inv.kind = OpType::Invoke;
            self.rec.record(inv);
            self.rec.record(crash);
            let id = state.next_id;
            state.next_id += self.opts.concurrency as i64;
            let mut proc = self.new_proc(id);
            if self.attach(&mut proc, &keys, false, true) {
                continue;
            }
            let mut reached: BTreeMap<Key, Offset> = BTreeMap::new();
            let round_end = (Instant::now() + restart_every).min(deadline);
            let done = |reached: &BTreeMap<Key, Offset>| {
                targets
                    .iter()
                    .all(|(k, &t)| reached.get(k).is_some_and(|&r| r >= t))
            };
            while Instant::now() < round_end && !done(&reached) {
                let Some(c) = proc.consumer.as_mut() else {
                    break;
                };
                let mut inv = event(
                    proc.id,
                    OpType::Invoke,
                    "poll",
                    OpValue::Mops(vec![Mop::Poll(Vec::new())]),
                );
                inv.poll_ms = Some(1000);
                self.rec.record(inv.clone());
                let polled = c.poll(Duration::from_millis(1000), 2000);
                for &(k, _, o) in &polled.records {
                    let e = reached.entry(k).or_insert(o);
                    *e = (*e).max(o);
                }
                let mut done_op = inv;
                done_op.kind = OpType::Ok;
                done_op.value = OpValue::Mops(vec![Mop::Poll(polled.records)]);
                done_op.rebalance = c.log.drain();
                done_op.error = polled.error;
                self.rec.record(done_op);
            }
            if done(&reached) {
                return true;
            }
        }
    }
}

/// What a worker carries from the main phase into the final phase.
pub struct WorkerState {
    /// The process id its next process gets.
    pub next_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(key_count: usize, max_writes: u64) -> WorkloadOptions {
        WorkloadOptions {
            bootstrap: String::new(),
            concurrency: 1,
            rate: 1.0,
            key_count,
            max_writes_per_key: max_writes,
            sub_via: SubVia::Both,
            producer: ProducerSettings {
                idempotence: true,
                retries: 1,
            },
            replication: 1,
            seed: 0,
            send_timeout: Duration::from_secs(1),
            final_time_limit: Duration::from_secs(1),
            group: "g".into(),
        }
    }

    fn gen(created_below: Key) -> Gen {
        Gen {
            active: Vec::new(),
            written: BTreeMap::new(),
            all: BTreeSet::new(),
            next_key: 0,
            created_below,
            seen: BTreeMap::new(),
            read: BTreeMap::new(),
        }
    }

    #[test]
    fn values_are_unique_per_key_and_keys_retire_after_their_budget() {
        let o = opts(2, 3);
        let mut g = gen(4);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut sent: BTreeSet<(Key, Value)> = BTreeSet::new();
        for _ in 0..12 {
            let (k, v) = g.next_send(&mut rng, &o).expect("a key while topics last");
            assert!(sent.insert((k, v)), "({k}, {v}) sent twice");
            assert!(v < 3, "key {k} got value {v} past its budget");
        }
        // Four keys with topics, three values each: nothing left until more topics exist.
        assert_eq!(g.next_send(&mut rng, &o), None);
        g.created_below = 6;
        assert!(matches!(g.next_send(&mut rng, &o), Some((4 | 5, 0))));
    }

    #[test]
    fn attach_keys_come_from_the_pool_or_are_unread() {
        let o = opts(4, 100);
        let mut g = gen(100);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        g.top_up(o.key_count);
        g.saw(50, 7, false); // acknowledged, never read
        g.saw(51, 3, false);
        g.saw(51, 3, true); // read to its end
        let mut unread_named = false;
        for _ in 0..200 {
            let keys = g.keys_to_attach(&mut rng, &o);
            assert!(!keys.is_empty());
            assert!(keys.iter().all(|k| *k < 4 || *k == 50), "{keys:?}");
            unread_named |= keys.contains(&50);
        }
        assert!(unread_named, "poll-unseen never steered a consumer to key 50");
    }

    #[test]
    fn skewed_index_stays_in_range_and_favours_the_front() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = [0usize; 10];
        for _ in 0..10_000 {
            counts[skewed_index(&mut rng, 10)] += 1;
        }
        assert!(counts[0] > counts[5] && counts[5] > 0, "{counts:?}");
        assert_eq!(skewed_index(&mut rng, 1), 0);
    }

    #[test]
    fn sub_via_parses_and_names_itself() {
        for s in ["assign", "subscribe", "assign,subscribe"] {
            assert_eq!(SubVia::parse(s).unwrap().name(), s);
        }
        assert!(SubVia::parse("both").unwrap().subscribes());
        assert!(!SubVia::Assign.subscribes());
        assert!(SubVia::parse("seek").unwrap_err().contains("'seek'"));
    }
}
