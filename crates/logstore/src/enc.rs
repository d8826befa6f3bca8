//! Byte-level helpers of the WAL, block and segment formats: LEB128
//! varints, zigzag, length-prefixed strings, and a bounds-checked reader
//! whose errors name what was being read.

/// Appends an unsigned LEB128 varint.
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a zigzag-encoded signed varint.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends bytes as `uvarint len | bytes`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over a byte slice; every read fails (never panics) on short or
/// malformed input with a message naming what was read.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub type DecodeResult<T> = Result<T, String>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self, what: &str) -> DecodeResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| format!("unexpected end reading {what} at byte {}", self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> DecodeResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "unexpected end reading {what} ({n} bytes at byte {} of {})",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn uvarint(&mut self, what: &str) -> DecodeResult<u64> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8(what)?;
            if shift == 63 && b > 1 {
                return Err(format!(
                    "varint overflow reading {what} at byte {}",
                    self.pos
                ));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(format!(
                    "varint overflow reading {what} at byte {}",
                    self.pos
                ));
            }
        }
    }

    pub fn varint(&mut self, what: &str) -> DecodeResult<i64> {
        let u = self.uvarint(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A count or length no larger than `max`.
    pub fn usize_bounded(&mut self, max: usize, what: &str) -> DecodeResult<usize> {
        let v = self.uvarint(what)?;
        if v > max as u64 {
            return Err(format!("{what} {v} exceeds the limit {max}"));
        }
        Ok(v as usize)
    }

    pub fn len_bytes(&mut self, what: &str) -> DecodeResult<&'a [u8]> {
        let n = self.usize_bounded(self.remaining(), what)?;
        self.bytes(n, what)
    }

    pub fn str(&mut self, what: &str) -> DecodeResult<&'a str> {
        let b = self.len_bytes(what)?;
        std::str::from_utf8(b).map_err(|e| format!("{what} is not UTF-8: {e}"))
    }

    pub fn u32_le(&mut self, what: &str) -> DecodeResult<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64_le(&mut self, what: &str) -> DecodeResult<u64> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let vals = [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40];
        let mut out = Vec::new();
        for v in vals {
            put_varint(&mut out, v);
            put_uvarint(&mut out, v as u64);
        }
        put_bytes(&mut out, b"xyz");
        let mut r = Reader::new(&out);
        for v in vals {
            assert_eq!(r.varint("x").unwrap(), v);
            assert_eq!(r.uvarint("x").unwrap(), v as u64);
        }
        assert_eq!(r.len_bytes("b").unwrap(), b"xyz");
        assert!(r.is_empty());
        assert!(r.u8("tail").unwrap_err().contains("tail"));
        assert!(Reader::new(&[0xff; 11]).uvarint("v").is_err());
    }
}
