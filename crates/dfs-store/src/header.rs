//! The on-disk file header: two 4 KiB slots, each a complete, checksummed copy of the file's
//! metadata and dedup table.
//!
//! Byte layout of one slot (format version 2, all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"DFSFILE\0"
//!      8     4  header format version (u32) = 2
//!     12     8  slot sequence number (u64); the valid slot with the highest one wins
//!     20     8  tail offset (u64): where the append this slot commits begins in the content
//!     28     8  tail length (u64); 0 = no tail (the content was synced before this slot)
//!     36     4  tail CRC-32C (u32) of those bytes
//!     40     4  payload length N (u32), N <= 4048
//!     44     N  payload: postcard encoding of `Header { meta: FileMeta, dedup: Vec<DedupEntry> }`
//!   44+N   ...  zero padding
//!   4092     4  CRC-32C (u32) of bytes 0..4092 of the slot
//! ```
//!
//! Format version 1 (still read) has no tail fields: its payload length is at 20 and the
//! payload at 24.
//!
//! Format version 3 is written only by an in-place write (`Store::write_at` over existing
//! bytes) and carries a **redo** record instead of a tail: the new bytes, staged past the
//! committed end, and where they go. Its layout is format 2's up to byte 40, then:
//!
//! ```text
//!     20     8  staged offset (u64): where the staged bytes begin in the content (= the size)
//!     28     8  staged length (u64), more than 0
//!     36     4  CRC-32C (u32) of the staged bytes
//!     40     8  destination (u64): content offset the staged bytes are copied to
//!     48     4  payload length N (u32), N <= 4040
//!     52     N  payload, as in format 2
//! ```
//!
//! Recovery believes a format 3 slot only if the staged bytes are there with their
//! checksum (as a tail); it then copies them to their destination again (the copy is
//! idempotent), syncs, and commits the same header without the redo into the other slot.
//!
//! Slot A is at file offset 0, slot B at 4096, and the content starts at 8192.
//!
//! The **tail** lets a small append commit with one sync instead of two: the appended
//! bytes and the new slot reach the disk together, and recovery believes a slot with a
//! tail only if the tail's bytes are all there with their checksum (see
//! `Store::open`); otherwise the append never finished, and the other slot (the commit
//! before it, synced before this one began) is the file.

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{DEDUP_ENTRIES_MAX, DedupKey, FileMeta, WriteOutcome};

/// Size of one header slot.
pub(crate) const SLOT_SIZE: usize = 4096;
/// Size of the whole header (two slots); the content starts at this file offset.
pub(crate) const HEADER_SIZE: u64 = 2 * SLOT_SIZE as u64;
/// Magic bytes at the start of every slot.
pub(crate) const MAGIC: [u8; 8] = *b"DFSFILE\0";
/// The header format version this code writes (it reads 1 too).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Bytes before the payload: magic, format version, sequence, tail, payload length.
const FIXED_LEN: usize = 8 + 4 + 8 + 20 + 4;
/// Bytes before the payload in format version 3 (a redo record).
const FIXED_LEN_V3: usize = FIXED_LEN + 8;
/// Bytes before the payload in format version 1 (no tail).
const FIXED_LEN_V1: usize = 8 + 4 + 8 + 4;
/// Offset of the slot CRC.
const CRC_AT: usize = SLOT_SIZE - 4;
/// Largest payload that fits in a format 2 slot.
#[cfg(test)]
pub(crate) const PAYLOAD_MAX: usize = CRC_AT - FIXED_LEN;

/// The bytes of the append a slot commits, when they were not synced before it (see the
/// module docs): recovery checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Offset in the content (not the file) of the first byte appended.
    pub(crate) offset: u64,
    /// Bytes appended (more than 0).
    pub(crate) len: u64,
    /// CRC-32C of those bytes.
    pub(crate) crc: u32,
}

/// An in-place write a format 3 slot commits: `len` bytes staged at content offset
/// `staged` (the committed size), to be copied to content offset `to` (see the module
/// docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Redo {
    /// Content offset of the staged bytes (the committed size, so they are past it).
    pub(crate) staged: u64,
    /// Bytes staged (more than 0).
    pub(crate) len: u64,
    /// CRC-32C of the staged bytes.
    pub(crate) crc: u32,
    /// Content offset they are copied to; `to + len <= size`.
    pub(crate) to: u64,
}

/// One decoded slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) header: Header,
    pub(crate) tail: Option<Tail>,
    /// The in-place write a format 3 slot commits (then `tail` is `None`).
    pub(crate) redo: Option<Redo>,
}

/// One remembered write: the key it carried and what it produced.
///
/// An entry whose `outcome.duplicate` is `true` (a flag no recorded outcome carries
/// otherwise) is also its client's **floor**: writes of that client with a lower `seq` that
/// are not in the table may have been applied and forgotten (see [`Header::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DedupEntry {
    pub(crate) key: DedupKey,
    pub(crate) outcome: WriteOutcome,
}

impl DedupEntry {
    /// Whether this entry is its client's floor.
    pub(crate) fn is_floor(&self) -> bool {
        self.outcome.duplicate
    }
}

/// What a file's dedup table knows of a keyed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recall {
    /// It was applied and produced this.
    Applied(WriteOutcome),
    /// It may have been applied, but its outcome was evicted: at or below its client's floor.
    Forgotten,
    /// Never applied to this file.
    New,
}

/// Everything a slot records about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) meta: FileMeta,
    /// Ordered by `outcome.version`, oldest first; at most [`DEDUP_ENTRIES_MAX`] entries.
    pub(crate) dedup: Vec<DedupEntry>,
}

impl Header {
    /// The saved outcome of the write that carried `key`, if it is in the table.
    pub(crate) fn lookup(&self, key: DedupKey) -> Option<WriteOutcome> {
        self.dedup
            .iter()
            .find(|e| e.key == key)
            .map(|e| WriteOutcome {
                duplicate: false,
                ..e.outcome
            })
    }

    /// What the table knows of `key`: its outcome, or that it may have been applied and
    /// forgotten (at or below its client's floor), or that it is new.
    pub(crate) fn recall(&self, key: DedupKey) -> Recall {
        if let Some(outcome) = self.lookup(key) {
            return Recall::Applied(outcome);
        }
        let below_floor = self
            .dedup
            .iter()
            .any(|e| e.is_floor() && e.key.client_id == key.client_id && key.seq <= e.key.seq);
        if below_floor {
            Recall::Forgotten
        } else {
            Recall::New
        }
    }

    /// Remembers `outcome` for `key`. Beyond [`DEDUP_ENTRIES_MAX`] entries one is evicted
    /// from the client with the most entries (the least recently written of those tied):
    /// its lowest-`seq` entry, and the client's floor rises to cover it. So one client's
    /// many writes never push out another client's answer, and a client's own evicted
    /// write, retried, is refused as forgotten rather than applied again. Only when every
    /// entry is a different client's is a client forgotten whole (the least recently
    /// written): the table's bound.
    pub(crate) fn record(&mut self, key: DedupKey, outcome: WriteOutcome) {
        self.dedup.push(DedupEntry {
            key,
            outcome: WriteOutcome {
                duplicate: false,
                ..outcome
            },
        });
        while self.dedup.len() > DEDUP_ENTRIES_MAX {
            self.evict_one();
        }
    }

    /// Removes one entry (see [`Header::record`]).
    fn evict_one(&mut self) {
        // Per client: how many entries, and its newest version.
        let mut clients: HashMap<u64, (usize, u64)> = HashMap::new();
        for e in &self.dedup {
            let c = clients.entry(e.key.client_id).or_insert((0, 0));
            c.0 += 1;
            c.1 = c.1.max(e.outcome.version);
        }
        let Some((victim, (count, _))) = clients
            .into_iter()
            .max_by_key(|&(client, (count, newest))| (count, Reverse(newest), client))
        else {
            return;
        };
        let of_victim = |e: &DedupEntry| e.key.client_id == victim;
        if count == 1 {
            self.dedup.retain(|e| !of_victim(e));
            return;
        }
        // The victim's two lowest seqs (its floor counts as one of its entries): the
        // lower goes, the higher stays as the floor, keeping its own outcome.
        let mut own: Vec<usize> = (0..self.dedup.len())
            .filter(|&i| of_victim(&self.dedup[i]))
            .collect();
        own.sort_by_key(|&i| self.dedup[i].key.seq);
        let floor = own.iter().copied().find(|&i| self.dedup[i].is_floor());
        let real: Vec<usize> = own
            .iter()
            .copied()
            .filter(|&i| !self.dedup[i].is_floor())
            .collect();
        let (low, high) = match (floor, real.as_slice()) {
            (Some(f), [r, ..]) if self.dedup[*r].key.seq < self.dedup[f].key.seq => (*r, f),
            (Some(f), [r, ..]) => (f, *r),
            (None, [a, b, ..]) => (*a, *b),
            // Unreachable with two or more entries and at most one floor.
            _ => (own[0], own[1]),
        };
        self.dedup[high].outcome.duplicate = true;
        self.dedup.remove(low);
    }
}

/// Encodes `header` into one slot with sequence number `seq` and `tail`.
///
/// # Panics
/// If the payload does not fit in a slot. That cannot happen for names of at most
/// [`NAME_MAX`](crate::NAME_MAX) bytes and at most [`DEDUP_ENTRIES_MAX`] dedup entries (the worst
/// case is about 4020 bytes; a unit test checks it), so it is an invariant, not an input error.
pub(crate) fn encode_slot(seq: u64, header: &Header, tail: Option<Tail>) -> Vec<u8> {
    let tail = tail.filter(|t| t.len > 0);
    let fields = tail.map_or((0, 0, 0), |t| (t.offset, t.len, t.crc));
    encode(FORMAT_VERSION, seq, header, fields, None)
}

/// Encodes `header` into one format 3 slot that commits the in-place write `redo`.
///
/// # Panics
/// As [`encode_slot`] (the worst case fits format 3 too; a unit test checks it).
pub(crate) fn encode_redo_slot(seq: u64, header: &Header, redo: Redo) -> Vec<u8> {
    encode(
        3,
        seq,
        header,
        (redo.staged, redo.len, redo.crc),
        Some(redo.to),
    )
}

fn encode(
    format: u32,
    seq: u64,
    header: &Header,
    (offset, len, crc): (u64, u64, u32),
    to: Option<u64>,
) -> Vec<u8> {
    let fixed = if to.is_some() {
        FIXED_LEN_V3
    } else {
        FIXED_LEN
    };
    let payload = postcard::to_stdvec(header)
        .expect("postcard encoding of plain structs into a Vec cannot fail");
    assert!(
        payload.len() <= CRC_AT - fixed,
        "header payload of {} bytes exceeds the slot capacity of {} bytes",
        payload.len(),
        CRC_AT - fixed
    );
    let mut slot = vec![0u8; SLOT_SIZE];
    slot[0..8].copy_from_slice(&MAGIC);
    slot[8..12].copy_from_slice(&format.to_le_bytes());
    slot[12..20].copy_from_slice(&seq.to_le_bytes());
    slot[20..28].copy_from_slice(&offset.to_le_bytes());
    slot[28..36].copy_from_slice(&len.to_le_bytes());
    slot[36..40].copy_from_slice(&crc.to_le_bytes());
    if let Some(to) = to {
        slot[40..48].copy_from_slice(&to.to_le_bytes());
    }
    // payload.len() <= PAYLOAD_MAX < u32::MAX, so the cast is lossless.
    slot[fixed - 4..fixed].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    slot[fixed..fixed + payload.len()].copy_from_slice(&payload);
    let crc = crc32c::crc32c(&slot[..CRC_AT]);
    slot[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// Decodes one slot; `Err` carries why the slot is not valid.
pub(crate) fn decode_slot(slot: &[u8]) -> Result<Slot, String> {
    if slot.len() < SLOT_SIZE {
        return Err(format!("slot truncated to {} bytes", slot.len()));
    }
    if slot[0..8] != MAGIC {
        return Err("bad magic".to_string());
    }
    let stored_crc = u32::from_le_bytes(le4(&slot[CRC_AT..SLOT_SIZE]));
    let crc = crc32c::crc32c(&slot[..CRC_AT]);
    if stored_crc != crc {
        return Err(format!(
            "slot checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})"
        ));
    }
    let format = u32::from_le_bytes(le4(&slot[8..12]));
    let seq = u64::from_le_bytes(le8(&slot[12..20]));
    let fields = Tail {
        offset: u64::from_le_bytes(le8(&slot[20..28])),
        len: u64::from_le_bytes(le8(&slot[28..36])),
        crc: u32::from_le_bytes(le4(&slot[36..40])),
    };
    let (fixed, tail, redo) = match format {
        1 => (FIXED_LEN_V1, None, None),
        2 => (FIXED_LEN, (fields.len > 0).then_some(fields), None),
        3 => {
            let redo = Redo {
                staged: fields.offset,
                len: fields.len,
                crc: fields.crc,
                to: u64::from_le_bytes(le8(&slot[40..48])),
            };
            (FIXED_LEN_V3, None, Some(redo))
        }
        _ => return Err(format!("unsupported header format version {format}")),
    };
    let len = u32::from_le_bytes(le4(&slot[fixed - 4..fixed])) as usize;
    if len > CRC_AT - fixed {
        return Err(format!("payload length {len} exceeds the slot"));
    }
    let header: Header = postcard::from_bytes(&slot[fixed..fixed + len])
        .map_err(|e| format!("undecodable metadata: {e}"))?;
    if header.dedup.len() > DEDUP_ENTRIES_MAX {
        return Err(format!("dedup table has {} entries", header.dedup.len()));
    }
    if let Some(t) = tail
        && t.offset.checked_add(t.len) != Some(header.meta.size)
    {
        return Err(format!(
            "tail {}+{} does not end at the size {}",
            t.offset, t.len, header.meta.size
        ));
    }
    if let Some(r) = redo {
        let size = header.meta.size;
        if r.len == 0 || r.staged != size || r.to.checked_add(r.len).is_none_or(|end| end > size) {
            return Err(format!(
                "redo of {} bytes staged at {} to {} does not fit the size {size}",
                r.len, r.staged, r.to
            ));
        }
    }
    Ok(Slot {
        seq,
        header,
        tail,
        redo,
    })
}

/// Copies a 4-byte slice into an array (callers pass exactly 4 bytes).
fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    a
}

/// Copies an 8-byte slice into an array (callers pass exactly 8 bytes).
fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NAME_MAX;

    fn worst_case() -> Header {
        let mut h = Header {
            meta: FileMeta {
                id: u64::MAX,
                // Multi-byte characters: NAME_MAX counts bytes.
                name: "é".repeat(NAME_MAX / 2),
                size: u64::MAX,
                version: u64::MAX,
                checksum: u32::MAX,
                modified_ms: u64::MAX,
            },
            dedup: Vec::new(),
        };
        for i in 0..DEDUP_ENTRIES_MAX as u64 {
            h.dedup.push(DedupEntry {
                key: DedupKey {
                    client_id: u64::MAX - i,
                    seq: u64::MAX - i,
                },
                outcome: WriteOutcome {
                    version: u64::MAX - i,
                    size: u64::MAX,
                    checksum: u32::MAX,
                    duplicate: true,
                },
            });
        }
        h
    }

    #[test]
    fn worst_case_header_fits_in_a_slot() {
        let h = worst_case();
        assert_eq!(h.meta.name.len(), NAME_MAX);
        let payload = postcard::to_stdvec(&h).expect("encode");
        assert!(
            payload.len() <= PAYLOAD_MAX,
            "worst case payload {} > {PAYLOAD_MAX}",
            payload.len()
        );
        let tail = Tail {
            offset: u64::MAX - 1,
            len: 1,
            crc: u32::MAX,
        };
        let slot = encode_slot(u64::MAX, &h, Some(tail));
        assert_eq!(slot.len(), SLOT_SIZE);
        let back = decode_slot(&slot).expect("decode");
        assert_eq!(back.seq, u64::MAX);
        assert_eq!(back.header, h);
        assert_eq!(back.tail, Some(tail));
        let mut h3 = h.clone();
        h3.meta.size = u64::MAX - 1;
        let redo = Redo {
            staged: u64::MAX - 1,
            len: 1,
            crc: u32::MAX,
            to: u64::MAX - 2,
        };
        let back = decode_slot(&encode_redo_slot(u64::MAX, &h3, redo)).expect("decode v3");
        assert_eq!((back.redo, back.tail), (Some(redo), None));
        assert_eq!(back.header, h3);
    }

    #[test]
    fn a_redo_must_lie_inside_the_size() {
        let mut h = worst_case();
        h.dedup.truncate(2);
        h.meta.size = 100;
        let ok = Redo {
            staged: 100,
            len: 10,
            crc: 7,
            to: 90,
        };
        assert_eq!(
            decode_slot(&encode_redo_slot(1, &h, ok))
                .expect("decode")
                .redo,
            Some(ok)
        );
        for bad in [
            Redo { to: 91, ..ok },
            Redo { staged: 99, ..ok },
            Redo { len: 0, ..ok },
            Redo { to: u64::MAX, ..ok },
        ] {
            assert!(
                decode_slot(&encode_redo_slot(1, &h, bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn format_1_slots_still_decode() {
        let mut h = worst_case();
        h.dedup.truncate(3);
        // A version 1 slot, laid out by hand as that format's code wrote it.
        let payload = postcard::to_stdvec(&h).expect("encode");
        let mut slot = vec![0u8; SLOT_SIZE];
        slot[0..8].copy_from_slice(&MAGIC);
        slot[8..12].copy_from_slice(&1u32.to_le_bytes());
        slot[12..20].copy_from_slice(&9u64.to_le_bytes());
        slot[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        slot[24..24 + payload.len()].copy_from_slice(&payload);
        let crc = crc32c::crc32c(&slot[..CRC_AT]);
        slot[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        let back = decode_slot(&slot).expect("decode");
        assert_eq!((back.seq, back.tail), (9, None));
        assert_eq!(back.header, h);
    }

    #[test]
    fn a_tail_must_end_at_the_size() {
        let mut h = worst_case();
        h.meta.size = 100;
        let ok = Tail {
            offset: 90,
            len: 10,
            crc: 7,
        };
        assert_eq!(
            decode_slot(&encode_slot(1, &h, Some(ok)))
                .expect("decode")
                .tail,
            Some(ok)
        );
        let bad = Tail { offset: 80, ..ok };
        assert!(decode_slot(&encode_slot(1, &h, Some(bad))).is_err());
        // An empty tail is no tail.
        let empty = Tail { len: 0, ..ok };
        assert_eq!(
            decode_slot(&encode_slot(1, &h, Some(empty)))
                .expect("decode")
                .tail,
            None
        );
    }

    #[test]
    fn corrupted_slots_are_rejected() {
        let h = worst_case();
        let good = encode_slot(7, &h, None);
        for at in [0usize, 9, 13, 21, 30, 37, 41, 100, CRC_AT + 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode_slot(&bad).is_err(), "flip at {at} accepted");
        }
        assert!(decode_slot(&good[..100]).is_err());
        assert!(decode_slot(&[0u8; SLOT_SIZE]).is_err());
    }

    fn key(client_id: u64, seq: u64) -> DedupKey {
        DedupKey { client_id, seq }
    }

    fn outcome(version: u64) -> WriteOutcome {
        WriteOutcome {
            version,
            size: version * 9,
            checksum: 0,
            duplicate: false,
        }
    }

    fn empty() -> Header {
        let mut h = worst_case();
        h.dedup.clear();
        h
    }

    #[test]
    fn one_clients_writes_never_push_out_another_clients_answer() {
        // The CI failure this guards: client 3's append was applied, its answer lost in a
        // failover; client 0 appended 70 times before client 3 retried.
        let mut h = empty();
        h.record(key(3, 1), outcome(1));
        for v in 2..300 {
            h.record(key(0, v), outcome(v));
        }
        assert_eq!(h.dedup.len(), DEDUP_ENTRIES_MAX);
        assert_eq!(h.recall(key(3, 1)), Recall::Applied(outcome(1)));
        // Client 0's newest answers are kept, its oldest forgotten, never taken for new.
        assert_eq!(h.recall(key(0, 299)), Recall::Applied(outcome(299)));
        assert_eq!(h.recall(key(0, 2)), Recall::Forgotten);
        assert_eq!(h.recall(key(0, 300)), Recall::New);
        assert_eq!(h.recall(key(7, 1)), Recall::New);
    }

    #[test]
    fn a_clients_evicted_write_is_forgotten_not_new() {
        let mut h = empty();
        let n = DEDUP_ENTRIES_MAX as u64 + 10;
        for seq in 1..=n {
            h.record(key(1, seq), outcome(seq));
        }
        assert_eq!(h.dedup.len(), DEDUP_ENTRIES_MAX);
        // The floor is the highest evicted seq; it keeps its own outcome.
        let floors: Vec<&DedupEntry> = h.dedup.iter().filter(|e| e.is_floor()).collect();
        assert_eq!(floors.len(), 1);
        assert_eq!(floors[0].key, key(1, 11));
        assert_eq!(h.recall(key(1, 11)), Recall::Applied(outcome(11)));
        for seq in 1..=10 {
            assert_eq!(h.recall(key(1, seq)), Recall::Forgotten, "seq {seq}");
        }
        for seq in 12..=n {
            assert_eq!(h.recall(key(1, seq)), Recall::Applied(outcome(seq)));
        }
        assert_eq!(h.recall(key(1, n + 1)), Recall::New);
        // Versions stay in order, oldest first.
        assert!(
            h.dedup
                .windows(2)
                .all(|w| w[0].outcome.version < w[1].outcome.version)
        );
    }

    #[test]
    fn a_write_applied_out_of_seq_order_stays_below_the_floor() {
        let mut h = empty();
        for seq in 10..(10 + DEDUP_ENTRIES_MAX as u64) {
            h.record(key(1, seq), outcome(seq));
        }
        // A slow earlier write of the client applied last (it passed no floor yet).
        h.record(key(1, 5), outcome(100));
        // Seq 5 is the client's lowest: evicted first, and the floor covers it.
        assert_eq!(h.recall(key(1, 5)), Recall::Forgotten);
        assert_eq!(h.recall(key(1, 10)), Recall::Applied(outcome(10)));
        h.record(key(1, 200), outcome(101));
        assert_eq!(h.recall(key(1, 10)), Recall::Forgotten);
        assert_eq!(h.recall(key(1, 11)), Recall::Applied(outcome(11)));
        assert_eq!(h.dedup.iter().filter(|e| e.is_floor()).count(), 1);
    }

    #[test]
    fn with_one_entry_per_client_the_least_recent_client_is_forgotten() {
        let mut h = empty();
        for c in 0..DEDUP_ENTRIES_MAX as u64 {
            h.record(key(c, 1), outcome(c + 1));
        }
        h.record(key(1000, 1), outcome(500));
        assert_eq!(h.dedup.len(), DEDUP_ENTRIES_MAX);
        // The table's bound: client 0 (least recently written) is gone entirely.
        assert_eq!(h.recall(key(0, 1)), Recall::New);
        assert_eq!(h.recall(key(1, 1)), Recall::Applied(outcome(2)));
        assert_eq!(h.recall(key(1000, 1)), Recall::Applied(outcome(500)));
        assert!(h.dedup.iter().all(|e| !e.is_floor()));
    }

    #[test]
    fn the_fullest_client_gives_way_first() {
        let mut h = empty();
        // Two busy clients and one quiet one, interleaved.
        let mut v = 0;
        h.record(key(9, 1), outcome(0));
        for seq in 1..200 {
            for c in [1, 2] {
                v += 1;
                h.record(key(c, seq), outcome(v));
            }
        }
        let count = |c| h.dedup.iter().filter(|e| e.key.client_id == c).count();
        assert_eq!(count(9), 1);
        assert_eq!(count(1) + count(2), DEDUP_ENTRIES_MAX - 1);
        assert!(count(1).abs_diff(count(2)) <= 1);
        assert_eq!(h.recall(key(9, 1)), Recall::Applied(outcome(0)));
        // The encoded slot with floors still decodes to the same table.
        let back = decode_slot(&encode_slot(7, &h, None)).expect("decodes");
        assert_eq!(back.header, h);
        assert_eq!(back.header.recall(key(1, 3)), Recall::Forgotten);
    }
}
