//! The run's history as it happens: every invocation and completion, numbered and timed
//! under one lock, appended to `history.jsonl` line by line (so a run that dies still
//! leaves the history up to that point) and kept in memory for the checker.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use crate::history::{History, Op, OpType, OpValue};

pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    file: BufWriter<File>,
    ops: Vec<Op>,
    error: Option<std::io::Error>,
}

impl Recorder {
    pub fn create(path: &Path, start: Instant) -> std::io::Result<Recorder> {
        Ok(Recorder {
            start,
            inner: Mutex::new(Inner {
                file: BufWriter::new(File::create(path)?),
                ops: Vec::new(),
                error: None,
            }),
        })
    }

    /// When the test started (time 0 of the history).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Appends `op`, giving it the next index and the current time; returns the index.
    pub fn record(&self, mut op: Op) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        op.index = inner.ops.len() as u64;
        op.time = self.start.elapsed().as_nanos() as u64;
        let line = op.line();
        if inner.error.is_none() {
            if let Err(e) = writeln!(inner.file, "{line}") {
                inner.error = Some(e);
            }
        }
        inner.ops.push(op);
        inner.ops.len() as u64 - 1
    }

    /// Flushes the file and hands back everything recorded.
    pub fn finish(self) -> std::io::Result<History> {
        let mut inner = self.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        inner.file.flush()?;
        Ok(History { ops: inner.ops })
    }

    /// Events recorded so far.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes what has been written so far.
    pub fn flush(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = inner.file.flush();
    }
}

/// A new event (index and time are filled in by [`Recorder::record`]).
pub fn event(process: i64, kind: OpType, f: &str, value: OpValue) -> Op {
    Op::new(0, 0, process, kind, f, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Mop;

    #[test]
    fn numbers_events_in_order_and_writes_a_history_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let rec = Recorder::create(&path, Instant::now()).unwrap();
        let send = |offset| {
            OpValue::Mops(vec![Mop::Send {
                key: 3,
                value: 0,
                offset,
            }])
        };
        assert_eq!(rec.record(event(0, OpType::Invoke, "send", send(None))), 0);
        assert_eq!(rec.record(event(0, OpType::Ok, "send", send(Some(5)))), 1);
        assert_eq!(rec.len(), 2);
        let h = rec.finish().unwrap();
        assert!(h.ops[0].time <= h.ops[1].time);
        let back = History::read_jsonl(std::io::BufReader::new(File::open(&path).unwrap())).unwrap();
        assert_eq!(back.ops, h.ops);
        back.validate().unwrap();
    }
}
