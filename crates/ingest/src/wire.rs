//! A minimal protobuf wire-format reader for the hot path: remote write
//! 1.0's `WriteRequest` → `TimeSeries` → `Label`/`Sample`, read as borrowed
//! slices of the body so that a label costs exactly the two `String`s the
//! model keeps (prost's generic path allocated a `Bytes` per field, then a
//! `Vec`, then freed both: ~4× slower). Rare or nested messages
//! (histograms, exemplars, metadata) are handed to prost on their slice.
//!
//! Semantics follow protobuf: unknown fields are skipped, a known field
//! with the wrong wire type is an error, the last value of a scalar field
//! wins, groups (deprecated wire types 3/4) are skipped as unknown fields.
//! The decoders built on it are checked against prost on random and
//! mutated input (`tests/ingest/reference.rs`).

/// Why a body is not well-formed protobuf, with the byte position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError {
    pub what: &'static str,
    pub at: usize,
}

pub(crate) const VARINT: u8 = 0;
pub(crate) const I64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const START_GROUP: u8 = 3;
pub(crate) const END_GROUP: u8 = 4;
pub(crate) const I32: u8 = 5;

/// A cursor over one message's bytes; `base` is the message's offset in
/// the whole body (for error positions).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

/// One field's value.
pub(crate) enum Value<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8], usize),
    I32,
    /// A (skipped) group.
    Group,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    /// The position in this message's bytes (of the next field's key).
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn err(&self, what: &'static str) -> WireError {
        WireError {
            what,
            at: self.base + self.pos,
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        // one byte: field keys, lengths of labels and samples
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                // the 10th byte holds bit 63 only
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next varint of a packed repeated field; `None` at the end.
    pub fn varint_packed(&mut self) -> Result<Option<u64>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        self.varint().map(Some)
    }

    /// The next field number, wire type and value; `None` at the end.
    #[inline]
    pub fn next(&mut self) -> Result<Option<(u32, u8, Value<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(self.err("field key out of range"));
        }
        let field = (key >> 3) as u32;
        let wt = (key & 7) as u8;
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        let v = self.value(field, wt, 0)?;
        Ok(Some((field, wt, v)))
    }

    /// Reads the value of a field whose key was just read; `depth` counts
    /// the groups being skipped.
    fn value(&mut self, field: u32, wt: u8, depth: u32) -> Result<Value<'a>, WireError> {
        Ok(match wt {
            VARINT => Value::Varint(self.varint()?),
            I64 => {
                let end = self.pos + 8;
                let Some(b) = self.buf.get(self.pos..end) else {
                    return Err(self.err("truncated fixed64"));
                };
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.pos = end;
                Value::I64(u64::from_le_bytes(a))
            }
            LEN => {
                let n = self.varint()?;
                let start = self.pos;
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| start.checked_add(n))
                    .filter(|e| *e <= self.buf.len())
                    .ok_or_else(|| self.err("length-delimited field runs past its message"))?;
                self.pos = end;
                Value::Len(&self.buf[start..end], self.base + start)
            }
            I32 => {
                if self.pos + 4 > self.buf.len() {
                    return Err(self.err("truncated fixed32"));
                }
                self.pos += 4;
                Value::I32
            }
            START_GROUP => {
                // Deprecated groups: nothing here declares one, but an
                // unknown field may be one and is skipped like any other.
                if depth >= 100 {
                    return Err(self.err("groups nested too deeply"));
                }
                loop {
                    if self.pos >= self.buf.len() {
                        return Err(self.err("group without its end"));
                    }
                    let key = self.varint()?;
                    if key > u64::from(u32::MAX) || key >> 3 == 0 {
                        return Err(self.err("field key out of range"));
                    }
                    let (f, w) = ((key >> 3) as u32, (key & 7) as u8);
                    if w == END_GROUP {
                        if f != field {
                            return Err(self.err("group ends with another field number"));
                        }
                        break;
                    }
                    self.value(f, w, depth + 1)?;
                }
                Value::Group
            }
            END_GROUP => return Err(self.err("group end without its start")),
            _ => return Err(self.err("invalid wire type")),
        })
    }

    pub fn wrong_type(&self) -> WireError {
        self.err("field has the wrong wire type for its declared type")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_reports_positions() {
        // field 1 varint 150, field 2 len "hi", field 3 fixed64 1, field 4 fixed32
        let b = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0,
            0,
        ];
        let mut r = Reader::new(&b, 0);
        assert!(matches!(
            r.next(),
            Ok(Some((1, VARINT, Value::Varint(150))))
        ));
        assert!(matches!(r.next(), Ok(Some((2, LEN, Value::Len(b"hi", 5))))));
        assert!(matches!(r.next(), Ok(Some((3, I64, Value::I64(1))))));
        assert!(matches!(r.next(), Ok(Some((4, I32, Value::I32)))));
        assert!(matches!(r.next(), Ok(None)));
        let mut r = Reader::new(&[0x12, 0x05, b'a'], 10);
        assert_eq!(
            r.next().err(),
            Some(WireError {
                what: "length-delimited field runs past its message",
                at: 12
            })
        );
        let mut r = Reader::new(&[0x0b], 0); // group start, no end
        assert!(r.next().is_err());
        // group 1 holding field 2 = varint 5, then field 3 = varint 1
        let mut r = Reader::new(&[0x0b, 0x10, 0x05, 0x0c, 0x18, 0x01], 0);
        assert!(matches!(r.next(), Ok(Some((1, START_GROUP, Value::Group)))));
        assert!(matches!(r.next(), Ok(Some((3, VARINT, Value::Varint(1))))));
        let mut r = Reader::new(&[0x0b, 0x14], 0); // ends with field 2
        assert!(r.next().is_err());
        let mut v = vec![0x08];
        v.extend([0xff; 9]);
        v.push(0x02); // 10th byte > 1
        assert_eq!(
            Reader::new(&v, 0).next().err().map(|e| e.what),
            Some("varint overflows 64 bits")
        );
        let mut r = Reader::new(&[0x08, 0xff], 0);
        assert_eq!(r.next().err().map(|e| e.what), Some("truncated varint"));
    }
}
