//! Randomness on the append path: salts, nonces and UUIDv7 ids drawn from
//! the thread-local CSPRNG (`rand::rngs::ThreadRng`: ChaCha12 seeded from
//! the operating system and reseeded from it periodically) instead of one
//! `getrandom` syscall per value. Long-lived secrets (subject keys, the
//! signing key) still come straight from the OS (`OsRng`).
//!
//! Why this is enough: salts and nonces must be unpredictable and never
//! repeat, which a CSPRNG seeded from the OS gives; they are not keys. A
//! 24-byte random XChaCha20 nonce makes a repeat negligible even for many
//! billions of envelopes under one key.

use rand::RngCore;

/// `N` bytes from the thread-local CSPRNG.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A UUIDv7 for the Unix time `unix_ns`: the millisecond timestamp, then
/// 74 random bits from the thread-local CSPRNG.
pub fn uuid_v7(unix_ns: i64) -> uuid::Uuid {
    let ms = u64::try_from(unix_ns / 1_000_000).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes::<10>()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_carries_the_time_and_differs() {
        let t = 1_767_225_600_123_456_789;
        let (a, b) = (uuid_v7(t), uuid_v7(t));
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 7);
        let (secs, nanos) = a.get_timestamp().expect("a v7 timestamp").to_unix();
        assert_eq!((secs, nanos), (1_767_225_600, 123_000_000));
        assert_ne!(bytes::<16>(), bytes::<16>());
    }
}
