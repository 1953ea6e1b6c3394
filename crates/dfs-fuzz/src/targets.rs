//! The properties every fuzzer checks, one function per target: the stable fuzzer calls
//! them on mutated inputs, the cargo-fuzz targets (`fuzz/fuzz_targets/`) on libFuzzer's.
//! Each takes any bytes and panics only when a property fails.

use std::fmt::Debug;

use bytes::BytesMut;
use dfs_cluster::{RaftReply, RaftRpc};
use dfs_proto::{ClientFrame, FRAME_BYTES_MAX, FrameCodec, ProtoError, ServerFrame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

/// A node reading a client's (or a peer's) byte stream: see [`check_stream`].
pub fn server_frames(stream: &[u8]) {
    check_stream::<ClientFrame>(stream, &derived_splits(stream));
}

/// A client reading a node's byte stream: see [`check_stream`].
pub fn client_frames(stream: &[u8]) {
    check_stream::<ServerFrame>(stream, &derived_splits(stream));
}

/// A peer payload of the cluster map's transport, decoded as the request a node serves and
/// as the answer a node reads: whatever decodes has a stable encoding (it decodes again to
/// the same encoding) and can be printed. Returns whether it decoded as each.
pub fn cluster_payloads(payload: &[u8]) -> (bool, bool) {
    let request = RaftRpc::decode(payload).ok().map(|rpc| {
        let _ = format!("{rpc:?}");
        let once = rpc.encode().expect("a decoded request encodes");
        let again = RaftRpc::decode(&once).expect("a re-encoded request decodes");
        assert_eq!(again.encode().expect("encodes"), once, "{rpc:?}");
    });
    let answer = RaftReply::decode(payload).ok().map(|reply| {
        let _ = format!("{reply:?}");
        let once = reply.encode().expect("a decoded answer encodes");
        let again = RaftReply::decode(&once).expect("a re-encoded answer decodes");
        assert_eq!(again, reply);
        assert_eq!(again.encode().expect("encodes"), once, "{reply:?}");
    });
    (request.is_some(), answer.is_some())
}

/// A data-layer payload (the replication engine's messages between nodes), decoded as the
/// request a replica serves and as the answer a primary reads; see
/// [`dfs_replication::fuzzing::check_payload`]. Returns whether it decoded as each.
pub fn data_payloads(payload: &[u8]) -> (bool, bool) {
    let found = dfs_replication::fuzzing::check_payload(payload);
    (found.request, found.answer)
}

/// How a stream decoded: its frames, and how it ended.
#[derive(Debug, PartialEq)]
pub struct Decoded<D> {
    /// The frames, in order.
    pub frames: Vec<D>,
    /// How the stream ended.
    pub end: End,
}

/// How a decoded stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// At a frame boundary.
    Clean,
    /// A length prefix over the limit (the announced length).
    TooLarge(usize),
    /// A frame that is not a message (the decoder's error, printed).
    Malformed(String),
    /// In the middle of a frame, with this many bytes buffered.
    Truncated(usize),
}

/// The frame decoder's properties on any byte stream:
///
/// - it never panics, and decodes the same frames and ends the same way whether the stream
///   arrives whole, a byte at a time or cut at `splits` (and it never reserves more than
///   what was sent and one frame of at most the limit);
/// - a length prefix over the limit is refused as soon as its 4 bytes are in, before any of
///   the body is buffered;
/// - every frame it decodes encodes again (within the limit) and decodes to itself.
///
/// # Panics
/// When a property fails.
pub fn check_stream<D>(stream: &[u8], splits: &[usize])
where
    D: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let whole = decode::<D>(stream, &[]);
    let cut = decode::<D>(stream, splits);
    assert_eq!(whole, cut, "fed whole vs cut at {splits:?}");
    let bytewise = decode_bytewise::<D>(stream);
    assert_eq!(whole, bytewise, "fed whole vs a byte at a time");
    for frame in &whole.frames {
        round_trip(frame);
    }
}

/// Encodes `frame`, decodes it back and checks it is the same.
///
/// # Panics
/// If the frame does not encode, is over the limit, or decodes to anything else.
pub fn round_trip<D>(frame: &D)
where
    D: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let mut codec = FrameCodec::<D, D>::new();
    let mut buf = BytesMut::new();
    let _ = format!("{frame:?}");
    codec
        .encode(frame.clone(), &mut buf)
        .unwrap_or_else(|e| panic!("{frame:?} does not encode: {e}"));
    assert!(
        buf.len() <= FRAME_BYTES_MAX + 4,
        "{frame:?}: over the limit"
    );
    let back = codec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{frame:?}: its encoding does not decode: {e}"));
    assert_eq!(
        back.as_ref(),
        Some(frame),
        "the frame changed in a round trip"
    );
    assert!(buf.is_empty(), "{frame:?}: bytes left over");
}

/// Decodes `stream` fed in pieces cut at `splits` (as a socket delivers it), then the end
/// of the stream.
pub fn decode<D: DeserializeOwned>(stream: &[u8], splits: &[usize]) -> Decoded<D> {
    let mut codec = FrameCodec::<D, D>::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut from = 0;
    let cuts = splits
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < stream.len())
        .chain([stream.len()]);
    for to in cuts {
        if to < from {
            continue;
        }
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        frames,
                        end: end_of(e),
                    };
                }
            }
        }
        // What was sent, and at most one frame announced but not sent yet.
        let bound = 2 * (stream.len() + FRAME_BYTES_MAX + 4) + 64;
        assert!(
            buf.capacity() <= bound,
            "{} bytes reserved for a stream of {}",
            buf.capacity(),
            stream.len()
        );
    }
    let end = match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => {
            // Every whole frame was taken above: the end of the stream adds none.
            let _ = frame;
            panic!("a frame decoded only at the end of the stream");
        }
        Ok(None) => End::Clean,
        Err(e) => end_of(e),
    };
    Decoded { frames, end }
}

/// Decodes `stream` a byte at a time, checking that an over-long length prefix is refused
/// with nothing but its own 4 bytes buffered.
pub fn decode_bytewise<D: DeserializeOwned>(stream: &[u8]) -> Decoded<D> {
    let mut codec = FrameCodec::<D, D>::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &byte in stream {
        buf.extend_from_slice(&[byte]);
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => {}
            Err(e) => {
                if let ProtoError::FrameTooLarge { len, max } = &e {
                    assert!(len > max, "refused {len} bytes under the {max}-byte limit");
                    assert_eq!(
                        buf.len(),
                        4,
                        "a frame too large was buffered before refusal"
                    );
                }
                return Decoded {
                    frames,
                    end: end_of(e),
                };
            }
        }
    }
    let end = match codec.decode_eof(&mut buf) {
        Ok(Some(_)) => panic!("a frame decoded only at the end of the stream"),
        Ok(None) => End::Clean,
        Err(e) => end_of(e),
    };
    Decoded { frames, end }
}

fn end_of(e: ProtoError) -> End {
    match e {
        ProtoError::FrameTooLarge { len, .. } => End::TooLarge(len),
        ProtoError::Malformed(e) => End::Malformed(format!("{e:?}")),
        ProtoError::Truncated(n) => End::Truncated(n),
        ProtoError::Io(e) => panic!("an in-memory decode failed with an i/o error: {e}"),
    }
}

/// Cut points taken from the stream itself (an FNV-1a hash of it), so that a libFuzzer
/// input, or a replayed one, is always cut the same way.
pub fn derived_splits(stream: &[u8]) -> Vec<usize> {
    if stream.len() < 2 {
        return Vec::new();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut cuts: Vec<usize> = (0..4)
        .map(|i| {
            let x = h.rotate_left(16 * i) as usize;
            1 + x % (stream.len() - 1)
        })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}
