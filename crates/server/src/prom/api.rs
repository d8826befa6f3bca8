//! The shapes of Prometheus' HTTP API, byte for byte: the
//! `{"status":"success","data":…}` envelope, errors as
//! `{"status":"error","errorType":…,"error":…}` with Prometheus' status per
//! error type, parameters from the query string and from a form body
//! (repeated `match[]`), Prometheus' time and duration parameters, and the
//! JSON of label sets, samples and series.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::Labels;

/// Prometheus' `errorType`s, each with its one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Canceled,
    Timeout,
    Internal,
    Unavailable,
    NotFound,
    NotAcceptable,
    /// Flightdeck: authentication failed (Prometheus has no auth).
    Unauthorized,
    /// Flightdeck: the token lacks the scope.
    Forbidden,
    /// Flightdeck: a per-project limit (series, rate) refused the request.
    TooManyRequests,
    /// Flightdeck: the body is larger than allowed.
    TooLarge,
    /// Flightdeck: the body's type or encoding is not understood.
    UnsupportedMediaType,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Canceled => "canceled",
            ErrorType::Timeout => "timeout",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
            ErrorType::NotFound => "not_found",
            ErrorType::NotAcceptable => "not_acceptable",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::Forbidden => "forbidden",
            ErrorType::TooManyRequests => "too_many_requests",
            ErrorType::TooLarge => "payload_too_large",
            ErrorType::UnsupportedMediaType => "unsupported_media_type",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::Forbidden => StatusCode::FORBIDDEN,
            ErrorType::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// An error answer in Prometheus' shape.
#[derive(Clone, Debug)]
pub struct PromError {
    pub kind: ErrorType,
    pub message: String,
}

impl PromError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        PromError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_data(message: impl Into<String>) -> Self {
        PromError::new(ErrorType::BadData, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        PromError::new(ErrorType::Internal, message.to_string())
    }
}

impl From<crate::ApiError> for PromError {
    fn from(e: crate::ApiError) -> Self {
        use crate::Kind;
        let kind = match e.kind {
            Kind::Unauthorized => ErrorType::Unauthorized,
            Kind::Forbidden => ErrorType::Forbidden,
            Kind::NotFound => ErrorType::NotFound,
            Kind::PayloadTooLarge => ErrorType::TooLarge,
            Kind::UnsupportedMediaType => ErrorType::UnsupportedMediaType,
            Kind::TooManyRequests => ErrorType::TooManyRequests,
            Kind::Unavailable => ErrorType::Unavailable,
            Kind::Internal => ErrorType::Internal,
            Kind::BadRequest | Kind::MethodNotAllowed | Kind::Conflict => ErrorType::BadData,
        };
        PromError::new(kind, e.message)
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let mut body = String::from("{\"status\":\"error\",\"errorType\":");
        json_str(&mut body, self.kind.as_str());
        body.push_str(",\"error\":");
        json_str(&mut body, &self.message);
        body.push('}');
        json_response(self.kind.status(), body)
    }
}

/// A JSON answer from an already-rendered body.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"status":"success","data":<data>}` (and `warnings` when there are).
pub fn success(data: &str, warnings: &[String]) -> Response {
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str("{\"status\":\"success\",\"data\":");
    body.push_str(data);
    if !warnings.is_empty() {
        body.push_str(",\"warnings\":[");
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            json_str(&mut body, w);
        }
        body.push(']');
    }
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// Appends `s` as a JSON string, escaped as Go's `encoding/json` (and so
/// Prometheus) escapes it: `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`
/// too, so that answers are byte for byte Prometheus'.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A label set as a JSON object, labels in order (they are sorted).
pub fn json_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, &x.name);
        out.push(':');
        json_str(out, &x.value);
    }
    out.push('}');
}

/// A sample value as Prometheus writes it (its `jsonutil.MarshalFloat`,
/// the rule of Go's `encoding/json`): the shortest decimal that reads back
/// exactly, in exponent form (`6.01e-07`, `1.5e+21`, two exponent digits
/// at least) when `|v| < 1e-6` or `|v| >= 1e21`, plain (`0.000035`,
/// `123456`) otherwise; `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// [`format_value`], written into `out` (no allocation).
///
/// The digits are the shortest that read back as `v`, from `ryu`, which breaks an exact tie
/// between two such strings to the even digit as Go does (Prometheus 2.42 answers
/// `-949880721520770.2` for `-949880721520770.25`, where Rust's `{}` writes `…770.3`). The
/// notation is Go's: plain decimal, with an exponent (two digits at least) below 1e-6 and
/// from 1e21 up.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Whole numbers (counters, gauges of bytes): integer formatting is exact here
        // and what the shortest float form would print.
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        let mut b = ryu::Buffer::new();
        let text = b.format_finite(v);
        let exponent = v.abs() < 1e-6 || v.abs() >= 1e21;
        if !exponent && !text.as_bytes().contains(&b'e') {
            // Plain decimal already (most values): Go's text but for a whole number's ".0".
            out.push_str(text.strip_suffix(".0").unwrap_or(text));
        } else {
            write_go_notation(out, text, exponent);
        }
    }
}

/// Rewrites `ryu`'s text of a non-zero finite number (`1.5`, `123.0`, `-0.001`, `6.01e-7`,
/// `1e21`) in Go's notation: `exponent` or plain decimal.
fn write_go_notation(out: &mut String, ryu: &str, exponent: bool) {
    let (neg, body) = match ryu.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, ryu),
    };
    let (mantissa, exp) = match body.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // value = 0.DIGITS × 10^point, DIGITS without leading or trailing zeros (ryu writes at
    // most 17 significant digits, so they fit on the stack).
    let mut buf = [0u8; 48];
    let mut n = 0;
    for d in int.bytes().chain(frac.bytes()) {
        buf[n] = d;
        n += 1;
    }
    let lead = buf[..n].iter().take_while(|&&d| d == b'0').count();
    let mut point = int.len() as i32 + exp - lead as i32;
    while n > lead && buf[n - 1] == b'0' {
        n -= 1;
    }
    let digits = std::str::from_utf8(&buf[lead..n]).unwrap_or("0");
    if neg {
        out.push('-');
    }
    if exponent {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        point -= 1;
        out.push('e');
        out.push(if point < 0 { '-' } else { '+' });
        if point.abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(point.abs()));
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(digits);
    } else if point as usize >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
}

/// `[<unix seconds>,"<value>"]`
pub fn json_point(out: &mut String, t_ms: i64, v: f64) {
    out.push('[');
    json_time(out, t_ms);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// Milliseconds as Prometheus' JSON seconds (`1435781451.781`).
pub fn json_time(out: &mut String, t_ms: i64) {
    let secs = t_ms.div_euclid(1000);
    let ms = t_ms.rem_euclid(1000);
    out.push_str(itoa::Buffer::new().format(secs));
    if ms != 0 {
        let digits = [
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ];
        let len = if ms % 100 == 0 {
            1
        } else if ms % 10 == 0 {
            2
        } else {
            3
        };
        out.push('.');
        out.extend(digits[..len].iter().map(|&d| d as char));
    }
}

/// Milliseconds as an RFC 3339 time (messages, target states).
pub fn rfc3339_ms(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Request parameters: the query string, then a form body's fields
/// (Prometheus reads both for GET and POST).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>, form_body: Option<&[u8]>) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if let Some(b) = form_body {
            v.extend(form_urlencoded::parse(b).into_owned());
        }
        Params(v)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (e.g. `match[]`).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Prometheus' smallest and largest API timestamps (ms), the defaults of
/// `start` and `end` on the metadata endpoints.
pub const MIN_TIME_MS: i64 = -9_223_309_901_257_974;
pub const MAX_TIME_MS: i64 = 9_223_309_901_257_974;

/// A time parameter: unix seconds (with fraction) or RFC 3339; `default`
/// when absent or empty.
pub fn parse_time(params: &Params, name: &str, default: i64) -> Result<i64, PromError> {
    let Some(raw) = params.get(name).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    parse_time_str(raw).ok_or_else(|| {
        PromError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{raw}\" to a valid timestamp"
        ))
    })
}

pub fn parse_time_str(raw: &str) -> Option<i64> {
    if let Ok(f) = raw.parse::<f64>() {
        if !f.is_finite() {
            return None;
        }
        let ms = (f * 1000.0).round();
        if ms < MIN_TIME_MS as f64 || ms > MAX_TIME_MS as f64 {
            return None;
        }
        return Some(ms as i64);
    }
    let t =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A duration parameter: float seconds or a Prometheus duration (`1h30m`).
pub fn parse_duration(params: &Params, name: &str) -> Result<Option<i64>, PromError> {
    let Some(raw) = params.get(name).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    parse_duration_str(raw).map(Some).ok_or_else(|| {
        PromError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{raw}\" to a valid duration"
        ))
    })
}

/// Milliseconds of a duration: float seconds, or `[0-9]+(y|w|d|h|m|s|ms)` units in that order.
pub fn parse_duration_str(raw: &str) -> Option<i64> {
    if let Ok(f) = raw.parse::<f64>() {
        let ms = (f * 1000.0).round();
        return (f.is_finite() && ms.abs() < i64::MAX as f64 / 2.0).then_some(ms as i64);
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = raw;
    let mut total: i64 = 0;
    let mut last_unit = 0usize;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m": the longest unit that matches.
        let (i, (u, mult)) = UNITS
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        if i < last_unit || (total > 0 && i == last_unit) {
            return None; // units must appear in decreasing order, once
        }
        last_unit = i;
        rest = &rest[u.len()..];
        total = total.checked_add(n.checked_mul(*mult)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let p = Params::parse(
            Some("a=1435781451.781&b=2015-07-01T20:10:51.781Z&c=x&d="),
            None,
        );
        assert_eq!(parse_time(&p, "a", 0).unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time(&p, "b", 0).unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time(&p, "d", 7).unwrap(), 7);
        assert_eq!(
            parse_time(&p, "c", 0).unwrap_err().message,
            "invalid parameter \"c\": cannot parse \"x\" to a valid timestamp"
        );
    }

    #[test]
    fn durations() {
        for (s, ms) in [
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1.5", 1500),
            ("100ms", 100),
            ("1d2h", 93_600_000),
        ] {
            assert_eq!(parse_duration_str(s), Some(ms), "{s}");
        }
        for bad in ["", "m", "5x", "1m1h", "5m5m"] {
            assert_eq!(parse_duration_str(bad), None, "{bad}");
        }
    }

    /// What Prometheus 2.42 answered for these values (seen side by side
    /// in `tests/e2e/prometheus_interop.rs`), plus the cut-over points.
    #[test]
    fn values_format_like_prometheus() {
        for (v, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (21.5, "21.5"),
            (0.000_035_372, "0.000035372"),
            (0.000_001, "0.000001"),
            (9.99e-7, "9.99e-07"),
            (6.01e-7, "6.01e-07"),
            (-2.5e-7, "-2.5e-07"),
            (1e-300, "1e-300"),
            (5e-324, "5e-324"),
            (123_456_789.0, "123456789"),
            (9_007_199_254_740_993.0, "9007199254740992"),
            (999_999_999_999_999_900_000.0, "999999999999999900000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (-1.7976931348623157e308, "-1.7976931348623157e+308"),
            (0.6000000000000001, "0.6000000000000001"),
            (-42.0, "-42"),
            (999_999_999_999_999.0, "999999999999999"),
            (1e15, "1000000000000000"),
        ] {
            assert_eq!(format_value(v), want, "{v:e}");
        }
    }

    /// Every finite value prints the digits `{v}` / `{v:e}` print (both shortest), in Go's
    /// notation, except an exact tie between two shortest strings, which goes to the even
    /// digit as in Go (checked against Prometheus 2.42 by hand: `query=<literal>`).
    #[test]
    fn values_format_as_shortest_digits_in_go_notation() {
        for (v, want) in [
            // Exactly −949880721520770.25 and 1e8 + 2⁻⁹ (written as sums: both shortest
            // strings read back as the same double).
            (-949_880_721_520_770.0 - 0.25, "-949880721520770.2"),
            (100_000_000.0 + 0.001_953_125, "100000000.00195312"),
            (281_474_976_710_656.0 + 0.25, "281474976710656.25"),
        ] {
            assert_eq!(format_value(v), want);
        }
        let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            let x = rng.next_u64();
            // Random bits for exponents −60…+80 (both sides of every cut-over), or a random
            // mantissa scaled by a power of ten (values as gauges have them).
            let v = if x & 1 == 0 {
                f64::from_bits((x & !(0x7ff << 52)) | ((963 + (x >> 53) % 141) << 52))
            } else {
                (x >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((x >> 3) as i32 % 30 - 10)
            };
            let got = format_value(v);
            assert_eq!(got.parse::<f64>().unwrap(), v, "{got} reads back as {v:e}");
            let core = if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
                format!("{v:e}")
            } else {
                format!("{v}")
            };
            let sig = |t: &str| -> String {
                let m = t.split(['e', 'E']).next().unwrap_or("");
                let d: String = m.chars().filter(char::is_ascii_digit).collect();
                d.trim_start_matches('0').trim_end_matches('0').to_string()
            };
            let (a, b) = (sig(&got), sig(&core));
            if a != b {
                // Only a tie may differ: same length, last digits one apart, ours even.
                assert_eq!(a.len(), b.len(), "{v:e}: {got} vs {core}");
                let last = |t: &str| t.as_bytes()[t.len() - 1] - b'0';
                assert_eq!(last(&a) % 2, 0, "{v:e}: {got} vs {core}");
                assert_eq!(last(&a).abs_diff(last(&b)), 1, "{v:e}: {got} vs {core}");
            }
        }
    }

    #[test]
    fn json_bits() {
        let mut s = String::new();
        json_point(&mut s, 1_435_781_451_781, 1.0);
        json_point(&mut s, 1_435_781_451_000, f64::INFINITY);
        json_point(&mut s, 1_435_781_451_100, 0.000_000_1);
        assert_eq!(
            s,
            r#"[1435781451.781,"1"][1435781451,"+Inf"][1435781451.1,"1e-07"]"#
        );
        let mut s = String::new();
        json_labels(
            &mut s,
            &Labels::from_pairs([("__name__", "up"), ("job", "a\"\n")]),
        );
        assert_eq!(s, r#"{"__name__":"up","job":"a\"\n"}"#);
        let mut s = String::new();
        json_str(&mut s, "a > b && c < d \u{2028}");
        // What Go's encoding/json writes for the same string.
        assert_eq!(s, r#""a \u003e b \u0026\u0026 c \u003c d \u2028""#);
    }

    #[test]
    fn params_from_query_and_form() {
        let p = Params::parse(Some("match[]=up&x=1"), Some(b"match[]=down&y=%7Ba%7D"));
        assert_eq!(p.all("match[]"), vec!["up", "down"]);
        assert_eq!(p.get("y"), Some("{a}"));
    }
}
