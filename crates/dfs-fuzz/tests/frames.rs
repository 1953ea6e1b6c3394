//! The frame decoder both ways (a node reading `ClientFrame`s, a client reading
//! `ServerFrame`s), fed the corpus and mutations of it: every message kind, bit flips,
//! truncations, splices, length-prefix tweaks and huge varints, in arbitrary pieces.
//!
//! `DFS_FUZZ_ITERS` and `DFS_FUZZ_SEED` set the run; see `FUZZING.md`.

use std::alloc::System;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cap::Cap;
use dfs_fuzz::{
    CLIENT_FRAMES, Campaign, HUGE_VARINTS, Mutator, SERVER_FRAMES, for_each_nesting, frame,
    panic_message, samples, starting_inputs, targets,
};
use dfs_proto::{ClientCodec, ClientFrame, FRAME_BYTES_MAX, ProtoError, ServerCodec, ServerFrame};
use tokio_util::codec::Decoder;

/// Beyond this the process aborts: a decoder that tries to allocate without bound fails
/// here instead of exhausting the machine.
const HEAP_LIMIT: usize = 2 << 30;

/// No decode may take the heap's peak over this (the tests themselves need a few MiB).
const HEAP_PEAK_MAX: usize = 256 << 20;

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, HEAP_LIMIT);

fn heap_peak() -> usize {
    HEAP.max_allocated()
}

/// Inputs per direction by default: the suite stays within seconds in a debug build.
const ITERS: usize = 100_000;

/// A mutation of a frame stream: mostly frame-aware, sometimes bytes alone, sometimes two
/// inputs run together, sometimes noise.
fn mutate_stream(m: &mut Mutator, base: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    match m.below(10) {
        0..=5 => m.frames(base, seeds),
        6 | 7 => m.bytes(base, seeds),
        8 => {
            let mut joined = base.to_vec();
            joined.extend_from_slice(&seeds[m.below(seeds.len())]);
            m.frames(&joined, seeds)
        }
        _ => m.random_bytes(64),
    }
}

fn fuzz_direction(target: &str, check: fn(&[u8])) -> usize {
    let campaign = Campaign::new(target, ITERS).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
    let seeds = starting_inputs(target);
    assert!(seeds.len() > 10, "{target}: only {} seeds", seeds.len());
    let runs = campaign.fuzz(&seeds, mutate_stream, check);
    eprintln!("{target}: {runs} inputs, seed {:#x}", campaign.seed());
    runs
}

#[test]
fn the_node_side_decoder_survives_fuzzed_client_streams() {
    fuzz_direction(SERVER_FRAMES, targets::server_frames);
}

#[test]
fn the_client_side_decoder_survives_fuzzed_server_streams() {
    fuzz_direction(CLIENT_FRAMES, targets::client_frames);
}

/// Cuts a stream at random points as well as at the ones derived from it.
#[test]
fn streams_cut_anywhere_decode_alike() {
    let campaign = Campaign::new(SERVER_FRAMES, ITERS / 4).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
    let seeds = starting_inputs(SERVER_FRAMES);
    let mut m = campaign.mutator();
    if let Some(input) = campaign.replay() {
        let splits = m.splits(input.len());
        campaign.check(0, input, |s| {
            targets::check_stream::<ClientFrame>(s, &splits)
        });
        return;
    }
    for i in 0..campaign.iters() {
        let stream = m.frames(&seeds[i % seeds.len()], &seeds);
        let splits = m.splits(stream.len());
        campaign.check(i, &stream, |s| {
            targets::check_stream::<ClientFrame>(s, &splits);
            targets::check_stream::<ServerFrame>(s, &splits);
        });
    }
}

/// Every sample body with a huge varint written over, or inserted at, each of its first
/// bytes: every declared length or count postcard reads from the body is absurd somewhere.
/// Each must fail (or decode) at once, allocating nothing to speak of.
fn sweep_huge_varints<F>(bodies: &[(String, Vec<u8>)], decode: F)
where
    F: Fn(&[u8]) -> bool,
{
    let campaign = Campaign::new("huge_varints", 1).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
    let mut n = 0;
    for (name, body) in bodies {
        for at in 0..body.len().min(96) {
            for v in HUGE_VARINTS {
                for insert in [false, true] {
                    let mut input = body.clone();
                    let end = if insert {
                        at
                    } else {
                        (at + v.len()).min(body.len())
                    };
                    input.splice(at..end, v.iter().copied());
                    let started = Instant::now();
                    campaign.check(n, &input, |b| {
                        let _ = decode(b);
                    });
                    let took = started.elapsed();
                    assert!(
                        took < Duration::from_secs(1),
                        "{name} with a huge varint at {at} took {took:?}"
                    );
                    n += 1;
                }
            }
        }
    }
    assert!(n > 1000, "only {n} inputs");
}

#[test]
fn huge_declared_lengths_in_client_frames_fail_fast_without_allocating() {
    let bodies: Vec<(String, Vec<u8>)> = samples::client_frames()
        .into_iter()
        .map(|(name, f)| (name, postcard::to_stdvec(&f).expect("encodes")))
        .collect();
    sweep_huge_varints(&bodies, |body| {
        let framed = frame(body);
        targets::server_frames(&framed);
        postcard::from_bytes::<ClientFrame>(body).is_ok()
    });
}

#[test]
fn huge_declared_lengths_in_server_frames_fail_fast_without_allocating() {
    let bodies: Vec<(String, Vec<u8>)> = samples::server_frames()
        .into_iter()
        .map(|(name, f)| (name, postcard::to_stdvec(&f).expect("encodes")))
        .collect();
    sweep_huge_varints(&bodies, |body| {
        let framed = frame(body);
        targets::client_frames(&framed);
        postcard::from_bytes::<ServerFrame>(body).is_ok()
    });
}

/// A body declaring a byte string (or a vector) longer than the whole frame fails at once:
/// postcard checks a length against the bytes left before it takes them, and serde
/// reserves room for no more elements than there are bytes left.
#[test]
fn a_declared_length_beyond_the_frame_is_refused_without_reserving_it() {
    for declared in [
        u32::MAX as u64,
        u64::MAX,
        1 << 40,
        FRAME_BYTES_MAX as u64 * 64,
    ] {
        // `Chunk{id: 1, data: <declared bytes>, last}` with 3 bytes of data.
        let mut body = vec![2u8, 1];
        let mut v = declared;
        while v >= 0x80 {
            body.push((v as u8) | 0x80);
            v >>= 7;
        }
        body.push(v as u8);
        body.extend_from_slice(&[1, 2, 3]);
        assert!(postcard::from_bytes::<ClientFrame>(&body).is_err());
        // The same for a list of file ids: a `Metas`-like vector of u64s.
        let mut list = Vec::new();
        let mut v = declared;
        while v >= 0x80 {
            list.push((v as u8) | 0x80);
            v >>= 7;
        }
        list.push(v as u8);
        list.extend_from_slice(&[1, 2, 3]);
        assert!(postcard::from_bytes::<Vec<u64>>(&list).is_err());
    }
    assert!(
        heap_peak() < HEAP_PEAK_MAX,
        "the heap peaked at {}",
        heap_peak()
    );
}

/// A length prefix over the limit is refused from its 4 bytes alone: nothing of the body is
/// awaited or buffered, whatever follows.
#[test]
fn an_oversized_length_prefix_is_refused_before_its_body_is_buffered() {
    let lens = [
        FRAME_BYTES_MAX as u32 + 1,
        FRAME_BYTES_MAX as u32 * 2,
        u32::from_be_bytes(*b"GET "),
        u32::MAX,
    ];
    for len in lens {
        for trailing in [0usize, 1, 100] {
            let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
            buf.extend_from_slice(&vec![0u8; trailing]);
            let capacity = buf.capacity();
            match ServerCodec::new().decode(&mut buf) {
                Err(ProtoError::FrameTooLarge { len: l, max }) => {
                    assert_eq!((l, max), (len as usize, FRAME_BYTES_MAX));
                }
                other => panic!("{len}: {other:?}"),
            }
            assert_eq!(buf.capacity(), capacity, "{len}: the buffer grew");
            assert!(matches!(
                ClientCodec::new().decode(&mut buf),
                Err(ProtoError::FrameTooLarge { .. })
            ));
        }
    }
    // At the limit itself, the codec waits for the body.
    let mut buf = BytesMut::from(&(FRAME_BYTES_MAX as u32).to_be_bytes()[..]);
    assert!(matches!(ServerCodec::new().decode(&mut buf), Ok(None)));
}

/// Every kind of frame has a sample, and every sample round-trips through the codec: a new
/// variant must get a sample in `dfs_fuzz::samples` (and the corpus be regenerated).
#[test]
fn every_frame_kind_has_a_sample_that_round_trips() {
    let ops: Vec<_> = samples::ops().iter().map(samples::op_kind).collect();
    for kind in [
        "create", "append", "put", "read", "delete", "list", "stat", "table", "status", "scrub",
        "lock", "renew", "unlock",
    ] {
        assert!(ops.contains(&kind), "no sample op {kind}");
    }
    let replies: Vec<_> = samples::replies().iter().map(samples::reply_kind).collect();
    for kind in [
        "created",
        "written",
        "read-start",
        "deleted",
        "listing",
        "stat",
        "table",
        "status",
        "scrub",
        "locked",
        "renewed",
        "unlocked",
    ] {
        assert!(replies.contains(&kind), "no sample reply {kind}");
    }
    let client: Vec<_> = samples::client_frames()
        .iter()
        .map(|(_, f)| samples::client_frame_kind(f))
        .collect();
    for kind in ["hello", "request", "chunk", "cancel", "peer"] {
        assert!(client.contains(&kind), "no sample client frame {kind}");
    }
    let server: Vec<_> = samples::server_frames()
        .iter()
        .map(|(_, f)| samples::server_frame_kind(f))
        .collect();
    for kind in [
        "welcome",
        "response",
        "chunk",
        "stream-error",
        "goodbye",
        "peer",
    ] {
        assert!(server.contains(&kind), "no sample server frame {kind}");
    }
    for (_, f) in samples::client_frames() {
        targets::round_trip(&f);
    }
    for (_, f) in samples::server_frames() {
        targets::round_trip(&f);
    }
    for (name, stream) in samples::server_frame_streams() {
        let decoded = targets::decode::<ClientFrame>(&stream, &[]);
        assert_eq!(decoded.end, targets::End::Clean, "{name}");
        assert!(!decoded.frames.is_empty(), "{name}");
    }
    for (name, stream) in samples::client_frame_streams() {
        let decoded = targets::decode::<ServerFrame>(&stream, &[]);
        assert_eq!(decoded.end, targets::End::Clean, "{name}");
    }
}

/// The stack the nesting sweep decodes on: an eighth of a tokio worker's, so a decoder that
/// recurses once per level of its input overflows it (and aborts the test) well within the
/// levels offered.
const SMALL_STACK: usize = 256 * 1024;

/// Every run of up to 8 bytes of every frame body repeated thousands of times, framed: a
/// recursive message type (none today) must refuse deep nesting rather than recurse
/// through it, as a stack overflow aborts the whole node.
#[test]
fn nested_runs_in_frames_do_not_overflow_the_stack() {
    let n = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(|| {
            let campaign = Campaign::new("nesting", 1).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
            let mut n = 0;
            let client = samples::client_frames()
                .into_iter()
                .map(|(_, f)| postcard::to_stdvec(&f).expect("encodes"));
            let server = samples::server_frames()
                .into_iter()
                .map(|(_, f)| postcard::to_stdvec(&f).expect("encodes"));
            for body in client.chain(server) {
                let head = &body[..body.len().min(64)];
                let tail = &body[head.len()..];
                for_each_nesting(head, 8, 2048, |input| {
                    let mut input = input.to_vec();
                    input.extend_from_slice(tail);
                    campaign.check(n, &frame(&input), |s| {
                        let _ = targets::decode::<ClientFrame>(s, &[]);
                        let _ = targets::decode::<ServerFrame>(s, &[]);
                    });
                    n += 1;
                });
            }
            n
        })
        .expect("spawns")
        .join()
        .unwrap_or_else(|p| panic!("{}", panic_message(&*p)));
    assert!(n > 1000, "only {n} inputs");
}
