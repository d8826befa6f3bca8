//! Compressed sample chunks, as kept in the head and in blocks.
//!
//! Two encodings (byte layouts in docs/format/tsdb-block.md):
//!
//! - [`Encoding::Xor`]: float samples, Gorilla-style — delta-of-delta
//!   timestamps in variable bit buckets and XOR-compressed float values
//!   (the value's bits XOR the previous value's, written as "same", "inside
//!   the previous meaningful window", or "new window"). Any bit pattern
//!   round-trips exactly, so stale NaNs are stored as they are.
//! - [`Encoding::Histogram`]: native histogram samples (integer and float,
//!   exponential and custom buckets) after a varint timestamp delta: whole
//!   when the layout (schema, spans, bounds) changes, else as differences
//!   to the previous sample. Exact; simpler and larger than Prometheus'
//!   bit-level encoding.
//! - [`Encoding::Dec`]: floats that are exact decimals, see [`encode_dec`].
//!
//! Both start with a big-endian `u16` sample count. Head chunks are closed
//! at [`SAMPLES_PER_CHUNK`] samples, Prometheus' figure.

use crate::enc::{DecodeResult, Reader, put_f64, put_uvarint, put_varint};
use model::{CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span};

/// Samples per head chunk before it is closed.
pub const SAMPLES_PER_CHUNK: u16 = 120;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    Xor = 1,
    Histogram = 2,
    /// Floats that are all exact decimals (`m × 10^-e`): delta-of-delta
    /// timestamps, and the integer mantissas as bit-packed deltas. Used in
    /// blocks where it is smaller than XOR.
    Dec = 3,
}

impl Encoding {
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Histogram),
            3 => Some(Encoding::Dec),
            _ => None,
        }
    }

    pub fn is_float(self) -> bool {
        self != Encoding::Histogram
    }
}

/// Decodes a float chunk of either float encoding.
///
/// `mint` is the chunk's first timestamp as kept beside it (in the head or
/// the block index); decimal chunks do not repeat it.
pub fn decode_floats(enc: Encoding, data: &[u8], mint: i64) -> DecodeResult<Vec<(i64, f64)>> {
    match enc {
        Encoding::Xor => XorIter::new(data)?.collect(),
        Encoding::Dec => decode_dec(data, mint),
        Encoding::Histogram => Err("a histogram chunk where floats were expected".into()),
    }
}

/// Decodes a float chunk of either float encoding straight into `out`, keeping only the
/// samples with `lo <= t <= hi` (the read path's variant of [`decode_floats`]: no
/// intermediate vector for XOR chunks).
pub fn decode_floats_into(
    enc: Encoding,
    data: &[u8],
    mint: i64,
    lo: i64,
    hi: i64,
    out: &mut Vec<model::Sample>,
) -> DecodeResult<()> {
    match enc {
        Encoding::Xor => {
            let mut it = XorIter::new(data)?;
            out.reserve(usize::from(it.total));
            while it.read < it.total {
                // The first two samples through the general step, the rest through the
                // inlined one (its only check per sample: the stream did not end early).
                let (t, v) = if it.read < 2 {
                    it.step()?
                } else if it.step_rest() {
                    (it.t, f64::from_bits(it.v_bits))
                } else {
                    return Err(it.rest_error());
                };
                if t > hi {
                    break;
                }
                if t >= lo {
                    out.push(model::Sample { t, v });
                }
            }
            Ok(())
        }
        Encoding::Dec => {
            out.reserve(usize::from(u16::from_be_bytes([
                *data.first().unwrap_or(&0),
                *data.get(1).unwrap_or(&0),
            ])));
            dec_each(data, mint, |t, v| {
                if t > hi {
                    return false;
                }
                if t >= lo {
                    out.push(model::Sample { t, v });
                }
                true
            })
        }
        Encoding::Histogram => Err("a histogram chunk where floats were expected".into()),
    }
}

// ---------------------------------------------------------------- decimal

const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0; // 2^53

/// The smallest `e` such that every value is exactly `m / 10^e` for an
/// integer `|m| <= 2^53` (bit for bit, so `-0.0`, NaN and infinities never
/// qualify), and the mantissas.
fn decimal_mantissas(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    'e: for (e, p) in POW10.iter().enumerate() {
        let mut ms = Vec::with_capacity(values.len());
        for v in values {
            let m = (v * p).round();
            // Through i64, so -0.0 (which would come back as +0.0) fails.
            if m.abs() > MAX_MANTISSA
                || m.is_nan()
                || ((m as i64) as f64 / p).to_bits() != v.to_bits()
            {
                continue 'e;
            }
            ms.push(m as i64);
        }
        return Some((e as u8, ms));
    }
    None
}

fn bits_needed(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

/// Packs `xs` (all `>= base`) as `base` (zigzag varint bits), a 7-bit width
/// and each `x - base` in that many bits.
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Packs `xs` as `base` = their minimum (zigzag varint bits), `g` = the
/// greatest common divisor of `x - base` (varint bits; page-sized gauges
/// move in steps of 4096), a 7-bit width, and each `(x - base) / g` in
/// that many bits.
fn put_packed(w: &mut BitWriter, out: &mut Vec<u8>, xs: &[i64]) {
    let base = xs.iter().copied().min().unwrap_or(0);
    let g = xs
        .iter()
        .fold(0u64, |g, x| gcd(g, x.wrapping_sub(base) as u64))
        .max(1);
    let width = xs
        .iter()
        .map(|x| bits_needed(x.wrapping_sub(base) as u64 / g))
        .max()
        .unwrap_or(0);
    write_uvarint_bits(w, out, zigzag(base));
    write_uvarint_bits(w, out, g);
    w.write(out, u64::from(width), 7);
    for x in xs {
        w.write(out, x.wrapping_sub(base) as u64 / g, width);
    }
}

/// Encodes samples as a [`Encoding::Dec`] chunk, or `None` if a value is
/// not an exact decimal (or there are more than `u16::MAX` samples).
///
/// Layout (a bit stream after the `u16` count): a "regular" bit, then
/// timestamps as in XOR except the first, which is the chunk's mint kept
/// beside the chunk (first delta, then — unless regular — delta-of-delta
/// buckets); then `e` (4 bits),
/// the first mantissa (zigzag varint bits), a mode bit (0: deltas, 1:
/// deltas of deltas, after the first delta as a zigzag varint), and the
/// deltas bit-packed (see `put_packed`).
pub fn encode_dec(samples: &[(i64, f64)]) -> Option<Vec<u8>> {
    let n = u16::try_from(samples.len()).ok()?;
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let (e, ms) = decimal_mantissas(&values)?;
    let mut out = n.to_be_bytes().to_vec();
    let mut w = BitWriter::default();
    // Timestamps: a bit saying whether they are evenly spaced (then only
    // the first and the spacing follow), else as an XOR chunk has them.
    let regular = samples.len() >= 2
        && samples
            .windows(2)
            .all(|p| p[1].0.wrapping_sub(p[0].0) == samples[1].0.wrapping_sub(samples[0].0));
    w.bit(&mut out, regular);
    let mut prev_t = 0i64;
    let mut prev_d = 0i64;
    for (i, (t, _)) in samples.iter().enumerate() {
        match i {
            // The first timestamp is the chunk's mint, kept beside it.
            0 => {}
            1 => {
                prev_d = t.wrapping_sub(prev_t);
                write_uvarint_bits(&mut w, &mut out, zigzag(prev_d));
            }
            _ if regular => break,
            _ => {
                let d = t.wrapping_sub(prev_t);
                write_dod(&mut w, &mut out, d.wrapping_sub(prev_d));
                prev_d = d;
            }
        }
        prev_t = *t;
    }
    if samples.is_empty() {
        return Some(out);
    }
    w.write(&mut out, u64::from(e), 4);
    write_uvarint_bits(&mut w, &mut out, zigzag(ms[0]));
    let deltas: Vec<i64> = ms.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    let dods: Vec<i64> = deltas.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    let spread = |xs: &[i64]| {
        let lo = xs.iter().copied().min().unwrap_or(0);
        xs.iter()
            .map(|x| bits_needed(x.wrapping_sub(lo) as u64))
            .max()
            .unwrap_or(0)
    };
    if deltas.len() >= 2 && spread(&dods) < spread(&deltas) {
        w.bit(&mut out, true);
        write_uvarint_bits(&mut w, &mut out, zigzag(deltas[0]));
        put_packed(&mut w, &mut out, &dods);
    } else {
        w.bit(&mut out, false);
        put_packed(&mut w, &mut out, &deltas);
    }
    Some(out)
}

fn write_dod(w: &mut BitWriter, out: &mut Vec<u8>, dod: i64) {
    if dod == 0 {
        w.bit(out, false);
    } else if fits(dod, 14) {
        w.write(out, 0b10, 2);
        w.write(out, dod as u64 & ((1 << 14) - 1), 14);
    } else if fits(dod, 17) {
        w.write(out, 0b110, 3);
        w.write(out, dod as u64 & ((1 << 17) - 1), 17);
    } else if fits(dod, 20) {
        w.write(out, 0b1110, 4);
        w.write(out, dod as u64 & ((1 << 20) - 1), 20);
    } else {
        w.write(out, 0b1111, 4);
        w.write(out, dod as u64, 64);
    }
}

#[inline(always)]
fn read_dod(r: &mut BitReader<'_>) -> DecodeResult<i64> {
    let d = dod_unchecked(r);
    r.consume(0)?;
    Ok(d)
}

/// A delta of delta: the prefix (up to four 1 bits, ended by a 0 below four) and the
/// bucket's bits, at most 24, from one window; unchecked (see [`BitReader::take`]).
#[inline(always)]
fn dod_unchecked(r: &mut BitReader<'_>) -> i64 {
    let w = r.peek();
    match (!w).leading_zeros() {
        0 => {
            r.pos += 1;
            0
        }
        1 => {
            r.pos += 2 + 14;
            sign_extend((w << 2) >> (64 - 14), 14)
        }
        2 => {
            r.pos += 3 + 17;
            sign_extend((w << 3) >> (64 - 17), 17)
        }
        3 => {
            r.pos += 4 + 20;
            sign_extend((w << 4) >> (64 - 20), 20)
        }
        _ => {
            r.pos += 4;
            r.take(64) as i64
        }
    }
}

/// Decodes a [`Encoding::Dec`] chunk.
/// `mint` is its first timestamp (not stored in the chunk).
pub fn decode_dec(chunk: &[u8], mint: i64) -> DecodeResult<Vec<(i64, f64)>> {
    let mut out = Vec::new();
    dec_each(chunk, mint, |t, v| {
        out.push((t, v));
        true
    })?;
    Ok(out)
}

/// The samples of a [`Encoding::Dec`] chunk, in order, to `f` until it returns `false`
/// (the rest of the chunk is then not read). Evenly spaced timestamps (nearly always)
/// are computed as they are needed, and the packed mantissas read as they are used: no
/// vector but the caller's.
fn dec_each(chunk: &[u8], mint: i64, mut f: impl FnMut(i64, f64) -> bool) -> DecodeResult<()> {
    if chunk.len() < 2 {
        return Err("dec chunk shorter than its header".into());
    }
    let n = usize::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    let mut r = BitReader {
        buf: &chunk[2..],
        pos: 0,
    };
    let regular = r.bit()?;
    let mut d = 0i64;
    if n >= 2 {
        d = unzigzag(r.uvarint()?);
    }
    // Uneven timestamps come before the values in the stream: read them all first.
    let mut uneven = Vec::new();
    if !regular && n > 0 {
        uneven.reserve(n);
        let mut t = mint;
        uneven.push(t);
        if n >= 2 {
            t = t.wrapping_add(d);
            uneven.push(t);
        }
        for _ in 2..n {
            d = d.wrapping_add(read_dod(&mut r)?);
            t = t.wrapping_add(d);
            uneven.push(t);
        }
    }
    let t_at = |i: usize| {
        if regular {
            mint.wrapping_add((i as i64).wrapping_mul(d))
        } else {
            uneven[i]
        }
    };
    if n == 0 {
        return Ok(());
    }
    let e = r.read(4)? as usize;
    let p = POW10[e];
    let mut m = unzigzag(r.uvarint()?);
    if !f(t_at(0), m as f64 / p) {
        return Ok(());
    }
    let deltas_of_deltas = r.bit()?;
    let mut delta = if deltas_of_deltas {
        unzigzag(r.uvarint()?)
    } else {
        0
    };
    // The packed numbers: `base + k × g` for a `width`-bit `k` each.
    let base = unzigzag(r.uvarint()?);
    let g = r.uvarint()?;
    let width = r.read(7)? as u8;
    if width > 64 {
        return Err("dec chunk: bit width over 64".into());
    }
    let mut packed =
        || -> DecodeResult<i64> { Ok(base.wrapping_add(r.read(width)?.wrapping_mul(g) as i64)) };
    if deltas_of_deltas {
        if n >= 2 {
            m = m.wrapping_add(delta);
            if !f(t_at(1), m as f64 / p) {
                return Ok(());
            }
        }
        for i in 2..n {
            delta = delta.wrapping_add(packed()?);
            m = m.wrapping_add(delta);
            if !f(t_at(i), m as f64 / p) {
                return Ok(());
            }
        }
    } else {
        for i in 1..n {
            m = m.wrapping_add(packed()?);
            if !f(t_at(i), m as f64 / p) {
                return Ok(());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- bits

/// Appends bits to a byte vector, most significant bit first.
#[derive(Clone, Debug, Default)]
struct BitWriter {
    /// Bits still free in the last byte of the buffer (0 = start a new byte).
    free: u8,
}

impl BitWriter {
    #[inline]
    fn write(&mut self, out: &mut Vec<u8>, v: u64, mut n: u8) {
        while n > 0 {
            if self.free == 0 {
                if out.len() == out.capacity() {
                    // Grow by a quarter, not by doubling: a million open
                    // chunks of a few hundred bytes would otherwise carry
                    // up to as much again as spare capacity.
                    out.reserve_exact((out.len() / 4).max(32));
                }
                out.push(0);
                self.free = 8;
            }
            let k = n.min(self.free);
            let bits = ((v >> (n - k)) & ((1u64 << k) - 1)) as u8;
            let last = out.len() - 1;
            out[last] |= bits << (self.free - k);
            self.free -= k;
            n -= k;
        }
    }

    #[inline]
    fn bit(&mut self, out: &mut Vec<u8>, b: bool) {
        self.write(out, u64::from(b), 1);
    }
}

struct BitReader<'a> {
    buf: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// The 64 bits from the position on, the first at the top; zeros past the end of the
    /// buffer. At least the top 57 are the stream's (the window starts at a byte).
    #[inline(always)]
    fn peek(&self) -> u64 {
        let byte = self.pos / 8;
        let w = match self.buf.get(byte..byte + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => self.peek_tail(byte),
        };
        w << (self.pos % 8)
    }

    /// [`BitReader::peek`] within the last 8 bytes: the rest padded with zeros.
    #[cold]
    #[inline(never)]
    fn peek_tail(&self, byte: usize) -> u64 {
        let mut b = [0u8; 8];
        if let Some(rest) = self.buf.get(byte..) {
            b[..rest.len()].copy_from_slice(rest);
        }
        u64::from_be_bytes(b)
    }

    /// Moves past `n` bits already looked at through [`BitReader::peek`]; an error if the
    /// stream does not have them (what was read from the padding is then thrown away).
    #[inline(always)]
    fn consume(&mut self, n: usize) -> DecodeResult<()> {
        self.pos += n;
        if self.pos > self.buf.len() * 8 {
            return Err("xor chunk: bit stream ends early".into());
        }
        Ok(())
    }

    /// The next `n` bits (`1 <= n <= 64`) as a number, unchecked: past the end they are
    /// zeros, and the caller checks the position once it is done.
    #[inline(always)]
    fn take(&mut self, n: u8) -> u64 {
        let n = u32::from(n);
        if n <= 57 {
            let v = self.peek() >> (64 - n);
            self.pos += n as usize;
            v
        } else {
            let hi = self.peek() >> 32;
            self.pos += 32;
            let lo = self.peek() >> (64 - (n - 32));
            self.pos += (n - 32) as usize;
            (hi << (n - 32)) | lo
        }
    }

    /// The next `n` bits (`n <= 64`) as a number.
    #[inline(always)]
    fn read(&mut self, n: u8) -> DecodeResult<u64> {
        match n {
            0 => Ok(0),
            1..=57 => {
                let v = self.peek() >> (64 - u32::from(n));
                self.consume(usize::from(n))?;
                Ok(v)
            }
            _ => {
                let hi = self.read(32)?;
                let lo = self.read(n - 32)?;
                Ok((hi << (n - 32)) | lo)
            }
        }
    }

    #[inline]
    fn bit(&mut self) -> DecodeResult<bool> {
        Ok(self.read(1)? == 1)
    }

    fn uvarint(&mut self) -> DecodeResult<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.read(8)? as u8;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err("xor chunk: varint overflow".into());
            }
        }
    }
}

fn write_uvarint_bits(w: &mut BitWriter, out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.write(out, (v & 0x7f) | 0x80, 8);
        v >>= 7;
    }
    w.write(out, v, 8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

// ---------------------------------------------------------------- xor

/// The appender of an open XOR chunk: the bytes so far and the state
/// needed to add the next sample (kept out of the bytes).
#[derive(Clone, Debug)]
pub struct XorAppender {
    bytes: Vec<u8>,
    w: BitWriter,
    count: u16,
    t: i64,
    t_delta: i64,
    v_bits: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        XorAppender {
            bytes: vec![0, 0],
            w: BitWriter::default(),
            count: 0,
            t: 0,
            t_delta: 0,
            v_bits: 0,
            leading: 0xff,
            trailing: 0,
        }
    }
}

impl XorAppender {
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The chunk's bytes, count header included (a consistent snapshot).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Memory held by the buffer.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Hands over the finished chunk's bytes (shrunk to fit).
    pub fn finish(self) -> Vec<u8> {
        let mut b = self.bytes;
        b.shrink_to_fit();
        b
    }

    /// Appends a sample; timestamps must not decrease (the caller checks).
    pub fn append(&mut self, t: i64, v: f64) {
        let out = &mut self.bytes;
        let vb = v.to_bits();
        match self.count {
            0 => {
                write_uvarint_bits(&mut self.w, out, zigzag(t));
                self.w.write(out, vb, 64);
            }
            1 => {
                let d = t.wrapping_sub(self.t);
                write_uvarint_bits(&mut self.w, out, zigzag(d));
                self.t_delta = d;
                self.write_value(vb);
            }
            _ => {
                let d = t.wrapping_sub(self.t);
                let dod = d.wrapping_sub(self.t_delta);
                write_dod(&mut self.w, &mut self.bytes, dod);
                self.t_delta = d;
                self.write_value(vb);
            }
        }
        self.t = t;
        self.v_bits = vb;
        self.count += 1;
        let n = self.count.to_be_bytes();
        self.bytes[0] = n[0];
        self.bytes[1] = n[1];
    }

    fn write_value(&mut self, vb: u64) {
        let out = &mut self.bytes;
        let x = vb ^ self.v_bits;
        if x == 0 {
            self.w.bit(out, false);
            return;
        }
        self.w.bit(out, true);
        let mut lead = x.leading_zeros() as u8;
        let trail = x.trailing_zeros() as u8;
        if lead >= 32 {
            lead = 31;
        }
        if self.leading != 0xff && lead >= self.leading && trail >= self.trailing {
            self.w.bit(out, false);
            let sig = 64 - self.leading - self.trailing;
            self.w.write(out, x >> self.trailing, sig);
        } else {
            self.leading = lead;
            self.trailing = trail;
            self.w.bit(out, true);
            self.w.write(out, u64::from(lead), 5);
            let sig = 64 - lead - trail;
            // 64 significant bits are written as 0 (6 bits cannot hold 64).
            self.w.write(out, u64::from(sig & 63), 6);
            self.w.write(out, x >> trail, sig);
        }
    }
}

fn fits(v: i64, bits: u32) -> bool {
    let lim = 1i64 << (bits - 1);
    v > -lim && v <= lim
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    // Encoded range is (-2^(b-1), 2^(b-1)]: values above 2^(b-1) are negative.
    let v = v as i64;
    if v > 1 << (bits - 1) {
        v - (1 << bits)
    } else {
        v
    }
}

/// Iterates the samples of an XOR chunk.
pub struct XorIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    t_delta: i64,
    v_bits: u64,
    leading: u8,
    trailing: u8,
    failed: bool,
}

impl<'a> XorIter<'a> {
    pub fn new(chunk: &'a [u8]) -> DecodeResult<XorIter<'a>> {
        if chunk.len() < 2 {
            return Err("xor chunk shorter than its header".into());
        }
        Ok(XorIter {
            r: BitReader {
                buf: &chunk[2..],
                pos: 0,
            },
            total: u16::from_be_bytes([chunk[0], chunk[1]]),
            read: 0,
            t: 0,
            t_delta: 0,
            v_bits: 0,
            leading: 0,
            trailing: 0,
            failed: false,
        })
    }

    #[inline(always)]
    fn step(&mut self) -> DecodeResult<(i64, f64)> {
        match self.read {
            0 => {
                self.t = unzigzag(self.r.uvarint()?);
                self.v_bits = self.r.read(64)?;
            }
            1 => {
                self.t_delta = unzigzag(self.r.uvarint()?);
                self.t = self.t.wrapping_add(self.t_delta);
                if !self.value_unchecked() || self.r.pos > self.r.buf.len() * 8 {
                    return Err(self.rest_error());
                }
            }
            _ => {
                if !self.step_rest() {
                    return Err(self.rest_error());
                }
                return Ok((self.t, f64::from_bits(self.v_bits)));
            }
        }
        self.read += 1;
        Ok((self.t, f64::from_bits(self.v_bits)))
    }

    /// Decodes a sample after the second: its delta of delta and its value, each field
    /// taken from one 64-bit look at the stream, with one check at the end instead of one
    /// per field. `false` when the stream ended before the sample did (what was read
    /// past the end, zeros, is then meaningless) or a value window is impossible: see
    /// [`XorIter::rest_error`].
    #[inline(always)]
    fn step_rest(&mut self) -> bool {
        let dod = dod_unchecked(&mut self.r);
        self.t_delta = self.t_delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.t_delta);
        if !self.value_unchecked() {
            return false;
        }
        self.read += 1;
        self.r.pos <= self.r.buf.len() * 8
    }

    /// A value: its control bits and a new window's sizes (13 bits at most) from one look,
    /// then the significant bits; unchecked but for an impossible window (`false`).
    #[inline(always)]
    fn value_unchecked(&mut self) -> bool {
        let r = &mut self.r;
        let w = r.peek();
        if w >> 63 == 0 {
            // The same value.
            r.pos += 1;
            return true;
        }
        if (w >> 62) & 1 == 1 {
            // A new window: 5 bits of leading zeros, 6 of significant bits (0 = 64).
            r.pos += 2 + 5 + 6;
            let leading = ((w >> 57) & 0x1f) as u8;
            let sig = match ((w >> 51) & 0x3f) as u8 {
                0 => 64,
                s => s,
            };
            if leading + sig > 64 {
                return false;
            }
            self.leading = leading;
            self.trailing = 64 - leading - sig;
        } else {
            r.pos += 2;
        }
        let x = r.take(64 - self.leading - self.trailing);
        self.v_bits ^= x << self.trailing;
        true
    }

    /// Why [`XorIter::step_rest`] failed.
    #[cold]
    fn rest_error(&self) -> String {
        if self.r.pos > self.r.buf.len() * 8 {
            "xor chunk: bit stream ends early".into()
        } else {
            "xor chunk: bad value window".into()
        }
    }
}

impl Iterator for XorIter<'_> {
    type Item = DecodeResult<(i64, f64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= self.total {
            return None;
        }
        let r = self.step();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

// ---------------------------------------------------------------- histograms

/// The appender of an open histogram chunk.
#[derive(Clone, Debug)]
pub struct HistAppender {
    bytes: Vec<u8>,
    count: u16,
    t: i64,
    prev: Option<HistogramValue>,
}

impl Default for HistAppender {
    fn default() -> Self {
        HistAppender {
            bytes: vec![0, 0],
            count: 0,
            t: 0,
            prev: None,
        }
    }
}

impl HistAppender {
    pub fn count(&self) -> u16 {
        self.count
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn finish(self) -> Vec<u8> {
        let mut b = self.bytes;
        b.shrink_to_fit();
        b
    }
    pub fn append(&mut self, t: i64, h: &HistogramValue) {
        put_varint(&mut self.bytes, t.wrapping_sub(self.t));
        match &self.prev {
            Some(p) if same_layout(p, h) => {
                self.bytes.push(HIST_DELTA);
                encode_hist_delta(&mut self.bytes, p, h);
            }
            _ => {
                self.bytes.push(HIST_FULL);
                encode_histogram(&mut self.bytes, h);
            }
        }
        self.prev = Some(h.clone());
        self.t = t;
        self.count += 1;
        let n = self.count.to_be_bytes();
        self.bytes[0] = n[0];
        self.bytes[1] = n[1];
    }
}

/// Iterates the samples of a histogram chunk.
pub struct HistIter<'a> {
    r: Reader<'a>,
    total: u16,
    read: u16,
    t: i64,
    prev: Option<HistogramValue>,
    failed: bool,
}

impl<'a> HistIter<'a> {
    pub fn new(chunk: &'a [u8]) -> DecodeResult<HistIter<'a>> {
        if chunk.len() < 2 {
            return Err("histogram chunk shorter than its header".into());
        }
        Ok(HistIter {
            r: Reader::new(&chunk[2..]),
            total: u16::from_be_bytes([chunk[0], chunk[1]]),
            read: 0,
            t: 0,
            prev: None,
            failed: false,
        })
    }
}

impl Iterator for HistIter<'_> {
    type Item = DecodeResult<(i64, HistogramValue)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= self.total {
            return None;
        }
        let r = (|| {
            let d = self.r.varint("histogram timestamp")?;
            self.t = self.t.wrapping_add(d);
            let h = match self.r.u8("histogram form")? {
                HIST_FULL => decode_histogram(&mut self.r)?,
                HIST_DELTA => {
                    let prev = self
                        .prev
                        .as_ref()
                        .ok_or("histogram delta without a previous sample")?;
                    decode_hist_delta(&mut self.r, prev)?
                }
                f => return Err(format!("unknown histogram form {f}")),
            };
            self.prev = Some(h.clone());
            Ok((self.t, h))
        })();
        self.read += 1;
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// A histogram sample written whole.
const HIST_FULL: u8 = 0;
/// A histogram sample written as the difference to the previous one,
/// whose layout (kind, schema, zero threshold, spans, custom bounds) it
/// shares.
const HIST_DELTA: u8 = 1;

fn f64s_same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn same_layout(a: &HistogramValue, b: &HistogramValue) -> bool {
    match (a, b) {
        (HistogramValue::Int(a), HistogramValue::Int(b)) => {
            a.schema == b.schema
                && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
                && a.positive_spans == b.positive_spans
                && a.negative_spans == b.negative_spans
                && a.positive_buckets.len() == b.positive_buckets.len()
                && a.negative_buckets.len() == b.negative_buckets.len()
                && f64s_same(&a.custom_values, &b.custom_values)
        }
        (HistogramValue::Float(a), HistogramValue::Float(b)) => {
            a.schema == b.schema
                && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
                && a.positive_spans == b.positive_spans
                && a.negative_spans == b.negative_spans
                && a.positive_buckets.len() == b.positive_buckets.len()
                && a.negative_buckets.len() == b.negative_buckets.len()
                && f64s_same(&a.custom_values, &b.custom_values)
        }
        _ => false,
    }
}

/// A float as the XOR with the previous one: `uvarint(x >> tz)` and, if
/// that is not 0, `tz` as a byte (`x` = XOR of the bits, `tz` its trailing
/// zeros). Close values share high bits, whole numbers low ones.
fn put_xor(out: &mut Vec<u8>, prev: f64, cur: f64) {
    let x = prev.to_bits() ^ cur.to_bits();
    if x == 0 {
        put_uvarint(out, 0);
        return;
    }
    let tz = x.trailing_zeros();
    put_uvarint(out, x >> tz);
    out.push(tz as u8);
}

fn get_xor(r: &mut Reader<'_>, prev: f64) -> DecodeResult<f64> {
    let m = r.uvarint("xor value")?;
    if m == 0 {
        return Ok(prev);
    }
    let tz = r.u8("xor shift")?;
    if tz > 63 || (m << tz) >> tz != m {
        return Err("bad xor value".into());
    }
    Ok(f64::from_bits(prev.to_bits() ^ (m << tz)))
}

fn encode_hist_delta(out: &mut Vec<u8>, prev: &HistogramValue, cur: &HistogramValue) {
    match (prev, cur) {
        (HistogramValue::Int(p), HistogramValue::Int(c)) => {
            out.push(hint_to_u8(c.counter_reset_hint));
            put_varint(out, (c.zero_count as i64).wrapping_sub(p.zero_count as i64));
            put_varint(out, (c.count as i64).wrapping_sub(p.count as i64));
            put_xor(out, p.sum, c.sum);
            for (pb, cb) in [
                (&p.positive_buckets, &c.positive_buckets),
                (&p.negative_buckets, &c.negative_buckets),
            ] {
                for (x, y) in pb.iter().zip(cb) {
                    put_varint(out, y.wrapping_sub(*x));
                }
            }
        }
        (HistogramValue::Float(p), HistogramValue::Float(c)) => {
            out.push(hint_to_u8(c.counter_reset_hint));
            put_xor(out, p.zero_count, c.zero_count);
            put_xor(out, p.count, c.count);
            put_xor(out, p.sum, c.sum);
            for (pb, cb) in [
                (&p.positive_buckets, &c.positive_buckets),
                (&p.negative_buckets, &c.negative_buckets),
            ] {
                for (x, y) in pb.iter().zip(cb) {
                    put_xor(out, *x, *y);
                }
            }
        }
        // Only called for the same layout, which implies the same kind.
        _ => unreachable!("bug: histogram delta across kinds"),
    }
}

fn decode_hist_delta(r: &mut Reader<'_>, prev: &HistogramValue) -> DecodeResult<HistogramValue> {
    let hint = hint_from_u8(r.u8("counter reset hint")?)?;
    Ok(match prev {
        HistogramValue::Int(p) => {
            let mut c = p.clone();
            c.counter_reset_hint = hint;
            c.zero_count = (p.zero_count as i64).wrapping_add(r.varint("zero count")?) as u64;
            c.count = (p.count as i64).wrapping_add(r.varint("count")?) as u64;
            c.sum = get_xor(r, p.sum)?;
            for b in c
                .positive_buckets
                .iter_mut()
                .chain(c.negative_buckets.iter_mut())
            {
                *b = b.wrapping_add(r.varint("bucket")?);
            }
            HistogramValue::Int(c)
        }
        HistogramValue::Float(p) => {
            let mut c = p.clone();
            c.counter_reset_hint = hint;
            c.zero_count = get_xor(r, p.zero_count)?;
            c.count = get_xor(r, p.count)?;
            c.sum = get_xor(r, p.sum)?;
            for b in c
                .positive_buckets
                .iter_mut()
                .chain(c.negative_buckets.iter_mut())
            {
                *b = get_xor(r, *b)?;
            }
            HistogramValue::Float(c)
        }
    })
}

fn hint_to_u8(h: CounterResetHint) -> u8 {
    match h {
        CounterResetHint::Unknown => 0,
        CounterResetHint::CounterReset => 1,
        CounterResetHint::NotCounterReset => 2,
        CounterResetHint::Gauge => 3,
    }
}

fn hint_from_u8(b: u8) -> DecodeResult<CounterResetHint> {
    Ok(match b {
        0 => CounterResetHint::Unknown,
        1 => CounterResetHint::CounterReset,
        2 => CounterResetHint::NotCounterReset,
        3 => CounterResetHint::Gauge,
        _ => return Err(format!("unknown counter reset hint {b}")),
    })
}

fn put_spans(out: &mut Vec<u8>, spans: &[Span]) {
    put_uvarint(out, spans.len() as u64);
    for s in spans {
        put_varint(out, i64::from(s.offset));
        put_uvarint(out, u64::from(s.length));
    }
}

fn get_spans(r: &mut Reader<'_>) -> DecodeResult<Vec<Span>> {
    let n = r.usize_bounded(r.remaining(), "span count")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let offset =
            i32::try_from(r.varint("span offset")?).map_err(|_| "span offset too large")?;
        let length = r.u32v("span length")?;
        v.push(Span { offset, length });
    }
    Ok(v)
}

/// Encodes one histogram value (layout in docs/format/tsdb-block.md).
pub fn encode_histogram(out: &mut Vec<u8>, h: &HistogramValue) {
    match h {
        HistogramValue::Int(h) => {
            out.push(0);
            out.push(hint_to_u8(h.counter_reset_hint));
            put_varint(out, i64::from(h.schema));
            put_f64(out, h.zero_threshold);
            put_uvarint(out, h.zero_count);
            put_uvarint(out, h.count);
            put_f64(out, h.sum);
            for (spans, buckets) in [
                (&h.positive_spans, &h.positive_buckets),
                (&h.negative_spans, &h.negative_buckets),
            ] {
                put_spans(out, spans);
                put_uvarint(out, buckets.len() as u64);
                for b in buckets {
                    put_varint(out, *b);
                }
            }
            put_custom(out, &h.custom_values);
        }
        HistogramValue::Float(h) => {
            out.push(1);
            out.push(hint_to_u8(h.counter_reset_hint));
            put_varint(out, i64::from(h.schema));
            put_f64(out, h.zero_threshold);
            put_f64(out, h.zero_count);
            put_f64(out, h.count);
            put_f64(out, h.sum);
            for (spans, buckets) in [
                (&h.positive_spans, &h.positive_buckets),
                (&h.negative_spans, &h.negative_buckets),
            ] {
                put_spans(out, spans);
                put_uvarint(out, buckets.len() as u64);
                for b in buckets {
                    put_f64(out, *b);
                }
            }
            put_custom(out, &h.custom_values);
        }
    }
}

fn put_custom(out: &mut Vec<u8>, c: &[f64]) {
    put_uvarint(out, c.len() as u64);
    for v in c {
        put_f64(out, *v);
    }
}

fn get_f64s(r: &mut Reader<'_>, what: &str) -> DecodeResult<Vec<f64>> {
    let n = r.usize_bounded(r.remaining() / 8, what)?;
    (0..n).map(|_| r.f64(what)).collect()
}

/// Decodes one histogram value written by [`encode_histogram`].
pub fn decode_histogram(r: &mut Reader<'_>) -> DecodeResult<HistogramValue> {
    let kind = r.u8("histogram kind")?;
    let hint = hint_from_u8(r.u8("counter reset hint")?)?;
    let schema = i32::try_from(r.varint("schema")?).map_err(|_| "schema out of range")?;
    let zero_threshold = r.f64("zero threshold")?;
    match kind {
        0 => {
            let zero_count = r.uvarint("zero count")?;
            let count = r.uvarint("count")?;
            let sum = r.f64("sum")?;
            let positive_spans = get_spans(r)?;
            let n = r.usize_bounded(r.remaining(), "bucket count")?;
            let positive_buckets = (0..n)
                .map(|_| r.varint("bucket"))
                .collect::<DecodeResult<_>>()?;
            let negative_spans = get_spans(r)?;
            let n = r.usize_bounded(r.remaining(), "bucket count")?;
            let negative_buckets = (0..n)
                .map(|_| r.varint("bucket"))
                .collect::<DecodeResult<_>>()?;
            let custom_values = get_f64s(r, "custom bounds")?;
            Ok(HistogramValue::Int(Histogram {
                counter_reset_hint: hint,
                schema,
                zero_threshold,
                zero_count,
                count,
                sum,
                positive_spans,
                positive_buckets,
                negative_spans,
                negative_buckets,
                custom_values,
            }))
        }
        1 => {
            let zero_count = r.f64("zero count")?;
            let count = r.f64("count")?;
            let sum = r.f64("sum")?;
            let positive_spans = get_spans(r)?;
            let positive_buckets = get_f64s(r, "buckets")?;
            let negative_spans = get_spans(r)?;
            let negative_buckets = get_f64s(r, "buckets")?;
            let custom_values = get_f64s(r, "custom bounds")?;
            Ok(HistogramValue::Float(FloatHistogram {
                counter_reset_hint: hint,
                schema,
                zero_threshold,
                zero_count,
                count,
                sum,
                positive_spans,
                positive_buckets,
                negative_spans,
                negative_buckets,
                custom_values,
            }))
        }
        k => Err(format!("unknown histogram kind {k}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn check(samples: &[(i64, f64)]) {
        let mut a = XorAppender::default();
        for (t, v) in samples {
            a.append(*t, *v);
        }
        let got: Vec<(i64, u64)> = XorIter::new(a.bytes())
            .unwrap()
            .map(|r| r.map(|(t, v)| (t, v.to_bits())).unwrap())
            .collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(got, want);
        // The read path's decoder gives the same samples, and those of a time range.
        let mut into = Vec::new();
        decode_floats_into(Encoding::Xor, a.bytes(), 0, i64::MIN, i64::MAX, &mut into).unwrap();
        let into: Vec<(i64, u64)> = into.iter().map(|s| (s.t, s.v.to_bits())).collect();
        assert_eq!(into, want);
        if let (Some(first), Some(last)) = (samples.first(), samples.last())
            && samples.is_sorted_by_key(|s| s.0)
        {
            let (lo, hi) = (first.0 / 2 + last.0 / 2, last.0);
            let mut part = Vec::new();
            decode_floats_into(Encoding::Xor, a.bytes(), 0, lo, hi, &mut part).unwrap();
            let want: Vec<i64> = samples
                .iter()
                .map(|s| s.0)
                .filter(|&t| t >= lo && t <= hi)
                .collect();
            assert_eq!(part.iter().map(|s| s.t).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn xor_round_trips() {
        check(&[]);
        check(&[(5, 1.0)]);
        check(&[(-5, f64::NAN), (0, model::stale_nan())]);
        check(&[
            (0, 1.0),
            (15_000, 1.0),
            (30_000, 2.0),
            (45_001, -0.0),
            (45_001, f64::INFINITY),
        ]);
        check(&[
            (i64::MIN, f64::MIN),
            (i64::MAX, f64::MAX),
            (0, 0.0),
            (i64::MIN, 1e-300),
        ]);
        let mut s = 42u64;
        for _ in 0..200 {
            let n = (rng(&mut s) % 120) as usize + 1;
            let mut t = (rng(&mut s) % 1_000_000_000) as i64;
            let mut v: Vec<(i64, f64)> = Vec::new();
            for _ in 0..n {
                let jitter = match rng(&mut s) % 4 {
                    0 => 0,
                    1 => (rng(&mut s) % 100) as i64,
                    2 => (rng(&mut s) % 1_000_000) as i64,
                    _ => (rng(&mut s) % (1 << 40)) as i64,
                };
                t += 15_000 + jitter;
                let val = match rng(&mut s) % 4 {
                    0 => v.last().map_or(0.0, |x| x.1),
                    1 => (rng(&mut s) % 1000) as f64,
                    2 => f64::from_bits(rng(&mut s)),
                    _ => v.last().map_or(0.0, |x| x.1) + 0.5,
                };
                v.push((t, val));
            }
            check(&v);
        }
    }

    fn check_dec(samples: &[(i64, f64)], must_encode: bool) {
        match encode_dec(samples) {
            Some(b) => {
                let mint = samples.first().map_or(0, |s| s.0);
                let got: Vec<(i64, u64)> = decode_dec(&b, mint)
                    .unwrap()
                    .iter()
                    .map(|(t, v)| (*t, v.to_bits()))
                    .collect();
                let want: Vec<(i64, u64)> =
                    samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
                assert_eq!(got, want);
                for cut in 0..b.len() {
                    let _ = decode_dec(&b[..cut], mint);
                }
            }
            None => assert!(!must_encode, "{samples:?}"),
        }
    }

    #[test]
    fn dec_round_trips_and_refuses_what_it_cannot_hold() {
        check_dec(&[], true);
        check_dec(&[(1, 0.0)], true);
        check_dec(&[(1, 1.5), (2, 1.75)], true);
        check_dec(
            &[(1, 4096.0), (2, 8192.0), (3, 4096.0 * 7.0), (5, 0.0)],
            true,
        );
        check_dec(&[(0, 5.0), (10, 5.0), (20, 5.0), (30, 5.0)], true);
        check_dec(
            &[
                (0, 123.45),
                (15_000, 123.47),
                (30_000, 124.0),
                (45_000, -3.0),
            ],
            true,
        );
        check_dec(&[(0, 1e12), (1, -1e12), (2, 0.001)], true);
        assert!(
            encode_dec(&[(0, 1e15), (2, 0.001)]).is_none(),
            "mantissa over 2^53"
        );
        check_dec(
            &[(0, 9_007_199_254_740_992.0), (1, -9_007_199_254_740_992.0)],
            true,
        );
        for bad in [
            f64::NAN,
            f64::INFINITY,
            -0.0,
            model::stale_nan(),
            1e300,
            0.1 + 0.2,
            f64::MIN_POSITIVE,
        ] {
            assert!(encode_dec(&[(0, 1.0), (1, bad)]).is_none(), "{bad}");
        }
        let mut s = 7u64;
        for _ in 0..300 {
            let n = (rng(&mut s) % 120) as usize + 1;
            let dec = (rng(&mut s) % 4) as i32;
            let p = 10f64.powi(dec);
            let mut v = (rng(&mut s) % 100_000) as f64;
            let mut t = 0i64;
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|_| {
                    t += 15_000 + (rng(&mut s) % 3) as i64 - 1;
                    v += (rng(&mut s) % 5000) as f64 / 7.0;
                    if rng(&mut s).is_multiple_of(10) {
                        v = -v;
                    }
                    (t, (v * p).floor() / p)
                })
                .collect();
            check_dec(&samples, true);
        }
    }

    #[test]
    fn dod_bucket_edges_round_trip() {
        for edge in [13u32, 16, 19] {
            let lim = 1i64 << edge;
            for d in [lim - 1, lim, lim + 1, -lim + 1, -lim, -lim - 1] {
                check(&[(0, 0.0), (1000, 1.0), (2000 + d, 2.0), (3000 + 2 * d, 3.0)]);
            }
        }
    }

    #[test]
    fn histograms_round_trip() {
        let hi = HistogramValue::Int(Histogram {
            counter_reset_hint: CounterResetHint::NotCounterReset,
            schema: 3,
            zero_threshold: 1e-128,
            zero_count: 2,
            count: 9,
            sum: 17.5,
            positive_spans: vec![
                Span {
                    offset: -2,
                    length: 2,
                },
                Span {
                    offset: 3,
                    length: 1,
                },
            ],
            positive_buckets: vec![2, 1, -2],
            negative_spans: vec![Span {
                offset: 0,
                length: 1,
            }],
            negative_buckets: vec![1],
            custom_values: vec![],
        });
        let hf = HistogramValue::Float(FloatHistogram {
            counter_reset_hint: CounterResetHint::Gauge,
            schema: model::CUSTOM_BUCKETS_SCHEMA,
            zero_threshold: 0.0,
            zero_count: 0.0,
            count: 3.5,
            sum: f64::NAN,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 0.5, 2.0],
            negative_spans: vec![],
            negative_buckets: vec![],
            custom_values: vec![0.1, 1.0],
        });
        let mut a = HistAppender::default();
        a.append(100, &hi);
        a.append(50, &hf);
        a.append(200, &hi);
        let got: Vec<_> = HistIter::new(a.bytes())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (100, hi.clone()));
        assert_eq!(got[2], (200, hi));
        match &got[1].1 {
            HistogramValue::Float(f) => {
                assert!(f.sum.is_nan());
                assert_eq!(f.custom_values, vec![0.1, 1.0]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn histogram_deltas_round_trip_and_are_small() {
        let h = |i: u64| {
            HistogramValue::Int(Histogram {
                schema: 2,
                zero_count: i,
                count: i + 10 * i + 7,
                sum: 0.25 * i as f64,
                positive_spans: vec![Span {
                    offset: 3,
                    length: 3,
                }],
                positive_buckets: vec![(7 * i) as i64, -(i as i64), (2 * i) as i64 + 7],
                ..Default::default()
            })
        };
        let f = |i: u64| {
            HistogramValue::Float(FloatHistogram {
                count: 3.0 * i as f64,
                sum: 1.5 * i as f64,
                positive_spans: vec![Span {
                    offset: 0,
                    length: 2,
                }],
                positive_buckets: vec![i as f64, 2.0 * i as f64],
                ..Default::default()
            })
        };
        let mut a = HistAppender::default();
        let mut want = Vec::new();
        for i in 0..60u64 {
            // A layout change in the middle (int → float → int).
            let v = if (20..25).contains(&i) { f(i) } else { h(i) };
            a.append(i as i64 * 15_000, &v);
            want.push((i as i64 * 15_000, v));
        }
        let got: Vec<_> = HistIter::new(a.bytes())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, want);
        let mut full = Vec::new();
        for (_, v) in &want {
            encode_histogram(&mut full, v);
        }
        assert!(
            a.bytes().len() * 2 < full.len(),
            "{} vs {}",
            a.bytes().len(),
            full.len()
        );
        for cut in 0..a.bytes().len() {
            if let Ok(it) = HistIter::new(&a.bytes()[..cut]) {
                let _ = it.count();
            }
        }
    }

    #[test]
    fn truncated_chunks_error_not_panic() {
        let mut a = XorAppender::default();
        for i in 0..50 {
            a.append(i * 1000, i as f64 * 1.5);
        }
        let b = a.bytes().to_vec();
        let full: Vec<(i64, f64)> = XorIter::new(&b).unwrap().map(Result::unwrap).collect();
        for cut in 0..b.len() {
            let Ok(it) = XorIter::new(&b[..cut]) else {
                assert!(cut < 2);
                continue;
            };
            // What decodes before the cut is the chunk's beginning, then an error: never
            // a sample made up from bits past the end.
            let got: Vec<DecodeResult<(i64, f64)>> = it.collect();
            let mut into = Vec::new();
            assert!(
                decode_floats_into(Encoding::Xor, &b[..cut], 0, i64::MIN, i64::MAX, &mut into)
                    .is_err()
            );
            let ok = got.iter().take_while(|r| r.is_ok()).count();
            assert_eq!(ok + 1, got.len(), "cut at {cut}: no error at the end");
            assert!(ok < full.len());
            for (g, w) in got.iter().zip(&full) {
                if let Ok(g) = g {
                    assert_eq!(g, w);
                }
            }
        }
    }
}
