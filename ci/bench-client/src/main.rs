//! Load generator for `ci/bench.sh`: librdkafka through the `rdkafka` crate, synchronous
//! (BaseProducer/BaseConsumer) so the only threads are librdkafka's own.
//!
//! bench-client produce  BOOTSTRAP TOPIC PARTITIONS SIZE ACKS SECONDS
//! bench-client consume  BOOTSTRAP TOPIC PARTITIONS EXPECT TIMEOUT_S
//! bench-client latency  BOOTSTRAP TOPIC ACKS COUNT CAP_S   (quantised by poll's timeout:
//!                                                           bench.py uses Python for latency)
//! bench-client ceiling  SIZE SECONDS        (enqueue only, no broker)
//! bench-client version                     (librdkafka's version)
//!
//! Each prints one JSON line with what it measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    err: AtomicU64,
}

impl ClientContext for Counts {}

impl ProducerContext for Counts {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if self.err.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("bench-client: first delivery error: {e}");
                }
                0
            }
        };
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} ({name}) missing or invalid"))
}

fn producer(bootstrap: &str, acks: &str, linger_ms: &str) -> BaseProducer<Counts> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        .create_with_context(Counts::default())
        .expect("producer")
}

/// Sends, retrying after a poll while librdkafka's queue is full.
fn send(p: &BaseProducer<Counts>, topic: &str, partition: i32, payload: &[u8]) {
    let mut record = BaseRecord::<(), [u8]>::to(topic)
        .payload(payload)
        .partition(partition);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                p.poll(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("produce failed: {e}"),
        }
    }
}

fn produce(args: &[String]) {
    let (bootstrap, topic): (String, String) = (arg(args, 2, "bootstrap"), arg(args, 3, "topic"));
    let partitions: i32 = arg(args, 4, "partitions");
    let size: usize = arg(args, 5, "size");
    let acks: String = arg(args, 6, "acks");
    let seconds: f64 = arg(args, 7, "seconds");
    let p = producer(&bootstrap, &acks, "5");
    let payload: Vec<u8> = (0..size).map(|i| (i * 7 + 13) as u8).collect();
    send(&p, &topic, 0, &payload); // warm-up: metadata and connection
    p.flush(Duration::from_secs(30)).expect("warm-up flush");
    let warm = p.context().ok.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut n: u64 = 0;
    while t0.elapsed().as_secs_f64() < seconds {
        for _ in 0..1000 {
            send(&p, &topic, (n % partitions as u64) as i32, &payload);
            n += 1;
        }
        p.poll(Duration::ZERO);
    }
    let flushed = p.flush(Duration::from_secs(120)).is_ok();
    let elapsed = t0.elapsed().as_secs_f64();
    let ok = p.context().ok.load(Ordering::Relaxed) - warm;
    let err = p.context().err.load(Ordering::Relaxed);
    println!(
        "{{\"sent\":{n},\"records\":{ok},\"errors\":{err},\"flushed\":{flushed},\"elapsed_s\":{elapsed}}}"
    );
}

fn consume(args: &[String]) {
    let (bootstrap, topic): (String, String) = (arg(args, 2, "bootstrap"), arg(args, 3, "topic"));
    let partitions: i32 = arg(args, 4, "partitions");
    let expect: u64 = arg(args, 5, "expect");
    let timeout_s: f64 = arg(args, 6, "timeout_s");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "bench-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("fetch.wait.max.ms", "100")
        .set("queued.min.messages", "200000")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for part in 0..partitions {
        tpl.add_partition_offset(&topic, part, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    // The clock is read once per CLOCK_EVERY records, at the last expected record, and when
    // a poll comes back empty (for the timeouts): two clock reads per record were a sixth
    // of this thread's CPU (a vDSO call each in this VM). When the run ends short of
    // `expect`, the records after the last reading are timed at it: the elapsed time is
    // early by at most CLOCK_EVERY records' worth (about a millisecond). A full run is
    // timed at its last record.
    const CLOCK_EVERY: u64 = 1024;
    let t0 = Instant::now();
    let mut last = t0; // the clock at the latest reading taken when a record arrived
    let mut unstamped: u64 = 0; // records received since `last` was taken
    let mut n: u64 = 0;
    let mut bytes: u64 = 0;
    while n < expect {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len() as u64;
                unstamped += 1;
                if unstamped == CLOCK_EVERY || n == expect {
                    last = Instant::now();
                    unstamped = 0;
                    if (last - t0).as_secs_f64() >= timeout_s {
                        break;
                    }
                }
            }
            Some(Err(e)) => eprintln!("bench-client: consume error: {e}"),
            None => {
                let now = Instant::now();
                if (now - last).as_secs_f64() > 10.0 || (now - t0).as_secs_f64() >= timeout_s {
                    break;
                }
            }
        }
    }
    let elapsed = (last - t0).as_secs_f64();
    println!("{{\"records\":{n},\"bytes\":{bytes},\"elapsed_s\":{elapsed}}}");
}

fn latency(args: &[String]) {
    let (bootstrap, topic): (String, String) = (arg(args, 2, "bootstrap"), arg(args, 3, "topic"));
    let acks: String = arg(args, 4, "acks");
    let count: usize = arg(args, 5, "count");
    let cap_s: f64 = arg(args, 6, "cap_s");
    let p = producer(&bootstrap, &acks, "0");
    let payload = vec![b'l'; 100];
    send(&p, &topic, 0, &payload);
    p.flush(Duration::from_secs(30)).expect("warm-up flush");
    let mut samples_us: Vec<f64> = Vec::with_capacity(count);
    let t_start = Instant::now();
    while samples_us.len() < count && t_start.elapsed().as_secs_f64() < cap_s {
        let before = p.context().ok.load(Ordering::Relaxed) + p.context().err.load(Ordering::Relaxed);
        let t0 = Instant::now();
        send(&p, &topic, 0, &payload);
        while p.context().ok.load(Ordering::Relaxed) + p.context().err.load(Ordering::Relaxed) == before {
            p.poll(Duration::from_millis(1));
        }
        samples_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let errors = p.context().err.load(Ordering::Relaxed);
    let list: Vec<String> = samples_us.iter().map(|s| format!("{s:.1}")).collect();
    println!("{{\"errors\":{errors},\"samples_us\":[{}]}}", list.join(","));
}

fn ceiling(args: &[String]) {
    let size: usize = arg(args, 2, "size");
    let seconds: f64 = arg(args, 3, "seconds");
    let p: BaseProducer<Counts> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9") // discard port: nothing answers
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "10000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.timeout.ms", "300000")
        .set("log_level", "0")
        .create_with_context(Counts::default())
        .expect("producer");
    let payload = vec![b'c'; size];
    let t0 = Instant::now();
    let mut n: u64 = 0;
    while t0.elapsed().as_secs_f64() < seconds {
        for _ in 0..1000 {
            let r = BaseRecord::<(), [u8]>::to("ceiling")
                .payload(&payload)
                .partition((n & 7) as i32);
            if p.send(r).is_err() {
                break;
            }
            n += 1;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!("{{\"records\":{n},\"elapsed_s\":{elapsed}}}");
    p.purge(rdkafka::producer::PurgeConfig::default().queue());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("produce") => produce(&args),
        Some("consume") => consume(&args),
        Some("latency") => latency(&args),
        Some("ceiling") => ceiling(&args),
        Some("version") => println!("{}", rdkafka::util::get_rdkafka_version().1),
        _ => {
            eprintln!("usage: bench-client produce|consume|latency|ceiling ... (see src/main.rs)");
            std::process::exit(2);
        }
    }
}
