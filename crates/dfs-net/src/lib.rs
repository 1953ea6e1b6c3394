//! The transport under every dfs connection: clients to nodes, nodes to nodes.
//!
//! Nothing in dfs opens a socket itself. It asks a [`Transport`] to
//! [`connect`](Transport::connect) to an address or to [`bind`](Transport::bind) one, and
//! gets back a boxed byte stream ([`Stream`]) or a [`Listener`]. [`Tcp`], the default, is
//! tokio's TCP with `TCP_NODELAY`; the deterministic simulation (`dfs-sim`) plugs in a
//! simulated network instead, so the same server and client code runs on real sockets and
//! under simulated partitions, delays and crashes.
//!
//! Addresses are `HOST:PORT` strings, resolved by the transport: real host names or IPs for
//! [`Tcp`], simulated host names in the simulator.
//!
//! The transport is carried explicitly (an `Arc<dyn Transport>` in each configuration), not
//! chosen by a global, so real and simulated nodes can share one test process.
//!
//! [`blocking`] and [`random`] are the rest of the environment the simulator replaces,
//! so that a seed replays exactly: where file I/O runs (tokio's blocking pool, or inline
//! on a simulation's thread), and where ids and random choices come from (the operating
//! system's entropy, or a generator the simulation seeded for its thread).

pub mod blocking;
pub mod random;

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected, bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`], what every connection of dfs runs on.
pub type BoxStream = Box<dyn Stream>;

/// Accepts incoming connections on a bound address.
pub trait Listener: Send + Sync + 'static {
    /// Waits for the next connection; returns it with the peer's address.
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;

    /// The address the listener is bound to (with the actual port if port 0 was asked).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Opens connections and listeners.
pub trait Transport: Debug + Send + Sync + 'static {
    /// Connects to `addr` (`HOST:PORT`). Callers bound the wait with their own timeout.
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>>;

    /// Binds `addr` (`HOST:PORT`; port 0 picks a free port) and listens on it.
    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
}

/// A shared transport, as configurations carry it.
pub type SharedTransport = Arc<dyn Transport>;

/// The default transport: tokio TCP, with Nagle's algorithm off on every stream (requests
/// and answers are small frames that must not wait for each other).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Tcp {
    /// [`Tcp`] as a [`SharedTransport`].
    pub fn shared() -> SharedTransport {
        Arc::new(Tcp)
    }
}

impl Transport for Tcp {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            Ok(Box::new(TcpListener(listener)) as Box<dyn Listener>)
        })
    }
}

/// [`Tcp`]'s listener.
struct TcpListener(tokio::net::TcpListener);

impl Listener for TcpListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            // A stream that cannot take the option still works, only slower.
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn tcp_connects_to_what_it_binds_and_bytes_flow_both_ways() {
        let net = Tcp::shared();
        let listener = net.bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_ne!(addr.port(), 0, "port 0 is replaced by the port bound");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
        });
        let mut c = net.connect(&addr.to_string()).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn connecting_where_nothing_listens_is_refused() {
        let net = Tcp::shared();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = match net.connect(&format!("127.0.0.1:{port}")).await {
            Ok(_) => panic!("nothing listens there"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
