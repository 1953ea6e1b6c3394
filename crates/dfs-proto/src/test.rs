use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use crate::*;

fn encode_client(frame: ClientFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    ClientCodec::new()
        .encode(frame, &mut buf)
        .expect("frame under the limit encodes");
    buf
}

fn decode_server_side(buf: &mut BytesMut) -> Result<Option<ClientFrame>, ProtoError> {
    ServerCodec::new().decode(buf)
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Bytes::from)
}

fn arb_tag() -> impl Strategy<Value = Option<OpTag>> {
    proptest::option::of((any::<u64>(), any::<u64>()).prop_map(|(c, s)| OpTag {
        client_id: c,
        seq: s,
    }))
}

fn arb_cond() -> impl Strategy<Value = Condition> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(fence, if_version)| Condition { fence, if_version })
}

fn arb_op() -> impl Strategy<Value = Op> {
    let name = "[a-z/._-]{0,40}";
    prop_oneof![
        (name, arb_tag()).prop_map(|(name, tag)| Op::Create { name, tag }),
        (name, arb_bytes(), any::<bool>(), arb_tag(), arb_cond()).prop_map(
            |(name, data, more, tag, cond)| Op::Append {
                name,
                body: Body { data, more },
                tag,
                cond,
            }
        ),
        (name, arb_bytes(), any::<bool>(), arb_tag(), arb_cond()).prop_map(
            |(name, data, more, tag, cond)| Op::Put {
                name,
                body: Body { data, more },
                tag,
                cond,
            }
        ),
        (name, any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(name, offset, len)| Op::Read { name, offset, len }),
        (name, arb_tag(), arb_cond()).prop_map(|(name, tag, cond)| Op::Delete { name, tag, cond }),
        (name, any::<bool>(), any::<u64>(), any::<u64>(), arb_tag()).prop_map(
            |(name, exclusive, ttl_ms, wait_ms, tag)| Op::Lock {
                name,
                mode: if exclusive {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                },
                ttl_ms,
                wait_ms,
                tag,
            }
        ),
        (any::<u64>(), arb_tag()).prop_map(|(lease, tag)| Op::Renew { lease, tag }),
        (any::<u64>(), arb_tag()).prop_map(|(lease, tag)| Op::Unlock { lease, tag }),
        (
            name,
            any::<u64>(),
            arb_bytes(),
            any::<bool>(),
            arb_tag(),
            arb_cond()
        )
            .prop_map(|(name, offset, data, more, tag, cond)| Op::Write {
                name,
                offset,
                body: Body { data, more },
                tag,
                cond,
            }),
        (name, any::<u64>(), arb_tag(), arb_cond()).prop_map(|(name, size, tag, cond)| {
            Op::Truncate {
                name,
                size,
                tag,
                cond,
            }
        }),
        (name, proptest::option::of(name), any::<u32>()).prop_map(
            |(prefix, start_after, limit)| Op::List {
                prefix,
                start_after,
                limit
            }
        ),
        name.prop_map(|name| Op::Stat { name }),
        (proptest::option::of(name), any::<u32>())
            .prop_map(|(start_after, limit)| Op::Table { start_after, limit }),
        Just(Op::Status),
    ]
}

fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (any::<u64>(), arb_op()).prop_map(|(id, op)| ClientFrame::Request(Request { id, op })),
        (any::<u64>(), arb_bytes(), any::<bool>())
            .prop_map(|(id, data, last)| ClientFrame::Chunk(Chunk { id, data, last })),
        any::<u64>().prop_map(|id| ClientFrame::Cancel { id }),
        (any::<u64>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(cluster_id, node_id, nonce)| {
            ClientFrame::Hello(
                Hello::new(Role::Peer {
                    cluster_id,
                    node_id,
                })
                .with_nonce(nonce),
            )
        }),
        proptest::option::of(".{0,40}")
            .prop_map(|token| ClientFrame::Hello(Hello::new(Role::Client).with_token(token))),
        (any::<u64>(), arb_bytes())
            .prop_map(|(id, payload)| ClientFrame::Peer(PeerMessage { id, payload })),
        any::<[u8; 32]>().prop_map(ClientFrame::Proof),
    ]
}

fn arb_info() -> impl Strategy<Value = FileInfo> {
    (
        "[a-z/]{1,30}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        proptest::collection::vec(any::<u64>(), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(name, file_id, size, version, checksum, replicas, modified_ms)| FileInfo {
                name,
                file_id,
                size,
                version,
                checksum,
                replicas,
                modified_ms,
            },
        )
}

fn arb_server_frame() -> impl Strategy<Value = ServerFrame> {
    let reply =
        prop_oneof![
            arb_info().prop_map(Reply::Created),
            arb_info().prop_map(Reply::Stat),
            (any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>()).prop_map(
                |(version, size, checksum, duplicate)| Reply::Written(WriteAck {
                    version,
                    size,
                    checksum,
                    duplicate
                })
            ),
            (arb_info(), any::<u64>(), any::<u64>())
                .prop_map(|(info, offset, len)| Reply::ReadStart { info, offset, len }),
            Just(Reply::Deleted),
            (
                proptest::collection::vec(
                    ("[a-z]{1,8}", any::<u64>(), any::<u64>()).prop_map(|(name, size, version)| {
                        ListEntry {
                            name,
                            size,
                            version,
                        }
                    }),
                    0..8
                ),
                proptest::option::of("[a-z]{1,8}")
            )
                .prop_map(|(entries, next)| Reply::Listing { entries, next }),
            (
                "[a-z]{1,8}",
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(name, exclusive, lease, token, ttl_ms, renewed)| {
                    let mode = if exclusive {
                        LockMode::Exclusive
                    } else {
                        LockMode::Shared
                    };
                    let grant = LockGrant {
                        name,
                        mode,
                        lease,
                        token,
                        ttl_ms,
                    };
                    if renewed {
                        Reply::Renewed(grant)
                    } else {
                        Reply::Locked(grant)
                    }
                }),
            Just(Reply::Unlocked),
        ];
    let error = (0usize..19, ".{0,30}").prop_map(|(i, message)| {
        let codes = [
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::InvalidName,
            ErrorCode::InvalidRequest,
            ErrorCode::TooLarge,
            ErrorCode::Busy,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::Corrupt,
            ErrorCode::ProtocolMismatch,
            ErrorCode::Internal,
            ErrorCode::NoSpace,
            ErrorCode::LockHeld,
            ErrorCode::Fenced,
            ErrorCode::VersionMismatch,
            ErrorCode::LeaseExpired,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::OutcomeUnknown,
        ];
        WireError::new(codes[i], message)
    });
    prop_oneof![
        (any::<u64>(), reply)
            .prop_map(|(id, r)| ServerFrame::Response(Response { id, result: Ok(r) })),
        (any::<u64>(), error.clone())
            .prop_map(|(id, e)| ServerFrame::Response(Response { id, result: Err(e) })),
        (any::<u64>(), error.clone())
            .prop_map(|(id, error)| ServerFrame::StreamError { id, error }),
        error.prop_map(ServerFrame::Goodbye),
        (any::<u64>(), any::<u64>()).prop_map(|(node_id, cluster_id)| ServerFrame::Welcome(
            Welcome {
                node_id,
                cluster_id,
                version: PROTOCOL_VERSION
            }
        )),
        (any::<u64>(), arb_bytes())
            .prop_map(|(id, payload)| ServerFrame::Peer(PeerMessage { id, payload })),
        (any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(nonce, proof)| ServerFrame::Challenge(Challenge { nonce, proof })),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(frame in arb_client_frame()) {
        let mut buf = encode_client(frame.clone());
        let back = decode_server_side(&mut buf).expect("valid frame decodes");
        prop_assert_eq!(back, Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn server_frames_round_trip(frame in arb_server_frame()) {
        let mut buf = BytesMut::new();
        ServerCodec::new().encode(frame.clone(), &mut buf).expect("encodes");
        let back = ClientCodec::new().decode(&mut buf).expect("decodes");
        prop_assert_eq!(back, Some(frame));
    }

    #[test]
    fn pipelined_frames_decode_in_order(frames in proptest::collection::vec(arb_client_frame(), 1..10)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            buf.extend_from_slice(&encode_client(f.clone()));
        }
        let mut codec = ServerCodec::new();
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut buf).expect("decodes") {
            got.push(f);
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn every_truncation_waits_then_fails_at_eof(frame in arb_client_frame(), cut in any::<prop::sample::Index>()) {
        let full = encode_client(frame);
        let cut = cut.index(full.len());
        let mut part = BytesMut::from(&full[..cut]);
        let mut codec = ServerCodec::new();
        prop_assert!(codec.decode(&mut part).expect("partial frame is not an error").is_none());
        let at_eof = codec.decode_eof(&mut part);
        if cut == 0 {
            prop_assert!(matches!(at_eof, Ok(None)));
        } else {
            prop_assert!(matches!(at_eof, Err(ProtoError::Truncated(_))), "{at_eof:?}");
        }
    }

    #[test]
    fn frames_split_anywhere_decode_whole(frame in arb_client_frame(), cut in any::<prop::sample::Index>()) {
        // The decoder keeps state between calls: bytes arriving in two reads give the frame.
        let full = encode_client(frame.clone());
        let cut = cut.index(full.len());
        let mut buf = BytesMut::from(&full[..cut]);
        let mut codec = ServerCodec::new();
        let first = codec.decode(&mut buf).expect("partial frame is not an error");
        prop_assert!(first.is_none());
        buf.extend_from_slice(&full[cut..]);
        prop_assert_eq!(codec.decode(&mut buf).expect("whole frame decodes"), Some(frame));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = ServerCodec::new();
        // Decode until an error or no more complete frames: must not panic or loop forever.
        for _ in 0..bytes.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn oversized_length_prefix_is_refused_before_buffering() {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    buf.put_slice(b"abc");
    match decode_server_side(&mut buf) {
        Err(ProtoError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, FRAME_BYTES_MAX);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[test]
fn an_http_request_is_an_oversized_frame() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    assert!(matches!(
        decode_server_side(&mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[test]
fn oversized_message_is_refused_when_encoding() {
    let frame = ClientFrame::Chunk(Chunk {
        id: 1,
        data: Bytes::from(vec![0u8; FRAME_BYTES_MAX]),
        last: true,
    });
    let mut buf = BytesMut::new();
    assert!(matches!(
        ClientCodec::new().encode(frame, &mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    assert!(buf.is_empty(), "nothing half-written");
}

#[test]
fn a_full_chunk_fits_in_a_frame() {
    let frame = ClientFrame::Request(Request {
        id: u64::MAX,
        op: Op::Put {
            name: "n".repeat(NAME_BYTES_MAX),
            body: Body {
                data: Bytes::from(vec![7u8; CHUNK_BYTES_MAX]),
                more: true,
            },
            tag: Some(OpTag {
                client_id: u64::MAX,
                seq: u64::MAX,
            }),
            cond: Condition {
                fence: Some(u64::MAX),
                if_version: Some(u64::MAX),
            },
        },
    });
    let mut buf = encode_client(frame.clone());
    assert_eq!(decode_server_side(&mut buf).expect("decodes"), Some(frame));
}

#[test]
fn a_full_peer_payload_fits_in_a_frame() {
    let payload = Bytes::from(vec![0xffu8; PEER_PAYLOAD_BYTES_MAX]);
    let request = ClientFrame::Peer(PeerMessage {
        id: u64::MAX,
        payload: payload.clone(),
    });
    let mut buf = encode_client(request.clone());
    assert_eq!(
        decode_server_side(&mut buf).expect("decodes"),
        Some(request)
    );
    let answer = ServerFrame::Peer(PeerMessage {
        id: u64::MAX,
        payload,
    });
    let mut buf = BytesMut::new();
    ServerCodec::new()
        .encode(answer.clone(), &mut buf)
        .expect("encodes");
    assert_eq!(
        ClientCodec::new().decode(&mut buf).expect("decodes"),
        Some(answer)
    );
}

#[test]
fn malformed_body_is_a_clear_error() {
    // A well-formed length prefix around bytes that are no ClientFrame (variant 200).
    let mut buf = BytesMut::new();
    buf.put_u32(3);
    buf.put_slice(&[200, 1, 2]);
    let err = decode_server_side(&mut buf).expect_err("unknown variant");
    assert!(matches!(err, ProtoError::Malformed(_)));
    assert!(err.to_string().starts_with("malformed frame"));
}

#[test]
fn wrong_magic_still_decodes_so_the_node_can_refuse_it() {
    let hello = Hello {
        magic: 0xdead_beef,
        version: 99,
        ..Hello::new(Role::Client)
    };
    let mut buf = encode_client(ClientFrame::Hello(hello.clone()));
    assert_eq!(
        decode_server_side(&mut buf).expect("decodes"),
        Some(ClientFrame::Hello(hello))
    );
}

fn check_name(input: &str, ok: bool) {
    assert_eq!(Name::parse(input).is_ok(), ok, "{input:?}");
}

#[test]
fn name_rules() {
    for good in ["a", "a/b", "dir/sub/file.txt", "x.y", "..x", "a/.b", "é/ü"] {
        check_name(good, true);
    }
    let seg = "s".repeat(SEGMENT_BYTES_MAX);
    check_name(&seg, true);
    check_name(&format!("{seg}/{seg}/{seg}/{seg}"), true);
    for bad in [
        "", "/x", "a//b", "a/", ".", "..", "../x", "a/./b", "a/..", "a\0b", "a\nb", "\u{7f}",
    ] {
        check_name(bad, false);
    }
    check_name(&"s".repeat(SEGMENT_BYTES_MAX + 1), false);
    check_name(&"ab/".repeat(400), false);
}

#[test]
fn name_errors_name_the_rule() {
    let cases: [(&str, &str); 6] = [
        ("../x", "no '.' or '..' segment"),
        ("/x", "must not start with '/'"),
        ("a//b", "no empty segment"),
        ("a\u{1}b", "no NUL or control characters"),
        ("", "must not be empty"),
        (".", "no '.' or '..' segment"),
    ];
    for (input, rule) in cases {
        let msg = Name::parse(input).expect_err(input).to_string();
        assert!(msg.contains(rule), "{input:?}: {msg}");
    }
    let long = "a".repeat(NAME_BYTES_MAX + 1);
    assert!(
        Name::parse(&long)
            .expect_err("long")
            .to_string()
            .contains("at most 1024 bytes")
    );
    let seg = "a".repeat(300);
    assert!(
        Name::parse(&seg)
            .expect_err("seg")
            .to_string()
            .contains("at most 255 bytes")
    );
}

#[test]
fn prefixes() {
    assert!(validate_prefix("").is_ok());
    assert!(validate_prefix("dir/").is_ok());
    assert!(validate_prefix("a\tb").is_err());
    assert!(validate_prefix("/a").is_err());
}

proptest! {
    #[test]
    fn valid_names_survive_and_invalid_never_panic(s in ".{0,80}") {
        if let Ok(n) = Name::parse(&s) {
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert!(!s.starts_with('/'));
            prop_assert!(s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
        }
    }
}
