//! What the peer transport needs from a network: bind, accept, connect, byte streams. Real
//! TCP in production ([`TokioTcp`]); the tests plug in turmoil's simulated TCP, which mirrors
//! tokio's API, so the same link and listener code runs under both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A network the peer transport can run on. Futures are `Send` so links run as ordinary
/// tokio tasks.
pub trait PeerTransport: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Listener: Send + Sync + 'static;

    /// Listens on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address a listener is bound to.
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// The next inbound connection and its remote address. Must be cancel safe.
    fn accept<'a>(
        &'a self,
        listener: &'a Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + 'a;

    /// Opens a connection to `addr`. The caller bounds it with a timeout.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Real TCP through tokio, with Nagle off: frames are written whole, and Raft's small
/// messages must not wait for an ack of the previous segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioTcp;

impl PeerTransport for TokioTcp {
    type Stream = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept<'a>(&'a self, listener: &'a TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
