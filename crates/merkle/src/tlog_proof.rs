//! C2SP tlog-proof: a self-contained, offline-verifiable proof that an entry
//! is in a transparency log (c2sp.org/tlog-proof, version 1).
//!
//! ```text
//! c2sp.org/tlog-proof@v1\n
//! [extra <base64 of opaque extra data>\n]
//! index <leaf index, ASCII decimal without leading zeros>\n
//! <base64 of one inclusion-proof hash>\n     (zero or more; the leaf's sibling first)
//! \n
//! <the signed checkpoint note, verbatim>
//! ```
//!
//! The inclusion proof is RFC 6962's audit path in the tree of the
//! checkpoint's size. The extra data is not authenticated by anything in the
//! proof itself: an application that puts the record there (as Flightdeck's
//! audit receipts do) must hash it and check that hash against the proof.
//!
//! This module encodes and parses the text only; verification (signature,
//! origin, inclusion) is the caller's, with [`crate::open_checkpoint`] and
//! [`crate::verify_inclusion`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::hash::Hash;

/// The first line of every version-1 proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest proof [`TlogProof::parse`] accepts (a 64 KiB record as extra
/// data, 63 hashes and a checkpoint with many cosignatures fit easily).
pub const MAX_TLOG_PROOF_LEN: usize = 2 << 20;
/// Most proof hashes a tree of at most 2^63 − 1 leaves needs.
pub const MAX_PROOF_HASHES: usize = 63;

/// A parsed tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque extra data (the `extra` line), if any.
    pub extra: Option<Vec<u8>>,
    /// Index of the entry in the log.
    pub index: u64,
    /// Inclusion proof hashes, the leaf's sibling first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

/// Why a text is not a tlog-proof (`line` is 1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    /// The text breaks the format at `line`.
    #[error("malformed tlog-proof, line {line}: {reason}")]
    Malformed {
        /// Line where the problem is.
        line: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// Larger than [`MAX_TLOG_PROOF_LEN`].
    #[error("tlog-proof is {len} bytes, more than the {MAX_TLOG_PROOF_LEN} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
}

fn malformed(line: usize, reason: &'static str) -> TlogProofError {
    TlogProofError::Malformed { line, reason }
}

/// The next line of `rest` without its newline (advancing `rest` and the
/// 1-based `line_no`); `None` at the end of the data.
fn next_line<'a>(
    rest: &mut &'a [u8],
    line_no: &mut usize,
) -> Result<Option<(usize, &'a str)>, TlogProofError> {
    if rest.is_empty() {
        return Ok(None);
    }
    *line_no += 1;
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return Err(malformed(*line_no, "the line does not end with a newline"));
    };
    let line = std::str::from_utf8(&rest[..end]).map_err(|_| malformed(*line_no, "not UTF-8"))?;
    *rest = &rest[end + 1..];
    Ok(Some((*line_no, line)))
}

/// Whether `s` is ASCII decimal without sign, spaces or leading zeros.
fn canonical_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

impl TlogProof {
    /// The proof text. The checkpoint is appended as given (it ends with its
    /// signature lines' newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(
            64 + self.extra.as_ref().map_or(0, |e| e.len() * 4 / 3 + 8) + self.hashes.len() * 45,
        );
        out.push_str(TLOG_PROOF_HEADER);
        out.push('\n');
        if let Some(extra) = &self.extra {
            out.push_str("extra ");
            out.push_str(&BASE64.encode(extra));
            out.push('\n');
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.checkpoint);
        bytes
    }

    /// Parses a proof. Only the canonical spelling is accepted: the header,
    /// an optional `extra` line of standard padded base64, an `index` line
    /// in canonical decimal, at most [`MAX_PROOF_HASHES`] lines of base64
    /// 32-byte hashes, one empty line, and a non-empty checkpoint (which is
    /// not opened here).
    pub fn parse(data: &[u8]) -> Result<TlogProof, TlogProofError> {
        if data.len() > MAX_TLOG_PROOF_LEN {
            return Err(TlogProofError::TooLarge { len: data.len() });
        }
        let mut rest = data;
        let mut line_no = 0usize;
        let missing = |n: usize, what| move || malformed(n, what);

        let (n, header) =
            next_line(&mut rest, &mut line_no)?.ok_or_else(missing(1, "empty proof"))?;
        if header != TLOG_PROOF_HEADER {
            return Err(malformed(
                n,
                "the first line must be c2sp.org/tlog-proof@v1",
            ));
        }
        let (mut n, mut line) =
            next_line(&mut rest, &mut line_no)?.ok_or_else(missing(2, "missing the index line"))?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(
                BASE64
                    .decode(b64)
                    .map_err(|_| malformed(n, "extra data is not standard padded base64"))?,
            );
            (n, line) = next_line(&mut rest, &mut line_no)?
                .ok_or_else(missing(n + 1, "missing the index line"))?;
        }
        let index = line
            .strip_prefix("index ")
            .filter(|s| canonical_decimal(s))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                malformed(
                    n,
                    "expected `index <n>`, n in ASCII decimal without leading zeros",
                )
            })?;
        let mut hashes = Vec::new();
        loop {
            let (n, line) = next_line(&mut rest, &mut line_no)?.ok_or_else(missing(
                n + hashes.len() + 1,
                "missing the empty line before the checkpoint",
            ))?;
            if line.is_empty() {
                break;
            }
            if hashes.len() == MAX_PROOF_HASHES {
                return Err(malformed(n, "more than 63 proof hashes"));
            }
            let h = Hash::from_base64(line).map_err(|_| {
                malformed(n, "a proof hash must be standard padded base64 of 32 bytes")
            })?;
            hashes.push(h);
        }
        if rest.is_empty() {
            return Err(malformed(
                n + hashes.len() + 2,
                "missing the checkpoint after the empty line",
            ));
        }
        Ok(TlogProof {
            extra,
            index,
            hashes,
            checkpoint: rest.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP: &[u8] = b"example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\xe2\x80\x94 k c2ln\n";

    fn proof(extra: Option<&[u8]>, hashes: usize) -> TlogProof {
        TlogProof {
            extra: extra.map(<[u8]>::to_vec),
            index: 5,
            hashes: (0..hashes).map(|i| Hash([i as u8; 32])).collect(),
            checkpoint: CP.to_vec(),
        }
    }

    #[test]
    fn round_trips() {
        for p in [
            proof(None, 0),
            proof(Some(b"record"), 3),
            proof(Some(b""), 63),
        ] {
            assert_eq!(TlogProof::parse(&p.to_bytes()).unwrap(), p);
        }
    }

    #[test]
    fn spec_shape() {
        let text = String::from_utf8(proof(Some(b"hi"), 1).to_bytes()).unwrap();
        assert!(
            text.starts_with(&format!(
                "c2sp.org/tlog-proof@v1\nextra aGk=\nindex 5\n{}\n\nexample.com/log\n",
                Hash([0; 32]).to_base64()
            )),
            "{text}"
        );
    }

    fn check_bad(text: &[u8], line: usize, reason_part: &str) {
        match TlogProof::parse(text) {
            Err(TlogProofError::Malformed { line: l, reason }) => {
                assert_eq!(l, line, "{reason}");
                assert!(reason.contains(reason_part), "{reason}");
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn rejects_what_is_not_canonical() {
        let h = Hash([1; 32]).to_base64();
        let cp = std::str::from_utf8(CP).unwrap();
        check_bad(b"", 1, "empty");
        check_bad(b"c2sp.org/tlog-proof@v2\nindex 0\n\nx\n", 1, "first line");
        check_bad(b"c2sp.org/tlog-proof@v1", 1, "newline");
        check_bad(b"c2sp.org/tlog-proof@v1\n", 2, "index line");
        check_bad(
            b"c2sp.org/tlog-proof@v1\nindex 01\n\nx\n",
            2,
            "leading zeros",
        );
        check_bad(b"c2sp.org/tlog-proof@v1\nindex -1\n\nx\n", 2, "index");
        check_bad(
            b"c2sp.org/tlog-proof@v1\nindex 99999999999999999999\n\nx\n",
            2,
            "index",
        );
        check_bad(
            b"c2sp.org/tlog-proof@v1\nextra !!\nindex 0\n\nx\n",
            2,
            "base64",
        );
        check_bad(
            format!("c2sp.org/tlog-proof@v1\nindex 0\n{h}\nAAAA\n\n{cp}").as_bytes(),
            4,
            "32 bytes",
        );
        check_bad(
            format!("c2sp.org/tlog-proof@v1\nindex 0\n{h}\n").as_bytes(),
            4,
            "empty line",
        );
        check_bad(
            format!("c2sp.org/tlog-proof@v1\nindex 0\n{h}\n\n").as_bytes(),
            5,
            "missing the checkpoint",
        );
        let many = format!("{h}\n").repeat(64);
        check_bad(
            format!("c2sp.org/tlog-proof@v1\nindex 0\n{many}\n{cp}").as_bytes(),
            66,
            "more than 63",
        );
        assert!(matches!(
            TlogProof::parse(&vec![b'a'; MAX_TLOG_PROOF_LEN + 1]),
            Err(TlogProofError::TooLarge { .. })
        ));
    }
}
