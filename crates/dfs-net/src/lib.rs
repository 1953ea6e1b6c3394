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
//! [`tls`] layers TLS over any transport (in practice over [`Tcp`]): [`tls::Tls`] connects
//! with a TLS client handshake that checks the server's certificate against a CA and the
//! host name of the address, and its listeners run the server handshake in
//! [`Listener::secure`], off the accept loop. It only encrypts and authenticates the
//! server; peers still prove themselves with the protocol's own handshake (no client
//! certificates). [`tls::write_dev_certificates`] writes a CA and a node certificate for
//! development and tests. TLS uses rustls with the *ring* crypto provider, passed to each
//! configuration, so no process-wide default provider has to be installed.
//!
//! [`blocking`] and [`random`] are the rest of the environment the simulator replaces,
//! so that a seed replays exactly: where file I/O runs (tokio's blocking pool, or inline
//! on a simulation's thread), and where ids and random choices come from (the operating
//! system's entropy, or a generator the simulation seeded for its thread).

pub mod blocking;
pub mod random;
pub mod tls;

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
///
/// Taking a connection is two steps. [`accept`](Listener::accept) only accepts: it must
/// stay quick, since the node's accept loop calls it in a loop and applies its
/// per-address limits right after. The node then calls [`secure`](Listener::secure) on
/// the connection's own task, under its hello timeout, to run whatever handshake the
/// transport needs (TLS for [`tls::Tls`]), so a slow or silent peer holds up only its own
/// connection, never the accept loop.
pub trait Listener: Send + Sync + 'static {
    /// Waits for the next connection; returns it with the peer's address. The stream is
    /// not ready for use until it has been through [`secure`](Listener::secure).
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;

    /// The address the listener is bound to (with the actual port if port 0 was asked).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Runs the transport's handshake on a stream [`accept`](Listener::accept) returned and
    /// gives back the stream to use. The default returns the stream unchanged (plain TCP,
    /// the simulator); [`tls::Tls`]'s listener runs the TLS server handshake here. The
    /// future owns what it needs (`'static`): callers run it on the connection's own task
    /// and bound it with their own timeout, since a peer that sends nothing stalls it.
    fn secure(&self, stream: BoxStream) -> BoxFuture<'static, io::Result<BoxStream>> {
        Box::pin(std::future::ready(Ok(stream)))
    }
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
            let (s, _) = listener.accept().await.expect("accept");
            // Plain TCP has no handshake: `secure` hands the stream back as it is.
            let mut s = listener.secure(s).await.expect("secure");
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
