//! C2SP signed-note with Ed25519: key IDs, verifier and signer key strings,
//! signing, and opening (parsing + verifying) notes.
//!
//! ```text
//! <text, every line ending in "\n">
//!                                  <- one empty line
//! — <key name> <base64(4-byte key ID ‖ 64-byte Ed25519 signature)>
//! ```
//!
//! Rules follow c2sp.org/signed-note and, where the spec is silent,
//! `golang.org/x/mod/sumdb/note` (the reference the Go ecosystem — sumdb,
//! witnesses, Sigsum, Tessera — verifies with): the text ends at the last
//! empty line; the note must be UTF-8 without control characters other than
//! newline; at most 100 signature lines and 1 MB; a line whose key name and
//! ID match a trusted key must verify, else the note is rejected; lines from
//! unknown keys are reported, not verified. Ed25519 verification is
//! `ed25519-dalek`'s non-strict `verify`, which accepts exactly what Go's
//! `crypto/ed25519` accepts (checked against the C2SP CCTV vectors).
//!
//! Signer keys hold secrets: [`SignerKey`] has no `Display` and a redacted
//! `Debug`; only [`SignerKey::to_skey_string`] reveals it, on purpose.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte of Ed25519 keys.
pub const ALG_ED25519: u8 = 0x01;
/// Largest note [`Note::parse`] accepts.
pub const MAX_NOTE_LEN: usize = 1_000_000;
/// Most signature lines [`Note::parse`] accepts (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// The signature line prefix: an em dash (U+2014) and a space.
pub const SIG_PREFIX: &str = "\u{2014} ";

/// Why a verifier or signer key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not of the form `<name>+<8 hex digits>+<base64>` (or the signer form).
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    /// The key ID does not match the name and key.
    #[error("key ID {given:08x} does not match name and key, which give {computed:08x}")]
    KeyIdMismatch {
        /// ID in the string.
        given: u32,
        /// ID computed from name and key.
        computed: u32,
    },
    /// A signature type other than Ed25519 (0x01).
    #[error("unknown signature type 0x{0:02x}; only Ed25519 (0x01) is supported")]
    UnknownAlgorithm(u8),
    /// The key name is empty or has whitespace or `+`.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    BadName(String),
    /// A known key type in the wrong role, e.g. a note signer key (0x01)
    /// where a witness cosigner key (0x04) is needed.
    #[error(
        "key type 0x{found:02x} where 0x{expected:02x} is needed (0x01: a log's note signing key, 0x04: a witness cosigner key)"
    )]
    WrongKeyType {
        /// Type byte of the key given.
        found: u8,
        /// Type byte this place needs.
        expected: u8,
    },
}

/// Why a note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The bytes are not a signed note.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A signature line from a trusted key does not verify.
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature {
        /// Key name on the line.
        name: String,
        /// Key ID on the line.
        key_id: u32,
    },
    /// The note is well formed, but no line comes from a trusted key.
    #[error("note has no signature from a trusted key")]
    UnknownSigner,
    /// Two trusted keys share a name and key ID; the caller must fix its list.
    #[error("two trusted keys are named {name} with key ID {key_id:08x}")]
    AmbiguousKey {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// A text that cannot be a note text (for signing).
    #[error("invalid note text: {0}")]
    BadText(&'static str),
}

/// The key ID of a key: the first 4 bytes (big-endian) of
/// `SHA-256(name ‖ 0x0A ‖ key)`, where `key` is the type byte followed by the
/// public key (`0x01 ‖ 32 bytes` for Ed25519).
pub fn key_id(name: &str, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Whether `name` can be a key name: non-empty, no Unicode whitespace, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace) && !name.contains('+')
}

pub(crate) fn check_name(name: &str) -> Result<(), KeyError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_owned()))
    }
}

fn ed25519_key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut k = [0u8; 33];
    k[0] = ALG_ED25519;
    k[1..].copy_from_slice(public);
    key_id(name, &k)
}

pub(crate) fn parse_key_id(hex: &str) -> Option<u32> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// A verifier key: name, key ID and Ed25519 public key.
///
/// Its string form is `<name>+<8 hex digits of key ID>+<base64(0x01 ‖ key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses a verifier key string. Splits at the first two `+` only (the
    /// base64 may contain `+`), checks that the key ID matches, and accepts
    /// only Ed25519 keys.
    pub fn parse(vkey: &str) -> Result<Self, KeyError> {
        let (name, rest) = vkey.split_once('+').unwrap_or((vkey, ""));
        let (id_hex, key_b64) = rest.split_once('+').unwrap_or((rest, ""));
        let id = parse_key_id(id_hex).ok_or(KeyError::Malformed("key ID must be 8 hex digits"))?;
        let key = BASE64
            .decode(key_b64)
            .map_err(|_| KeyError::Malformed("key is not standard base64"))?;
        check_name(name)?;
        if key.is_empty() {
            return Err(KeyError::Malformed("key is empty"));
        }
        let computed = key_id(name, &key);
        if id != computed {
            return Err(KeyError::KeyIdMismatch {
                given: id,
                computed,
            });
        }
        if key[0] != ALG_ED25519 {
            return Err(KeyError::UnknownAlgorithm(key[0]));
        }
        let public: [u8; 32] = key[1..]
            .try_into()
            .map_err(|_| KeyError::Malformed("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| KeyError::Malformed("not an Ed25519 public key"))?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The verifier key for a raw Ed25519 public key.
    pub fn from_public_key(name: &str, public: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public)
            .map_err(|_| KeyError::Malformed("not an Ed25519 public key"))?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id: ed25519_key_id(name, public),
            key,
        })
    }

    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key ID.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `sig` is a valid Ed25519 signature of `msg` (Go's rules: a
    /// signature that is not 64 bytes is simply invalid).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match ed25519_dalek::Signature::from_slice(sig) {
            Ok(sig) => self.key.verify(msg, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, BASE64.encode(k))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// A signer key: name, key ID and Ed25519 private key.
///
/// Its string form (Go's) is
/// `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ 32-byte seed)>`.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    id: u32,
    key: SigningKey,
}

/// `PRIVATE+KEY+<name>+<hex key ID>+<base64(type ‖ seed)>`: the inverse of
/// [`split_signer_key`].
pub(crate) fn format_signer_key(name: &str, id: u32, alg: u8, seed: &[u8; 32]) -> String {
    let mut k = vec![alg];
    k.extend_from_slice(seed);
    format!("PRIVATE+KEY+{name}+{id:08x}+{}", BASE64.encode(k))
}

/// Splits `PRIVATE+KEY+<name>+<hex key ID>+<base64(type ‖ 32-byte seed)>`
/// (at the first four `+` only) into name, key ID, type byte and seed,
/// checking the shape and that the type is one of `types`; the caller
/// checks the key ID.
pub(crate) fn split_signer_key<'a>(
    skey: &'a str,
    types: &[u8],
) -> Result<(&'a str, u32, u8, [u8; 32]), KeyError> {
    let mut parts = skey.splitn(5, '+');
    let (p, k, name, id_hex, key_b64) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if p != "PRIVATE" || k != "KEY" {
        return Err(KeyError::Malformed("signer keys start with PRIVATE+KEY+"));
    }
    let id = parse_key_id(id_hex).ok_or(KeyError::Malformed("key ID must be 8 hex digits"))?;
    check_name(name)?;
    let key = BASE64
        .decode(key_b64)
        .map_err(|_| KeyError::Malformed("key is not standard base64"))?;
    let (&alg, seed) = key
        .split_first()
        .ok_or(KeyError::Malformed("key is empty"))?;
    if !types.contains(&alg) {
        return Err(KeyError::UnknownAlgorithm(alg));
    }
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| KeyError::Malformed("an Ed25519 seed is 32 bytes"))?;
    Ok((name, id, alg, seed))
}

impl SignerKey {
    /// A signer key from a 32-byte Ed25519 seed (the caller supplies the
    /// randomness, e.g. from the OS; this crate does no I/O).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(SignerKey {
            name: name.to_owned(),
            id: ed25519_key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses a signer key string (splits at the first four `+` only).
    pub fn parse(skey: &str) -> Result<Self, KeyError> {
        let (name, id, _, seed) = split_signer_key(skey, &[ALG_ED25519])?;
        let signer = Self::from_seed(name, &seed)?;
        if signer.id != id {
            return Err(KeyError::KeyIdMismatch {
                given: id,
                computed: signer.id,
            });
        }
        Ok(signer)
    }

    /// The signer key string. It contains the private key: store it with
    /// care (file mode 0600) and never log it.
    pub fn to_skey_string(&self) -> String {
        format_signer_key(&self.name, self.id, ALG_ED25519, self.key.as_bytes())
    }

    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key ID.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The Ed25519 signature of `msg` (deterministic).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}+{:08x}+<redacted>)", self.name, self.id)
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID (the first 4 bytes of the decoded base64).
    pub key_id: u32,
    /// The signature proper (the rest of the decoded base64).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line as it appears in a note, with its final newline.
    pub fn to_line(&self) -> String {
        let mut b = self.key_id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(b))
    }

    /// Base64 of key ID and signature, as on the line.
    pub fn to_base64(&self) -> String {
        let mut b = self.key_id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.signature);
        BASE64.encode(b)
    }
}

/// A set of trusted verifier keys.
#[derive(Debug, Clone, Default)]
pub struct Verifiers {
    keys: Vec<VerifierKey>,
}

impl Verifiers {
    /// Trusts these keys. Several keys may share a name (key rotation).
    pub fn new(keys: impl IntoIterator<Item = VerifierKey>) -> Self {
        Verifiers {
            keys: keys.into_iter().collect(),
        }
    }

    /// Adds a trusted key.
    pub fn push(&mut self, key: VerifierKey) {
        self.keys.push(key);
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    fn lookup(&self, name: &str, key_id: u32) -> Result<Option<&VerifierKey>, NoteError> {
        let mut found = self
            .keys
            .iter()
            .filter(|k| k.name == name && k.id == key_id);
        let first = found.next();
        if first.is_some() && found.any(|k| Some(k) != first) {
            return Err(NoteError::AmbiguousKey {
                name: name.to_owned(),
                key_id,
            });
        }
        Ok(first)
    }
}

/// A note: text and signature lines (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// A note that passed [`Note::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text.
    pub text: String,
    /// Signatures verified by trusted keys, in input order, one per key.
    pub verified: Vec<NoteSignature>,
    /// Signatures from keys that are not trusted, in input order, identical
    /// lines once.
    pub unverified: Vec<NoteSignature>,
}

fn check_chars(s: &str) -> bool {
    !s.chars().any(|c| c < ' ' && c != '\n')
}

impl Note {
    /// A note with `text` and no signatures yet. The text must end in a
    /// newline and contain no control characters other than newline.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::BadText("a note text ends with a newline"));
        }
        if !check_chars(text) {
            return Err(NoteError::BadText("control characters other than newline"));
        }
        if text.len() > MAX_NOTE_LEN {
            return Err(NoteError::BadText("too long"));
        }
        Ok(Note {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// The note text (everything signed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line by `signer` after the existing ones, replacing an
    /// existing line by the same key (name and ID).
    pub fn sign(&mut self, signer: &SignerKey) {
        self.signatures
            .retain(|s| !(s.name == signer.name && s.key_id == signer.id));
        self.signatures.push(NoteSignature {
            name: signer.name.clone(),
            key_id: signer.id,
            signature: signer.sign(self.text.as_bytes()).to_vec(),
        });
    }

    /// Adds an existing signature line (e.g. a witness cosignature).
    pub fn add_signature(&mut self, sig: NoteSignature) -> Result<(), NoteError> {
        if !is_valid_key_name(&sig.name) {
            return Err(NoteError::BadText("invalid key name in signature"));
        }
        self.signatures.push(sig);
        Ok(())
    }

    /// The encoded note: text, empty line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone().into_bytes();
        out.push(b'\n');
        for s in &self.signatures {
            out.extend_from_slice(s.to_line().as_bytes());
        }
        out
    }

    /// Parses a signed note without verifying anything.
    pub fn parse(msg: &[u8]) -> Result<Self, NoteError> {
        use NoteError::Malformed;
        if msg.len() > MAX_NOTE_LEN {
            return Err(Malformed("longer than 1 MB"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| Malformed("not valid UTF-8"))?;
        if !check_chars(msg) {
            return Err(Malformed("control characters other than newline"));
        }
        let split = msg
            .rfind("\n\n")
            .ok_or(Malformed("no empty line before the signatures"))?;
        let (text, sigs) = (&msg[..=split], &msg[split + 2..]);
        if sigs.is_empty() {
            return Err(Malformed("no signatures"));
        }
        let sigs = sigs.strip_suffix('\n').ok_or(Malformed(
            "the last signature line does not end in a newline",
        ))?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            let line = line.strip_prefix(SIG_PREFIX).ok_or(Malformed(
                "a signature line does not start with an em dash and a space",
            ))?;
            let (name, b64) = line.split_once(' ').unwrap_or((line, ""));
            if !is_valid_key_name(name) {
                return Err(Malformed("invalid key name on a signature line"));
            }
            if b64.is_empty() {
                return Err(Malformed("missing signature"));
            }
            let raw = BASE64
                .decode(b64)
                .map_err(|_| Malformed("signature is not standard base64"))?;
            if raw.len() < 5 {
                return Err(Malformed("signature shorter than 5 bytes"));
            }
            if signatures.len() == MAX_SIGNATURES {
                return Err(Malformed("more than 100 signatures"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
                signature: raw[4..].to_vec(),
            });
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Parses and verifies a signed note against trusted keys.
    ///
    /// Accepts when at least one line comes from a trusted key (name and key
    /// ID both match) and every such line verifies. A failing trusted line
    /// rejects the note even if another verifies (the spec's SHOULD).
    pub fn open(msg: &[u8], trusted: &Verifiers) -> Result<OpenedNote, NoteError> {
        Self::parse(msg)?.verify(trusted)
    }

    /// Verifies a parsed note; see [`Note::open`].
    pub fn verify(&self, trusted: &Verifiers) -> Result<OpenedNote, NoteError> {
        let mut verified: Vec<NoteSignature> = Vec::new();
        let mut unverified: Vec<NoteSignature> = Vec::new();
        for sig in &self.signatures {
            match trusted.lookup(&sig.name, sig.key_id)? {
                Some(key) => {
                    if !key.verify(self.text.as_bytes(), &sig.signature) {
                        return Err(NoteError::InvalidSignature {
                            name: sig.name.clone(),
                            key_id: sig.key_id,
                        });
                    }
                    if !verified
                        .iter()
                        .any(|v| v.name == sig.name && v.key_id == sig.key_id)
                    {
                        verified.push(sig.clone());
                    }
                }
                None => {
                    if !unverified.contains(sig) {
                        unverified.push(sig.clone());
                    }
                }
            }
        }
        if verified.is_empty() {
            return Err(NoteError::UnknownSigner);
        }
        Ok(OpenedNote {
            text: self.text.clone(),
            verified,
            unverified,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skey_round_trip_and_debug_is_redacted() {
        let s = SignerKey::from_seed("example.com/log", &[7; 32]).unwrap();
        let back = SignerKey::parse(&s.to_skey_string()).unwrap();
        assert_eq!(back.verifier(), s.verifier());
        assert!(!format!("{s:?}").contains(&BASE64.encode([7u8; 32])[..10]));
        let v = VerifierKey::parse(&s.verifier().to_string()).unwrap();
        assert_eq!(v, s.verifier());
    }

    #[test]
    fn sign_then_open() {
        let s = SignerKey::from_seed("example.com/log", &[1; 32]).unwrap();
        let mut n = Note::new("hello\n").unwrap();
        n.sign(&s);
        let opened = Note::open(&n.to_bytes(), &Verifiers::new([s.verifier()])).unwrap();
        assert_eq!(opened.text, "hello\n");
        assert_eq!(opened.verified.len(), 1);
        assert!(Note::new("no newline").is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(SignerKey::from_seed("a b", &[1; 32]).is_err());
        assert!(SignerKey::from_seed("a+b", &[1; 32]).is_err());
        assert!(SignerKey::from_seed("", &[1; 32]).is_err());
        assert!(VerifierKey::parse("name+0000000+AA==").is_err());
        assert!(VerifierKey::parse("name++0000000+AA==").is_err());
    }
}
