//! Tests of the exposition parser: one `check` per feature, errors kept as
//! data with the message they must produce, and a truncation sweep.

use super::*;

/// Renders a parse result as text: metadata, samples, created times.
fn render(s: &Scraped) -> String {
    let mut out = String::new();
    for (name, m) in &s.metadata {
        out += &format!(
            "# {name} {} help={:?} unit={:?}\n",
            m.metric_type.as_str(),
            m.help,
            m.unit
        );
    }
    for x in &s.samples {
        out += &format!("{} {:?}", x.labels, x.value);
        if let Some(t) = x.timestamp_ms {
            out += &format!(" @{t}");
        }
        out += "\n";
    }
    for (l, t) in &s.created {
        out += &format!("created {l} {t}\n");
    }
    out
}

fn check(format: Format, input: &str, expected: &str) {
    let got = parse_format(input.as_bytes(), format)
        .unwrap_or_else(|e| panic!("{format:?} input {input:?}: {e}"));
    assert_eq!(render(&got), expected, "input: {input:?}");
}

use Format::{OpenMetrics as OM, PrometheusText as TEXT};

#[test]
fn content_type_picks_the_format() {
    assert_eq!(Format::from_content_type(None), TEXT);
    assert_eq!(
        Format::from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")),
        TEXT
    );
    assert_eq!(
        Format::from_content_type(Some(
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )),
        OM
    );
    assert_eq!(
        Format::from_content_type(Some("Application/OpenMetrics-Text")),
        OM
    );
    assert_eq!(Format::from_content_type(Some("application/json")), TEXT);
}

#[test]
fn text_plain_samples() {
    check(TEXT, "a 1\nb_total 2.5\n", "a{} 1.0\nb_total{} 2.5\n");
}

#[test]
fn text_empty_body() {
    check(TEXT, "", "");
}

#[test]
fn text_labels_sorted_with_name() {
    check(
        TEXT,
        "http_requests_total{method=\"post\",code=\"200\"} 1027\n",
        "http_requests_total{code=\"200\", method=\"post\"} 1027.0\n",
    );
}

#[test]
fn text_blanks_between_tokens_and_trailing_comma() {
    check(
        TEXT,
        "  a\t{ x = \"1\" ,\ty=\"2\", }  3 \t 17 \n",
        "a{x=\"1\", y=\"2\"} 3.0 @17\n",
    );
}

#[test]
fn text_empty_braces_and_no_blank_after_brace() {
    check(TEXT, "a{} 1\nb{x=\"y\"}2\n", "a{} 1.0\nb{x=\"y\"} 2.0\n");
}

#[test]
fn text_special_values() {
    check(
        TEXT,
        "a NaN\nb +Inf\nc -Inf\nd Inf\ne -1.5e-3\nf .5\n",
        "a{} NaN\nb{} inf\nc{} -inf\nd{} inf\ne{} -0.0015\nf{} 0.5\n",
    );
}

#[test]
fn text_timestamp_ms() {
    check(TEXT, "a 1 1700000000123\n", "a{} 1.0 @1700000000123\n");
}

#[test]
fn text_label_value_escapes() {
    check(
        TEXT,
        "a{p=\"C:\\\\dir\\\\\",q=\"say \\\"hi\\\"\",r=\"two\\nlines\",s=\"\\t kept\"} 1\n",
        "a{p=\"C:\\\\dir\\\\\", q=\"say \\\"hi\\\"\", r=\"two\\nlines\", s=\"\\\\t kept\"} 1.0\n",
    );
}

#[test]
fn text_empty_label_value_means_absent() {
    check(TEXT, "a{x=\"\",y=\"1\"} 1\n", "a{y=\"1\"} 1.0\n");
}

#[test]
fn text_utf8_label_value() {
    check(
        TEXT,
        "a{city=\"Zürich\"} 1\n",
        "a{city=\"Z\\u{fc}rich\"} 1.0\n",
    );
}

#[test]
fn text_metadata() {
    check(
        TEXT,
        "# HELP rpc_seconds RPC latency.\\nSecond line \\\\ \"q\"\n# TYPE rpc_seconds summary\nrpc_seconds{quantile=\"0.5\"} 0.1\nrpc_seconds_sum 3\nrpc_seconds_count 30\n# TYPE up untyped\n",
        "# rpc_seconds summary help=\"RPC latency.\\nSecond line \\\\ \\\"q\\\"\" unit=\"\"\n# up unknown help=\"\" unit=\"\"\nrpc_seconds{quantile=\"0.5\"} 0.1\nrpc_seconds_sum{} 3.0\nrpc_seconds_count{} 30.0\n",
    );
}

#[test]
fn text_comments_and_blank_lines_ignored() {
    check(
        TEXT,
        "# just a comment\n#HELP not meta\n\n   \n# TYPE\na 1\n",
        "a{} 1.0\n",
    );
}

#[test]
fn text_histogram_lines_are_plain_samples() {
    check(
        TEXT,
        "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n",
        "# h histogram help=\"\" unit=\"\"\nh_bucket{le=\"0.1\"} 1.0\nh_bucket{le=\"+Inf\"} 2.0\nh_sum{} 0.3\nh_count{} 2.0\n",
    );
}

#[test]
fn text_name_label_in_braces() {
    check(TEXT, "a{b=\"c\"} 1\n", "a{b=\"c\"} 1.0\n");
}

/// Bad inputs, with the exact error each must produce.
const TEXT_ERRORS: &[(&str, &str)] = &[
    (
        "a{b=\"c\",d} 1\n",
        "line 1, column 10: expected '=' after label name, found '}'",
    ),
    (
        "a 1\nb{c=\"d\" e=\"f\"} 1\n",
        "line 2, column 9: expected ',' or '}' after label value, found 'e'",
    ),
    (
        "a{1=\"x\"} 1\n",
        "line 1, column 3: expected label name or '}', found '1'",
    ),
    (
        "a{b=c} 1\n",
        "line 1, column 5: expected '\"' to start the label value, found 'c'",
    ),
    (
        "a{b=\"c} 1\n",
        "line 1, column 10: label value is not terminated by '\"' before the end of the line",
    ),
    (
        "a{b=\"1\",b=\"2\"} 1\n",
        "line 1, column 2: label name \"b\" appears more than once in the sample",
    ),
    (
        "a{__name__=\"b\"} 1\n",
        "line 1, column 2: label name \"__name__\" appears more than once in the sample",
    ),
    (
        "a one\n",
        "line 1, column 3: \"one\" is not a float value (use a decimal number, NaN, +Inf or -Inf)",
    ),
    (
        "a +NaN\n",
        "line 1, column 3: \"+NaN\" is not a float value (use a decimal number, NaN, +Inf or -Inf)",
    ),
    (
        "a 1_000\n",
        "line 1, column 3: \"1_000\" is not a float value (use a decimal number, NaN, +Inf or -Inf)",
    ),
    (
        "a 1 -5\n",
        "line 1, column 5: \"-5\" is not a valid timestamp (integer milliseconds since the epoch)",
    ),
    (
        "a 1 1.5\n",
        "line 1, column 5: \"1.5\" is not a valid timestamp (integer milliseconds since the epoch)",
    ),
    (
        "a 1 99999999999999999999\n",
        "line 1, column 5: \"99999999999999999999\" is not a valid timestamp (out of range)",
    ),
    (
        "a 1 2 3\n",
        "line 1, column 7: expected end of line, found '3'",
    ),
    ("a 1", "line 1, column 4: data does not end with a newline"),
    (
        "a\n",
        "line 1, column 2: expected '{' or a blank after the metric name, found end of line",
    ),
    (
        "a \n",
        "line 1, column 3: expected a value, found end of line",
    ),
    (
        "9a 1\n",
        "line 1, column 1: expected metric name, '#' or a blank line, found '9'",
    ),
    (
        "a-b 1\n",
        "line 1, column 2: expected '{' or a blank after the metric name, found '-'",
    ),
    (
        "# TYPE a countr\n",
        "line 1, column 10: invalid metric type \"countr\" (one of: counter, gauge, histogram, summary, untyped)",
    ),
    (
        "# TYPE a gaugehistogram\n",
        "line 1, column 10: invalid metric type \"gaugehistogram\" (one of: counter, gauge, histogram, summary, untyped)",
    ),
    (
        "# HELP 1a x\n",
        "line 1, column 8: expected metric name after HELP or TYPE, found '1'",
    ),
    (
        "a 1 # {x=\"y\"} 1\n",
        "line 1, column 5: \"#\" is not a valid timestamp (integer milliseconds since the epoch)",
    ),
];

#[test]
fn text_errors() {
    check_errs(TEXT, "text format", TEXT_ERRORS);
}

/// Checks every case and reports all mismatches at once.
fn check_errs(format: Format, prefix: &str, cases: &[(&str, &str)]) {
    let mut bad = 0;
    for (input, expected) in cases {
        let want = format!("{prefix} parsing error in {expected}");
        match parse_format(input.as_bytes(), format) {
            Ok(s) => {
                eprintln!("{input:?} parsed as\n{}", render(&s));
                bad += 1;
            }
            Err(e) if e.to_string() != want => {
                eprintln!("MISMATCH {input:?}\n  got  {e}\n  want {want}");
                bad += 1;
            }
            Err(_) => {}
        }
    }
    assert_eq!(bad, 0, "{bad} of {} error cases differ", cases.len());
}

#[test]
fn text_invalid_utf8_label_value() {
    let err = parse_format(b"a{b=\"\xff\"} 1\n", TEXT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "text format parsing error in line 1, column 6: label value is not valid UTF-8"
    );
}

#[test]
fn om_samples_and_eof() {
    check(
        OM,
        "a 1\nb{c=\"d\"} 2\n# EOF\n",
        "a{} 1.0\nb{c=\"d\"} 2.0\n",
    );
}

#[test]
fn om_eof_without_newline() {
    check(OM, "a 1\n# EOF", "a{} 1.0\n");
}

#[test]
fn om_timestamps_are_seconds() {
    check(
        OM,
        "a 1 1700000000.123\nb 2 1700000000\nc 3 1.7e9\n# EOF\n",
        "a{} 1.0 @1700000000123\nb{} 2.0 @1700000000000\nc{} 3.0 @1700000000000\n",
    );
}

#[test]
fn om_metadata_with_unit_and_types() {
    check(
        OM,
        "# TYPE req_seconds histogram\n# UNIT req_seconds seconds\n# HELP req_seconds A \\\"quoted\\\" help.\nreq_seconds_bucket{le=\"+Inf\"} 2\nreq_seconds_sum 1\nreq_seconds_count 2\n# TYPE s stateset\ns{s=\"a\"} 1\n# TYPE i info\ni_info{v=\"1\"} 1\n# TYPE gh gaugehistogram\ngh_gcount 1\n# TYPE u unknown\nu 1\n# EOF\n",
        "# req_seconds histogram help=\"A \\\"quoted\\\" help.\" unit=\"seconds\"\n# s stateset help=\"\" unit=\"\"\n# i info help=\"\" unit=\"\"\n# gh gaugehistogram help=\"\" unit=\"\"\n# u unknown help=\"\" unit=\"\"\nreq_seconds_bucket{le=\"+Inf\"} 2.0\nreq_seconds_sum{} 1.0\nreq_seconds_count{} 2.0\ns{s=\"a\"} 1.0\ni_info{v=\"1\"} 1.0\ngh_gcount{} 1.0\nu{} 1.0\n",
    );
}

#[test]
fn om_created_lines() {
    check(
        OM,
        "# TYPE c counter\nc_total{x=\"1\"} 5\nc_created{x=\"1\"} 1700000000.5\n# TYPE g gauge\ng_created 3\n# EOF\n",
        "# c counter help=\"\" unit=\"\"\n# g gauge help=\"\" unit=\"\"\nc_total{x=\"1\"} 5.0\nc_created{x=\"1\"} 1700000000.5\ng_created{} 3.0\ncreated c{x=\"1\"} 1700000000500\n",
    );
}

#[test]
fn om_exemplars_dropped() {
    check(
        OM,
        "# TYPE c counter\nc_total 5 # {trace_id=\"abc\"} 1 1700000000.1\nc2_total 6 1700000001 # {trace_id=\"def\"} 0.5\n# EOF\n",
        "# c counter help=\"\" unit=\"\"\nc_total{} 5.0\nc2_total{} 6.0 @1700000001000\n",
    );
}

#[test]
fn om_empty_help() {
    check(
        OM,
        "# HELP a\n# HELP b \na 1\n# EOF\n",
        "# a unknown help=\"\" unit=\"\"\n# b unknown help=\"\" unit=\"\"\na{} 1.0\n",
    );
}

const OM_ERRORS: &[(&str, &str)] = &[
    (
        "a 1\n",
        "line 2, column 1: OpenMetrics body does not end with '# EOF'",
    ),
    (
        "",
        "line 1, column 1: OpenMetrics body does not end with '# EOF'",
    ),
    (
        "a 1\n# EOF\nb 2\n",
        "line 3, column 1: unexpected data after '# EOF'",
    ),
    (
        "a 1\n# EOF\n\n",
        "line 3, column 1: unexpected data after '# EOF'",
    ),
    (
        "\na 1\n# EOF\n",
        "line 1, column 1: expected metric name, '#' or a blank line, found end of line",
    ),
    (
        "a  1\n# EOF\n",
        "line 1, column 3: expected a value, found ' '",
    ),
    (
        "a\t1\n# EOF\n",
        "line 1, column 2: expected '{' or ' ' after the metric name, found a tab",
    ),
    (
        "a{b = \"c\"} 1\n# EOF\n",
        "line 1, column 4: expected '=' after label name, found ' '",
    ),
    (
        "a 1 \n# EOF\n",
        "line 1, column 5: expected a timestamp, found end of line",
    ),
    (
        "a 1 x\n# EOF\n",
        "line 1, column 5: \"x\" is not a valid timestamp (seconds since the epoch, e.g. 1700000000.123)",
    ),
    (
        "a 1 NaN\n# EOF\n",
        "line 1, column 5: \"NaN\" is not a valid timestamp (seconds since the epoch, e.g. 1700000000.123)",
    ),
    (
        "# comment\n# EOF\n",
        "line 1, column 3: expected HELP, TYPE, UNIT or EOF after '# ' (OpenMetrics has no other comments), found 'c'",
    ),
    (
        "#TYPE a counter\n# EOF\n",
        "line 1, column 2: expected ' ' after '#', found 'T'",
    ),
    (
        "# TYPE a untyped\n# EOF\n",
        "line 1, column 10: invalid metric type \"untyped\" (one of: counter, gauge, histogram, gaugehistogram, summary, info, stateset, unknown)",
    ),
    (
        "# TYPE a\n# EOF\n",
        "line 1, column 9: expected ' ' after the metric name, found end of line",
    ),
    (
        "# UNIT a_bytes seconds\n# EOF\n",
        "line 1, column 16: unit \"seconds\" is not a suffix of metric \"a_bytes\" (the name must end in _seconds)",
    ),
    (
        "# UNIT seconds seconds\n# EOF\n",
        "line 1, column 16: unit \"seconds\" is not a suffix of metric \"seconds\" (the name must end in _seconds)",
    ),
    (
        "a 1 # x\n# EOF\n",
        "line 1, column 5: expected '# {' to start an exemplar, found '#'",
    ),
    (
        "a 1 # {x=\"y\"}\n# EOF\n",
        "line 1, column 14: expected ' ' before the exemplar value, found end of line",
    ),
    (
        "a 1",
        "line 1, column 4: expected end of line, found end of input",
    ),
];

#[test]
fn om_errors() {
    check_errs(OM, "openmetrics format", OM_ERRORS);
}

const VALID_TEXT: &str = "# HELP go_gc_duration_seconds A summary of GC.\n# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds{quantile=\"0\"} 4.9e-05\ngo_gc_duration_seconds_sum 0.0013\ngo_gc_duration_seconds_count 17\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"post\",code=\"200\",path=\"/a\\\\b \\\"c\\\"\\n\"} 1027 1395066363000\n  weird_but_ok { a = \"1\" , } +Inf\nnan_value NaN\n";

const VALID_OM: &str = "# TYPE acme_http_router_request_seconds summary\n# UNIT acme_http_router_request_seconds seconds\n# HELP acme_http_router_request_seconds Latency \\\"x\\\".\nacme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32\nacme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\nacme_http_router_request_seconds_created{path=\"/api/v1\",method=\"GET\"} 1605281325.0\n# TYPE c counter\nc_total 5 1605281325.5 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1605281325.1\n# EOF\n";

#[test]
fn valid_documents_parse() {
    let t = parse(VALID_TEXT.as_bytes(), Some("text/plain; version=0.0.4")).unwrap();
    assert_eq!(t.samples.len(), 6);
    assert_eq!(t.samples[3].labels.get("path"), Some("/a\\b \"c\"\n"));
    let o = parse(
        VALID_OM.as_bytes(),
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .unwrap();
    assert_eq!(o.samples.len(), 4);
    assert_eq!(o.created.len(), 1);
}

/// Every prefix of a valid body either parses or fails with an error whose
/// position lies inside the prefix; none panics.
#[test]
fn truncation_at_every_byte_never_panics() {
    for (doc, format) in [(VALID_TEXT, TEXT), (VALID_OM, OM)] {
        let b = doc.as_bytes();
        for cut in 0..=b.len() {
            match parse_format(&b[..cut], format) {
                Ok(_) => {}
                Err(e) => {
                    let lines = b[..cut].iter().filter(|&&c| c == b'\n').count() + 1;
                    assert!(e.line <= lines, "cut {cut}: {e}");
                }
            }
        }
    }
}

/// Random byte edits of valid bodies (a fixed xorshift stream, so a
/// failure reproduces) never panic.
#[test]
fn random_mutations_never_panic() {
    let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    let alphabet = b"{}=\",# \n\\\t.0123456789eE+-_aZ\xff\xc3";
    for (doc, format) in [(VALID_TEXT, TEXT), (VALID_OM, OM)] {
        for _ in 0..4000 {
            let mut b = doc.as_bytes().to_vec();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % b.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => b[at] = c,
                    1 => b.insert(at, c),
                    _ => {
                        b.remove(at);
                    }
                }
            }
            let _ = parse_format(&b, format);
        }
    }
}

/// A generated series: name, labels (unique names, possibly empty values),
/// value, optional timestamp in ms.
struct Gen {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts_ms: Option<i64>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn ident(&mut self, first: &[u8], rest: &[u8], max: usize) -> String {
        let mut s = String::new();
        s.push(*self.pick(first) as char);
        for _ in 0..self.below(max) {
            s.push(*self.pick(rest) as char);
        }
        s
    }
}

fn gen_series(r: &mut Rng) -> Gen {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";
    const DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
    let name_first: Vec<u8> = [ALPHA, b":"].concat();
    let name_rest: Vec<u8> = [DIGITS, b":"].concat();
    let name = r.ident(&name_first, &name_rest, 12);
    let mut labels: Vec<(String, String)> = Vec::new();
    for _ in 0..r.below(5) {
        let n = r.ident(ALPHA, DIGITS, 8);
        if n == METRIC_NAME || labels.iter().any(|(m, _)| *m == n) {
            continue;
        }
        let chars = [
            "a", "Z", "0", " ", "\\", "\"", "\n", "ü", "}", ",", "=", "#", "{", "\t", "日",
        ];
        let v: String = (0..r.below(8)).map(|_| *r.pick(&chars)).collect();
        labels.push((n, v));
    }
    let value = match r.below(8) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => (r.next() % 1000) as f64,
        _ => {
            let v = f64::from_bits(r.next());
            if v.is_finite() { v } else { 0.5 }
        }
    };
    let ts_ms = (r.below(2) == 0).then(|| (r.next() % 4_000_000_000_000) as i64);
    Gen {
        name,
        labels,
        value,
        ts_ms,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_doc(series: &[Gen], om: bool, r: &mut Rng) -> String {
    let mut out = String::new();
    for g in series {
        let blank = |r: &mut Rng| {
            if om {
                " "
            } else {
                *r.pick(&[" ", "\t", "  ", " \t "])
            }
        };
        out += &g.name;
        if !g.labels.is_empty() || r.below(3) == 0 {
            out.push('{');
            let parts: Vec<String> = g
                .labels
                .iter()
                .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                .collect();
            out += &parts.join(",");
            if !g.labels.is_empty() && r.below(3) == 0 {
                out.push(',');
            }
            out.push('}');
        }
        out += blank(r);
        out += &if g.value.is_nan() {
            "NaN".to_owned()
        } else if g.value == f64::INFINITY {
            "+Inf".to_owned()
        } else if g.value == f64::NEG_INFINITY {
            "-Inf".to_owned()
        } else {
            format!("{:?}", g.value)
        };
        if let Some(t) = g.ts_ms {
            out += blank(r);
            out += &if om {
                format!("{}.{:03}", t / 1000, t % 1000)
            } else {
                t.to_string()
            };
        }
        out.push('\n');
    }
    if om {
        out += "# EOF\n";
    }
    out
}

/// Generated documents (random names, escapes, values, blanks) parse back
/// to exactly what was written.
#[test]
fn generated_documents_round_trip() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..400 {
        let om = round % 2 == 1;
        let series: Vec<Gen> = (0..r.below(20)).map(|_| gen_series(&mut r)).collect();
        let doc = write_doc(&series, om, &mut r);
        let format = if om { OM } else { TEXT };
        let got = parse_format(doc.as_bytes(), format)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{doc}"));
        assert_eq!(got.samples.len(), series.len(), "{doc}");
        for (g, s) in series.iter().zip(&got.samples) {
            let mut want = g.labels.clone();
            want.push((METRIC_NAME.to_owned(), g.name.clone()));
            assert_eq!(s.labels, Labels::from_pairs(want), "{doc}");
            assert!(
                s.value.to_bits() == g.value.to_bits() || (s.value.is_nan() && g.value.is_nan()),
                "{} vs {} in\n{doc}",
                s.value,
                g.value
            );
            let want_ts = g.ts_ms.map(|t| {
                if om {
                    // Prometheus' rule: seconds as a float, times 1000, truncated.
                    let secs: f64 = format!("{}.{:03}", t / 1000, t % 1000).parse().unwrap();
                    (secs * 1000.0) as i64
                } else {
                    t
                }
            });
            assert_eq!(s.timestamp_ms, want_ts, "{doc}");
        }
    }
}
