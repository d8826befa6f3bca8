//! Bounded decompression of request bodies, chosen by `Content-Encoding`.
//!
//! Every function takes `max_len`, the largest decompressed size the caller
//! accepts, and refuses anything larger *before* spending that memory:
//!
//! * snappy block format states the decompressed length in a varint header;
//!   we read it first and refuse a claim above `max_len` without allocating
//!   (a 20-byte body claiming 4 GiB costs nothing);
//! * gzip and framed snappy have no trustworthy length, so they are read
//!   through `Read::take(max_len + 1)`: at most `max_len + 1` bytes are ever
//!   produced, and reaching the extra byte means "too large".
//!
//! Remote write uses the snappy *block* format (`Content-Encoding: snappy`);
//! OTLP/HTTP uses gzip or nothing. The framed (streaming) snappy format is
//! not a `Content-Encoding` of either protocol; [`snappy_framed`] exists for
//! callers that know they have it.

use crate::DecodeError;
use std::io::Read;

/// The content encodings [`content_decode`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No `Content-Encoding`, or `identity`.
    Identity,
    /// Snappy block format (remote write).
    Snappy,
    /// gzip (`gzip` or `x-gzip`), possibly several members.
    Gzip,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value (case-insensitive; a single
    /// coding: stacked codings such as `gzip, snappy` are refused).
    pub fn parse(header: Option<&str>) -> Result<Encoding, DecodeError> {
        let Some(raw) = header else {
            return Ok(Encoding::Identity);
        };
        let v = raw.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else if v.eq_ignore_ascii_case("snappy") {
            Ok(Encoding::Snappy)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else {
            Err(DecodeError::UnsupportedEncoding {
                encoding: raw.to_string(),
            })
        }
    }
}

/// Decodes `body` by its `Content-Encoding` header, refusing a result
/// larger than `max_len` bytes.
pub fn content_decode(
    encoding: Option<&str>,
    body: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, DecodeError> {
    match Encoding::parse(encoding)? {
        Encoding::Identity => {
            if body.len() > max_len {
                return Err(DecodeError::BodyTooLarge { limit: max_len });
            }
            Ok(body.to_vec())
        }
        Encoding::Snappy => snappy_block(body, max_len),
        Encoding::Gzip => gzip(body, max_len),
    }
}

/// Decompresses a snappy block (the raw `snappy.Encode` format remote write
/// uses). The length header is checked against `max_len` before anything
/// is allocated.
pub fn snappy_block(body: &[u8], max_len: usize) -> Result<Vec<u8>, DecodeError> {
    let claimed = snap::raw::decompress_len(body).map_err(|e| {
        DecodeError::malformed(format!(
            "snappy block header: {e} (remote write bodies use the snappy block format, \
             not the framed format)"
        ))
    })?;
    if claimed > max_len {
        return Err(DecodeError::BodyTooLarge { limit: max_len });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::malformed(format!("snappy block: {e}")))
}

/// Decompresses the snappy framing (streaming) format, reading at most
/// `max_len + 1` bytes.
pub fn snappy_framed(body: &[u8], max_len: usize) -> Result<Vec<u8>, DecodeError> {
    read_bounded(
        snap::read::FrameDecoder::new(body),
        body.len(),
        max_len,
        "snappy framed",
    )
}

/// Decompresses gzip (all members), reading at most `max_len + 1` bytes.
pub fn gzip(body: &[u8], max_len: usize) -> Result<Vec<u8>, DecodeError> {
    read_bounded(
        flate2::read::MultiGzDecoder::new(body),
        body.len(),
        max_len,
        "gzip",
    )
}

fn read_bounded(
    r: impl Read,
    compressed_len: usize,
    max_len: usize,
    what: &str,
) -> Result<Vec<u8>, DecodeError> {
    // A guess at the output size, never above the limit: most bodies
    // compress 3–10×.
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(max_len));
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::malformed(format!("{what}: {e}")))?;
    if out.len() > max_len {
        return Err(DecodeError::BodyTooLarge { limit: max_len });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips() {
        let data = b"hello hello hello hello".repeat(100);
        let sn = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(content_decode(Some("snappy"), &sn, 1 << 20).unwrap(), data);
        assert_eq!(
            content_decode(Some("GZIP"), &gz(&data), 1 << 20).unwrap(),
            data
        );
        assert_eq!(content_decode(None, &data, 1 << 20).unwrap(), data);
        assert_eq!(
            content_decode(Some("identity"), &data, 1 << 20).unwrap(),
            data
        );
        let mut fr = snap::write::FrameEncoder::new(Vec::new());
        fr.write_all(&data).unwrap();
        let fr = fr.into_inner().unwrap();
        assert_eq!(snappy_framed(&fr, 1 << 20).unwrap(), data);
        // exactly at the limit is fine, one byte over is not
        assert_eq!(snappy_block(&sn, data.len()).unwrap(), data);
        assert_eq!(gzip(&gz(&data), data.len()).unwrap(), data);
        assert_eq!(
            gzip(&gz(&data), data.len() - 1),
            Err(DecodeError::BodyTooLarge {
                limit: data.len() - 1
            })
        );
        assert_eq!(
            content_decode(None, &data, 10),
            Err(DecodeError::BodyTooLarge { limit: 10 })
        );
    }

    #[test]
    fn unsupported_encodings_are_415() {
        for enc in ["deflate", "zstd", "br", "gzip, snappy"] {
            let e = content_decode(Some(enc), b"x", 10).unwrap_err();
            assert_eq!(e.http_status(), 415, "{enc}");
            assert!(e.to_string().contains(enc), "{e}");
        }
    }

    #[test]
    fn snappy_bomb_is_refused_from_its_header() {
        // Varint 4 GiB − 1 (the format's maximum) then a few bytes: the
        // header alone must make us refuse, before any allocation.
        let mut bomb = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        bomb.extend_from_slice(&[0u8; 16]);
        let t = std::time::Instant::now();
        assert_eq!(
            snappy_block(&bomb, 64 << 20),
            Err(DecodeError::BodyTooLarge { limit: 64 << 20 })
        );
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
        // a header that lies the other way (claims less than it holds) is
        // malformed, not a way to get past the limit
        let real = snap::raw::Encoder::new()
            .compress_vec(&vec![7u8; 10_000])
            .unwrap();
        let mut liar = vec![0x10]; // claims 16 bytes
        liar.extend_from_slice(&real[2..]); // skip the real 2-byte varint
        assert!(matches!(
            snappy_block(&liar, 64),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn gzip_bomb_is_cut_off_at_the_limit() {
        // 1 GiB of zeros as 1024 concatenated gzip members of 1 MiB each
        // (a valid multi-member stream, about 1 MB), built in milliseconds.
        let member = gz(&vec![0u8; 1 << 20]);
        let bomb = member.repeat(1024);
        assert!(bomb.len() < 2 << 20, "{}", bomb.len());
        let t = std::time::Instant::now();
        assert_eq!(
            gzip(&bomb, 1 << 20),
            Err(DecodeError::BodyTooLarge { limit: 1 << 20 })
        );
        // only ~1 MiB was inflated, not 1 GiB
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [&b"\xff\xff\xff\xff\xff\xff"[..], b"not gzip at all"] {
            assert!(matches!(gzip(bad, 100), Err(DecodeError::Malformed { .. })));
            assert!(matches!(
                snappy_block(bad, 1000),
                Err(DecodeError::Malformed { .. })
            ));
        }
        assert!(matches!(
            snappy_block(b"", 100),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
