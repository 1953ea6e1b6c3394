//! Entry points for the fuzzers (`crates/dfs-fuzz` and the cargo-fuzz targets in `fuzz/`;
//! see `FUZZING.md`). The data layer's messages are private to this crate, so the fuzzers
//! reach their decoder through here. Not part of the API: hidden from the docs and free to
//! change.

use bytes::Bytes;
use dfs_proto::{BadCopy, NodeRole, ScrubReport};
use dfs_store::{DedupKey, InstallState, WriteOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::WriteMode;
use crate::wire::{CopyState, DataReply, DataRpc, TransferKind, decode, encode};

/// What [`check_payload`] found a payload to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decoded {
    /// It decodes as a data request (what a replica receives).
    pub request: bool,
    /// It decodes as a data answer (what a primary receives back).
    pub answer: bool,
}

/// Decodes `payload` as a data request and as a data answer, exactly as a node decodes the
/// ones its peers send (any bytes may be given), and checks every message that decodes:
/// its encoding decodes again, to a message with the same encoding.
///
/// # Panics
/// If a decoded message does not survive that round trip (a codec bug), never on a
/// payload that does not decode.
pub fn check_payload(payload: &[u8]) -> Decoded {
    Decoded {
        request: round_trip::<DataRpc>(payload),
        answer: round_trip::<DataReply>(payload),
    }
}

/// Whether `payload` decodes as a `T`; if it does, checks that its encoding is stable.
fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(payload: &[u8]) -> bool {
    let Ok(value) = decode::<T>(payload) else {
        return false;
    };
    let once = encode(&value);
    assert!(!once.is_empty(), "{value:?} does not encode");
    let again: T = decode(&once).unwrap_or_else(|e| panic!("{value:?} re-encoded: {e}"));
    assert_eq!(encode(&again), once, "{value:?}: the encoding changes");
    true
}

/// A valid encoding of every data request and answer (each variant at least once), each
/// with a name for its corpus file.
pub fn samples() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for rpc in requests() {
        out.push((format!("request-{}", request_kind(&rpc)), encode(&rpc)));
    }
    for reply in answers() {
        out.push((format!("answer-{}", answer_kind(&reply)), encode(&reply)));
    }
    // Names are unique: number the second and later samples of a kind.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (name, _) in &mut out {
        let n = seen.entry(name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            name.push_str(&format!("-{n}"));
        }
    }
    out
}

fn requests() -> Vec<DataRpc> {
    let key = DedupKey {
        client_id: 0x1234_5678_9abc_def0,
        seq: 42,
    };
    let outcome = WriteOutcome {
        version: 3,
        size: 1024,
        checksum: 0xdead_beef,
        duplicate: false,
    };
    vec![
        DataRpc::Lease { from: 2 },
        DataRpc::Begin {
            transfer: 7,
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            epoch: 3,
            kind: TransferKind::Write {
                mode: WriteMode::Append,
                base_version: 2,
                key: Some(key),
            },
            data: Bytes::from_static(b"hello world"),
            last: true,
        },
        DataRpc::Begin {
            transfer: 9,
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            epoch: 3,
            kind: TransferKind::Write {
                mode: WriteMode::At { offset: 6 },
                base_version: 3,
                key: Some(key),
            },
            data: Bytes::from_static(b"WORLD"),
            last: false,
        },
        DataRpc::Begin {
            transfer: 10,
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            epoch: 3,
            kind: TransferKind::Write {
                mode: WriteMode::Truncate { size: 5 },
                base_version: 4,
                key: None,
            },
            data: Bytes::new(),
            last: true,
        },
        DataRpc::Begin {
            transfer: 8,
            name: "docs/b.bin".into(),
            file_id: 0xf00e,
            epoch: 1,
            kind: TransferKind::Install {
                state: InstallState {
                    version: 5,
                    modified_ms: 1_700_000_000_000,
                    dedup: vec![(key, outcome)],
                },
            },
            data: Bytes::from_static(&[0, 1, 2, 3, 255]),
            last: false,
        },
        DataRpc::Chunk {
            transfer: 8,
            data: Bytes::from(vec![7u8; 300]),
            last: true,
        },
        DataRpc::Abort { transfer: 9 },
        DataRpc::Probe {
            name: "docs/a.txt".into(),
            file_id: 0xf00d,
            epoch: 3,
        },
        DataRpc::Role,
        DataRpc::Metas {
            files: vec![("a".into(), 1), ("b/c".into(), u64::MAX)],
        },
        DataRpc::Scrub,
    ]
}

fn answers() -> Vec<DataReply> {
    let copy = CopyState {
        version: 4,
        size: 11,
        checksum: 0x0102_0304,
    };
    vec![
        DataReply::Lease(17),
        DataReply::Staged,
        DataReply::Committed(copy),
        DataReply::Copy(Some(copy)),
        DataReply::Copy(None),
        DataReply::Metas(vec![Some((11, 4)), None]),
        DataReply::Stale { epoch: 9 },
        DataReply::Behind { version: 2 },
        DataReply::Role(NodeRole::Follower),
        DataReply::Failed("the store is full".into()),
        DataReply::Scrub(ScrubReport {
            node: 3,
            files: 10,
            bytes: 4096,
            bad: vec![BadCopy {
                name: "docs/a.txt".into(),
                file_id: 0xf00d,
                replaced: true,
                action: "replaced from node 1".into(),
            }],
            error: None,
        }),
    ]
}

/// Every request has a kind here: a new variant does not compile until it has one (and a
/// sample in [`requests`], which the tests below check).
fn request_kind(rpc: &DataRpc) -> &'static str {
    match rpc {
        DataRpc::Lease { .. } => "lease",
        DataRpc::Begin {
            kind: TransferKind::Write { mode, .. },
            ..
        } => match mode {
            WriteMode::Append | WriteMode::Put => "begin-write",
            WriteMode::At { .. } => "begin-write-at",
            WriteMode::Truncate { .. } => "begin-truncate",
        },
        DataRpc::Begin {
            kind: TransferKind::Install { .. },
            ..
        } => "begin-install",
        DataRpc::Chunk { .. } => "chunk",
        DataRpc::Abort { .. } => "abort",
        DataRpc::Probe { .. } => "probe",
        DataRpc::Role => "role",
        DataRpc::Metas { .. } => "metas",
        DataRpc::Scrub => "scrub",
    }
}

/// Every answer has a kind here (see [`request_kind`]).
fn answer_kind(reply: &DataReply) -> &'static str {
    match reply {
        DataReply::Lease(_) => "lease",
        DataReply::Staged => "staged",
        DataReply::Committed(_) => "committed",
        DataReply::Copy(_) => "copy",
        DataReply::Metas(_) => "metas",
        DataReply::Stale { .. } => "stale",
        DataReply::Behind { .. } => "behind",
        DataReply::Role(_) => "role",
        DataReply::Failed(_) => "failed",
        DataReply::Scrub(_) => "scrub",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds of the match arms above, in order: the samples must cover all of them.
    const REQUEST_KINDS: &[&str] = &[
        "lease",
        "begin-write",
        "begin-write-at",
        "begin-truncate",
        "begin-install",
        "chunk",
        "abort",
        "probe",
        "role",
        "metas",
        "scrub",
    ];
    const ANSWER_KINDS: &[&str] = &[
        "lease",
        "staged",
        "committed",
        "copy",
        "metas",
        "stale",
        "behind",
        "role",
        "failed",
        "scrub",
    ];

    #[test]
    fn the_samples_cover_every_data_message_and_decode() {
        let requests: Vec<_> = requests().iter().map(request_kind).collect();
        let answers: Vec<_> = answers().iter().map(answer_kind).collect();
        for kind in REQUEST_KINDS {
            assert!(requests.contains(kind), "no sample request of kind {kind}");
        }
        for kind in ANSWER_KINDS {
            assert!(answers.contains(kind), "no sample answer of kind {kind}");
        }
        for (name, bytes) in samples() {
            let found = check_payload(&bytes);
            assert!(found.request || found.answer, "{name} does not decode");
        }
    }
}
