//! The Loki push API body (`POST /loki/api/v1/push`): JSON, and protobuf
//! (`logproto.PushRequest`, snappy-compressed on the wire).
//!
//! JSON: `{"streams":[{"stream":{"<label>":"<value>",…},"values":[["<unix ns
//! as a string>","<line>",{"<metadata name>":"<value>",…}],…]}]}`; the
//! third element of an entry (structured metadata) is optional. A
//! timestamp may also be a JSON integer.
//!
//! Protobuf, as Loki's `push.proto` defines it (field numbers):
//!
//! ```text
//! PushRequest     { repeated StreamAdapter streams = 1; }
//! StreamAdapter   { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
//! EntryAdapter    { google.protobuf.Timestamp timestamp = 1; string line = 2;
//!                   repeated LabelPairAdapter structuredMetadata = 3; }
//! LabelPairAdapter{ string name = 1; string value = 2; }
//! Timestamp       { int64 seconds = 1; int32 nanos = 2; }
//! ```
//!
//! where `labels` is the Prometheus text form `{a="b", c="d"}` (parsed by
//! [`parse_labels`]). `hash` is ignored. A body that does not parse, or a
//! stream whose label text does not, refuses the whole request
//! ([`DecodeError::Malformed`], 400): nothing of it is stored. Label rules
//! and limits are checked afterwards by [`crate::logs::validate`].

use crate::DecodeError;
use crate::logs::{LogEntry, LogStream};
use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};
use std::collections::BTreeMap;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<PbStream>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbStream {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<PbEntry>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEntry {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<PbTimestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<PbLabelPair>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbLabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct PbTimestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Which body format a `Content-Type` announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushFormat {
    Json,
    Protobuf,
}

impl PushFormat {
    /// `application/json` → JSON; `application/x-protobuf` (or none, as
    /// Loki assumes) → protobuf; anything else is 415.
    pub fn from_content_type(ct: Option<&str>) -> Result<PushFormat, DecodeError> {
        let Some(raw) = ct else {
            return Ok(PushFormat::Protobuf);
        };
        let mime = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Ok(PushFormat::Json),
            "" | "application/x-protobuf" | "application/protobuf" => Ok(PushFormat::Protobuf),
            _ => Err(DecodeError::UnsupportedMediaType {
                content_type: raw.to_string(),
            }),
        }
    }
}

/// Decodes a push body in `format` (already decompressed).
pub fn decode_push(format: PushFormat, body: &[u8]) -> Result<Vec<LogStream>, DecodeError> {
    match format {
        PushFormat::Json => decode_push_json(body),
        PushFormat::Protobuf => decode_push_protobuf(body),
    }
}

/// Decodes a `logproto.PushRequest` (already snappy-decompressed).
pub fn decode_push_protobuf(body: &[u8]) -> Result<Vec<LogStream>, DecodeError> {
    use prost::Message;
    let req = PushRequest::decode(body).map_err(|e| {
        DecodeError::malformed(format!("body is not a protobuf logproto.PushRequest: {e}"))
    })?;
    req.streams
        .into_iter()
        .map(|s| {
            let labels = parse_labels(&s.labels)?;
            let entries = s
                .entries
                .into_iter()
                .map(|e| LogEntry {
                    ts: e.timestamp.map_or(0, |t| {
                        t.seconds
                            .saturating_mul(1_000_000_000)
                            .saturating_add(i64::from(t.nanos))
                    }),
                    line: e.line,
                    metadata: e
                        .structured_metadata
                        .into_iter()
                        .map(|p| (p.name, p.value))
                        .collect(),
                })
                .collect();
            Ok(LogStream { labels, entries })
        })
        .collect()
}

#[derive(Deserialize)]
struct JsonPush {
    #[serde(default)]
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<JsonEntry>,
}

struct JsonEntry(LogEntry);

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    r#"an entry ["<unix ns>", "<line>"] or ["<unix ns>", "<line>", {metadata}]"#,
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonEntry, A::Error> {
                let ts: JsonTs = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let line: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let meta: Option<BTreeMap<String, String>> = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(JsonEntry(LogEntry {
                    ts: ts.0,
                    line,
                    metadata: meta.unwrap_or_default().into_iter().collect(),
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

struct JsonTs(i64);

impl<'de> Deserialize<'de> for JsonTs {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JsonTs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a timestamp in unix nanoseconds as a string of digits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JsonTs, E> {
                s.trim()
                    .parse::<i64>()
                    .map(JsonTs)
                    .map_err(|_| E::custom(format!("timestamp {s:?} is not unix nanoseconds")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonTs, E> {
                Ok(JsonTs(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonTs, E> {
                i64::try_from(v)
                    .map(JsonTs)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes a JSON push body.
pub fn decode_push_json(body: &[u8]) -> Result<Vec<LogStream>, DecodeError> {
    let req: JsonPush = serde_json::from_slice(body).map_err(|e| {
        DecodeError::malformed(format!("body is not a Loki JSON push request: {e}"))
    })?;
    Ok(req
        .streams
        .into_iter()
        .map(|s| LogStream {
            labels: s.stream.into_iter().collect(),
            entries: s.values.into_iter().map(|e| e.0).collect(),
        })
        .collect())
}

/// Parses a label set in Prometheus text form: `{a="b", c='d', e=`raw`}`
/// (Go string escapes in quoted values; whitespace and a trailing comma
/// allowed). Only `=` pairs: this is a label set, not a selector.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, DecodeError> {
    let bad = |what: &str| {
        DecodeError::malformed(format!(
            "stream labels {:?}: {what} (expected {{name=\"value\", …}})",
            crate::logs::shorten(s)
        ))
    };
    let mut c = s.trim().chars().peekable();
    if c.next() != Some('{') {
        return Err(bad("does not start with '{'"));
    }
    let mut out = Vec::new();
    loop {
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
        match c.peek() {
            Some('}') => {
                c.next();
                break;
            }
            None => return Err(bad("no closing '}'")),
            _ => {}
        }
        let mut name = String::new();
        while let Some(&ch) = c.peek() {
            if ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == ':' {
                name.push(ch);
                c.next();
            } else {
                break;
            }
        }
        if name.is_empty() {
            return Err(bad("a label name is missing"));
        }
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
        if c.next() != Some('=') {
            return Err(bad(&format!("'=' expected after {name}")));
        }
        if c.peek() == Some(&'~') {
            return Err(bad("a matcher, not a label set"));
        }
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
        let q = c.next().ok_or_else(|| bad("value expected"))?;
        if !matches!(q, '"' | '\'' | '`') {
            return Err(bad(&format!("the value of {name} is not quoted")));
        }
        let mut value = String::new();
        loop {
            let ch = c.next().ok_or_else(|| bad("unterminated string"))?;
            if ch == q {
                break;
            }
            if ch != '\\' || q == '`' {
                value.push(ch);
                continue;
            }
            let e = c.next().ok_or_else(|| bad("unterminated escape"))?;
            match e {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'a' => value.push('\x07'),
                'b' => value.push('\x08'),
                'f' => value.push('\x0c'),
                'v' => value.push('\x0b'),
                '\\' | '"' | '\'' => value.push(e),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = (0..n).filter_map(|_| c.next()).collect();
                    let cp = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == n)
                        .ok_or_else(|| bad("bad \\x/\\u escape"))?;
                    if e == 'x' && cp > 0x7f {
                        return Err(bad("\\x escape above 0x7f (not UTF-8 text)"));
                    }
                    value.push(char::from_u32(cp).ok_or_else(|| bad("bad code point"))?);
                }
                _ => return Err(bad(&format!("unknown escape \\{e}"))),
            }
        }
        out.push((name, value));
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
        match c.next() {
            Some(',') => {}
            Some('}') => break,
            _ => return Err(bad("',' or '}' expected")),
        }
    }
    if c.any(|ch| !ch.is_whitespace()) {
        return Err(bad("text after '}'"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn label_text() {
        assert_eq!(
            parse_labels(r#"{job="api", env = 'prod' , x=`a\n`, y="q\"\\\n\u00e9",}"#).unwrap(),
            pairs(&[
                ("job", "api"),
                ("env", "prod"),
                ("x", "a\\n"),
                ("y", "q\"\\\né")
            ])
        );
        assert_eq!(parse_labels(" {} ").unwrap(), pairs(&[]));
        // names are checked later (validate), but kept as sent here
        assert_eq!(
            parse_labels(r#"{a.b="1"}"#).unwrap(),
            pairs(&[("a.b", "1")])
        );
        for bad in [
            "",
            "job=\"a\"",
            "{job=\"a\"",
            "{job=a}",
            "{job=~\"a\"}",
            "{=\"a\"}",
            "{job=\"a\" env=\"b\"}",
            "{job=\"a\\q\"}",
            "{job=\"a\"} x",
            "{job=\"unterminated}",
        ] {
            let e = parse_labels(bad).unwrap_err();
            assert_eq!(e.http_status(), 400, "{bad}");
        }
    }

    #[test]
    fn json_push() {
        let body = br#"{"streams":[
            {"stream":{"job":"api","env":"prod"},
             "values":[["1700000000000000001","hello"],
                       ["1700000000000000000","with meta",{"trace_id":"abc","user":"u1"}],
                       [1700000000000000002,"numeric ts"]]},
            {"stream":{"job":"db"},"values":[]}
        ]}"#;
        let s = decode_push_json(body).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels, pairs(&[("env", "prod"), ("job", "api")]));
        assert_eq!(
            s[0].entries,
            vec![
                LogEntry {
                    ts: 1_700_000_000_000_000_001,
                    line: "hello".into(),
                    metadata: vec![]
                },
                LogEntry {
                    ts: 1_700_000_000_000_000_000,
                    line: "with meta".into(),
                    metadata: pairs(&[("trace_id", "abc"), ("user", "u1")])
                },
                LogEntry {
                    ts: 1_700_000_000_000_000_002,
                    line: "numeric ts".into(),
                    metadata: vec![]
                },
            ]
        );
        assert!(s[1].entries.is_empty());
        for bad in [
            &br#"{"streams":[{"stream":{"a":"b"},"values":[["x","l"]]}]}"#[..],
            br#"{"streams":[{"stream":{"a":"b"},"values":[["1"]]}]}"#,
            br#"{"streams":[{"stream":{"a":"b"},"values":[["1","l",{},"extra"]]}]}"#,
            br#"{"streams":[{"stream":{"a":1},"values":[]}]}"#,
            br#"{"streams":[{"stream":{"a":"b"},"values":[["1","l",{"m":2}]]}]}"#,
            b"not json",
            br#"{"streams":"#,
        ] {
            let e = decode_push_json(bad).unwrap_err();
            assert_eq!(e.http_status(), 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn protobuf_push_round_trip() {
        let req = PushRequest {
            streams: vec![PbStream {
                labels: r#"{job="api", env="prod"}"#.into(),
                entries: vec![
                    PbEntry {
                        timestamp: Some(PbTimestamp {
                            seconds: 1_700_000_000,
                            nanos: 5,
                        }),
                        line: "l1".into(),
                        structured_metadata: vec![PbLabelPair {
                            name: "trace_id".into(),
                            value: "t".into(),
                        }],
                    },
                    PbEntry {
                        timestamp: Some(PbTimestamp {
                            seconds: 1_699_999_999,
                            nanos: 0,
                        }),
                        line: "l0".into(),
                        structured_metadata: vec![],
                    },
                ],
                hash: 42,
            }],
        };
        let body = req.encode_to_vec();
        let s = decode_push(PushFormat::Protobuf, &body).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels, pairs(&[("job", "api"), ("env", "prod")]));
        assert_eq!(s[0].entries[0].ts, 1_700_000_000_000_000_005);
        assert_eq!(s[0].entries[0].metadata, pairs(&[("trace_id", "t")]));
        assert_eq!(s[0].entries[1].ts, 1_699_999_999_000_000_000);
        assert_eq!(s[0].entries[1].line, "l0");
        // field numbers as Loki's push.proto: hand-encode one entry
        // streams(1){labels(1)="{a=\"b\"}", entries(2){timestamp(1){seconds(1)=1}, line(2)="x"}}
        let mut entry = vec![0x0a, 2, 0x08, 1, 0x12, 1, b'x'];
        entry.extend_from_slice(&[0x1a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        let labels = br#"{a="b"}"#;
        let mut stream = vec![0x0a, labels.len() as u8];
        stream.extend_from_slice(labels);
        stream.push(0x12);
        stream.push(entry.len() as u8);
        stream.extend_from_slice(&entry);
        let mut body = vec![0x0a, stream.len() as u8];
        body.extend_from_slice(&stream);
        let s = decode_push_protobuf(&body).unwrap();
        assert_eq!(s[0].labels, pairs(&[("a", "b")]));
        assert_eq!(
            s[0].entries,
            vec![LogEntry {
                ts: 1_000_000_000,
                line: "x".into(),
                metadata: pairs(&[("k", "v")])
            }]
        );
        // garbage and bad label text refuse the whole body
        assert_eq!(
            decode_push_protobuf(b"\xff\xff\xff")
                .unwrap_err()
                .http_status(),
            400
        );
        let bad = PushRequest {
            streams: vec![PbStream {
                labels: "job=api".into(),
                entries: vec![],
                hash: 0,
            }],
        };
        assert_eq!(
            decode_push_protobuf(&bad.encode_to_vec())
                .unwrap_err()
                .http_status(),
            400
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PushFormat::from_content_type(None).unwrap(),
            PushFormat::Protobuf
        );
        assert_eq!(
            PushFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            PushFormat::Json
        );
        assert_eq!(
            PushFormat::from_content_type(Some("application/x-protobuf")).unwrap(),
            PushFormat::Protobuf
        );
        assert_eq!(
            PushFormat::from_content_type(Some("text/plain"))
                .unwrap_err()
                .http_status(),
            415
        );
    }
}
