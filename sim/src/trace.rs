//! The trace hash: a stable 64-bit FNV-1a digest over every engine step's inputs and
//! outputs (and the simulator's own fault decisions), encoded field by field so it does not
//! depend on `Debug` formatting, pointer values or `std`'s randomly keyed hashers. Two runs
//! of one seed must end with the same hash; that is what "deterministic" means here.

use gregor_engine::{Input, IoError, IoOp, IoResult, Output, Time};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit.
#[derive(Clone, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(FNV_OFFSET)
    }
}

impl Fnv64 {
    pub fn bytes(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }

    /// Hashes a length-prefixed byte string, so ("ab","c") and ("a","bc") differ.
    pub fn blob(&mut self, data: &[u8]) {
        self.u64(data.len() as u64);
        self.bytes(data);
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }

    pub fn tag(&mut self, t: u8) {
        self.bytes(&[t]);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes a seed and a name into a new 64-bit seed (used to derive one RNG per concern).
pub fn derive_seed(seed: u64, concern: &str) -> u64 {
    let mut h = Fnv64::default();
    h.u64(seed);
    h.blob(concern.as_bytes());
    // FNV's low bits mix poorly for short inputs; finish with a splitmix64 round.
    let mut z = h.finish().wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The running trace of one simulation.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    h: Fnv64,
    /// Engine steps hashed so far.
    pub steps: u64,
}

impl Trace {
    pub fn hash(&self) -> u64 {
        self.h.finish()
    }

    /// One engine step: which node, when, what went in, what came out.
    pub fn step(&mut self, node: usize, now: Time, input: &Input, outputs: &[Output]) {
        self.steps += 1;
        let h = &mut self.h;
        h.tag(b'S');
        h.u64(node as u64);
        h.u64(now.mono_ms);
        h.i64(now.wall_ms);
        hash_input(h, input);
        h.u64(outputs.len() as u64);
        for o in outputs {
            hash_output(h, o);
        }
    }

    /// A simulator-side event (fault, crash, client-visible failure), named and numbered.
    pub fn event(&mut self, name: &str, values: &[u64]) {
        self.h.tag(b'E');
        self.h.blob(name.as_bytes());
        for &v in values {
            self.h.u64(v);
        }
    }

    /// A simulator-side event described by text (e.g. the partition the nemesis chose).
    pub fn note(&mut self, name: &str, text: &str) {
        self.h.tag(b'N');
        self.h.blob(name.as_bytes());
        self.h.blob(text.as_bytes());
    }
}

fn hash_input(h: &mut Fnv64, input: &Input) {
    #[allow(unreachable_patterns)]
    match input {
        Input::Start => h.tag(0),
        Input::ClientRequest { conn, seq, frame } => {
            h.tag(1);
            h.u64(*conn);
            h.u64(*seq);
            h.blob(frame);
        }
        Input::ConnectionClosed { conn } => {
            h.tag(2);
            h.u64(*conn);
        }
        Input::Tick => h.tag(3),
        Input::IoDone { token, result } => {
            h.tag(4);
            h.u64(*token);
            hash_io_result(h, result);
        }
        Input::Shutdown => h.tag(5),
        Input::PeerMessage { from, msg } => {
            h.tag(6);
            h.u64(*from as u64);
            h.blob(msg);
        }
        // Inputs added after this was written: fall back to their Debug form.
        other => {
            h.tag(255);
            h.blob(format!("{other:?}").as_bytes());
        }
    }
}

fn hash_output(h: &mut Fnv64, output: &Output) {
    #[allow(unreachable_patterns)]
    match output {
        Output::ClientResponse { conn, seq, frame } => {
            h.tag(0);
            h.u64(*conn);
            h.u64(*seq);
            match frame {
                None => h.tag(0),
                Some(parts) => {
                    h.tag(1);
                    // The concatenation is what goes on the wire; how it is split is not.
                    h.u64(parts.iter().map(|p| p.len() as u64).sum());
                    for p in parts {
                        h.bytes(p);
                    }
                }
            }
        }
        Output::CloseConnection { conn } => {
            h.tag(1);
            h.u64(*conn);
        }
        Output::Io { token, op } => {
            h.tag(2);
            h.u64(*token);
            hash_io_op(h, op);
        }
        Output::SetTimer { at_mono_ms } => {
            h.tag(3);
            h.u64(*at_mono_ms);
        }
        Output::Ready => h.tag(4),
        Output::Stopped => h.tag(5),
        Output::Fatal { reason } => {
            h.tag(6);
            h.blob(reason.as_bytes());
        }
        Output::ClusterId { id } => {
            h.tag(8);
            h.blob(id.as_bytes());
        }
        Output::SendPeer { to, msg } => {
            h.tag(7);
            h.u64(*to as u64);
            h.blob(msg);
        }
        other => {
            h.tag(255);
            h.blob(format!("{other:?}").as_bytes());
        }
    }
}

fn hash_io_op(h: &mut Fnv64, op: &IoOp) {
    match op {
        IoOp::Append { file, position, data } => {
            h.tag(0);
            h.blob(file.as_bytes());
            h.u64(*position);
            // The pieces hash as the bytes they write, however the engine split them.
            h.u64(data.iter().map(|d| d.len() as u64).sum());
            for piece in data {
                h.bytes(piece);
            }
        }
        IoOp::Sync { file } => {
            h.tag(1);
            h.blob(file.as_bytes());
        }
        IoOp::Read { file, position, len } => {
            h.tag(2);
            h.blob(file.as_bytes());
            h.u64(*position);
            h.u64(u64::from(*len));
        }
        IoOp::Truncate { file, len } => {
            h.tag(3);
            h.blob(file.as_bytes());
            h.u64(*len);
        }
        IoOp::CreateFile { file } => {
            h.tag(4);
            h.blob(file.as_bytes());
        }
        IoOp::CreateDir { dir } => {
            h.tag(5);
            h.blob(dir.as_bytes());
        }
        IoOp::Rename { from, to } => {
            h.tag(6);
            h.blob(from.as_bytes());
            h.blob(to.as_bytes());
        }
        IoOp::Delete { path } => {
            h.tag(7);
            h.blob(path.as_bytes());
        }
        IoOp::WriteState { file, data } => {
            h.tag(8);
            h.blob(file.as_bytes());
            h.blob(data);
        }
        IoOp::List { dir } => {
            h.tag(9);
            h.blob(dir.as_bytes());
        }
    }
}

fn hash_io_result(h: &mut Fnv64, r: &IoResult) {
    match r {
        IoResult::Done => h.tag(0),
        IoResult::Read(b) => {
            h.tag(1);
            h.blob(b);
        }
        IoResult::List(entries) => {
            h.tag(2);
            h.u64(entries.len() as u64);
            for e in entries {
                h.blob(e.name.as_bytes());
                h.u64(e.size_bytes);
                h.tag(u8::from(e.is_dir));
            }
        }
        IoResult::Err(e) => {
            h.tag(3);
            match e {
                IoError::NotFound => h.tag(0),
                IoError::NoSpace => h.tag(1),
                IoError::Other(s) => {
                    h.tag(2);
                    h.blob(s.as_bytes());
                }
            }
        }
    }
}

/// A one-line description of an input, payloads shown by size (for `--verbose`).
pub fn describe_input(input: &Input) -> String {
    match input {
        Input::ClientRequest { conn, seq, frame } => {
            let api = frame
                .get(..4)
                .map(|b| (i16::from_be_bytes([b[0], b[1]]), i16::from_be_bytes([b[2], b[3]])));
            format!(
                "ClientRequest conn {conn} seq {seq} (api, version) {api:?}, {} bytes",
                frame.len()
            )
        }
        Input::IoDone { token, result } => format!("IoDone {token} {}", describe_io_result(result)),
        Input::PeerMessage { from, msg } => {
            format!("PeerMessage from {from}: {}", describe_peer_message(msg))
        }
        other => format!("{other:?}"),
    }
}

/// A peer message item by item: the group (topic id's low 16 bits and partition, `meta`
/// for the metadata log) and the Raft message with entries shown as offset ranges.
pub fn describe_peer_message(msg: &bytes::Bytes) -> String {
    use gregor_engine::raft::RaftMsg;
    use gregor_engine::replica::{Envelope, GroupId};
    let env = match Envelope::decode(msg.clone()) {
        Ok(env) => env,
        Err(e) => return format!("undecodable ({e}), {} bytes", msg.len()),
    };
    let mut items: Vec<String> = env
        .raft
        .iter()
        .map(|(g, m)| {
            let group = if *g == GroupId::METADATA {
                "meta".to_string()
            } else {
                format!("{:04x}-{}", g.topic_id & 0xffff, g.partition)
            };
            let what = match m {
                RaftMsg::Append {
                    term,
                    prev_end,
                    prev_epoch,
                    commit_end,
                    entries,
                } => {
                    let spans: Vec<String> = entries
                        .iter()
                        .map(|e| format!("{}..={}@e{}", e.base, e.last, e.epoch))
                        .collect();
                    format!(
                        "Append {{ term: {term}, prev_end: {prev_end}, prev_epoch: {prev_epoch}, commit_end: {commit_end}, entries: [{}] }}",
                        spans.join(" ")
                    )
                }
                other => format!("{other:?}"),
            };
            format!("{group} {what}")
        })
        .collect();
    items.extend(env.control.iter().map(|c| format!("control {c:?}")));
    items.join("; ")
}

/// A one-line description of an output, payloads shown by size (for `--verbose`).
pub fn describe_output(output: &Output) -> String {
    match output {
        Output::ClientResponse { conn, seq, frame } => format!(
            "ClientResponse conn {conn} seq {seq} {}",
            frame.as_ref().map_or("(none)".to_string(), |p| format!(
                "{} bytes",
                p.iter().map(|b| b.len()).sum::<usize>()
            ))
        ),
        Output::Io { token, op } => format!("Io {token} {}", describe_io_op(op)),
        Output::SendPeer { to, msg } => format!("SendPeer to {to}: {}", describe_peer_message(msg)),
        other => format!("{other:?}"),
    }
}

fn describe_io_op(op: &IoOp) -> String {
    match op {
        IoOp::Append { file, position, data } => format!(
            "Append {file} @{position} +{}",
            data.iter().map(|d| d.len()).sum::<usize>()
        ),
        IoOp::WriteState { file, data } => format!("WriteState {file} {} bytes", data.len()),
        other => format!("{other:?}"),
    }
}

fn describe_io_result(r: &IoResult) -> String {
    match r {
        IoResult::Read(b) => format!("Read {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        let mut h = Fnv64::default();
        h.bytes(b"");
        assert_eq!(h.finish(), 0xcbf29ce484222325);
        let mut h = Fnv64::default();
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
        let mut h = Fnv64::default();
        h.bytes(b"foobar");
        assert_eq!(h.finish(), 0x85944171f73967e8);
    }

    #[test]
    fn derived_seeds_differ_per_concern_and_seed() {
        assert_ne!(derive_seed(1, "disk"), derive_seed(1, "net"));
        assert_ne!(derive_seed(1, "disk"), derive_seed(2, "disk"));
        assert_eq!(derive_seed(3, "x"), derive_seed(3, "x"));
    }
}
