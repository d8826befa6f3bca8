//! Checksummed record framing.
//!
//! ```text
//! +----------------+----------------+=====================+
//! | len: u32 LE    | crc: u32 LE    | payload (len bytes) |
//! +----------------+----------------+=====================+
//! ```
//!
//! `crc` is CRC-32 (IEEE, as computed by `crc32fast`) of the payload only.
//! A zero length is invalid: a region of zeros (what a file system may show
//! after a crash extended a file) never parses as a record.
//!
//! [`scan`] walks a byte slice record by record and stops at the first bad
//! frame. It then looks past it: if no valid frame follows, the bad bytes
//! are a torn tail ([`ScanEnd::Torn`], safe to truncate); if a valid frame
//! follows, data after damage would be lost by truncating, so it reports
//! [`ScanEnd::Corrupt`] and the caller refuses to guess.

/// Bytes of framing before each payload.
pub const HEADER_LEN: usize = 8;

/// The checksum used by frames (CRC-32/IEEE), for callers that checksum
/// their own headers the same way.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Appends one framed record to `out`.
///
/// Returns `Err` (and appends nothing) if the payload is empty or longer
/// than `u32::MAX` bytes.
pub fn encode_record(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLong(payload.len()))?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Why a payload cannot be framed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("cannot frame an empty record")]
    Empty,
    #[error("record of {0} bytes is longer than the 4 GiB frame limit")]
    TooLong(usize),
}

/// One record found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the record's frame header within the scanned slice.
    pub offset: usize,
    pub payload: &'a [u8],
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// Bytes from `good_end` on are a torn or garbage tail: no valid record
    /// follows them. Truncating to `good_end` loses nothing that was whole.
    Torn { good_end: usize, reason: String },
    /// The frame at `offset` is bad but a valid frame follows at `next_valid`:
    /// damage in the middle, not a torn tail.
    Corrupt {
        offset: usize,
        next_valid: usize,
        reason: String,
    },
}

/// Iterator over the records of a byte slice; see the module doc.
///
/// After the iterator returns `None`, [`Records::end`] says why.
#[derive(Debug)]
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
    end: Option<ScanEnd>,
}

/// Scans `buf` for records whose payload is at most `max_len` bytes
/// (a larger length field counts as a bad frame).
pub fn scan(buf: &[u8], max_len: usize) -> Records<'_> {
    Records {
        buf,
        pos: 0,
        max_len,
        end: None,
    }
}

impl<'a> Records<'a> {
    /// Offset just past the last valid record returned so far.
    pub fn good_end(&self) -> usize {
        self.pos
    }

    /// How the scan ended; `None` while records remain.
    pub fn end(&self) -> Option<&ScanEnd> {
        self.end.as_ref()
    }

    /// Scans to the end and returns how it ended.
    pub fn finish(mut self) -> ScanEnd {
        while self.next().is_some() {}
        self.end.unwrap_or(ScanEnd::Clean)
    }
}

/// Checks the frame at `at`: `Ok(payload_len)` or why it is bad.
fn check_frame(buf: &[u8], at: usize, max_len: usize) -> Result<usize, String> {
    let rest = &buf[at..];
    let Some((hdr, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "frame header cut short ({} of {HEADER_LEN} bytes)",
            rest.len()
        ));
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *hdr;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if len == 0 {
        return Err("zero-length frame".into());
    }
    if len > max_len {
        return Err(format!("frame length {len} exceeds the limit {max_len}"));
    }
    let Some(payload) = body.get(..len) else {
        return Err(format!("payload cut short ({} of {len} bytes)", body.len()));
    };
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    Ok(len)
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.end.is_some() {
            return None;
        }
        if self.pos == self.buf.len() {
            self.end = Some(ScanEnd::Clean);
            return None;
        }
        match check_frame(self.buf, self.pos, self.max_len) {
            Ok(len) => {
                let offset = self.pos;
                let start = offset + HEADER_LEN;
                self.pos = start + len;
                Some(Record {
                    offset,
                    payload: &self.buf[start..start + len],
                })
            }
            Err(reason) => {
                let next_valid = (self.pos + 1..self.buf.len())
                    .find(|&at| check_frame(self.buf, at, self.max_len).is_ok());
                self.end = Some(match next_valid {
                    None => ScanEnd::Torn {
                        good_end: self.pos,
                        reason,
                    },
                    Some(next_valid) => ScanEnd::Corrupt {
                        offset: self.pos,
                        next_valid,
                        reason,
                    },
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_record(&mut out, p).unwrap();
        }
        out
    }

    fn payloads(buf: &[u8]) -> (Vec<Vec<u8>>, ScanEnd) {
        let mut it = scan(buf, 1 << 20);
        let got = it.by_ref().map(|r| r.payload.to_vec()).collect();
        (got, it.finish())
    }

    #[test]
    fn round_trip() {
        let buf = framed(&[b"a", b"bc", &[7u8; 1000]]);
        let (got, end) = payloads(&buf);
        assert_eq!(got, vec![b"a".to_vec(), b"bc".to_vec(), vec![7u8; 1000]]);
        assert_eq!(end, ScanEnd::Clean);
        let offs: Vec<usize> = scan(&buf, 1 << 20).map(|r| r.offset).collect();
        assert_eq!(offs, vec![0, 9, 19]);
    }

    #[test]
    fn empty_payload_is_refused() {
        let mut out = Vec::new();
        assert_eq!(encode_record(&mut out, b""), Err(FrameError::Empty));
        assert!(out.is_empty());
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let buf = framed(&[b"first", b"second record", b"third"]);
        let second_end = 8 + 5 + 8 + 13;
        for cut in 0..buf.len() {
            let (got, end) = payloads(&buf[..cut]);
            let whole = got.len();
            let expect_end = [0, 13, second_end, buf.len()][whole];
            if cut == expect_end {
                assert_eq!(end, ScanEnd::Clean, "cut {cut}");
            } else {
                match end {
                    ScanEnd::Torn { good_end, .. } => assert_eq!(good_end, expect_end, "cut {cut}"),
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn zeros_and_garbage_after_records_are_torn() {
        let mut buf = framed(&[b"one", b"two"]);
        let good = buf.len();
        buf.extend_from_slice(&[0u8; 4096]);
        assert!(matches!(payloads(&buf).1, ScanEnd::Torn { good_end, .. } if good_end == good));
        buf.truncate(good);
        buf.extend_from_slice(b"\xff\xff\x00\x00garbage garbage");
        assert!(matches!(payloads(&buf).1, ScanEnd::Torn { good_end, .. } if good_end == good));
    }

    #[test]
    fn damage_before_a_valid_record_is_corruption() {
        let mut buf = framed(&[b"one", b"two two", b"three"]);
        buf[8 + 3 + 8 + 2] ^= 0x40; // flip a bit in "two two"
        let (got, end) = payloads(&buf);
        assert_eq!(got, vec![b"one".to_vec()]);
        match end {
            ScanEnd::Corrupt {
                offset,
                next_valid,
                reason,
            } => {
                assert_eq!(offset, 11);
                assert_eq!(next_valid, 11 + 8 + 7);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_length_is_a_bad_frame() {
        let buf = framed(&[&[1u8; 100]]);
        let mut it = scan(&buf, 99);
        assert!(it.next().is_none());
        assert!(matches!(it.finish(), ScanEnd::Torn { good_end: 0, .. }));
    }
}
