//! Frame IO on one connection, shared by the dialing side ([`super::link`]) and the accepting
//! side ([`super::listener`]): read a whole frame under a deadline, write the hello, and the
//! reasons a connection ends.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire::{self, FrameDecoder, Hello, WireError};
use super::NodeId;
use crate::describe_io_error;

/// Bytes asked of the socket per read when no frame length says more.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a connection ended or was refused; logged with the ids of both ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{}", describe_io_error(.0))]
    Io(#[from] io::Error),
    #[error("connection closed by the other end")]
    Closed,
    #[error("connection closed by the other end in the middle of a frame")]
    ClosedMidFrame,
    #[error("nothing heard for {0:?}")]
    Idle(Duration),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("unexpected data on the return path of an outbound connection")]
    UnexpectedData,
    #[error("replaced by a newer connection from the same node")]
    Replaced,
    #[error("shutting down")]
    Stopped,
}

/// Reads the next frame's payload, within `deadline` (for the whole frame). Keeps any bytes
/// read past the frame in `buf` for the next call. Cancel safe: `buf` stays consistent.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
    deadline: Duration,
) -> Result<Bytes, ConnError> {
    let read = async {
        loop {
            if let Some(payload) = decoder.decode(buf)? {
                return Ok(payload);
            }
            buf.reserve(READ_CHUNK_BYTES);
            if reader.read_buf(buf).await? == 0 {
                return Err(if buf.is_empty() {
                    ConnError::Closed
                } else {
                    ConnError::ClosedMidFrame
                });
            }
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(ConnError::Idle(deadline)))
}

/// Writes our hello on a fresh connection.
pub(crate) async fn write_hello<W: AsyncWrite + Unpin>(
    writer: &mut W,
    hello: &Hello,
) -> Result<(), ConnError> {
    let mut out = BytesMut::with_capacity(wire::FRAME_HEADER_BYTES + wire::HELLO_BYTES_MAX);
    wire::encode_hello_frame(hello, &mut out);
    writer.write_all(&out).await?;
    Ok(())
}

/// Reads and decodes the other end's hello, within `deadline`.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    deadline: Duration,
) -> Result<Hello, ConnError> {
    let decoder = FrameDecoder::new(wire::HELLO_BYTES_MAX);
    let payload = match read_frame(reader, buf, &decoder, deadline).await {
        Err(ConnError::Idle(d)) => return Err(ConnError::Timeout(d)),
        other => other?,
    };
    Ok(Hello::decode(&payload)?)
}

/// Whether two cluster ids may talk: equal, or either still unknown (empty).
pub(crate) fn clusters_compatible(ours: &str, theirs: &str) -> bool {
    ours.is_empty() || theirs.is_empty() || ours == theirs
}

/// Checks a hello received from `hello.sender` by node `me`, which accepts the senders in
/// `known` and belongs to cluster `cluster_id`. `Err` names what is wrong.
pub(crate) fn check_hello(
    hello: &Hello,
    me: NodeId,
    known: impl Fn(NodeId) -> bool,
    cluster_id: &str,
) -> Result<(), String> {
    if hello.receiver != me {
        return Err(format!(
            "node {} addressed node {} but this is node {me}",
            hello.sender, hello.receiver
        ));
    }
    if hello.sender == me || !known(hello.sender) {
        return Err(format!("node {} is not one of this node's peers", hello.sender));
    }
    if !clusters_compatible(cluster_id, &hello.cluster_id) {
        return Err(format!(
            "node {} is in cluster '{}', this node is in cluster '{cluster_id}'",
            hello.sender, hello.cluster_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sender: NodeId, receiver: NodeId, cluster: &str) -> Hello {
        Hello::new(sender, receiver, cluster)
    }

    #[test]
    fn handshake_validation() {
        let known = |id| id == 1 || id == 2 || id == 3;
        assert_eq!(check_hello(&hello(1, 2, "c"), 2, known, "c"), Ok(()));
        assert_eq!(
            check_hello(&hello(1, 2, ""), 2, known, "c"),
            Ok(()),
            "sender unknown id"
        );
        assert_eq!(
            check_hello(&hello(1, 2, "c"), 2, known, ""),
            Ok(()),
            "we do not know ours"
        );
        let wrong_receiver = check_hello(&hello(1, 3, "c"), 2, known, "c").unwrap_err();
        assert!(
            wrong_receiver.contains("addressed node 3 but this is node 2"),
            "{wrong_receiver}"
        );
        let stranger = check_hello(&hello(9, 2, "c"), 2, known, "c").unwrap_err();
        assert!(stranger.contains("node 9 is not one of"), "{stranger}");
        assert!(
            check_hello(&hello(2, 2, "c"), 2, known, "c").is_err(),
            "from myself"
        );
        let other_cluster = check_hello(&hello(1, 2, "d"), 2, known, "c").unwrap_err();
        assert!(other_cluster.contains("cluster 'd'") && other_cluster.contains("'c'"));
    }

    #[tokio::test]
    async fn read_frame_reports_eof_timeout_and_partial_frames() {
        let decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::new();
        let mut empty: &[u8] = &[];
        let e = read_frame(&mut empty, &mut buf, &decoder, Duration::from_secs(1)).await;
        assert!(matches!(e, Err(ConnError::Closed)));
        let mut partial: &[u8] = &[0, 0, 0, 5, 0];
        let e = read_frame(&mut partial, &mut buf, &decoder, Duration::from_secs(1)).await;
        assert!(matches!(e, Err(ConnError::ClosedMidFrame)));

        let (mut quiet, _keep_open) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let e = read_frame(&mut quiet, &mut buf, &decoder, Duration::from_millis(20)).await;
        assert!(matches!(e, Err(ConnError::Idle(_))));
    }
}
