//! The audit event schema (version 2) and its canonical byte form.
//!
//! An [`Event`] is what the log stores and serves. Callers build an
//! [`EventDraft`] (who, what, on which resource, with what result); the log
//! stamps the fields that only the sequencer can know (`id`, `seq`,
//! `log_index`, `time`) and stores the event's canonical bytes
//! (RFC 8785 JSON Canonicalization Scheme) exactly as written, so that a
//! Merkle tree can later be built over them without rewriting anything.
//!
//! The field-by-field mapping to CloudTrail and OCSF lives in
//! `docs/audit-event-schema.md`; keep the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The version written into every event's `schema_version`.
///
/// Version 2 keeps personal fields out of the leaf (salted commitments in
/// `personal`, values sealed beside it: see [`crate::personal`]); version 1
/// events (written before) hold them in clear and still read and verify.
pub const SCHEMA_VERSION: u32 = 2;

/// Largest number of bytes a draft's free-form parts (request parameters,
/// changes, error message) may take once serialized. Larger values are
/// replaced by a truncation marker carrying the SHA-256 of the full value.
pub const MAX_FREEFORM_BYTES: usize = 16 * 1024;

/// RFC 3339, UTC, always nine fractional digits: sorts as text in time order.
const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Formats a time as the schema writes it (`2026-11-26T09:05:38.123456789Z`).
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(TIME_FORMAT)
        .expect("bug: formatting a UTC time with a fixed description cannot fail")
}

/// [`format_time`] of unix nanoseconds, without going through a format
/// description: the writer stamps every event with it.
pub fn format_time_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut b = [0u8; 30];
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    // Every i64 nanosecond count falls in the years 1677..=2262.
    put(0, 4, year as u32);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 9, nanos);
    b[4] = b'-';
    b[7] = b'-';
    b[10] = b'T';
    b[13] = b':';
    b[16] = b':';
    b[19] = b'.';
    b[29] = b'Z';
    b.iter().map(|&c| char::from(c)).collect()
}

/// Parses any RFC 3339 time (offsets allowed) into unix nanoseconds.
pub fn parse_time_ns(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Converts unix nanoseconds back into an [`OffsetDateTime`].
pub fn time_from_ns(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .expect("bug: every i64 nanosecond count is a valid time")
}

/// Who acted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// `user`, `token`, `system` or `anonymous` (failed authentication).
    #[serde(rename = "type")]
    pub kind: PrincipalKind,
    /// Stable id of the user or token; `system` for the program itself;
    /// for anonymous principals the name they claimed, if any.
    pub id: String,
    /// Display name (user name, token name). Personal: absent from a
    /// version 2 leaf (see [`Event::personal`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The token used, when the principal acted through an API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// How the request authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<AuthMethod>,
}

impl Principal {
    /// The program itself (retention, expiry, alert state changes).
    pub fn system() -> Principal {
        Principal {
            kind: PrincipalKind::System,
            id: "system".into(),
            name: "flightdeck".into(),
            token_id: None,
            auth_method: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    Token,
    System,
    Anonymous,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Token => "token",
            PrincipalKind::System => "system",
            PrincipalKind::Anonymous => "anonymous",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Password login (the `login` action itself).
    Password,
    /// UI session cookie.
    Session,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HTTP basic auth with the token as password.
    Basic,
    /// No credential was presented.
    None,
}

/// What was acted on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// e.g. `project`, `token`, `user`, `membership`, `session`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Failure,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }
}

/// How it ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub status: Status,
    /// HTTP status of the answer, when the action came through HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Machine-readable error code (the API's `error.code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Human-readable error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// One changed field: its value before and after.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub field: String,
    #[serde(default)]
    pub before: serde_json::Value,
    #[serde(default)]
    pub after: serde_json::Value,
}

/// What a caller hands to the log: everything but the sequencer's stamps.
#[derive(Clone, Debug, PartialEq)]
pub struct EventDraft {
    pub organization: String,
    /// Project slug; `None` for organization-level events.
    pub project: Option<String>,
    pub principal: Principal,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `service.resource.verb`, e.g. `iam.token.create`.
    pub action: String,
    pub resource: Option<Resource>,
    pub request_id: Option<String>,
    pub result: Outcome,
    /// Request parameters, secrets already redacted by the caller.
    pub request_parameters: Option<serde_json::Value>,
    /// Response elements worth keeping (ids of created things), no secrets.
    pub response_elements: Option<serde_json::Value>,
    pub changes: Vec<Change>,
    /// `flightdeck` for the server's own events; what an external
    /// submitter says it is (e.g. `ci.deploy`) for ingested events.
    pub event_source: String,
    /// For ingested events: when the submitter says it happened.
    pub event_time: Option<String>,
    /// For ingested events: the submitter's own id for the event.
    pub external_id: Option<String>,
}

impl EventDraft {
    /// An event of the program itself (principal `system`), successful,
    /// with nothing but its place and action.
    pub fn system(organization: &str, project: Option<&str>, action: &str) -> EventDraft {
        EventDraft {
            organization: organization.into(),
            project: project.map(str::to_string),
            principal: Principal::system(),
            source_ip: None,
            user_agent: None,
            action: action.into(),
            resource: None,
            request_id: None,
            result: Outcome {
                status: Status::Success,
                http_status: None,
                error_code: None,
                error_message: None,
            },
            request_parameters: None,
            response_elements: None,
            changes: vec![],
            event_source: "flightdeck".into(),
            event_time: None,
            external_id: None,
        }
    }
}

/// A stored audit event, as written to disk and served.
///
/// Field order here is alphabetical so that the struct reads like its
/// canonical form; the canonical bytes never depend on it (see
/// [`Event::canonical_bytes`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// `service.resource.verb`, e.g. `iam.token.create`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    pub event_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// UUIDv7, stamped by the log.
    pub id: String,
    /// Position of the event in its own log (its project's, or the
    /// organization's), from 0, without gaps. The Merkle tree of issue #4
    /// is built per log over this order.
    pub log_index: u64,
    pub organization: String,
    /// Schema version 2: for each personal field the event carries
    /// (`principal.id` of an anonymous caller, `principal.name`,
    /// `source_ip`, `user_agent`, a user or membership resource's
    /// `resource.name`), `base64(SHA-256(salt ‖ value))`. The
    /// leaf holds these instead of the values; reads put the values (or
    /// `[erased]`) back into the fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub personal: BTreeMap<String, String>,
    pub principal: Principal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_elements: Option<serde_json::Value>,
    pub result: Outcome,
    pub schema_version: u32,
    /// Global sequence number over all logs, from 1, strictly increasing,
    /// without gaps.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// When the log accepted the event (RFC 3339, UTC, nanoseconds);
    /// non-decreasing in `seq` order.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Event {
    /// Stamps a draft into an event.
    pub fn from_draft(
        draft: EventDraft,
        id: String,
        seq: u64,
        log_index: u64,
        time: String,
    ) -> Event {
        Event {
            action: draft.action,
            changes: draft.changes,
            event_source: draft.event_source,
            event_time: draft.event_time,
            external_id: draft.external_id,
            id,
            log_index,
            organization: draft.organization,
            personal: BTreeMap::new(),
            principal: draft.principal,
            project: draft.project,
            request_id: draft.request_id,
            request_parameters: draft.request_parameters,
            resource: draft.resource,
            response_elements: draft.response_elements,
            result: draft.result,
            schema_version: SCHEMA_VERSION,
            seq,
            source_ip: draft.source_ip,
            time,
            user_agent: draft.user_agent,
        }
    }

    /// The RFC 8785 canonical JSON bytes of the event: what the log stores
    /// and what a Merkle leaf hashes.
    ///
    /// Written by the hand-made encoder in `canonical.rs`, which is tested
    /// byte for byte against `serde_json_canonicalizer`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        crate::canonical::encode_event(self)
    }

    /// The Merkle leaf of the event: its canonical bytes with every field
    /// named in `personal` left out (an anonymous caller's id shows as
    /// `anonymous`). Equal to [`Event::canonical_bytes`] for an event
    /// without personal fields (schema version 1, or the `system`
    /// principal).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        if self.personal.is_empty() {
            return self.canonical_bytes();
        }
        let mut leaf = self.clone();
        if leaf.personal.contains_key("principal.id") {
            leaf.principal.id = "anonymous".into();
        }
        if leaf.personal.contains_key("principal.name") {
            leaf.principal.name.clear();
        }
        if leaf.personal.contains_key("source_ip") {
            leaf.source_ip = None;
        }
        if leaf.personal.contains_key("user_agent") {
            leaf.user_agent = None;
        }
        if leaf.personal.contains_key("resource.name")
            && let Some(r) = leaf.resource.as_mut()
        {
            r.name = None;
        }
        leaf.canonical_bytes()
    }

    /// Parses stored canonical bytes back into an event.
    pub fn from_bytes(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The log this event belongs to: its project, or the organization.
    pub fn log_key(&self) -> LogKey {
        LogKey::of(self.project.as_deref())
    }
}

/// Names one logical log: a project's, or the organization's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogKey {
    Organization,
    Project(String),
}

impl LogKey {
    pub fn of(project: Option<&str>) -> LogKey {
        match project {
            Some(p) => LogKey::Project(p.to_string()),
            None => LogKey::Organization,
        }
    }
}

/// Replaces a free-form value larger than [`MAX_FREEFORM_BYTES`] by a
/// marker `{"truncated": true, "bytes": N, "sha256": "<hex>", "prefix": "..."}`
/// so that one event never grows past the tlog-tiles entry limit.
pub fn cap_freeform(v: serde_json::Value) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(&v).expect("bug: a serde_json::Value always serializes");
    if bytes.len() <= MAX_FREEFORM_BYTES {
        return v;
    }
    let mut cut = 1024.min(bytes.len());
    let text = String::from_utf8_lossy(&bytes);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": bytes.len(),
        "sha256": hex::encode(Sha256::digest(&bytes)),
        "prefix": &text[..cut],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> EventDraft {
        EventDraft {
            organization: "org".into(),
            project: Some("default".into()),
            principal: Principal::system(),
            source_ip: Some("127.0.0.1".into()),
            user_agent: None,
            action: "iam.token.create".into(),
            resource: Some(Resource {
                kind: "token".into(),
                id: Some("t1".into()),
                name: None,
            }),
            request_id: None,
            result: Outcome {
                status: Status::Success,
                http_status: Some(201),
                error_code: None,
                error_message: None,
            },
            request_parameters: Some(serde_json::json!({"z": 1, "a": [true, null]})),
            response_elements: None,
            changes: vec![],
            event_source: "flightdeck".into(),
            event_time: None,
            external_id: None,
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_and_round_trip() {
        let e = Event::from_draft(draft(), "id".into(), 7, 3, format_time(time_from_ns(0)));
        let b = e.canonical_bytes();
        let s = std::str::from_utf8(&b).unwrap();
        assert!(
            s.starts_with(r#"{"action":"iam.token.create","event_source":"flightdeck","id":"id","log_index":3,"#),
            "{s}"
        );
        assert!(
            s.contains(r#""request_parameters":{"a":[true,null],"z":1}"#),
            "{s}"
        );
        assert_eq!(Event::from_bytes(&b).unwrap(), e);
    }

    #[test]
    fn time_has_nine_digits_and_parses_back() {
        let t = format_time(time_from_ns(1_700_000_000_000_000_001));
        assert_eq!(t, "2023-11-14T22:13:20.000000001Z");
        assert_eq!(parse_time_ns(&t), Some(1_700_000_000_000_000_001));
        assert_eq!(
            parse_time_ns("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time_ns("yesterday"), None);
    }

    #[test]
    fn fast_time_formatting_matches_the_format_description() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut samples = vec![0, -1, 1, i64::MIN, i64::MAX, 951_782_400_000_000_000];
        for _ in 0..100_000 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            samples.push(x.wrapping_mul(0x2545_F491_4F6C_DD1D) as i64);
        }
        for ns in samples {
            assert_eq!(format_time_ns(ns), format_time(time_from_ns(ns)), "{ns}");
        }
    }

    #[test]
    fn big_freeform_values_are_capped_with_their_hash() {
        let big = serde_json::json!({"x": "a".repeat(MAX_FREEFORM_BYTES * 2)});
        let capped = cap_freeform(big);
        assert_eq!(capped["truncated"], true);
        assert_eq!(capped["sha256"].as_str().unwrap().len(), 64);
        let small = serde_json::json!({"x": 1});
        assert_eq!(cap_freeform(small.clone()), small);
    }
}
