//! Secret generation and hashing: API tokens, passwords, session ids.
//!
//! Tokens and session ids are 256 random bits, so a plain SHA-256 is enough
//! to store them (no brute force can invert it) and lets a request be
//! authenticated with one indexed lookup. Passwords are chosen by humans and
//! get argon2id with a per-password salt.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::MetaError;

/// Every API token starts with this, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "fd_";

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A new API token secret: `fd_` followed by 43 URL-safe base64 characters.
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_b64(32))
}

/// A new session id or CSRF token.
pub fn new_session_secret() -> String {
    random_b64(32)
}

/// A new random password for the first admin (24 URL-safe characters).
pub fn new_password() -> String {
    random_b64(18)
}

/// SHA-256 of a high-entropy secret, hex-encoded: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// argon2id hash of a password in PHC string form.
pub fn hash_password(password: &str) -> Result<String, MetaError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MetaError::Hash(e.to_string()))
}

/// Checks a password against a stored PHC string; a malformed stored hash
/// verifies nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_hash_stably() {
        let a = new_token();
        let b = new_token();
        assert!(a.starts_with("fd_") && a.len() == 46, "{a}");
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(!hash_secret(&a).contains(&a[3..]));
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horse ", &h));
        assert!(!verify_password("x", "not a phc string"));
    }
}
