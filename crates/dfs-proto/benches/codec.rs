//! Encode and decode throughput of the frames that carry the traffic, through the real
//! [`ClientCodec`] / [`ServerCodec`] over a `BytesMut`, as the nodes and clients drive them
//! (`tokio_util::codec::Framed` calls the same `Encoder` / `Decoder` methods).
//!
//! Throughput is the frame's size on the wire (length prefix included). Every benchmark
//! checks once, outside the timing, that the frame decodes back to what was encoded.
//!
//! * `encode/*`: one frame into a cleared `BytesMut` that keeps its capacity. The frame is
//!   built (cloned) outside the timing; encoding consumes it, so dropping it is timed.
//! * `decode/*`: one frame out of a `BytesMut` holding exactly its bytes (refilled outside
//!   the timing); the decoded frame is dropped outside the timing.
//!
//! Run with `cargo bench -p dfs-proto`; add `-- --measurement-time 10` for steadier figures.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dfs_proto::{
    Body, CHUNK_BYTES_MAX, Chunk, ClientCodec, ClientFrame, Condition, ListEntry, Op, OpTag,
    PAGE_ENTRIES_MAX, Reply, Request, Response, ServerCodec, ServerFrame, WriteAck,
};
use tokio_util::codec::{Decoder, Encoder};

/// Payload bytes that are not all zeros (postcard copies them verbatim either way).
fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A client's append of `len` inline bytes, as `dfs-client` sends a small write.
fn append(len: usize) -> ClientFrame {
    ClientFrame::Request(Request {
        id: 4242,
        op: Op::Append {
            name: "bench/logs/2026-11-25/node-3.log".to_owned(),
            body: Body {
                data: payload(len),
                more: false,
            },
            tag: Some(OpTag {
                client_id: 0x1234_5678_9abc_def0,
                seq: 987_654,
            }),
            cond: Condition::NONE,
        },
    })
}

/// One chunk of a read stream, node to client.
fn read_chunk(len: usize) -> ServerFrame {
    ServerFrame::Chunk(Chunk {
        id: 4242,
        data: payload(len),
        last: false,
    })
}

/// The answer to a write.
fn write_ack() -> ServerFrame {
    ServerFrame::Response(Response {
        id: 4242,
        result: Ok(Reply::Written(WriteAck {
            version: 1_234,
            size: 5_242_880,
            checksum: 0xdead_beef,
            duplicate: false,
        })),
    })
}

/// A full page of `list`: [`PAGE_ENTRIES_MAX`] entries with realistic names.
fn list_page() -> ServerFrame {
    let entries: Vec<ListEntry> = (0..PAGE_ENTRIES_MAX as u64)
        .map(|i| ListEntry {
            name: format!("photos/2026/{:02}/img-{i:06}.jpg", i % 12 + 1),
            size: 1_000_000 + i * 4_099,
            version: i % 7,
        })
        .collect();
    let next = entries.last().map(|e| e.name.clone());
    ServerFrame::Response(Response {
        id: 4242,
        result: Ok(Reply::Listing { entries, next }),
    })
}

/// Benchmarks encoding and decoding `frame` under `name`. `Enc` is the sending side's
/// codec, `Dec` the receiving side's.
fn bench_frame<F, Enc, Dec>(c: &mut Criterion, name: &str, frame: F)
where
    F: Clone + PartialEq + std::fmt::Debug,
    Enc: Encoder<F, Error = dfs_proto::ProtoError> + Default,
    Dec: Decoder<Item = F, Error = dfs_proto::ProtoError> + Default,
{
    let mut wire = BytesMut::new();
    Enc::default()
        .encode(frame.clone(), &mut wire)
        .expect("the frame encodes");
    let wire = wire.freeze();
    let mut check = BytesMut::from(&wire[..]);
    let decoded = Dec::default()
        .decode(&mut check)
        .expect("the frame decodes")
        .expect("the frame is whole");
    assert_eq!(decoded, frame, "{name}: round trip");
    assert!(check.is_empty(), "{name}: decode consumed the frame");

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let mut codec = Enc::default();
    let mut dst = BytesMut::with_capacity(wire.len());
    group.bench_function(name, |b| {
        b.iter_batched(
            || frame.clone(),
            |frame| {
                dst.clear();
                codec.encode(frame, &mut dst).expect("encodes");
                black_box(dst.len())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let mut codec = Dec::default();
    group.bench_function(name, |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut src| codec.decode(&mut src).expect("decodes"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_frame::<_, ClientCodec, ServerCodec>(c, "append_4KiB", append(4 * 1024));
    bench_frame::<_, ClientCodec, ServerCodec>(c, "append_256KiB", append(CHUNK_BYTES_MAX));
    bench_frame::<_, ServerCodec, ClientCodec>(c, "chunk_256KiB", read_chunk(256 * 1024));
    bench_frame::<_, ServerCodec, ClientCodec>(c, "write_ack", write_ack());
    bench_frame::<_, ServerCodec, ClientCodec>(c, "list_512", list_page());
}

criterion_group! {
    name = benches;
    // Moderate by default, so the whole `cargo bench` stays short; the command line overrides.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
