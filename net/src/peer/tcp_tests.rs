//! The peer transport on real TCP (127.0.0.1, ephemeral ports): two nodes exchange 10,000
//! messages each way, of mixed sizes, and every one arrives intact and in order.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::*;

const MESSAGES: u64 = 10_000;

/// Message `seq` from `from`: its sequence number, then a size and content derived from both.
fn message(from: NodeId, seq: u64) -> Bytes {
    let len = match seq % 100 {
        0 => 60_000,
        7 => 0,
        _ => (seq * 37 % 2_000) as usize,
    };
    let mut out = BytesMut::with_capacity(8 + len);
    out.put_u64(seq);
    out.extend((0..len).map(|i| (i as u64 * 31 + seq + from as u64) as u8));
    out.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_each_way_arrive_intact_and_in_order() {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = [
        TokioTcp.bind(localhost).await.unwrap(),
        TokioTcp.bind(localhost).await.unwrap(),
    ];
    let addrs: BTreeMap<NodeId, SocketAddr> = [
        (1, TokioTcp.local_addr(&listeners[0]).unwrap()),
        (2, TokioTcp.local_addr(&listeners[1]).unwrap()),
    ]
    .into();
    let mut nets = Vec::new();
    let mut inboxes = Vec::new();
    for (me, listener) in [1, 2].into_iter().zip(listeners) {
        let mut config = PeerConfig::new(me, addrs[&me], addrs.clone());
        config.cluster_id = "tcp-test".into();
        config.batch_bytes_max = 64 * 1024;
        let (tx, rx) = mpsc::channel(1024);
        nets.push(PeerNet::start_on(config, TokioTcp, listener, tx).unwrap());
        inboxes.push(rx);
    }
    assert_eq!(nets[0].local_addr(), addrs[&1]);
    for seq in 0..MESSAGES {
        nets[0].send(2, message(1, seq)).unwrap();
        nets[1].send(1, message(2, seq)).unwrap();
    }
    for (rx, (me, from)) in inboxes.iter_mut().zip([(1, 2), (2, 1)]) {
        for seq in 0..MESSAGES {
            let got = tokio::time::timeout(Duration::from_secs(15), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("node {me}: message {seq} from {from} never came"))
                .unwrap();
            assert_eq!(got.0, from);
            assert!(got.1 == message(from, seq), "node {me}: message {seq} differs");
        }
    }
    let stats = nets[0].stats(2).unwrap();
    assert_eq!(stats.messages_sent, MESSAGES);
    assert_eq!((stats.dropped, stats.queued_bytes, stats.connections), (0, 0, 1));
    assert!(
        stats.frames_sent < MESSAGES,
        "queued messages were batched: {stats:?}"
    );
    for net in &nets {
        net.shutdown().await;
    }
    assert_eq!(nets[0].send(2, Bytes::new()), Err(SendError::Stopped));
}

#[tokio::test]
async fn send_refuses_self_unknown_and_oversize() {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let peers: BTreeMap<NodeId, SocketAddr> =
        [(1, localhost), (2, SocketAddr::from(([127, 0, 0, 1], 9)))].into();
    let mut config = PeerConfig::new(1, localhost, peers);
    config.frame_bytes_max = 1024;
    config.batch_bytes_max = 1024;
    config.queue_bytes_max = 2048;
    let (tx, _rx) = mpsc::channel(1);
    let net = PeerNet::start(config, TokioTcp, tx).await.unwrap();
    assert_eq!(net.send(1, Bytes::new()), Err(SendError::ToSelf));
    assert_eq!(net.send(3, Bytes::new()), Err(SendError::UnknownPeer(3)));
    assert_eq!(net.stats(3), None);
    assert!(matches!(
        net.send(2, Bytes::from(vec![0; 1021])),
        Err(SendError::TooLarge { .. })
    ));
    net.send(2, Bytes::from(vec![0; 1020])).unwrap();
    net.send(2, Bytes::from(vec![0; 1020])).unwrap();
    assert_eq!(
        net.send(2, Bytes::new()),
        Err(SendError::QueueFull {
            to: 2,
            queued_bytes: 2048,
            queue_bytes_max: 2048
        })
    );
    assert_eq!(net.stats(2).unwrap().dropped, 1);
    assert!(net.set_cluster_id(&"x".repeat(256)).is_err());
    net.set_cluster_id("abc").unwrap();
    assert_eq!(net.cluster_id(), "abc");
    net.shutdown().await;
}

#[tokio::test]
async fn a_busy_port_and_bad_settings_are_reported() {
    let first = TokioTcp
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let taken = TokioTcp.local_addr(&first).unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let err = PeerNet::start(PeerConfig::new(1, taken, BTreeMap::new()), TokioTcp, tx.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot listen for peers on {taken}: address already in use")
    );
    let mut config = PeerConfig::new(1, taken, BTreeMap::new());
    config.idle_timeout = config.keepalive_interval;
    let err = PeerNet::start(config, TokioTcp, tx).await.unwrap_err();
    assert!(
        matches!(err, PeerError::Config(ref r) if r.contains("idle_timeout")),
        "{err}"
    );
}
