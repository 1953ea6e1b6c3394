//! CRC-32C arithmetic for writes that do not re-read the whole file.
//!
//! CRC-32C is affine: for two messages of equal length, `crc(a) ^ crc(b)` depends only on
//! `a ^ b`, and appending `r` zero bytes to a difference multiplies its CRC by `x^(8r)`
//! modulo the polynomial, which is `crc32c_combine(v, 0, r)` (zlib's combine: the CRC of
//! `A ++ B` is `shift(crc(A), |B|) ^ crc(B)`). So overwriting a segment `old` with `new`
//! (same length) that has `r` bytes after it changes the file's CRC by
//! `shift(crc(old) ^ crc(new), r)`. A property test checks both formulas against a full
//! recomputation.

/// `v` shifted past `r` more bytes: the CRC change that a difference with CRC `v` makes
/// when `r` bytes follow it.
pub(crate) fn shift(v: u32, r: u64) -> u32 {
    if v == 0 || r == 0 {
        return v;
    }
    combine(v, 0, r)
}

/// The CRC of `A ++ B` from `crc(A)`, `crc(B)` and `|B|`.
pub(crate) fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    // usize is 64 bits wide on every target dfs builds for; a longer file cannot exist.
    crc32c::crc32c_combine(crc_a, crc_b, usize::try_from(len_b).unwrap_or(usize::MAX))
}

/// The CRC of `n` zero bytes, in O(log² n) without touching them.
pub(crate) fn zeros(n: u64) -> u32 {
    let mut result = 0u32; // the CRC of no bytes
    let mut power = crc32c::crc32c(&[0]); // the CRC of `power_len` zeros
    let mut power_len = 1u64;
    let mut left = n;
    while left > 0 {
        if left & 1 == 1 {
            result = combine(result, power, power_len);
        }
        left >>= 1;
        if left > 0 {
            power = combine(power, power, power_len);
            power_len <<= 1;
        }
    }
    result
}

/// The CRC of a file whose CRC was `crc` after `old` (at some offset, with `after` bytes
/// following it) is overwritten by `new` of the same length.
pub(crate) fn overwrite(crc: u32, old: &[u8], new: &[u8], after: u64) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    crc ^ shift(crc32c::crc32c(old) ^ crc32c::crc32c(new), after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn overwrite_matches_a_full_recompute(
            file in proptest::collection::vec(any::<u8>(), 1..3000),
            at in any::<prop::sample::Index>(),
            new in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let offset = at.index(file.len());
            let len = new.len().min(file.len() - offset);
            let new = &new[..len];
            let mut changed = file.clone();
            changed[offset..offset + len].copy_from_slice(new);
            let after = (file.len() - offset - len) as u64;
            let got = overwrite(crc32c::crc32c(&file), &file[offset..offset + len], new, after);
            prop_assert_eq!(got, crc32c::crc32c(&changed));
        }

        #[test]
        fn zeros_and_combine_match_a_full_recompute(
            head in proptest::collection::vec(any::<u8>(), 0..500),
            n in 0u64..5000,
        ) {
            let mut whole = head.clone();
            whole.resize(head.len() + n as usize, 0);
            prop_assert_eq!(zeros(n), crc32c::crc32c(&vec![0u8; n as usize]));
            prop_assert_eq!(combine(crc32c::crc32c(&head), zeros(n), n), crc32c::crc32c(&whole));
        }
    }

    #[test]
    fn zeros_of_large_lengths_match_streaming() {
        let chunk = vec![0u8; 1 << 16];
        let mut crc = 0;
        for i in 1..=40u64 {
            crc = crc32c::crc32c_append(crc, &chunk);
            assert_eq!(zeros(i << 16), crc, "{i} chunks");
        }
    }
}
