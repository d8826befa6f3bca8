//! Per-block trigram bloom filter: lets a substring query (`|= "needle"`)
//! skip a block that cannot contain the needle without decompressing it.
//!
//! Every 3-byte window of every line in a block is a trigram (24 bits).
//! The filter is a bloom filter over the block's *distinct* trigrams with
//! [`PROBES`] probes. A needle of 3 bytes or more can match only if every
//! one of its trigrams is in the block, so one absent trigram rules the
//! block out; a needle shorter than 3 bytes never rules anything out.
//!
//! Because a needle of length L tests L−2 trigrams, a filter with a high
//! per-trigram false-positive rate p still skips well: the block passes
//! only if all of them are false positives (≈ p^(L−2) when independent).
//! That is why the default spends few bits per trigram
//! ([`crate::Options::bloom_bits_per_trigram`]); bench/results has the
//! measured size cost and skip rates.
//!
//! Lines are matched as bytes, case-sensitively, like LogQL's `|=`.

/// Bits of the filter's hash probes per trigram.
pub const PROBES: u32 = 2;
/// The smallest filter (bits, a power of two).
const MIN_LOG2_BITS: u32 = 6;
/// The largest filter: 2^24 bits (2 MiB) can index every possible trigram.
const MAX_LOG2_BITS: u32 = 24;

/// The distinct trigrams of a block being built: a bitmap over all 2^24.
pub struct TrigramSet {
    bits: Vec<u64>,
    count: usize,
}

impl Default for TrigramSet {
    fn default() -> Self {
        TrigramSet {
            bits: vec![0u64; 1 << 18],
            count: 0,
        }
    }
}

#[inline]
fn trigram(w: &[u8]) -> u32 {
    u32::from(w[0]) | (u32::from(w[1]) << 8) | (u32::from(w[2]) << 16)
}

impl TrigramSet {
    /// Adds every trigram of `line`.
    pub fn add_line(&mut self, line: &[u8]) {
        for w in line.windows(3) {
            let t = trigram(w) as usize;
            let (word, bit) = (t >> 6, 1u64 << (t & 63));
            let cur = self.bits[word];
            if cur & bit == 0 {
                self.bits[word] = cur | bit;
                self.count += 1;
            }
        }
    }

    /// Number of distinct trigrams added.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bloom filter of this set with about `bits_per_trigram` bits per
    /// distinct trigram (rounded up to a power of two).
    pub fn to_bloom(&self, bits_per_trigram: u32) -> Bloom {
        let want = (self.count as u64 * u64::from(bits_per_trigram.max(1))).max(1);
        let log2 = (64 - (want - 1).leading_zeros()).clamp(MIN_LOG2_BITS, MAX_LOG2_BITS);
        let mut b = Bloom {
            log2_bits: log2,
            bits: vec![0u64; 1usize << (log2 - 6)],
        };
        for (wi, &word) in self.bits.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                let t = (wi << 6) as u32 | w.trailing_zeros();
                w &= w - 1;
                b.insert(t);
            }
        }
        b
    }
}

/// A bloom filter over trigrams; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    log2_bits: u32,
    bits: Vec<u64>,
}

impl Bloom {
    #[inline]
    fn probes(&self, t: u32) -> [usize; PROBES as usize] {
        let h = (u64::from(t) ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let shift = 64 - self.log2_bits;
        let h2 = h.rotate_left(29).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        [(h >> shift) as usize, (h2 >> shift) as usize]
    }

    fn insert(&mut self, t: u32) {
        for p in self.probes(t) {
            self.bits[p >> 6] |= 1 << (p & 63);
        }
    }

    #[inline]
    fn has(&self, t: u32) -> bool {
        self.probes(t)
            .iter()
            .all(|&p| self.bits[p >> 6] & (1 << (p & 63)) != 0)
    }

    /// `false` when no line of the block can contain `needle`.
    pub fn may_contain(&self, needle: &[u8]) -> bool {
        needle.windows(3).all(|w| self.has(trigram(w)))
    }

    /// Size of the filter in bytes (as stored).
    pub fn byte_len(&self) -> usize {
        1 + self.bits.len() * 8
    }

    /// Appends `log2_bits: u8 | bits (little-endian u64 words)`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.log2_bits as u8);
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes what [`Bloom::encode`] wrote; `bytes` must be exactly it.
    pub fn decode(bytes: &[u8]) -> Result<Bloom, String> {
        let (&log2, rest) = bytes.split_first().ok_or("empty bloom filter")?;
        let log2 = u32::from(log2);
        if !(MIN_LOG2_BITS..=MAX_LOG2_BITS).contains(&log2) {
            return Err(format!("bloom filter size 2^{log2} bits out of range"));
        }
        let words = 1usize << (log2 - 6);
        if rest.len() != words * 8 {
            return Err(format!(
                "bloom filter of 2^{log2} bits needs {} bytes, has {}",
                words * 8,
                rest.len()
            ));
        }
        let bits = rest
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Bloom {
            log2_bits: log2,
            bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bloom(lines: &[&str], bits: u32) -> Bloom {
        let mut s = TrigramSet::default();
        for l in lines {
            s.add_line(l.as_bytes());
        }
        s.to_bloom(bits)
    }

    #[test]
    fn present_substrings_always_pass() {
        let lines = ["GET /api/v1/users 200", "level=error msg=\"disk full\""];
        let b = bloom(&lines, 4);
        for l in lines {
            for i in 0..l.len() {
                for j in i..=l.len() {
                    assert!(b.may_contain(&l.as_bytes()[i..j]), "{:?}", &l[i..j]);
                }
            }
        }
        assert!(b.may_contain(b"zz"), "short needles never rule out");
    }

    #[test]
    fn absent_needles_are_mostly_ruled_out() {
        let b = bloom(&["GET /api/v1/users 200 1234"; 3], 10);
        assert!(!b.may_contain(b"quokka-7f3a"));
        assert!(!b.may_contain(b"POST"));
    }

    #[test]
    fn encoding_round_trips_and_rejects_bad_sizes() {
        let b = bloom(&["some line with words", "another"], 6);
        let mut out = Vec::new();
        b.encode(&mut out);
        assert_eq!(out.len(), b.byte_len());
        assert_eq!(Bloom::decode(&out).unwrap(), b);
        assert!(Bloom::decode(&out[..out.len() - 1]).is_err());
        assert!(Bloom::decode(&[30]).is_err());
        assert!(Bloom::decode(&[]).is_err());
    }

    #[test]
    fn no_false_negatives_on_random_lines() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..200 {
            let lines: Vec<Vec<u8>> = (0..rng.random_range(1..50))
                .map(|_| {
                    (0..rng.random_range(0..80))
                        .map(|_| rng.random_range(b' '..=b'~'))
                        .collect()
                })
                .collect();
            let mut set = TrigramSet::default();
            for l in &lines {
                set.add_line(l);
            }
            let bits = [1, 2, 4, 8][round % 4];
            let b = Bloom::decode(&{
                let mut out = Vec::new();
                set.to_bloom(bits).encode(&mut out);
                out
            })
            .unwrap();
            for l in lines.iter().filter(|l| !l.is_empty()) {
                for _ in 0..20 {
                    let i = rng.random_range(0..l.len());
                    let j = rng.random_range(i..=l.len());
                    assert!(b.may_contain(&l[i..j]), "round {round}: {:?}", &l[i..j]);
                }
            }
        }
    }
}
