//! C2SP tlog-checkpoint: the note text a log signs to commit to a tree head.
//!
//! ```text
//! <origin>\n
//! <tree size, ASCII decimal>\n
//! <root hash, standard padded base64>\n
//! [<extension line>\n ...]
//! ```
//!
//! The origin is any non-empty line (conventionally a schema-less URL); the
//! size has no sign, spaces or leading zeros and is at most 2^63 − 1; the
//! root is exactly 32 bytes; extension lines are optional and non-empty.
//! [`open_checkpoint`] verifies the signed note, parses the text and checks
//! the origin, which the signature alone does not bind to the expected log.

use crate::hash::Hash;
use crate::note::{Note, NoteError, OpenedNote, SignerKey, Verifiers};

/// Largest tree size a checkpoint may carry (2^63 − 1).
pub const MAX_TREE_SIZE: u64 = i64::MAX as u64;

/// A tree head: origin, size, root and extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// Why a checkpoint text was refused (`line` is 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a checkpoint.
    #[error("malformed checkpoint, line {line}: {reason}")]
    Malformed {
        /// Line where the problem is.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The signed note did not open.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    /// A correctly signed checkpoint of another log.
    #[error("checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// Origin expected.
        expected: String,
        /// Origin in the checkpoint.
        found: String,
    },
}

fn malformed(line: usize, reason: &'static str) -> CheckpointError {
    CheckpointError::Malformed { line, reason }
}

fn check_line(line: usize, s: &str, what: &'static str) -> Result<(), CheckpointError> {
    if s.is_empty() {
        return Err(malformed(line, what));
    }
    if s.chars().any(|c| c < ' ') {
        return Err(malformed(line, "control characters"));
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint without extension lines. The origin must be a non-empty
    /// line and `size` at most [`MAX_TREE_SIZE`].
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        check_line(1, origin, "empty origin")?;
        if size > MAX_TREE_SIZE {
            return Err(malformed(2, "tree size above 2^63-1"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// Adds an extension line (non-empty, no newline).
    pub fn with_extension(mut self, line: &str) -> Result<Self, CheckpointError> {
        check_line(4 + self.extensions.len(), line, "empty extension line")?;
        self.extensions.push(line.to_owned());
        Ok(self)
    }

    /// The origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The extension lines, without newlines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint note text (without signatures).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or_else(|| {
            malformed(
                text.lines().count().max(1),
                "the text must end with a newline",
            )
        })?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(malformed(
                lines.len() + 1,
                "a checkpoint has at least 3 lines",
            ));
        }
        check_line(1, lines[0], "empty origin")?;
        let size_str = lines[1];
        let canonical = !size_str.is_empty()
            && size_str.bytes().all(|b| b.is_ascii_digit())
            && (size_str == "0" || !size_str.starts_with('0'));
        if !canonical {
            return Err(malformed(
                2,
                "tree size must be ASCII decimal without sign, spaces or leading zeros",
            ));
        }
        let size: u64 = size_str
            .parse()
            .map_err(|_| malformed(2, "tree size above 2^63-1"))?;
        let root = Hash::from_base64(lines[2])
            .map_err(|_| malformed(3, "root hash must be standard padded base64 of 32 bytes"))?;
        let mut cp = Checkpoint::new(lines[0], size, root)?;
        for e in &lines[3..] {
            cp = cp.with_extension(e)?;
        }
        Ok(cp)
    }

    /// Signs the checkpoint with each signer in order and returns the note
    /// bytes: what a log serves at `<prefix>/checkpoint`.
    pub fn sign(&self, signers: &[&SignerKey]) -> Result<Vec<u8>, CheckpointError> {
        let mut note = Note::new(&self.to_text())?;
        for s in signers {
            note.sign(s);
        }
        Ok(note.to_bytes())
    }
}

/// Opens a signed checkpoint: verifies the note against `trusted`, parses the
/// text, and checks that the origin is `origin`.
pub fn open_checkpoint(
    signed: &[u8],
    trusted: &Verifiers,
    origin: &str,
) -> Result<(Checkpoint, OpenedNote), CheckpointError> {
    let opened = Note::open(signed, trusted)?;
    let cp = Checkpoint::parse(&opened.text)?;
    if cp.origin != origin {
        return Err(CheckpointError::WrongOrigin {
            expected: origin.to_owned(),
            found: cp.origin,
        });
    }
    Ok((cp, opened))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_extensions() {
        let cp = Checkpoint::new("example.com/log", 5, Hash([3; 32]))
            .unwrap()
            .with_extension("a b")
            .unwrap();
        assert_eq!(Checkpoint::parse(&cp.to_text()).unwrap(), cp);
    }

    #[test]
    fn sizes_out_of_range() {
        let root = Hash([0; 32]).to_base64();
        assert!(Checkpoint::parse(&format!("o\n9223372036854775808\n{root}\n")).is_err());
        assert!(Checkpoint::parse(&format!("o\n99999999999999999999\n{root}\n")).is_err());
        assert!(Checkpoint::new("o", u64::MAX, Hash([0; 32])).is_err());
        assert!(Checkpoint::new("a\nb", 1, Hash([0; 32])).is_err());
    }
}
