//! The caller's side of the hello exchange, for every kind of connection.

use dfs_proto::{
    ClientFrame, Hello, PROTOCOL_VERSION, ProtoError, Role, ServerFrame, Welcome, WireError,
};
use futures::{Sink, SinkExt, Stream, StreamExt};

use crate::{ClusterSecret, Nonce, Side, peer_context};

/// Why a hello was not welcomed.
#[derive(Debug, thiserror::Error)]
pub enum GreetError {
    /// The node refused us and said why.
    #[error("{0}")]
    Refused(WireError),
    /// The socket failed or a frame was malformed.
    #[error("{0}")]
    Io(#[from] ProtoError),
    /// The node closed the connection during the hello.
    #[error("closed during the hello")]
    Closed,
    /// The cluster-secret handshake failed on our side: the node did not prove it knows
    /// the secret, or asked for a proof we cannot give.
    #[error("{0}")]
    Unauthenticated(String),
    /// The node answered with something the hello exchange does not allow.
    #[error("{0}")]
    Protocol(String),
}

/// The role's kind and caller id as proofs cover them; `None` for a client.
pub fn role_context(role: &Role) -> Option<Vec<u8>> {
    match role {
        Role::Client => None,
        Role::Peer {
            cluster_id,
            node_id,
        } => Some(peer_context(*cluster_id, *node_id, "peer")),
        Role::Forwarder {
            cluster_id,
            node_id,
        } => Some(peer_context(*cluster_id, *node_id, "forwarder")),
    }
}

/// Sends `hello` and completes the exchange: answers the node's challenge with a proof of
/// `secret` (a peer or forwarder of a cluster with a secret), and returns the node's
/// welcome. With a secret, a node that welcomes us without proving it knows the secret is
/// refused: its cluster is not ours. The caller bounds the whole exchange with a timeout.
pub async fn greet<T>(
    framed: &mut T,
    hello: Hello,
    secret: Option<&ClusterSecret>,
) -> Result<Welcome, GreetError>
where
    T: Sink<ClientFrame, Error = ProtoError>
        + Stream<Item = Result<ServerFrame, ProtoError>>
        + Unpin,
{
    let context = role_context(&hello.role);
    let nonce: Nonce = hello.nonce;
    framed.send(ClientFrame::Hello(hello)).await?;
    let mut proven = false;
    loop {
        let frame = framed.next().await.ok_or(GreetError::Closed)??;
        match frame {
            ServerFrame::Welcome(w) if w.version != PROTOCOL_VERSION => {
                return Err(GreetError::Protocol(format!(
                    "the node speaks protocol {}, this program {PROTOCOL_VERSION}",
                    w.version
                )));
            }
            ServerFrame::Welcome(w) => {
                if secret.is_some() && context.is_some() && !proven {
                    return Err(GreetError::Unauthenticated(
                        "the node did not prove it knows the cluster secret (it runs without \
                         --secret-file, or is not a node of this cluster)"
                            .into(),
                    ));
                }
                return Ok(w);
            }
            ServerFrame::Challenge(c) if !proven => {
                let (Some(secret), Some(context)) = (secret, context.as_deref()) else {
                    return Err(GreetError::Unauthenticated(
                        "the node requires the cluster secret, and this node has none: start \
                         it with --secret-file"
                            .into(),
                    ));
                };
                if !secret.verify(Side::Node, context, &nonce, &c.nonce, &c.proof) {
                    return Err(GreetError::Unauthenticated(
                        "the node's proof of the cluster secret is wrong: its --secret-file \
                         differs from ours"
                            .into(),
                    ));
                }
                let proof = secret.proof(Side::Caller, context, &nonce, &c.nonce);
                framed.send(ClientFrame::Proof(proof)).await?;
                proven = true;
            }
            ServerFrame::Goodbye(e) => return Err(GreetError::Refused(e)),
            other => {
                return Err(GreetError::Protocol(format!(
                    "the node answered the hello with {}",
                    frame_kind(&other)
                )));
            }
        }
    }
}

fn frame_kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "a welcome",
        ServerFrame::Response(_) => "a response",
        ServerFrame::Chunk(_) => "a chunk",
        ServerFrame::StreamError { .. } => "a stream error",
        ServerFrame::Goodbye(_) => "a goodbye",
        ServerFrame::Peer(_) => "a peer message",
        ServerFrame::Challenge(_) => "a second challenge",
    }
}
