//! [`Simulated`]: the [`Transport`] of turmoil's simulated network.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dfs_net::{BoxStream, Listener, SharedTransport, Transport};
use futures::future::BoxFuture;

/// Connections over turmoil's simulated network: addresses are `HOST:PORT` with a
/// simulated host's name; a listener binds the port on every address of its host.
///
/// Only usable from code running inside a turmoil host or client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Simulated;

impl Simulated {
    /// [`Simulated`] as a [`SharedTransport`].
    pub fn shared() -> SharedTransport {
        std::sync::Arc::new(Simulated)
    }
}

impl Transport for Simulated {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        Box::pin(async move {
            let port = port.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "address is not HOST:PORT")
            })?;
            let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            let listener = turmoil::net::TcpListener::bind(any).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((Box::new(stream) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
