//! Gzip for the Prometheus API's answers, as Prometheus does it: when the
//! request's `Accept-Encoding` accepts `gzip`, the body is compressed and
//! sent with `Content-Encoding: gzip` and `Vary: Accept-Encoding`.
//!
//! A middleware of our own over `flate2` (already a workspace dependency)
//! rather than tower-http's `CompressionLayer`, which would bring
//! tower-http and async-compression for one header and one encoder. The
//! answers are rendered whole in memory before they are sent (see
//! [`super::api::success`]), so compressing the whole body costs no extra
//! buffering beyond the compressed copy.

use std::io::Write as _;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Bodies smaller than this go out as they are: the gzip header and
/// trailer (18 bytes) would eat most of the saving.
pub const MIN_BYTES: usize = 256;

/// Whether `Accept-Encoding` accepts gzip: `gzip` or `*` listed with no
/// `q=0` (RFC 9110 §12.5.3; `x-gzip` is the old alias).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let gzip = coding.eq_ignore_ascii_case("gzip")
                || coding.eq_ignore_ascii_case("x-gzip")
                || coding == "*";
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            gzip && !refused
        })
}

/// Compresses the answer when the client asks for gzip.
pub async fn layer(req: Request, next: Next) -> Response {
    let wanted = accepts_gzip(req.headers());
    let resp = next.run(req).await;
    if !wanted || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The handlers behind this layer render their answers in memory, so
    // the body is already bounded by what they chose to build.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "reading an answer to compress failed");
            return Response::from_parts(parts, Body::empty());
        }
    };
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if bytes.len() < MIN_BYTES {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    let compressed = enc.write_all(&bytes).and_then(|()| enc.finish());
    match compressed {
        Ok(gz) => {
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(gz))
        }
        // Writing into a Vec does not fail; if it ever did, the plain body
        // is still a correct answer.
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(accept: &[&str], want: bool) {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(a).unwrap());
        }
        assert_eq!(accepts_gzip(&h), want, "{accept:?}");
    }

    #[test]
    fn accept_encoding() {
        check(&[], false);
        check(&["gzip"], true);
        check(&["GZIP"], true);
        check(&["deflate, gzip;q=1.0, *;q=0.5"], true);
        check(&["br", "gzip"], true);
        check(&["gzip;q=0"], false);
        check(&["gzip; q=0.0"], false);
        check(&["identity"], false);
        check(&["*"], true);
        check(&["deflate, br"], false);
        check(&["x-gzip"], true);
    }
}
