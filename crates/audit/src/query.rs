//! Search queries, result pages and pagination cursors.

use crate::error::AuditError;
use crate::event::{LogKey, PrincipalKind, Status};

/// Page size when [`Query::limit`] is 0.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page a query returns; larger limits are clamped to it.
pub const MAX_LIMIT: usize = 1000;

/// Which events to return, in which order. Every filter that is `Some` must
/// match (AND); `None` means "any". String filters are exact matches except
/// `action_prefix` and `text`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// `None` = every log.
    pub log: Option<LogKey>,
    pub principal_id: Option<String>,
    pub principal_type: Option<PrincipalKind>,
    /// Exact action, e.g. `iam.token.create`.
    pub action: Option<String>,
    /// Actions starting with this, e.g. `iam.` or `iam.token.`.
    pub action_prefix: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub status: Option<Status>,
    pub source_ip: Option<String>,
    /// Inclusive lower bound on the event's `time`, unix ns.
    pub from_ns: Option<i64>,
    /// Exclusive upper bound on the event's `time`, unix ns.
    pub to_ns: Option<i64>,
    /// Case-insensitive (Unicode lowercase) substring of the event's
    /// canonical JSON.
    pub text: Option<String>,
    pub order: Order,
    /// `next_cursor` of the previous page, unchanged.
    pub cursor: Option<String>,
    /// Page size: 0 means [`DEFAULT_LIMIT`]; clamped to [`MAX_LIMIT`].
    pub limit: usize,
}

impl Query {
    pub(crate) fn effective_limit(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// One page of results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub events: Vec<crate::event::Event>,
    /// Pass as [`Query::cursor`] to get the next page; `None` when there is
    /// no more. Pages are keyed on seq, so appends made between two pages
    /// never shift or repeat what was already returned.
    pub next_cursor: Option<String>,
}

/// A position in seq order: "continue after this seq".
///
/// Encoded as `v1.<n|o>.<seq>`; the order letter makes a cursor from a
/// newest-first listing fail loudly when used with oldest-first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub seq: i64,
    pub order: Order,
}

impl Cursor {
    pub fn new(seq: u64, order: Order) -> Cursor {
        Cursor {
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            order,
        }
    }

    pub fn encode(self) -> String {
        format!("v1.{}.{}", order_letter(self.order), self.seq)
    }

    pub fn parse(s: &str, order: Order) -> Result<Cursor, AuditError> {
        let bad = |why: &str| AuditError::BadCursor(format!("{s:?}: {why}"));
        let mut parts = s.splitn(3, '.');
        let (Some("v1"), Some(letter), Some(seq)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a cursor of this API"));
        };
        if letter != order_letter(order) {
            return Err(bad("the cursor belongs to a listing in the other order"));
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a cursor of this API"));
        }
        let seq: i64 = seq.parse().map_err(|_| bad("position out of range"))?;
        if seq < 1 {
            return Err(bad("position out of range"));
        }
        Ok(Cursor { seq, order })
    }
}

fn order_letter(order: Order) -> &'static str {
    match order {
        Order::NewestFirst => "n",
        Order::OldestFirst => "o",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let c = Cursor::new(42, Order::OldestFirst);
        let s = c.encode();
        assert_eq!(s, "v1.o.42");
        assert_eq!(Cursor::parse(&s, Order::OldestFirst).unwrap(), c);
        assert!(Cursor::parse(&s, Order::NewestFirst).is_err());
        for junk in [
            "",
            "v1",
            "v1.n.",
            "v1.n.-3",
            "v1.n.0",
            "v1.n.99999999999999999999999",
            "v2.n.5",
            "v1.n.5x",
            "🦀",
        ] {
            assert!(
                matches!(
                    Cursor::parse(junk, Order::NewestFirst),
                    Err(AuditError::BadCursor(_))
                ),
                "{junk:?}"
            );
        }
    }
}
