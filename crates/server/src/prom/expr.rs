//! The Prometheus API endpoints that only parse a query, never evaluate
//! it: `/api/v1/format_query` (the query pretty-printed), `/api/v1/parse_query`
//! (its syntax tree as JSON, the shape of Prometheus' `translateAST`) and
//! `/api/v1/query_exemplars` (exemplars are not stored, so a valid request
//! is answered with `[]`, after the same checks Prometheus makes).
//!
//! All three take GET and POST (form body), like Prometheus. Query texts
//! go through [`select::check_query_shape`] before the parser sees them,
//! which also bounds the recursion of printing and serializing the tree.

use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use promql_parser::parser::{self, Expr};

use super::api::{MAX_TIME_MS, MIN_TIME_MS, Params, PromError, json_str, parse_time, success};
use super::{is_form, select};

fn params(q: Option<String>, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::parse(q.as_deref(), is_form(headers).then_some(&body[..]))
}

/// Parses the `query` parameter; errors as Prometheus' `invalidParamError`.
pub fn parse_query_param(p: &Params) -> Result<Expr, PromError> {
    let q = p.get("query").unwrap_or("");
    select::check_query_shape("query", q)?;
    if q.trim().is_empty() {
        // Prometheus' parser: "no expression found in input".
        return Err(PromError::bad_data(
            "invalid parameter \"query\": 1:1: parse error: no expression found in input",
        ));
    }
    parser::parse(q).map_err(|e| PromError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// The query as Prometheus' `format_query` prints it (`Expr.Pretty`).
pub fn format(p: &Params) -> Result<String, PromError> {
    Ok(parse_query_param(p)?.prettify())
}

/// `GET|POST /api/v1/format_query`: `data` is the formatted query string.
pub async fn format_query(RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(q, &headers, &body);
    match format(&p) {
        Ok(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            json_str(&mut out, &s);
            success(&out, &[])
        }
        Err(e) => e.into_response(),
    }
}

/// The syntax tree as JSON, in the shape of Prometheus' `translateAST`
/// (`{"type":"binaryExpr","op":"+","lhs":…,"rhs":…}`), which
/// `promql-parser`'s `ser` feature was written to match.
pub fn ast_json(p: &Params) -> Result<String, PromError> {
    let expr = parse_query_param(p)?;
    serde_json::to_string(&expr).map_err(PromError::internal)
}

/// `GET|POST /api/v1/parse_query`
pub async fn parse_query(RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(q, &headers, &body);
    match ast_json(&p) {
        Ok(s) => success(&s, &[]),
        Err(e) => e.into_response(),
    }
}

/// Validates an exemplar query as Prometheus does: `start`/`end` times
/// (defaults: all time), `end` not before `start`, `query` a valid
/// expression.
pub fn check_exemplar_request(p: &Params) -> Result<(), PromError> {
    let start = parse_time(p, "start", MIN_TIME_MS)?;
    let end = parse_time(p, "end", MAX_TIME_MS)?;
    if end < start {
        return Err(PromError::bad_data(
            "end timestamp must not be before start timestamp",
        ));
    }
    parse_query_param(p).map(drop)
}

/// `GET|POST /api/v1/query_exemplars`: always `[]` for a valid request,
/// since Flightdeck keeps no exemplars (remote write's exemplars are
/// dropped at ingest).
pub async fn query_exemplars(RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(q, &headers, &body);
    match check_exemplar_request(&p) {
        Ok(()) => success("[]", &[]),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(query: &str) -> Params {
        let enc: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        Params::parse(Some(&enc), None)
    }

    fn check_format(query: &str, want: &str) {
        assert_eq!(format(&p(query)).unwrap(), want, "{query}");
    }

    #[test]
    fn formats_like_prometheus() {
        check_format("up", "up");
        check_format("  sum by(job) (rate(x[5m]))", "sum by (job) (rate(x[5m]))");
        check_format("foo{a=\"b\"}/bar", "foo{a=\"b\"} / bar");
        check_format("1+1", "1 + 1");
    }

    #[test]
    fn bad_queries_are_bad_data() {
        for q in ["", "   ", "sum(", "foo{", "1 +"] {
            let e = format(&p(q)).unwrap_err();
            assert_eq!(e.kind, super::super::api::ErrorType::BadData, "{q}");
            assert!(
                e.message.starts_with("invalid parameter \"query\": "),
                "{q}: {}",
                e.message
            );
        }
    }

    #[test]
    fn ast_has_prometheus_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&ast_json(&p("sum by (job) (rate(x[5m])) > 1")).unwrap()).unwrap();
        assert_eq!(v["type"], "binaryExpr");
        assert_eq!(v["op"], ">");
        assert_eq!(v["lhs"]["type"], "aggregation");
        assert_eq!(v["lhs"]["op"], "sum");
        assert_eq!(v["lhs"]["grouping"], serde_json::json!(["job"]));
        assert_eq!(v["lhs"]["expr"]["type"], "call");
        assert_eq!(v["lhs"]["expr"]["func"]["name"], "rate");
        assert_eq!(v["lhs"]["expr"]["args"][0]["type"], "matrixSelector");
        assert_eq!(v["rhs"]["type"], "numberLiteral");
    }

    #[test]
    fn exemplar_requests_are_checked() {
        let ok = Params::parse(Some("query=up&start=10&end=20"), None);
        assert!(check_exemplar_request(&ok).is_ok());
        let backwards = Params::parse(Some("query=up&start=20&end=10"), None);
        assert_eq!(
            check_exemplar_request(&backwards).unwrap_err().message,
            "end timestamp must not be before start timestamp"
        );
        let bad_time = Params::parse(Some("query=up&start=yesterday"), None);
        assert_eq!(
            check_exemplar_request(&bad_time).unwrap_err().message,
            "invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"
        );
        let no_query = Params::parse(Some("start=1"), None);
        assert!(check_exemplar_request(&no_query).is_err());
    }
}
