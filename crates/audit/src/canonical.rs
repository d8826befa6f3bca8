//! A hand-written RFC 8785 (JCS) encoder for [`Event`], byte for byte what
//! `serde_json_canonicalizer` produces, without its intermediate tree.
//!
//! The top level of an event has known keys (strings, integers and small
//! structs), so they are written in their fixed canonical order. The
//! free-form parts (`request_parameters`, `response_elements`, `changes`)
//! are arbitrary [`serde_json::Value`]s: object keys are sorted by UTF-16
//! code units, strings use the JSON escapes JCS prescribes, and numbers
//! follow the ECMAScript formatting JCS requires (integers up to 2^53 are
//! written directly; anything else goes through `serde_json_canonicalizer`,
//! the reference, so floats can never drift from it).
//!
//! To keep the writer thread lean, a caller *prepares* everything but the
//! four fields only the sequencer knows ([`Prepared`]), and the writer
//! *splices* `id`, `log_index`, `seq` and `time` in ([`Prepared::splice`]).
//! The fields the writer stamps sit at fixed places in key order:
//!
//! ```text
//! {"action":…[,"changes":…],"event_source":…[,"event_time":…][,"external_id":…]
//!     ◀ ,"id":"<uuid>","log_index":N
//! ,"organization":…,"principal":{…}[,"project":…]…,"result":{…},"schema_version":1
//!     ◀ ,"seq":N
//! [,"source_ip":…]
//!     ◀ ,"time":"<rfc3339>"
//! [,"user_agent":…]}
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::event::{
    AuthMethod, Change, Event, EventDraft, Outcome, Principal, Resource, SCHEMA_VERSION,
};

/// Integers up to this magnitude are exact doubles and print as themselves.
const MAX_EXACT_INT: u64 = 1 << 53;

/// An event serialized canonically except for its stamps; see the module doc.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    buf: Vec<u8>,
    /// Where `,"id":…,"log_index":…` goes.
    cut_id: usize,
    /// Where `,"seq":…` goes.
    cut_seq: usize,
    /// Where `,"time":…` goes.
    cut_time: usize,
}

/// Borrowed view of every field that is not stamped by the sequencer.
struct Parts<'a> {
    action: &'a str,
    changes: &'a [Change],
    event_source: &'a str,
    event_time: Option<&'a str>,
    external_id: Option<&'a str>,
    organization: &'a str,
    personal: &'a BTreeMap<String, String>,
    principal: &'a Principal,
    project: Option<&'a str>,
    request_id: Option<&'a str>,
    request_parameters: Option<&'a Value>,
    resource: Option<&'a Resource>,
    response_elements: Option<&'a Value>,
    result: &'a Outcome,
    schema_version: u32,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

impl Prepared {
    /// Prepares a draft as the log will store it (schema version
    /// [`SCHEMA_VERSION`]): `personal` holds the commitments and
    /// `principal` the leaf's principal (personal values removed); the
    /// draft's `source_ip` and `user_agent` are left out when committed.
    pub fn of_draft_leaf(
        d: &EventDraft,
        personal: &BTreeMap<String, String>,
        principal: &Principal,
        resource: Option<&Resource>,
    ) -> Prepared {
        prepare(&Parts {
            action: &d.action,
            changes: &d.changes,
            event_source: &d.event_source,
            event_time: d.event_time.as_deref(),
            external_id: d.external_id.as_deref(),
            organization: &d.organization,
            personal,
            principal,
            project: d.project.as_deref(),
            request_id: d.request_id.as_deref(),
            request_parameters: d.request_parameters.as_ref(),
            resource,
            response_elements: d.response_elements.as_ref(),
            result: &d.result,
            schema_version: SCHEMA_VERSION,
            source_ip: d
                .source_ip
                .as_deref()
                .filter(|_| !personal.contains_key("source_ip")),
            user_agent: d
                .user_agent
                .as_deref()
                .filter(|_| !personal.contains_key("user_agent")),
        })
    }

    /// [`Prepared::of_draft_leaf`] and, in the same pass, the event the
    /// log acknowledges for that leaf (what [`encode_event`] writes for it
    /// once stamped: the draft's own principal, resource, `source_ip` and
    /// `user_agent`, with `personal` holding the commitments). Returns
    /// `(leaf, event)`; the runs they share are encoded once.
    pub fn of_draft_both(
        d: &EventDraft,
        personal: &BTreeMap<String, String>,
        principal: &Principal,
        resource: Option<&Resource>,
    ) -> (Prepared, Prepared) {
        let leaf = LeafView {
            principal,
            resource,
            source_ip: d
                .source_ip
                .as_deref()
                .filter(|_| !personal.contains_key("source_ip")),
            user_agent: d
                .user_agent
                .as_deref()
                .filter(|_| !personal.contains_key("user_agent")),
        };
        let (full, leaf) = prepare_with(
            &Parts {
                action: &d.action,
                changes: &d.changes,
                event_source: &d.event_source,
                event_time: d.event_time.as_deref(),
                external_id: d.external_id.as_deref(),
                organization: &d.organization,
                personal,
                principal: &d.principal,
                project: d.project.as_deref(),
                request_id: d.request_id.as_deref(),
                request_parameters: d.request_parameters.as_ref(),
                resource: d.resource.as_ref(),
                response_elements: d.response_elements.as_ref(),
                result: &d.result,
                schema_version: SCHEMA_VERSION,
                source_ip: d.source_ip.as_deref(),
                user_agent: d.user_agent.as_deref(),
            },
            Some(&leaf),
        );
        match leaf {
            Some(leaf) => (leaf, full),
            None => unreachable!("bug: prepare_with writes a leaf when given its view"),
        }
    }

    fn of_event(e: &Event) -> Prepared {
        prepare(&Parts {
            action: &e.action,
            changes: &e.changes,
            event_source: &e.event_source,
            event_time: e.event_time.as_deref(),
            external_id: e.external_id.as_deref(),
            organization: &e.organization,
            personal: &e.personal,
            principal: &e.principal,
            project: e.project.as_deref(),
            request_id: e.request_id.as_deref(),
            request_parameters: e.request_parameters.as_ref(),
            resource: e.resource.as_ref(),
            response_elements: e.response_elements.as_ref(),
            result: &e.result,
            schema_version: e.schema_version,
            source_ip: e.source_ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
        })
    }

    /// Bytes prepared so far (the stamps add about 120 more).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends the complete canonical event to `out`.
    pub fn splice(&self, id: &str, log_index: u64, seq: u64, time: &str, out: &mut Vec<u8>) {
        out.reserve(self.buf.len() + 128);
        out.extend_from_slice(&self.buf[..self.cut_id]);
        out.extend_from_slice(b",\"id\":");
        write_str(out, id);
        out.extend_from_slice(b",\"log_index\":");
        write_u64(out, log_index);
        out.extend_from_slice(&self.buf[self.cut_id..self.cut_seq]);
        out.extend_from_slice(b",\"seq\":");
        write_u64(out, seq);
        out.extend_from_slice(&self.buf[self.cut_seq..self.cut_time]);
        out.extend_from_slice(b",\"time\":");
        write_str(out, time);
        out.extend_from_slice(&self.buf[self.cut_time..]);
    }
}

/// The canonical bytes of a stamped event.
pub fn encode_event(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    Prepared::of_event(e).splice(&e.id, e.log_index, e.seq, &e.time, &mut out);
    out
}

fn prepare(p: &Parts<'_>) -> Prepared {
    prepare_with(p, None).0
}

/// Where a Merkle leaf differs from the event it was made of (see
/// [`Prepared::of_draft_both`]): its principal and resource, and the
/// `source_ip` / `user_agent` it shows (none when committed).
struct LeafView<'a> {
    principal: &'a Principal,
    resource: Option<&'a Resource>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

/// The output of [`prepare_with`]: the event's bytes, and with a
/// [`LeafView`] the leaf's too. Runs both have in common are written once,
/// into `b`, and copied into the leaf's buffer when a field differs.
struct Out {
    b: Vec<u8>,
    /// The leaf's bytes, and how much of `b` they already include.
    leaf: Option<(Vec<u8>, usize)>,
}

impl Out {
    /// Copies what `b` gained since the last divergence into the leaf.
    fn catch_up(&mut self) {
        if let Some((l, synced)) = &mut self.leaf {
            l.extend_from_slice(&self.b[*synced..]);
            *synced = self.b.len();
        }
    }

    /// Writes a field that may differ: `full` into the event's bytes,
    /// `leaf` into the leaf's.
    fn differ(&mut self, full: impl FnOnce(&mut Vec<u8>), leaf: impl FnOnce(&mut Vec<u8>)) {
        self.catch_up();
        full(&mut self.b);
        if let Some((l, synced)) = &mut self.leaf {
            leaf(l);
            *synced = self.b.len();
        }
    }

    /// A stamp position in both outputs.
    fn cut(&mut self) -> (usize, usize) {
        self.catch_up();
        (self.b.len(), self.leaf.as_ref().map_or(0, |(l, _)| l.len()))
    }
}

/// Prepares the event `p`; with `leaf`, also its Merkle leaf (second).
fn prepare_with(p: &Parts<'_>, leaf: Option<&LeafView<'_>>) -> (Prepared, Option<Prepared>) {
    let mut out = Out {
        b: Vec::with_capacity(512),
        leaf: leaf.map(|_| (Vec::with_capacity(512), 0)),
    };
    let b = &mut out.b;
    b.extend_from_slice(b"{\"action\":");
    write_str(b, p.action);
    if !p.changes.is_empty() {
        b.extend_from_slice(b",\"changes\":[");
        for (i, c) in p.changes.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(b"{\"after\":");
            write_value(b, &c.after);
            b.extend_from_slice(b",\"before\":");
            write_value(b, &c.before);
            b.extend_from_slice(b",\"field\":");
            write_str(b, &c.field);
            b.push(b'}');
        }
        b.push(b']');
    }
    field_str(b, "event_source", Some(p.event_source));
    field_str(b, "event_time", p.event_time);
    field_str(b, "external_id", p.external_id);
    let cut_id = out.cut();
    let b = &mut out.b;
    field_str(b, "organization", Some(p.organization));
    if !p.personal.is_empty() {
        // Keys are the ASCII names of `personal::PERSONAL_FIELDS`: byte
        // order is UTF-16 order, and a BTreeMap iterates in byte order.
        b.extend_from_slice(b",\"personal\":{");
        for (i, (k, v)) in p.personal.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            write_str(b, k);
            b.push(b':');
            write_str(b, v);
        }
        b.push(b'}');
    }
    b.extend_from_slice(b",\"principal\":");
    match leaf {
        Some(l) => out.differ(
            |b| write_principal(b, p.principal),
            |b| write_principal(b, l.principal),
        ),
        None => write_principal(&mut out.b, p.principal),
    }
    let b = &mut out.b;
    field_str(b, "project", p.project);
    field_str(b, "request_id", p.request_id);
    if let Some(v) = p.request_parameters {
        b.extend_from_slice(b",\"request_parameters\":");
        write_value(b, v);
    }
    let resource = |b: &mut Vec<u8>, r: Option<&Resource>| {
        if let Some(r) = r {
            b.extend_from_slice(b",\"resource\":");
            write_resource(b, r);
        }
    };
    match leaf {
        Some(l) => out.differ(|b| resource(b, p.resource), |b| resource(b, l.resource)),
        None => resource(&mut out.b, p.resource),
    }
    let b = &mut out.b;
    if let Some(v) = p.response_elements {
        b.extend_from_slice(b",\"response_elements\":");
        write_value(b, v);
    }
    b.extend_from_slice(b",\"result\":");
    write_outcome(b, p.result);
    b.extend_from_slice(b",\"schema_version\":");
    write_uint(b, u64::from(p.schema_version));
    let cut_seq = out.cut();
    match leaf {
        Some(l) => out.differ(
            |b| field_str(b, "source_ip", p.source_ip),
            |b| field_str(b, "source_ip", l.source_ip),
        ),
        None => field_str(&mut out.b, "source_ip", p.source_ip),
    }
    let cut_time = out.cut();
    match leaf {
        Some(l) => out.differ(
            |b| field_str(b, "user_agent", p.user_agent),
            |b| field_str(b, "user_agent", l.user_agent),
        ),
        None => field_str(&mut out.b, "user_agent", p.user_agent),
    }
    out.b.push(b'}');
    out.catch_up();
    let full = Prepared {
        buf: out.b,
        cut_id: cut_id.0,
        cut_seq: cut_seq.0,
        cut_time: cut_time.0,
    };
    let leaf = out.leaf.map(|(buf, _)| Prepared {
        buf,
        cut_id: cut_id.1,
        cut_seq: cut_seq.1,
        cut_time: cut_time.1,
    });
    (full, leaf)
}

/// `,"key":"value"` when `v` is set. Keys are plain ASCII: no escaping.
fn field_str(b: &mut Vec<u8>, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        b.extend_from_slice(b",\"");
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(b"\":");
        write_str(b, v);
    }
}

fn write_principal(b: &mut Vec<u8>, p: &Principal) {
    b.push(b'{');
    if let Some(m) = p.auth_method {
        b.extend_from_slice(b"\"auth_method\":\"");
        b.extend_from_slice(match m {
            AuthMethod::Password => b"password".as_slice(),
            AuthMethod::Session => b"session",
            AuthMethod::Bearer => b"bearer",
            AuthMethod::Basic => b"basic",
            AuthMethod::None => b"none",
        });
        b.extend_from_slice(b"\",");
    }
    b.extend_from_slice(b"\"id\":");
    write_str(b, &p.id);
    field_str(b, "name", Some(p.name.as_str()).filter(|n| !n.is_empty()));
    field_str(b, "token_id", p.token_id.as_deref());
    field_str(b, "type", Some(p.kind.as_str()));
    b.push(b'}');
}

fn write_resource(b: &mut Vec<u8>, r: &Resource) {
    b.push(b'{');
    if let Some(id) = &r.id {
        b.extend_from_slice(b"\"id\":");
        write_str(b, id);
        b.push(b',');
    }
    if let Some(name) = &r.name {
        b.extend_from_slice(b"\"name\":");
        write_str(b, name);
        b.push(b',');
    }
    b.extend_from_slice(b"\"type\":");
    write_str(b, &r.kind);
    b.push(b'}');
}

fn write_outcome(b: &mut Vec<u8>, o: &Outcome) {
    b.push(b'{');
    if let Some(c) = &o.error_code {
        b.extend_from_slice(b"\"error_code\":");
        write_str(b, c);
        b.push(b',');
    }
    if let Some(m) = &o.error_message {
        b.extend_from_slice(b"\"error_message\":");
        write_str(b, m);
        b.push(b',');
    }
    if let Some(h) = o.http_status {
        b.extend_from_slice(b"\"http_status\":");
        write_uint(b, u64::from(h));
        b.push(b',');
    }
    b.extend_from_slice(b"\"status\":\"");
    b.extend_from_slice(o.status.as_str().as_bytes());
    b.extend_from_slice(b"\"}");
}

/// Writes any JSON value canonically.
pub fn write_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => b.extend_from_slice(b"null"),
        Value::Bool(true) => b.extend_from_slice(b"true"),
        Value::Bool(false) => b.extend_from_slice(b"false"),
        Value::Number(n) => write_number(b, n),
        Value::String(s) => write_str(b, s),
        Value::Array(a) => {
            b.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                write_value(b, x);
            }
            b.push(b']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|x, y| cmp_utf16(x.0, y.0));
            b.push(b'{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                write_str(b, k);
                b.push(b':');
                write_value(b, x);
            }
            b.push(b'}');
        }
    }
}

/// A `u64` as JCS writes it (as an ECMAScript number: beyond 2^53 it is
/// rounded to a double).
fn write_u64(b: &mut Vec<u8>, v: u64) {
    if v <= MAX_EXACT_INT {
        write_uint(b, v);
    } else {
        write_number(b, &serde_json::Number::from(v));
    }
}

fn write_number(b: &mut Vec<u8>, n: &serde_json::Number) {
    if let Some(u) = n.as_u64().filter(|u| *u <= MAX_EXACT_INT) {
        write_uint(b, u);
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_EXACT_INT) {
        if i < 0 {
            b.push(b'-');
        }
        write_uint(b, i.unsigned_abs());
    } else {
        // Floats and huge integers: ECMAScript number formatting, exactly
        // as the reference implementation does it.
        match serde_json_canonicalizer::to_vec(n) {
            Ok(s) => b.extend_from_slice(&s),
            Err(e) => unreachable!("bug: a serde_json number is always finite: {e}"),
        }
    }
}

/// Orders object keys as JCS does: by UTF-16 code units.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    // UTF-8 byte order is code point order; UTF-16 order differs from it
    // only between supplementary characters and U+E000..U+FFFF, whose
    // UTF-8 encodings start with a byte >= 0xEE.
    let hi = |s: &str| s.bytes().any(|c| c >= 0xEE);
    if hi(a) && hi(b) {
        a.encode_utf16().cmp(b.encode_utf16())
    } else {
        a.as_bytes().cmp(b.as_bytes())
    }
}

/// Writes a JSON string: `"` and `\` escaped, control characters as
/// `\b \t \n \f \r` or `\u00xx`; everything else (non-ASCII, `/`, DEL) as is.
pub fn write_str(b: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.reserve(s.len() + 2);
    b.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping (most strings).
        if let Some(w) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let c = bytes[i];
        i += 1;
        if c >= 0x20 && c != b'"' && c != b'\\' {
            continue;
        }
        b.extend_from_slice(&bytes[start..i - 1]);
        start = i;
        match c {
            b'"' => b.extend_from_slice(b"\\\""),
            b'\\' => b.extend_from_slice(b"\\\\"),
            0x08 => b.extend_from_slice(b"\\b"),
            0x09 => b.extend_from_slice(b"\\t"),
            0x0A => b.extend_from_slice(b"\\n"),
            0x0C => b.extend_from_slice(b"\\f"),
            0x0D => b.extend_from_slice(b"\\r"),
            _ => b.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xF)],
            ]),
        }
    }
    b.extend_from_slice(&bytes[start..]);
    b.push(b'"');
}

/// Whether any of the 8 bytes of `w` is a control character (< 0x20), `"`
/// or `\`: the classic "has a zero byte / a byte less than n" bit tricks
/// (exact: no false negatives; false positives only make the caller look
/// at each byte).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// Writes an unsigned integer in decimal.
pub fn write_uint(b: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PrincipalKind, Status};

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn coin(&mut self) -> bool {
            self.next() & 1 == 1
        }
    }

    /// Strings that stress escaping and UTF-16 ordering.
    fn string(r: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            " ",
            "\"",
            "\\",
            "/",
            "\n",
            "\r",
            "\t",
            "\u{8}",
            "\u{c}",
            "\u{1}",
            "\u{1f}",
            "\u{7f}",
            "é",
            "ß",
            "Ä",
            "\u{2028}",
            "\u{e000}",
            "\u{ffff}",
            "\u{fffd}",
            "😀",
            "\u{10000}",
            "\u{10ffff}",
            "日本",
            "key",
            "id",
            "_",
            "-",
            "é́",
        ];
        let n = r.below(8);
        (0..n)
            .map(|_| PIECES[r.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn number(r: &mut Rng) -> Value {
        match r.below(10) {
            0 => Value::from(r.next()),
            1 => Value::from(r.next() as i64),
            2 => Value::from(r.below(1 << 54)),
            3 => Value::from(-(r.below(1 << 54) as i64)),
            4 => Value::from((1u64 << 53) + r.below(3) - 1),
            5 => serde_json::Number::from_f64(f64::from_bits(r.next()))
                .map_or(Value::Null, Value::Number),
            6 => serde_json::Number::from_f64((r.next() as f64) / 1e6)
                .map_or(Value::Null, Value::Number),
            7 => serde_json::Number::from_f64(
                [0.0, -0.0, 1e21, 1e-7, 123e-20, 0.1, 1.5][r.below(7) as usize],
            )
            .map_or(Value::Null, Value::Number),
            _ => Value::from(r.below(1000)),
        }
    }

    fn value(r: &mut Rng, depth: u32) -> Value {
        let k = if depth >= 3 { r.below(4) } else { r.below(6) };
        match k {
            0 => Value::Null,
            1 => Value::Bool(r.coin()),
            2 => number(r),
            3 => Value::String(string(r)),
            4 => Value::Array((0..r.below(5)).map(|_| value(r, depth + 1)).collect()),
            _ => Value::Object(
                (0..r.below(6))
                    .map(|_| (string(r), value(r, depth + 1)))
                    .collect(),
            ),
        }
    }

    fn opt_string(r: &mut Rng) -> Option<String> {
        r.coin().then(|| string(r))
    }

    fn event(r: &mut Rng) -> Event {
        let kinds = [
            PrincipalKind::User,
            PrincipalKind::Token,
            PrincipalKind::System,
            PrincipalKind::Anonymous,
        ];
        let methods = [
            AuthMethod::Password,
            AuthMethod::Session,
            AuthMethod::Bearer,
            AuthMethod::Basic,
            AuthMethod::None,
        ];
        Event {
            action: string(r),
            changes: (0..r.below(3))
                .map(|_| Change {
                    field: string(r),
                    before: value(r, 1),
                    after: value(r, 1),
                })
                .collect(),
            event_source: string(r),
            event_time: opt_string(r),
            external_id: opt_string(r),
            id: string(r),
            log_index: if r.coin() { r.below(1000) } else { r.next() },
            organization: string(r),
            personal: {
                let mut m = std::collections::BTreeMap::new();
                for f in crate::personal::PERSONAL_FIELDS {
                    if r.coin() {
                        m.insert(f.to_string(), string(r));
                    }
                }
                m
            },
            principal: Principal {
                kind: kinds[r.below(4) as usize],
                id: string(r),
                name: if r.coin() { string(r) } else { String::new() },
                token_id: opt_string(r),
                auth_method: r.coin().then(|| methods[r.below(5) as usize]),
            },
            project: opt_string(r),
            request_id: opt_string(r),
            request_parameters: r.coin().then(|| value(r, 0)),
            resource: r.coin().then(|| Resource {
                kind: string(r),
                id: opt_string(r),
                name: opt_string(r),
            }),
            response_elements: r.coin().then(|| value(r, 0)),
            result: Outcome {
                status: if r.coin() {
                    Status::Success
                } else {
                    Status::Failure
                },
                http_status: r.coin().then(|| r.below(65536) as u16),
                error_code: opt_string(r),
                error_message: opt_string(r),
            },
            schema_version: if r.coin() {
                SCHEMA_VERSION
            } else {
                r.next() as u32
            },
            seq: if r.coin() { r.below(1 << 40) } else { r.next() },
            source_ip: opt_string(r),
            time: string(r),
            user_agent: opt_string(r),
        }
    }

    #[test]
    fn matches_the_reference_on_random_events() {
        let mut r = Rng(0x5EED_1234_ABCD_0001);
        for i in 0..20_000 {
            let e = event(&mut r);
            let want = serde_json_canonicalizer::to_vec(&e).unwrap();
            let got = encode_event(&e);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "event #{i}: {e:?}"
            );
        }
    }

    #[test]
    fn matches_the_reference_on_random_values() {
        let mut r = Rng(77);
        for _ in 0..20_000 {
            let v = value(&mut r, 0);
            let want = serde_json_canonicalizer::to_vec(&v).unwrap();
            let mut got = Vec::new();
            write_value(&mut got, &v);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{v:?}"
            );
        }
    }

    #[test]
    fn draft_preparation_splices_into_the_canonical_event() {
        let mut r = Rng(99);
        for _ in 0..2000 {
            let mut e = event(&mut r);
            e.schema_version = SCHEMA_VERSION;
            let d = EventDraft {
                organization: e.organization.clone(),
                project: e.project.clone(),
                principal: e.principal.clone(),
                source_ip: e.source_ip.clone(),
                user_agent: e.user_agent.clone(),
                action: e.action.clone(),
                resource: e.resource.clone(),
                request_id: e.request_id.clone(),
                result: e.result.clone(),
                request_parameters: e.request_parameters.clone(),
                response_elements: e.response_elements.clone(),
                changes: e.changes.clone(),
                event_source: e.event_source.clone(),
                event_time: e.event_time.clone(),
                external_id: e.external_id.clone(),
            };
            // The leaf leaves out what it commits to.
            if e.personal.contains_key("source_ip") {
                e.source_ip = None;
            }
            if e.personal.contains_key("user_agent") {
                e.user_agent = None;
            }
            let mut got = Vec::new();
            if e.personal.contains_key("resource.name")
                && let Some(r) = e.resource.as_mut()
            {
                r.name = None;
            }
            Prepared::of_draft_leaf(&d, &e.personal, &e.principal, e.resource.as_ref()).splice(
                &e.id,
                e.log_index,
                e.seq,
                &e.time,
                &mut got,
            );
            assert_eq!(got, serde_json_canonicalizer::to_vec(&e).unwrap());
        }
    }

    #[test]
    fn both_forms_equal_their_separate_encodings() {
        let mut r = Rng(4242);
        for i in 0..2000 {
            let mut e = event(&mut r);
            e.schema_version = SCHEMA_VERSION;
            let d = EventDraft {
                organization: e.organization.clone(),
                project: e.project.clone(),
                principal: e.principal.clone(),
                source_ip: e.source_ip.clone(),
                user_agent: e.user_agent.clone(),
                action: e.action.clone(),
                resource: e.resource.clone(),
                request_id: e.request_id.clone(),
                result: e.result.clone(),
                request_parameters: e.request_parameters.clone(),
                response_elements: e.response_elements.clone(),
                changes: e.changes.clone(),
                event_source: e.event_source.clone(),
                event_time: e.event_time.clone(),
                external_id: e.external_id.clone(),
            };
            // A leaf principal and resource unlike the draft's, as sealing
            // makes them.
            let leaf_principal = Principal {
                id: "anonymous".into(),
                name: String::new(),
                ..e.principal.clone()
            };
            let leaf_resource = e.resource.clone().map(|r| Resource { name: None, ..r });
            let (leaf, full) =
                Prepared::of_draft_both(&d, &e.personal, &leaf_principal, leaf_resource.as_ref());
            let stamp = |p: &Prepared| {
                let mut out = Vec::new();
                p.splice(&e.id, e.log_index, e.seq, &e.time, &mut out);
                out
            };
            let separate =
                Prepared::of_draft_leaf(&d, &e.personal, &leaf_principal, leaf_resource.as_ref());
            assert_eq!(stamp(&leaf), stamp(&separate), "leaf of event #{i}");
            assert_eq!(stamp(&full), encode_event(&e), "event #{i}");
        }
    }

    #[test]
    fn long_strings_escape_as_the_reference() {
        let mut r = Rng(1717);
        for _ in 0..5000 {
            let s: String = (0..r.below(12)).map(|_| string(&mut r)).collect();
            let want = serde_json_canonicalizer::to_vec(&Value::String(s.clone())).unwrap();
            let mut got = Vec::new();
            write_str(&mut got, &s);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
        for c in 0u8..=0x7f {
            let s = format!("abcdefghijklmno{}pqrstuvwxyz0123", char::from(c));
            let want = serde_json_canonicalizer::to_vec(&Value::String(s.clone())).unwrap();
            let mut got = Vec::new();
            write_str(&mut got, &s);
            assert_eq!(got, want, "byte {c:#04x}");
        }
    }

    #[test]
    fn utf16_order_differs_from_code_point_order() {
        // U+E000 < U+10000 in code points, but 0xE000 > 0xD800 in UTF-16.
        assert_eq!(cmp_utf16("\u{e000}", "\u{10000}"), Ordering::Greater);
        assert_eq!(cmp_utf16("a", "b"), Ordering::Less);
        assert_eq!(cmp_utf16("ab", "a"), Ordering::Greater);
    }
}
