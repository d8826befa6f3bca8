//! A small deterministic pseudo-random generator for tests, fuzzers and benches that need
//! reproducible variety: Marsaglia's xorshift64 (shifts 13, 7, 17). Never for secrets
//! (salts, nonces and ids come from `audit::rng`'s CSPRNG).

/// xorshift64 state. A seed of 0 yields only zeros: seed with any other value.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> Self {
        XorShift64(seed)
    }

    /// The next value of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published xorshift64 (13, 7, 17) step: the sequences the tests were written
    /// against stay the same.
    #[test]
    fn follows_the_xorshift64_step() {
        let mut r = XorShift64::new(1);
        assert_eq!(r.next_u64(), 1082269761);
        let mut r = XorShift64::new(0x9e37_79b9_7f4a_7c15);
        let a = r.next_u64();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert_eq!(a, x);
    }
}
