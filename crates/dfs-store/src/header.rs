//! The on-disk file header: two 4 KiB slots, each a complete, checksummed copy of the file's
//! metadata and dedup table.
//!
//! Byte layout of one slot (format version 1, all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"DFSFILE\0"
//!      8     4  header format version (u32) = 1
//!     12     8  slot sequence number (u64); the valid slot with the highest one wins
//!     20     4  payload length N (u32), N <= 4068
//!     24     N  payload: postcard encoding of `Header { meta: FileMeta, dedup: Vec<DedupEntry> }`
//!   24+N   ...  zero padding
//!   4092     4  CRC-32C (u32) of bytes 0..4092 of the slot
//! ```
//!
//! Slot A is at file offset 0, slot B at 4096, and the content starts at 8192.

use serde::{Deserialize, Serialize};

use crate::{DEDUP_ENTRIES_MAX, DedupKey, FileMeta, WriteOutcome};

/// Size of one header slot.
pub(crate) const SLOT_SIZE: usize = 4096;
/// Size of the whole header (two slots); the content starts at this file offset.
pub(crate) const HEADER_SIZE: u64 = 2 * SLOT_SIZE as u64;
/// Magic bytes at the start of every slot.
pub(crate) const MAGIC: [u8; 8] = *b"DFSFILE\0";
/// The header format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bytes before the payload: magic, format version, sequence, payload length.
const FIXED_LEN: usize = 8 + 4 + 8 + 4;
/// Offset of the slot CRC.
const CRC_AT: usize = SLOT_SIZE - 4;
/// Largest payload that fits in a slot.
pub(crate) const PAYLOAD_MAX: usize = CRC_AT - FIXED_LEN;

/// One remembered write: the key it carried and what it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DedupEntry {
    pub(crate) key: DedupKey,
    pub(crate) outcome: WriteOutcome,
}

/// Everything a slot records about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) meta: FileMeta,
    /// Ordered by `outcome.version`, oldest first; at most [`DEDUP_ENTRIES_MAX`] entries.
    pub(crate) dedup: Vec<DedupEntry>,
}

impl Header {
    /// The saved outcome of the write that carried `key`, if it is still remembered.
    pub(crate) fn lookup(&self, key: DedupKey) -> Option<WriteOutcome> {
        self.dedup.iter().find(|e| e.key == key).map(|e| e.outcome)
    }

    /// Remembers `outcome` for `key`, evicting the oldest entries (lowest version) beyond the bound.
    pub(crate) fn record(&mut self, key: DedupKey, outcome: WriteOutcome) {
        while self.dedup.len() >= DEDUP_ENTRIES_MAX {
            let oldest = self
                .dedup
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.outcome.version)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.dedup.remove(i);
                }
                None => break,
            }
        }
        self.dedup.push(DedupEntry {
            key,
            outcome: WriteOutcome {
                duplicate: false,
                ..outcome
            },
        });
    }
}

/// Encodes `header` into one slot with sequence number `seq`.
///
/// # Panics
/// If the payload does not fit in a slot. That cannot happen for names of at most
/// [`NAME_MAX`](crate::NAME_MAX) bytes and at most [`DEDUP_ENTRIES_MAX`] dedup entries (the worst
/// case is about 4020 bytes; a unit test checks it), so it is an invariant, not an input error.
pub(crate) fn encode_slot(seq: u64, header: &Header) -> Vec<u8> {
    let payload = postcard::to_stdvec(header)
        .expect("postcard encoding of plain structs into a Vec cannot fail");
    assert!(
        payload.len() <= PAYLOAD_MAX,
        "header payload of {} bytes exceeds the slot capacity of {PAYLOAD_MAX} bytes",
        payload.len()
    );
    let mut slot = vec![0u8; SLOT_SIZE];
    slot[0..8].copy_from_slice(&MAGIC);
    slot[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    slot[12..20].copy_from_slice(&seq.to_le_bytes());
    // payload.len() <= PAYLOAD_MAX < u32::MAX, so the cast is lossless.
    slot[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    slot[FIXED_LEN..FIXED_LEN + payload.len()].copy_from_slice(&payload);
    let crc = crc32c::crc32c(&slot[..CRC_AT]);
    slot[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// Decodes one slot; `Err` carries why the slot is not valid.
pub(crate) fn decode_slot(slot: &[u8]) -> Result<(u64, Header), String> {
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
    if format != FORMAT_VERSION {
        return Err(format!("unsupported header format version {format}"));
    }
    let seq = u64::from_le_bytes(le8(&slot[12..20]));
    let len = u32::from_le_bytes(le4(&slot[20..24])) as usize;
    if len > PAYLOAD_MAX {
        return Err(format!("payload length {len} exceeds the slot"));
    }
    let header: Header = postcard::from_bytes(&slot[FIXED_LEN..FIXED_LEN + len])
        .map_err(|e| format!("undecodable metadata: {e}"))?;
    if header.dedup.len() > DEDUP_ENTRIES_MAX {
        return Err(format!("dedup table has {} entries", header.dedup.len()));
    }
    Ok((seq, header))
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
        let slot = encode_slot(u64::MAX, &h);
        assert_eq!(slot.len(), SLOT_SIZE);
        let (seq, back) = decode_slot(&slot).expect("decode");
        assert_eq!(seq, u64::MAX);
        assert_eq!(back, h);
    }

    #[test]
    fn corrupted_slots_are_rejected() {
        let h = worst_case();
        let good = encode_slot(7, &h);
        for at in [0usize, 9, 13, 21, 100, CRC_AT + 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode_slot(&bad).is_err(), "flip at {at} accepted");
        }
        assert!(decode_slot(&good[..100]).is_err());
        assert!(decode_slot(&[0u8; SLOT_SIZE]).is_err());
    }

    #[test]
    fn dedup_table_evicts_oldest() {
        let mut h = worst_case();
        h.dedup.clear();
        for v in 0..(DEDUP_ENTRIES_MAX as u64 + 10) {
            let key = DedupKey {
                client_id: 1,
                seq: v,
            };
            h.record(
                key,
                WriteOutcome {
                    version: v,
                    size: v,
                    checksum: 0,
                    duplicate: false,
                },
            );
        }
        assert_eq!(h.dedup.len(), DEDUP_ENTRIES_MAX);
        assert!(
            h.lookup(DedupKey {
                client_id: 1,
                seq: 9
            })
            .is_none()
        );
        assert!(
            h.lookup(DedupKey {
                client_id: 1,
                seq: 10
            })
            .is_some()
        );
    }
}
