//! Byte-level helpers the stores' formats share (the metric WAL, chunks and
//! blocks; the log WAL, blocks and segments): LEB128
//! varints, zigzag, length-prefixed strings, and a bounds-checked reader
//! whose errors say what was being read.

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

/// Appends a string as `uvarint len | bytes`.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends bytes as `uvarint len | bytes`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// A cursor over a byte slice; every read fails (never panics) on short
/// or malformed input with a message naming what was read.
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

    pub fn pos(&self) -> usize {
        self.pos
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

    pub fn u32v(&mut self, what: &str) -> DecodeResult<u32> {
        let v = self.uvarint(what)?;
        u32::try_from(v).map_err(|_| format!("{what} {v} does not fit 32 bits"))
    }

    pub fn usize_bounded(&mut self, max: usize, what: &str) -> DecodeResult<usize> {
        let v = self.uvarint(what)?;
        if v > max as u64 {
            return Err(format!("{what} {v} exceeds the limit {max}"));
        }
        Ok(v as usize)
    }

    /// `uvarint len | bytes`, the length checked against what is left.
    pub fn len_bytes(&mut self, what: &str) -> DecodeResult<&'a [u8]> {
        let n = self.usize_bounded(self.remaining(), what)?;
        self.bytes(n, what)
    }

    pub fn str(&mut self, what: &str) -> DecodeResult<&'a str> {
        let b = self.len_bytes(what)?;
        std::str::from_utf8(b).map_err(|e| format!("{what} is not UTF-8: {e}"))
    }

    pub fn f64(&mut self, what: &str) -> DecodeResult<f64> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
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
        let mut r = Reader::new(&out);
        for v in vals {
            assert_eq!(r.varint("x").unwrap(), v);
            assert_eq!(r.uvarint("x").unwrap(), v as u64);
        }
        assert!(r.is_empty());
        assert!(r.u8("tail").unwrap_err().contains("tail"));
    }

    #[test]
    fn length_prefixed_bytes_and_strings_round_trip_and_are_bounded() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"xyz");
        put_str(&mut out, "héllo");
        put_f64(&mut out, -0.5);
        let mut r = Reader::new(&out);
        assert_eq!(r.len_bytes("b").unwrap(), b"xyz");
        assert_eq!(r.str("s").unwrap(), "héllo");
        assert_eq!(r.f64("f").unwrap(), -0.5);
        assert!(r.is_empty());
        // A length past the end is refused, not read.
        let mut short = Vec::new();
        put_uvarint(&mut short, 10);
        short.extend_from_slice(b"abc");
        assert!(
            Reader::new(&short)
                .len_bytes("b")
                .unwrap_err()
                .contains("b 10")
        );
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let buf = [0xffu8; 11];
        assert!(Reader::new(&buf).uvarint("v").is_err());
    }
}
