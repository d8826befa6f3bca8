//! C2SP tlog-cosignature, Ed25519 `cosignature/v1` (key type 0x04): a
//! witness's timestamped statement that, as of a time, the largest
//! consistent tree it has observed for a log has the checkpoint's root.
//!
//! ```text
//! signed message:   cosignature/v1\n
//!                   time <POSIX seconds, ASCII decimal, no leading zeros>\n
//!                   <the whole checkpoint note text, extension lines too>
//!
//! signature line:   — <witness name> base64(key ID (4 bytes BE) ‖ timestamp (8 bytes BE) ‖ Ed25519 signature (64))
//! key ID:           SHA-256(<name> ‖ 0x0A ‖ 0x04 ‖ 32-byte public key)[:4]
//! verifier key:     <name>+<8 hex digits of key ID>+base64(0x04 ‖ public key)
//! signer key:       PRIVATE+KEY+<name>+<8 hex digits of key ID>+base64(0x04 ‖ 32-byte seed)
//! ```
//!
//! A cosignature is one more signature line of the checkpoint's note, so
//! a note verifier that does not know the witness ignores it (the key ID
//! differs from any 0x01 key's, even for the same Ed25519 key). Signer key
//! strings of type 0x01 are accepted too (the same Ed25519 key used as a
//! cosigner, as Go's `transparency-dev/formats/note` does); verifier keys
//! must be type 0x04, so that a log key is never mistaken for a witness.
//!
//! This module does no I/O and reads no clock: the caller passes the
//! timestamp in (the witness's current time when it cosigns).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::checkpoint::Checkpoint;
use crate::note::{
    ALG_ED25519, KeyError, Note, NoteError, NoteSignature, check_name, key_id, parse_key_id,
};

/// Key type byte of Ed25519 `cosignature/v1` keys.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Bytes after the key ID on a cosignature line: timestamp and signature.
pub const COSIGNATURE_LEN: usize = 8 + 64;
/// Largest timestamp a cosignature may carry (2^63 − 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The message an Ed25519 `cosignature/v1` signs for `text` at `timestamp`.
pub fn cosigned_message(timestamp: u64, text: &str) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(text.as_bytes());
    m
}

/// The timestamp of a line shaped like an Ed25519 cosignature (72 bytes
/// after the key ID), without verifying anything.
pub fn cosignature_timestamp(sig: &NoteSignature) -> Option<u64> {
    if sig.signature.len() != COSIGNATURE_LEN {
        return None;
    }
    let ts = u64::from_be_bytes(sig.signature[..8].try_into().ok()?);
    (ts <= MAX_TIMESTAMP).then_some(ts)
}

fn cosigner_key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut k = [0u8; 33];
    k[0] = ALG_COSIGNATURE_V1;
    k[1..].copy_from_slice(public);
    key_id(name, &k)
}

/// Why a cosignature could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignError {
    /// The text is not a checkpoint: only checkpoints are cosigned.
    #[error("only a checkpoint can be cosigned: {0}")]
    NotACheckpoint(String),
    /// The timestamp is above 2^63 − 1.
    #[error("timestamp {0} is above 2^63-1")]
    Timestamp(u64),
}

/// A witness's verifier key: name, key ID and Ed25519 public key, in the
/// `cosignature/v1` role (type 0x04).
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses `<name>+<hex key ID>+<base64(0x04 ‖ key)>`, checking the key
    /// ID. A type 0x01 key (a note signer's) is refused with
    /// [`KeyError::WrongKeyType`].
    pub fn parse(vkey: &str) -> Result<Self, KeyError> {
        let (name, rest) = vkey.split_once('+').unwrap_or((vkey, ""));
        let (id_hex, key_b64) = rest.split_once('+').unwrap_or((rest, ""));
        let id = parse_key_id(id_hex).ok_or(KeyError::Malformed("key ID must be 8 hex digits"))?;
        let key = BASE64
            .decode(key_b64)
            .map_err(|_| KeyError::Malformed("key is not standard base64"))?;
        check_name(name)?;
        let (&alg, public) = key
            .split_first()
            .ok_or(KeyError::Malformed("key is empty"))?;
        let computed = key_id(name, &key);
        if id != computed {
            return Err(KeyError::KeyIdMismatch {
                given: id,
                computed,
            });
        }
        match alg {
            ALG_COSIGNATURE_V1 => {}
            ALG_ED25519 => {
                return Err(KeyError::WrongKeyType {
                    found: alg,
                    expected: ALG_COSIGNATURE_V1,
                });
            }
            other => return Err(KeyError::UnknownAlgorithm(other)),
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| KeyError::Malformed("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| KeyError::Malformed("not an Ed25519 public key"))?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Witness name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key ID (computed with type 0x04).
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether a signature line is this witness's (name and key ID).
    pub fn matches(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name && sig.key_id == self.id
    }

    /// The timestamp of `sig` (the bytes after the key ID) when it is a
    /// valid cosignature of the checkpoint note text `text` by this key;
    /// `None` otherwise (wrong length, timestamp above 2^63 − 1, a text
    /// that is not a checkpoint, or a signature that does not verify).
    pub fn verify(&self, text: &str, sig: &[u8]) -> Option<u64> {
        if sig.len() != COSIGNATURE_LEN || Checkpoint::parse(text).is_err() {
            return None;
        }
        let ts = u64::from_be_bytes(sig[..8].try_into().ok()?);
        if ts > MAX_TIMESTAMP {
            return None;
        }
        let sig = ed25519_dalek::Signature::from_slice(&sig[8..]).ok()?;
        self.key
            .verify(&cosigned_message(ts, text), &sig)
            .is_ok()
            .then_some(ts)
    }
}

impl fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut k = vec![ALG_COSIGNATURE_V1];
        k.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, BASE64.encode(k))
    }
}

impl fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignatureVerifier({self})")
    }
}

/// A witness's signer key (`cosignature/v1`). Holds a secret: no
/// `Display`, a redacted `Debug`; only [`Self::to_skey_string`] reveals it.
#[derive(Clone)]
pub struct CosignatureSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl CosignatureSigner {
    /// A cosigner from a 32-byte Ed25519 seed (randomness from the caller).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(CosignatureSigner {
            name: name.to_owned(),
            id: cosigner_key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(type ‖ seed)>` with
    /// type 0x04, or 0x01 (a note signer key used as a cosigner). The key
    /// ID in the string must be the one of that type.
    pub fn parse(skey: &str) -> Result<Self, KeyError> {
        let (name, id, alg, seed) =
            crate::note::split_signer_key(skey, &[ALG_COSIGNATURE_V1, ALG_ED25519])?;
        let signer = Self::from_seed(name, &seed)?;
        let mut material = vec![alg];
        material.extend_from_slice(signer.key.verifying_key().as_bytes());
        let computed = key_id(name, &material);
        if id != computed {
            return Err(KeyError::KeyIdMismatch {
                given: id,
                computed,
            });
        }
        Ok(signer)
    }

    /// The signer key string (type 0x04). It contains the private key:
    /// store it with mode 0600 and never log it.
    pub fn to_skey_string(&self) -> String {
        crate::note::format_signer_key(&self.name, self.id, ALG_COSIGNATURE_V1, self.key.as_bytes())
    }

    /// Witness name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key ID (computed with type 0x04).
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The cosignature line of checkpoint note text `text` at `timestamp`
    /// (POSIX seconds). Deterministic for a given text and timestamp.
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<NoteSignature, CosignError> {
        Checkpoint::parse(text).map_err(|e| CosignError::NotACheckpoint(e.to_string()))?;
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignError::Timestamp(timestamp));
        }
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(&self.key.sign(&cosigned_message(timestamp, text)).to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.id,
            signature,
        })
    }
}

impl fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CosignatureSigner({}+{:08x}+<redacted>)",
            self.name, self.id
        )
    }
}

/// A verified cosignature: which witness, and when it cosigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// Witness name.
    pub name: String,
    /// Witness key ID.
    pub key_id: u32,
    /// POSIX seconds the witness put in its cosignature.
    pub timestamp: u64,
}

/// The cosignatures on `note` by `witnesses`, one per witness, in input
/// order. Lines of other keys are ignored (the log's own signature, unknown
/// witnesses). A line whose name and key ID are a given witness's but which
/// does not verify rejects the note ([`NoteError::InvalidSignature`]), as
/// signed-note asks for any line of a trusted key; two given witnesses with
/// the same name and key ID are [`NoteError::AmbiguousKey`]. A witness with
/// several valid lines counts once, with its latest timestamp.
pub fn verify_cosignatures(
    note: &Note,
    witnesses: &[CosignatureVerifier],
) -> Result<Vec<Cosignature>, NoteError> {
    let mut out: Vec<Cosignature> = Vec::new();
    for sig in note.signatures() {
        let mut matching = witnesses.iter().filter(|w| w.matches(sig));
        let Some(w) = matching.next() else { continue };
        if matching.any(|o| o != w) {
            return Err(NoteError::AmbiguousKey {
                name: sig.name.clone(),
                key_id: sig.key_id,
            });
        }
        let Some(timestamp) = w.verify(note.text(), &sig.signature) else {
            return Err(NoteError::InvalidSignature {
                name: sig.name.clone(),
                key_id: sig.key_id,
            });
        };
        match out
            .iter_mut()
            .find(|c| c.name == sig.name && c.key_id == sig.key_id)
        {
            Some(c) => c.timestamp = c.timestamp.max(timestamp),
            None => out.push(Cosignature {
                name: sig.name.clone(),
                key_id: sig.key_id,
                timestamp,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::note::{SignerKey, VerifierKey, Verifiers};

    fn text() -> String {
        Checkpoint::new("example.com/log", 10, Hash([3; 32]))
            .unwrap()
            .to_text()
    }

    #[test]
    fn cosign_then_verify_and_tamper() {
        let w = CosignatureSigner::from_seed("witness.example/w1", &[5; 32]).unwrap();
        let sig = w.cosign(&text(), 1_700_000_000).unwrap();
        assert_eq!(sig.signature.len(), COSIGNATURE_LEN);
        assert_eq!(cosignature_timestamp(&sig), Some(1_700_000_000));
        let v = w.verifier();
        assert_eq!(v.verify(&text(), &sig.signature), Some(1_700_000_000));
        // Another text, another timestamp, a flipped bit: all refused.
        let other = Checkpoint::new("example.com/log", 11, Hash([3; 32]))
            .unwrap()
            .to_text();
        assert_eq!(v.verify(&other, &sig.signature), None);
        let mut later = sig.signature.clone();
        later[7] ^= 1;
        assert_eq!(v.verify(&text(), &later), None);
        let mut flipped = sig.signature.clone();
        flipped[40] ^= 1;
        assert_eq!(v.verify(&text(), &flipped), None);
        assert_eq!(v.verify(&text(), &sig.signature[..71]), None);
        // Only checkpoints are cosigned.
        assert!(matches!(
            w.cosign("hello\n", 1),
            Err(CosignError::NotACheckpoint(_))
        ));
        assert_eq!(
            w.cosign(&text(), u64::MAX),
            Err(CosignError::Timestamp(u64::MAX))
        );
    }

    #[test]
    fn keys_round_trip_and_roles_do_not_mix() {
        let w = CosignatureSigner::from_seed("witness.example/w1", &[5; 32]).unwrap();
        let back = CosignatureSigner::parse(&w.to_skey_string()).unwrap();
        assert_eq!(back.verifier(), w.verifier());
        assert!(!format!("{w:?}").contains(&w.to_skey_string()[30..]));
        let vkey = w.verifier().to_string();
        assert_eq!(CosignatureVerifier::parse(&vkey).unwrap(), w.verifier());
        // The same Ed25519 key as a note signer has another key ID, and its
        // 0x01 vkey is refused as a witness key (and the 0x04 one as a log key).
        let note_key = SignerKey::from_seed("witness.example/w1", &[5; 32]).unwrap();
        assert_ne!(note_key.key_id(), w.key_id());
        assert_eq!(
            CosignatureVerifier::parse(&note_key.verifier().to_string()),
            Err(KeyError::WrongKeyType {
                found: 1,
                expected: 4
            })
        );
        assert!(VerifierKey::parse(&vkey).is_err());
        // A 0x01 signer key string works as a cosigner (Go's formats/note does so).
        let as_cosigner = CosignatureSigner::parse(&note_key.to_skey_string()).unwrap();
        assert_eq!(as_cosigner.verifier(), w.verifier());
    }

    #[test]
    fn cosignatures_on_a_note() {
        let log = SignerKey::from_seed("example.com/log", &[1; 32]).unwrap();
        let w1 = CosignatureSigner::from_seed("w1", &[2; 32]).unwrap();
        let w2 = CosignatureSigner::from_seed("w2", &[3; 32]).unwrap();
        let mut note = Note::new(&text()).unwrap();
        note.sign(&log);
        note.add_signature(w1.cosign(&text(), 100).unwrap())
            .unwrap();
        note.add_signature(w1.cosign(&text(), 200).unwrap())
            .unwrap();
        note.add_signature(w2.cosign(&text(), 150).unwrap())
            .unwrap();
        let note = Note::parse(&note.to_bytes()).unwrap();
        // The log's own key still opens it, the cosignatures being unknown lines.
        let opened = note.verify(&Verifiers::new([log.verifier()])).unwrap();
        assert_eq!(opened.unverified.len(), 3);
        let got = verify_cosignatures(&note, &[w1.verifier(), w2.verifier()]).unwrap();
        let got: Vec<(&str, u64)> = got.iter().map(|c| (c.name.as_str(), c.timestamp)).collect();
        assert_eq!(got, [("w1", 200), ("w2", 150)]);
        assert!(verify_cosignatures(&note, &[]).unwrap().is_empty());
        // A bad line of a trusted witness rejects the note.
        let mut bad = Note::new(&text()).unwrap();
        let mut sig = w2.cosign(&text(), 5).unwrap();
        sig.signature[20] ^= 1;
        bad.add_signature(sig).unwrap();
        assert_eq!(
            verify_cosignatures(&bad, &[w2.verifier()]),
            Err(NoteError::InvalidSignature {
                name: "w2".into(),
                key_id: w2.key_id()
            })
        );
    }
}
