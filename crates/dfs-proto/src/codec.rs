//! The frame codec: a 4-byte big-endian length, then a postcard-encoded message.
//!
//! ```text
//! +----------------+---------------------------------------+
//! | len: u32 (BE)  | postcard(message), len bytes           |
//! +----------------+---------------------------------------+
//!   len <= FRAME_BYTES_MAX, checked before the body is buffered
//! ```

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::{ClientFrame, FRAME_BYTES_MAX, ServerFrame};

/// What can go wrong turning bytes into frames and back.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A length prefix (or an encoded message) over the frame limit.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLarge {
        /// The announced or encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes of a frame are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[source] postcard::Error),
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes `D`s and encodes `E`s. Use [`ServerCodec`] on a node and [`ClientCodec`] on a
/// client.
#[derive(Debug)]
pub struct FrameCodec<D, E> {
    inner: LengthDelimitedCodec,
    max: usize,
    /// The inner codec has consumed a length prefix and waits for the body.
    mid_frame: bool,
    _types: PhantomData<fn() -> (D, E)>,
}

/// A node's side of a client connection: reads [`ClientFrame`]s, writes [`ServerFrame`]s.
pub type ServerCodec = FrameCodec<ClientFrame, ServerFrame>;
/// A client's side: reads [`ServerFrame`]s, writes [`ClientFrame`]s.
pub type ClientCodec = FrameCodec<ServerFrame, ClientFrame>;

impl<D, E> FrameCodec<D, E> {
    /// A codec with the standard limit, [`FRAME_BYTES_MAX`].
    pub fn new() -> Self {
        Self::with_max(FRAME_BYTES_MAX)
    }

    /// A codec with a smaller (or, for tests, other) frame limit.
    pub fn with_max(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        Self {
            inner,
            max,
            mid_frame: false,
            _types: PhantomData,
        }
    }
}

impl<D, E> FrameCodec<D, E> {
    /// Whether the codec has read a frame's length prefix but not yet its whole body: with
    /// the read buffer, tells a stalled sender from an idle one.
    pub fn is_mid_frame(&self) -> bool {
        self.mid_frame
    }
}

impl<D, E> Default for FrameCodec<D, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: DeserializeOwned, E> Decoder for FrameCodec<D, E> {
    type Item = D;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D>, ProtoError> {
        // The inner codec is stateful: it consumes a frame's length prefix and then waits
        // for the body. It refuses an over-long prefix before consuming it (and before
        // reserving anything for it), so on that error the prefix is still at the front.
        let before = src.len();
        match self.inner.decode(src) {
            Ok(Some(frame)) => {
                self.mid_frame = false;
                postcard::from_bytes(&frame)
                    .map(Some)
                    .map_err(ProtoError::Malformed)
            }
            Ok(None) => {
                self.mid_frame |= src.len() < before;
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData && src.len() >= 4 => {
                Err(ProtoError::FrameTooLarge {
                    len: (&src[..4]).get_u32() as usize,
                    max: self.max,
                })
            }
            Err(e) => Err(ProtoError::Io(e)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<D>, ProtoError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && !self.mid_frame => Ok(None),
            None => Err(ProtoError::Truncated(src.len())),
        }
    }
}

impl<D, E: Serialize> Encoder<E> for FrameCodec<D, E> {
    type Error = ProtoError;

    fn encode(&mut self, item: E, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let body = postcard::to_stdvec(&item).map_err(ProtoError::Malformed)?;
        if body.len() > self.max {
            return Err(ProtoError::FrameTooLarge {
                len: body.len(),
                max: self.max,
            });
        }
        self.inner.encode(bytes::Bytes::from(body), dst)?;
        Ok(())
    }
}
