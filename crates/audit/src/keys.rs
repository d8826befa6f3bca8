//! The checkpoint signing keys of a data directory: the current signer
//! (`signing-key`, private, mode 0600), every public key the directory
//! ever signed with and when each was in use (`signing-keys`), and key
//! rotation that a crash at any point leaves either undone or completed.
//!
//! ```text
//! signing-key         PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>\n      (one line)
//! signing-keys        <vkey> <first use, RFC 3339> <last use, RFC 3339 | ->\n  (one line per key, oldest first)
//! signing-key.new     the next signer key while a rotation is in progress
//! ```
//!
//! "First use" is when the key became the signing key, "last use" when it
//! was replaced (`-` while it is the current one): every checkpoint a key
//! signed was signed between the two.
//!
//! # Rotation, and crashes
//!
//! 1. The new key is written to `signing-key.new` (temp file, fsync,
//!    rename, directory fsync): the file exists only whole.
//! 2. `signing-keys` is replaced atomically with the old key closed and the
//!    new one appended.
//! 3. `signing-key.new` is renamed over `signing-key` (directory fsync);
//!    this destroys the old private key, whose public key stays listed.
//!
//! Until step 3 the old key signs; after it the new one, which step 2
//! already published. Opening a directory with a `signing-key.new` (a
//! crash after step 1) finishes steps 2 (if needed) and 3, so a rotation
//! that reached the disk is never lost and the signer is never a key the
//! list does not hold.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use merkle::{CosignatureSigner, CosignatureVerifier, SignerKey, VerifierKey};

use crate::error::AuditError;
use crate::event::{format_time_ns, parse_time_ns};
use crate::files;

/// One public key of the directory and when it was the signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub vkey: VerifierKey,
    /// Unix ns when it became the signing key.
    pub first_use_ns: i64,
    /// Unix ns when it was replaced; `None` for the current key.
    pub last_use_ns: Option<i64>,
}

/// The signer and the key history, as loaded by a writer.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub current: SignerKey,
    pub history: Vec<KeyRecord>,
}

impl Keyring {
    /// Every public key, oldest first (what verifiers of old checkpoints need).
    pub fn verifiers(&self) -> Vec<VerifierKey> {
        self.history.iter().map(|r| r.vkey.clone()).collect()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |e| AuditError::io(path, e)
}

fn random_seed(path: &Path) -> Result<[u8; 32], AuditError> {
    let mut seed = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
        .map_err(|e| AuditError::io(path, std::io::Error::other(format!("OS randomness: {e}"))))?;
    Ok(seed)
}

/// Writes a private key file (mode 0600) whole: temp file, fsync, rename,
/// directory fsync.
pub(crate) fn write_private(dir: &Path, name: &str, text: &str) -> Result<(), AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        diskio::fsync_dir(dir)
    };
    write().map_err(io(&path))
}

pub(crate) fn read_signer(path: &Path) -> Result<Option<SignerKey>, AuditError> {
    match fs::read_to_string(path) {
        Ok(text) => SignerKey::parse(text.trim_end())
            .map(Some)
            .map_err(|e| AuditError::corrupt(path, 0, format!("not a signer key: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(path, e)),
    }
}

/// Parses `signing-keys`.
fn parse_history(path: &Path, text: &str) -> Result<Vec<KeyRecord>, AuditError> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.lines() {
        let bad = |why: &str| AuditError::corrupt(path, offset, format!("{why}: {line:?}"));
        let mut f = line.split(' ');
        let (Some(vkey), Some(first), Some(last), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad("expected '<vkey> <first use> <last use|->'"));
        };
        let vkey = VerifierKey::parse(vkey).map_err(|e| bad(&format!("bad vkey ({e})")))?;
        let first_use_ns = parse_time_ns(first).ok_or_else(|| bad("bad first-use time"))?;
        let last_use_ns = match last {
            "-" => None,
            t => Some(parse_time_ns(t).ok_or_else(|| bad("bad last-use time"))?),
        };
        out.push(KeyRecord {
            vkey,
            first_use_ns,
            last_use_ns,
        });
        offset += line.len() as u64 + 1;
    }
    Ok(out)
}

fn render_history(history: &[KeyRecord]) -> String {
    history
        .iter()
        .map(|r| {
            format!(
                "{} {} {}\n",
                r.vkey,
                format_time_ns(r.first_use_ns),
                r.last_use_ns.map_or("-".to_string(), format_time_ns)
            )
        })
        .collect()
}

fn read_history(audit_dir: &Path) -> Result<Option<Vec<KeyRecord>>, AuditError> {
    let path = audit_dir.join(files::SIGNING_KEYS);
    match fs::read_to_string(&path) {
        Ok(text) => parse_history(&path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(path, e)),
    }
}

fn write_history(audit_dir: &Path, history: &[KeyRecord]) -> Result<(), AuditError> {
    let path = audit_dir.join(files::SIGNING_KEYS);
    diskio::atomic_write(
        &path,
        render_history(history).as_bytes(),
        &diskio::Faults::disabled(),
    )
    .map_err(io(&path))
}

/// `history` with `key` as the current key: appended (closing the open
/// record at `now_ns`) unless it is already the last record.
fn with_current(mut history: Vec<KeyRecord>, key: &VerifierKey, now_ns: i64) -> Vec<KeyRecord> {
    if history.last().is_some_and(|r| r.vkey == *key) {
        return history;
    }
    for r in history.iter_mut() {
        if r.last_use_ns.is_none() {
            r.last_use_ns = Some(now_ns);
        }
    }
    history.push(KeyRecord {
        vkey: key.clone(),
        first_use_ns: now_ns,
        last_use_ns: None,
    });
    history
}

/// Loads the keyring of `audit_dir` for writing, creating the key (named
/// `name`, seed from the OS) on first use and finishing a rotation a crash
/// interrupted. The caller holds the directory lock.
pub(crate) fn load_or_create(
    audit_dir: &Path,
    name: &str,
    now_ns: i64,
) -> Result<Keyring, AuditError> {
    let key_path = audit_dir.join(files::SIGNING_KEY);
    let next_path = audit_dir.join(files::SIGNING_KEY_NEW);
    if let Some(next) = read_signer(&next_path)? {
        tracing::warn!("finishing an interrupted signing key rotation");
        let history = with_current(
            read_history(audit_dir)?.unwrap_or_default(),
            &next.verifier(),
            now_ns,
        );
        write_history(audit_dir, &history)?;
        fs::rename(&next_path, &key_path).map_err(io(&key_path))?;
        diskio::fsync_dir(audit_dir).map_err(io(audit_dir))?;
    }
    let current = match read_signer(&key_path)? {
        Some(k) => k,
        None => {
            let key = SignerKey::from_seed(name, &random_seed(&key_path)?).map_err(|e| {
                AuditError::corrupt(&key_path, 0, format!("bad signer key name {name:?}: {e}"))
            })?;
            write_private(
                audit_dir,
                files::SIGNING_KEY,
                &(key.to_skey_string() + "\n"),
            )?;
            key
        }
    };
    let old = read_history(audit_dir)?;
    // A directory from before key rotation has no history: its one key is
    // dated by the key file (the best record of when it was created).
    let since = fs::metadata(&key_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(now_ns, |d| i64::try_from(d.as_nanos()).unwrap_or(now_ns));
    let history = with_current(
        old.clone().unwrap_or_default(),
        &current.verifier(),
        if old.is_none() { since } else { now_ns },
    );
    if old.as_ref() != Some(&history) {
        write_history(audit_dir, &history)?;
    }
    Ok(Keyring { current, history })
}

/// Rotates the signing key of `audit_dir` (see the module documentation):
/// a new key with the current key's name becomes the signer; the old
/// public key stays in the history. The caller holds the directory lock
/// (or the running log's keyring lock). Returns the new keyring.
pub(crate) fn rotate(audit_dir: &Path, ring: &Keyring, now_ns: i64) -> Result<Keyring, AuditError> {
    let next_path = audit_dir.join(files::SIGNING_KEY_NEW);
    let key_path = audit_dir.join(files::SIGNING_KEY);
    let next = SignerKey::from_seed(ring.current.name(), &random_seed(&next_path)?)
        .map_err(|e| AuditError::corrupt(&key_path, 0, e.to_string()))?;
    write_private(
        audit_dir,
        files::SIGNING_KEY_NEW,
        &(next.to_skey_string() + "\n"),
    )?;
    let history = with_current(ring.history.clone(), &next.verifier(), now_ns);
    write_history(audit_dir, &history)?;
    fs::rename(&next_path, &key_path).map_err(io(&key_path))?;
    diskio::fsync_dir(audit_dir).map_err(io(audit_dir))?;
    Ok(Keyring {
        current: next,
        history,
    })
}

/// Every public key of `audit_dir`, oldest first, without writing anything
/// (tools reading a data directory a server may be using). A directory
/// from before key rotation lists its one key, dated by the key file.
/// Empty when the directory has no key yet.
pub fn read_public(audit_dir: &Path) -> Result<Vec<KeyRecord>, AuditError> {
    if let Some(h) = read_history(audit_dir)? {
        return Ok(h);
    }
    let key_path = audit_dir.join(files::SIGNING_KEY);
    let Some(k) = read_signer(&key_path)? else {
        return Ok(Vec::new());
    };
    let since = fs::metadata(&key_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0));
    Ok(vec![KeyRecord {
        vkey: k.verifier(),
        first_use_ns: since,
        last_use_ns: None,
    }])
}

/// `flightdeck audit rotate-key`: rotates the key of a data directory no
/// server is using (takes its lock; [`AuditError::Locked`] when a server
/// runs). The next start re-signs every log's checkpoint with the new key.
pub fn rotate_offline(audit_dir: &Path, now_ns: i64) -> Result<KeyRecord, AuditError> {
    let _lock = diskio::DirLock::try_acquire(audit_dir, files::LOCK).map_err(|e| match e {
        diskio::LockError::Locked { path } => AuditError::Locked { path },
        diskio::LockError::Io { path, source } => AuditError::Io { path, source },
    })?;
    if read_signer(&audit_dir.join(files::SIGNING_KEY))?.is_none()
        && read_signer(&audit_dir.join(files::SIGNING_KEY_NEW))?.is_none()
    {
        return Err(AuditError::io(
            audit_dir.join(files::SIGNING_KEY),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no signing key to rotate: start the server on this directory once",
            ),
        ));
    }
    let ring = load_or_create(audit_dir, "unused", now_ns)?;
    let ring = rotate(audit_dir, &ring, now_ns)?;
    ring.history
        .last()
        .cloned()
        .ok_or_else(|| AuditError::corrupt(audit_dir, 0, "bug: rotation left no key"))
}

/// Creates a witness (cosigner) key file at `path` for
/// `flightdeck audit witness-keygen`: a new Ed25519 key named `name`, in
/// the `PRIVATE+KEY+<name>+<id>+<base64(0x04 ‖ seed)>` form, mode 0600.
/// Never overwrites an existing file. Returns the verifier key to give to
/// the servers (`audit.witnesses`) and to verifiers (`--witness`).
pub fn create_witness_key(path: &Path, name: &str) -> Result<CosignatureVerifier, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    let signer = CosignatureSigner::from_seed(name, &random_seed(path)?)
        .map_err(|e| AuditError::io(path, std::io::Error::other(e.to_string())))?;
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all((signer.to_skey_string() + "\n").as_bytes())?;
        f.sync_all()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            diskio::fsync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(io(path))?;
    Ok(signer.verifier())
}

/// Reads a witness key file (see [`create_witness_key`]; a signed-note
/// signer key of type 0x01 works too, as the same key in the cosigner role).
pub fn read_witness_key(path: &Path) -> Result<CosignatureSigner, AuditError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    CosignatureSigner::parse(text.trim_end())
        .map_err(|e| AuditError::corrupt(path, 0, format!("not a witness signer key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_key_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.key");
        let v = create_witness_key(&p, "witness.example/w1").unwrap();
        assert_eq!(read_witness_key(&p).unwrap().verifier(), v);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(create_witness_key(&p, "again").is_err(), "never overwrites");
        assert!(create_witness_key(&dir.path().join("x"), "bad name").is_err());
    }

    #[test]
    fn history_round_trips() {
        let k1 = SignerKey::from_seed("fd", &[1; 32]).unwrap().verifier();
        let k2 = SignerKey::from_seed("fd", &[2; 32]).unwrap().verifier();
        let h = with_current(with_current(Vec::new(), &k1, 10), &k2, 20);
        assert_eq!(h[0].last_use_ns, Some(20));
        assert_eq!(h[1].first_use_ns, 20);
        assert_eq!(with_current(h.clone(), &k2, 30), h);
        let text = render_history(&h);
        assert_eq!(parse_history(Path::new("x"), &text).unwrap(), h);
        assert!(parse_history(Path::new("x"), "nonsense\n").is_err());
    }

    #[test]
    fn an_interrupted_rotation_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let ring = load_or_create(dir.path(), "fd", 1_000).unwrap();
        assert_eq!(ring.history.len(), 1);
        // Crash after step 1: the next key is on disk, nothing else.
        let next = SignerKey::from_seed("fd", &[3; 32]).unwrap();
        write_private(
            dir.path(),
            files::SIGNING_KEY_NEW,
            &(next.to_skey_string() + "\n"),
        )
        .unwrap();
        let ring2 = load_or_create(dir.path(), "fd", 2_000).unwrap();
        assert_eq!(ring2.current.verifier(), next.verifier());
        assert_eq!(ring2.history.len(), 2);
        assert_eq!(ring2.history[0].vkey, ring.current.verifier());
        assert_eq!(ring2.history[0].last_use_ns, Some(2_000));
        assert!(!dir.path().join(files::SIGNING_KEY_NEW).exists());
        // Crash after step 2: the history has it already; finishing is idempotent.
        let third = SignerKey::from_seed("fd", &[4; 32]).unwrap();
        write_private(
            dir.path(),
            files::SIGNING_KEY_NEW,
            &(third.to_skey_string() + "\n"),
        )
        .unwrap();
        write_history(
            dir.path(),
            &with_current(ring2.history.clone(), &third.verifier(), 3_000),
        )
        .unwrap();
        let ring3 = load_or_create(dir.path(), "fd", 4_000).unwrap();
        assert_eq!(ring3.current.verifier(), third.verifier());
        assert_eq!(ring3.history.len(), 3);
        assert_eq!(ring3.history[2].first_use_ns, 3_000);
        assert_eq!(read_public(dir.path()).unwrap(), ring3.history);
        // A full rotation.
        let ring4 = rotate(dir.path(), &ring3, 5_000).unwrap();
        assert_eq!(ring4.history.len(), 4);
        assert_eq!(
            load_or_create(dir.path(), "fd", 6_000)
                .unwrap()
                .current
                .verifier(),
            ring4.current.verifier()
        );
    }
}
