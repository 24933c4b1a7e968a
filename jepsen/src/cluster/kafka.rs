//! A hand-built Kafka Metadata v1 request over a plain `TcpStream`: how the harness asks a
//! node whether it has joined the cluster (a controller known, every broker registered)
//! without using any of Gregor's own code or a full client.
//!
//! Wire layout (Kafka protocol guide, Metadata API key 3, version 1):
//! request  = size i32, api_key i16, api_version i16, correlation_id i32, client_id string,
//!            topics array (count 0 = no topics);
//! response = size i32, correlation_id i32, brokers [node_id i32, host string, port i32,
//!            rack nullable string], controller_id i32, topics array.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const API_KEY_METADATA: i16 = 3;
const API_VERSION: i16 = 1;
const CORRELATION_ID: i32 = 0x6a65_7073; // "jeps"
const CLIENT_ID: &str = "gregor-jepsen-probe";
/// A Metadata v1 reply naming no topics is a few hundred bytes; anything larger is garbage.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Brokers in a reply we are willing to parse (a cluster has at most 9 nodes).
const BROKERS_MAX: usize = 64;

/// What a node said about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Registered brokers: (node id, advertised host, port).
    pub brokers: Vec<(i32, String, i32)>,
    /// The controller's node id, -1 when the node knows none.
    pub controller_id: i32,
}

/// Sends Metadata v1 (no topics) to `addr` and parses the brokers and the controller.
pub fn metadata(addr: SocketAddr, timeout: Duration) -> Result<ClusterView, String> {
    assert!(!timeout.is_zero(), "a zero timeout means 'block forever' to std");
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&request())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| (4..=RESPONSE_BYTES_MAX).contains(&s))
        .ok_or_else(|| format!("bad response size {size} from {addr}"))?;
    let mut body = vec![0u8; size];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    parse(&body).map_err(|e| format!("bad Metadata v1 response from {addr}: {e}"))
}

fn request() -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&API_KEY_METADATA.to_be_bytes());
    body.extend_from_slice(&API_VERSION.to_be_bytes());
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    // The client id is a short constant; its length fits an i16 (checked by the test).
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID.as_bytes());
    body.extend_from_slice(&0i32.to_be_bytes()); // topics: empty array = none
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.extend_from_slice(&(body.len() as i32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.bytes.len() < n {
            return Err(format!("truncated: wanted {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A nullable string; null reads as None.
    fn string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        Ok(Some(String::from_utf8_lossy(b).into_owned()))
    }
}

fn parse(body: &[u8]) -> Result<ClusterView, String> {
    let mut r = Reader { bytes: body };
    let correlation_id = r.i32()?;
    if correlation_id != CORRELATION_ID {
        return Err(format!("correlation id {correlation_id}, sent {CORRELATION_ID}"));
    }
    let count = r.i32()?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= BROKERS_MAX)
        .ok_or_else(|| format!("broker count {count}"))?;
    let mut brokers = Vec::with_capacity(count);
    for _ in 0..count {
        let node_id = r.i32()?;
        let host = r.string()?.ok_or("null broker host")?;
        let port = r.i32()?;
        let _rack = r.string()?;
        brokers.push((node_id, host, port));
    }
    let controller_id = r.i32()?;
    Ok(ClusterView {
        brokers,
        controller_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_framed_metadata_v1_without_topics() {
        assert!(CLIENT_ID.len() < i16::MAX as usize);
        let r = request();
        let size = i32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize;
        assert_eq!(size + 4, r.len());
        assert_eq!(&r[4..6], &3i16.to_be_bytes());
        assert_eq!(&r[6..8], &1i16.to_be_bytes());
        assert_eq!(&r[r.len() - 4..], &0i32.to_be_bytes());
    }

    #[test]
    fn parses_brokers_and_controller() {
        let mut b = Vec::new();
        b.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        for (id, host) in [(1i32, "10.77.0.11"), (2, "10.77.0.12")] {
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&(host.len() as i16).to_be_bytes());
            b.extend_from_slice(host.as_bytes());
            b.extend_from_slice(&9092i32.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
        }
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        let view = parse(&b).unwrap();
        assert_eq!(view.controller_id, 2);
        assert_eq!(view.brokers[1], (2, "10.77.0.12".to_string(), 9092));
        assert!(parse(&b[..10]).is_err());
    }
}
